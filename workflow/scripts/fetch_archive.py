from prunescope.data.fetch import copy_vendored_archive, fetch_pypi_archive
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    spec = snakemake.params.spec
    if snakemake.input.vendored:  # kept in this repository (resources/archives): PyPI no longer serves it
        copy_vendored_archive(snakemake.input.vendored, spec["sha256"], snakemake.output[0])
    else:
        fetch_pypi_archive(spec["package"], spec["version"], spec["file"], spec["sha256"], snakemake.output[0])
