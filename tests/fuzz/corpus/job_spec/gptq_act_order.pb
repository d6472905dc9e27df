
/models/tiny-llamagptq(¢/data/calib.txtú/out/jobÈ