from prunescope.nsa.stages import causal_check
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    p, nsa = snakemake.params, snakemake.params.nsa
    causal_check(snakemake.input.model, p.model_spec["dtype"], p.model_spec["family"], snakemake.wildcards.dataset,
                 snakemake.input.records, p.template, p.examples, p.sample_seed, snakemake.input.association,
                 nsa["neurons_per_word"], nsa["ablate_neurons"], nsa["random_draws"], nsa["seed"],
                 job_device(snakemake.threads), snakemake.output[0], offload=snakemake.config["offload"])
