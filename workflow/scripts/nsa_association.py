from prunescope.nsa.mediation import MediationOptions
from prunescope.nsa.stages import learn_association
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    p, nsa = snakemake.params, snakemake.params.nsa
    learn_association(snakemake.input.model, p.model_spec["dtype"], p.model_spec["family"], snakemake.input.records,
                      p.template, p.examples, p.sample_seed, snakemake.input.words, nsa["layers"],
                      nsa["std_floor"], nsa["epochs"], nsa["lr"], nsa["lambda"], nsa["neurons_per_word"], nsa["seed"],
                      job_device(snakemake.threads), snakemake.output.association, offload=snakemake.config["offload"],
                      mediation=MediationOptions.from_params(nsa) if nsa["matching"] == "mediated" else None)
