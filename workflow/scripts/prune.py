from prunescope.calibration.sample import load_calibration
from prunescope.config import parse_pattern_key
from prunescope.models.prepare import load_model
from prunescope.pruning import prune_model, save_artifact
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    wc, spec = snakemake.wildcards, snakemake.params.model_spec
    device = job_device(snakemake.threads)
    structure, sparsity = parse_pattern_key(wc.pattern)
    model, _ = load_model(snakemake.input.model, spec["dtype"], device="cpu")  # the driver moves one block at a time
    calibration = load_calibration(snakemake.input.calibration) if snakemake.input.calibration else None
    result = prune_model(model, spec["family"], wc.method, sparsity, structure, calibration,
                         snakemake.params.batch_size, device, snakemake.params.method_options)
    manifest = {"model": wc.model, "method": wc.method, "structure": structure, "sparsity": sparsity,
                "calibration": wc.calib, "method_options": dict(snakemake.params.method_options)}
    save_artifact(result, snakemake.output[0], manifest)
