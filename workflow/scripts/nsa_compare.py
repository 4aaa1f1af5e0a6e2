from prunescope.nsa.mediation import MediationOptions
from prunescope.nsa.stages import compare_variant
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    p, nsa = snakemake.params, snakemake.params.nsa
    compare_variant(snakemake.input.model, p.model_spec["dtype"], p.model_spec["family"], snakemake.input.pruned,
                    snakemake.input.records, p.template, p.examples, p.sample_seed,
                    snakemake.input.association, nsa["drop_threshold"], nsa["std_floor"], nsa["epochs"], nsa["lr"],
                    nsa["lambda"], nsa["seed"], job_device(snakemake.threads), snakemake.output[0],
                    labels=dict(snakemake.wildcards), offload=snakemake.config["offload"],
                    mediation=MediationOptions.from_params(nsa))
