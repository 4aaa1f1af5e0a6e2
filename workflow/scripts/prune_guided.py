from prunescope.nsa.stages import protected_neurons
from prunescope.pruning.job import prune_variant
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    p, wildcards = snakemake.params, dict(snakemake.wildcards.items())
    protected = protected_neurons(snakemake.input.associations, p.neurons_per_word)  # exempt from pruning
    prune_variant(snakemake.input.model, p.model_spec, wildcards, snakemake.input.calibration or None,
                  p.method_options, p.owl, p.batch_size, job_device(snakemake.threads), snakemake.resources.tmpdir,
                  snakemake.output.artifact, snakemake.output.measurements, protected, wildcards["protect"])
