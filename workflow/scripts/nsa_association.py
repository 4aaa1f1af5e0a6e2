from prunescope.glue.nsa_job import nsa_job
from prunescope.nsa.stages import learn_association
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    learn_association(*nsa_job(snakemake), words_path=snakemake.input.words,
                      out_path=snakemake.output.association)
