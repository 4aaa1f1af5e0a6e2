import tempfile

from prunescope.calibration.sample import load_calibration
from prunescope.config import OWL, parse_pattern_key
from prunescope.models.streamed import CheckpointBlocks
from prunescope.nsa.stages import protected_neurons
from prunescope.pruning import METHODS, prune_model, save_artifact, write_measurements
from prunescope.pruning.owl import OwlOptions
from prunescope.runlog import job_device, job_log

with job_log(snakemake.log[0]):
    wc, p = snakemake.wildcards, snakemake.params
    device = job_device(snakemake.threads)
    structure, sparsity = parse_pattern_key(wc.pattern)
    owl = OwlOptions(p.owl["m"], p.owl["lambda"]) if structure == OWL else None  # unstructured, OWL's block sparsities
    structure = "unstructured" if owl else structure
    calibration = load_calibration(snakemake.input.calibration) if snakemake.input.calibration else None
    guided = "associations" in snakemake.input.keys()  # rule prune_guided: NSA-matched neurons are exempt
    protected = protected_neurons(snakemake.input.associations, p.neurons_per_word) if guided else None
    with tempfile.TemporaryDirectory(dir=snakemake.resources.tmpdir) as scratch:  # SparseGPT's pruned blocks
        # host memory: the embeddings and one block at a time, read from the checkpoint (models/streamed.py)
        checkpoint = CheckpointBlocks(snakemake.input.model, p.model_spec["dtype"], p.model_spec["family"], scratch)
        keep_pruned = METHODS[wc.method].UPDATES_WEIGHTS
        result = prune_model(checkpoint.model, p.model_spec["family"], wc.method, sparsity, structure, calibration,
                             p.batch_size, device, p.method_options, protected_neurons=protected,
                             residence=lambda index, block, on: checkpoint.resident(index, block, on, keep_pruned),
                             owl=owl)
        manifest = {"model": wc.model, "method": wc.method, "pattern": wc.pattern, "structure": structure,
                    "sparsity": sparsity, "calibration": wc.calib, "method_options": dict(p.method_options)}
        if guided:
            manifest["protected"] = {"category": wc.protect, "neurons": {str(k): v for k, v in protected.items()}}
        save_artifact(result, checkpoint.pruned_weight, snakemake.output.artifact, manifest)
    write_measurements(result, snakemake.output.measurements)
