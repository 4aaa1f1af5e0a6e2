from prunescope.glue.nsa_job import nsa_job
from prunescope.nsa.stages import causal_check
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    causal_check(*nsa_job(snakemake), dataset=snakemake.wildcards.dataset,
                 association_path=snakemake.input.association, out_path=snakemake.output[0])
