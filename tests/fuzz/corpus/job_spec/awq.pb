
/models/tiny-llamaawq¢/data/calib.jsonlú/out/jobÈ