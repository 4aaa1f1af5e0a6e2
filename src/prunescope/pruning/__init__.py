"""Post-training pruning of decoder LLMs: magnitude, Wanda, SparseGPT, RIA; unstructured and N:M."""

from prunescope.pruning.artifact import (
    apply_artifact,
    model_weights,
    save_artifact,
    write_measurements,
    write_pruned_checkpoint,
)
from prunescope.pruning.driver import METHODS, PruneResult, prune_model, pruned_layer_names

__all__ = ["METHODS", "PruneResult", "apply_artifact", "model_weights", "prune_model", "pruned_layer_names",
           "save_artifact", "write_measurements", "write_pruned_checkpoint"]
