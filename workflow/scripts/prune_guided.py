from prunescope.nsa.stages import protected_neurons
from prunescope.pruning.job import prune_variant
from prunescope.pruning.options import PruneOptions
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    p, wildcards = snakemake.params, dict(snakemake.wildcards.items())
    protected = protected_neurons(snakemake.input.associations, p.neurons_per_word)  # exempt from pruning
    prune_variant(PruneOptions.from_params(snakemake.config["pruning"], wildcards["method"], wildcards["pattern"]),
                  model_dir=snakemake.input.model, model_spec=p.model_spec, variant=wildcards,
                  calibration_path=snakemake.input.calibration or None, device=job_device(snakemake.threads),
                  scratch_parent=snakemake.resources.tmpdir, artifact=snakemake.output.artifact,
                  measurements=snakemake.output.measurements, protected=protected,
                  protected_category=wildcards["protect"])
