from prunescope.evaluation import build_task
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    p = snakemake.params
    build_task(snakemake.wildcards.dataset, snakemake.input.records, p.template, p.limit, p.seed, snakemake.output[0])
