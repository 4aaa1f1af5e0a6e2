from prunescope.pruning.job import prune_variant
from prunescope.pruning.options import PruneOptions
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    wildcards = dict(snakemake.wildcards.items())
    prune_variant(PruneOptions.from_params(snakemake.config["pruning"], wildcards["method"], wildcards["pattern"]),
                  model_dir=snakemake.input.model, model_spec=snakemake.params.model_spec, variant=wildcards,
                  calibration_path=snakemake.input.calibration or None, device=job_device(snakemake.threads),
                  scratch_parent=snakemake.resources.tmpdir, artifact=snakemake.output.artifact,
                  measurements=snakemake.output.measurements)
