"""Predicted peak memory of the prune and evaluate stages, from a model's config and the run's parameters alone.

Every term is a small function named for what it holds, its docstring saying where in the code the memory is
taken; a stage's peak is the largest of its phases, each phase a sum of terms, and the breakdown is returned so a
printout explains itself. On a GPU job the device terms are GPU memory and the rest host memory; on a CPU job
(device "cpu") the device terms are host memory too. Measured against the real prune and apply paths at the 7B and
13B widths on the CPU by tests/test_memory.py; the GPU figures are checked against reports/bench/gpu.md.

  prunescope-plan                       # the configured grid (params.yaml), every stage, fits on 24/40/80 GB
  prunescope-plan --grid paper --methods wanda sparsegpt
  python -m prunescope.memory --model path/to/model_dir     # a local config.json

The modules: shapes (ModelShape, RunShape and where they come from), terms (what each piece of memory is),
stages (the phases of prune and evaluate, predict, planned_mb) and cli (prunescope-plan); the names are re-exported
here.
"""

from prunescope.memory.shapes import CONFIGS, DTYPE_BYTES, ModelShape, RunShape, load_shapes, model_shape, run_shape
from prunescope.memory.stages import (
    CPU_PROCESS_BASELINE,
    CUDA_PROCESS_BASELINE,
    Phase,
    Prediction,
    apply_phases,
    planned_mb,
    predict,
    prune_phases,
)
from prunescope.memory.terms import (
    CONTINUATION_READS_PER_ROW,
    ERROR_SAMPLE_PER_SEQUENCE,
    FP32,
    GIB,
    INT64,
    SELECTION_BYTES,
    attention_scores,
    block_activations,
    block_weights,
    captured_hidden_states,
    captured_window_masks,
    cholesky_workspace,
    column_statistics,
    embedding_weights,
    eval_width,
    gram_sums,
    largest_linear,
    layer_workspace,
    mapped_kept_values,
    model_weights,
    next_block_inputs,
    output_head_weights,
    output_logprobs,
    packed_attention_mask,
    packed_masks,
    record_layer,
    score_selection,
    scratch_block_copy,
    sparsegpt_column_loop,
    sparsegpt_layer,
    statistics_hook_temporaries,
    streamed_tensor,
    unpacked_mask_workspace,
    weight_fp32_copy,
)

__all__ = [
    "CONFIGS",
    "CONTINUATION_READS_PER_ROW",
    "CPU_PROCESS_BASELINE",
    "CUDA_PROCESS_BASELINE",
    "DTYPE_BYTES",
    "ERROR_SAMPLE_PER_SEQUENCE",
    "FP32",
    "GIB",
    "INT64",
    "ModelShape",
    "Phase",
    "Prediction",
    "RunShape",
    "SELECTION_BYTES",
    "apply_phases",
    "attention_scores",
    "block_activations",
    "block_weights",
    "captured_hidden_states",
    "captured_window_masks",
    "cholesky_workspace",
    "column_statistics",
    "embedding_weights",
    "eval_width",
    "gram_sums",
    "largest_linear",
    "layer_workspace",
    "load_shapes",
    "mapped_kept_values",
    "model_shape",
    "model_weights",
    "next_block_inputs",
    "output_head_weights",
    "output_logprobs",
    "packed_attention_mask",
    "packed_masks",
    "planned_mb",
    "predict",
    "prune_phases",
    "record_layer",
    "run_shape",
    "score_selection",
    "scratch_block_copy",
    "sparsegpt_column_loop",
    "sparsegpt_layer",
    "statistics_hook_temporaries",
    "streamed_tensor",
    "unpacked_mask_workspace",
    "weight_fp32_copy",
]
