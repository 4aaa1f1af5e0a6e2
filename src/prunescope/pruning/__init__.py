"""Post-training pruning of decoder LLMs: magnitude, Wanda, SparseGPT, RIA; unstructured and N:M."""

from prunescope.pruning.artifact import (
    apply_artifact,
    model_weights,
    save_artifact,
    write_measurements,
    write_pruned_checkpoint,
)
from prunescope.pruning.driver import PruneResult, prune_model, pruned_layer_names
from prunescope.pruning.options import METHODS, PruneOptions

__all__ = ["METHODS", "PruneOptions", "PruneResult", "apply_artifact", "model_weights", "prune_model",
           "pruned_layer_names", "save_artifact", "write_measurements", "write_pruned_checkpoint"]
