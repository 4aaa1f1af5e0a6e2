from prunescope.data.fetch import REPOSITORY, copy_vendored_archive, fetch_pypi_archive
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    spec = snakemake.params.spec
    if spec.get("vendored"):  # kept in this repository (resources/archives): PyPI no longer serves it
        copy_vendored_archive(REPOSITORY / spec["vendored"], spec["sha256"], snakemake.output[0])
    else:
        fetch_pypi_archive(spec["package"], spec["version"], spec["file"], spec["sha256"], snakemake.output[0])
