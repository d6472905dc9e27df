
#synthetic:llama-70b?layers=5&seed=7rtnú/out/jobÈ