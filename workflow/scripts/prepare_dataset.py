from prunescope.data.prepare import prepare_dataset
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    source = snakemake.input[0] if snakemake.input else None
    p = snakemake.params
    prepare_dataset(snakemake.wildcards.dataset, p.spec, source, p.seed, snakemake.output.records, p.part)
