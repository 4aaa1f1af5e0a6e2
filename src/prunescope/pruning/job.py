"""One pruning job as the workflow runs it (rules prune and prune_guided): the checkpoint streamed block by block,
pruned as the options say, the artifact and the run's measurements written. NSA-guided pruning differs only in the
neurons it exempts, which its own script works out and passes in."""

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from prunescope.calibration.sample import load_calibration
from prunescope.models.streamed import CheckpointBlocks
from prunescope.pruning.artifact import save_artifact, write_measurements
from prunescope.pruning.driver import prune_model
from prunescope.pruning.options import METHODS, PruneOptions


def prune_variant(options: PruneOptions, *, model_dir: str, model_spec: Mapping[str, Any],
                  variant: Mapping[str, str], calibration_path: str | None, device: torch.device,
                  scratch_parent: str | None, artifact: str | os.PathLike, measurements: str | os.PathLike,
                  protected: Mapping[int, Sequence[int]] | None = None, protected_category: str | None = None) -> None:
    """Prune the variant named by `variant` (the rule's wildcards: model, pattern and calib name it in the
    manifest) as `options` say (PruneOptions.from_params of its method and pattern); `protected` ({block: MLP
    neurons}) exempts NSA-matched neurons and is recorded in the manifest with its category."""
    calibration = load_calibration(calibration_path) if calibration_path else None
    with tempfile.TemporaryDirectory(dir=scratch_parent) as scratch:  # SparseGPT's pruned blocks
        # host memory: the embeddings and one block at a time, read from the checkpoint (models/streamed.py)
        checkpoint = CheckpointBlocks(model_dir, model_spec["dtype"], model_spec["family"], scratch)
        keep_pruned = METHODS[options.method].UPDATES_WEIGHTS
        result = prune_model(checkpoint.model, model_spec["family"], options, calibration, device,
                             protected_neurons=protected,
                             residence=lambda index, block, on: checkpoint.resident(index, block, on, keep_pruned))
        manifest = {"model": variant["model"], "method": options.method, "pattern": variant["pattern"],
                    "structure": options.structure, "sparsity": options.sparsity, "calibration": variant["calib"],
                    "method_options": dict(options.method_options)}
        if protected is not None:
            manifest["protected"] = {"category": protected_category,
                                     "neurons": {str(k): v for k, v in protected.items()}}
        save_artifact(result, checkpoint.pruned_weight, artifact, manifest)
    write_measurements(result, measurements)
