from prunescope.nsa.stages import select_words
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    p, nsa = snakemake.params, snakemake.params.nsa
    select_words(snakemake.input.model, p.model_spec["dtype"], snakemake.input.records, p.template,
                 p.examples, p.sample_seed, nsa["top_k_words"], nsa["min_count"], nsa["attribution"],
                 nsa["attribution_batch"], nsa["ig_steps"], job_device(snakemake.threads), snakemake.output[0],
                 offload=snakemake.config["offload"], floor=nsa["attribution_floor"], share=nsa["attribution_share"])
