from prunescope.nsa.run import select_words
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    p = snakemake.params
    select_words(snakemake.input.model, p.model_spec["dtype"], snakemake.input.task, p.template,
                 p.nsa["top_k_words"], p.nsa["min_count"], job_device(snakemake.threads), snakemake.output[0])
