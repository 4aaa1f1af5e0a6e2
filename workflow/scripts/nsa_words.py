from prunescope.glue.nsa_job import nsa_job
from prunescope.nsa.stages import select_words
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    select_words(*nsa_job(snakemake), out_path=snakemake.output[0])
