from prunescope.glue.nsa_job import nsa_job
from prunescope.nsa.stages import compare_variant
from prunescope.runlog import job_log

with job_log(snakemake.log[0]):
    compare_variant(*nsa_job(snakemake), association_path=snakemake.input.association, out_path=snakemake.output[0],
                    labels=dict(snakemake.wildcards))
