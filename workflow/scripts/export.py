from prunescope.pruning.export import export_variant
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    export_variant(snakemake.input.model, snakemake.params.dtype, snakemake.input.artifact, snakemake.output[0],
                   snakemake.wildcards.format)
