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
stages (the phases of prune and evaluate, predict, planned_mb) and cli (prunescope-plan); the shapes and stages are
re-exported here, the terms stay in memory.terms.
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
from prunescope.memory.terms import GIB

__all__ = [
    "CONFIGS",
    "CPU_PROCESS_BASELINE",
    "CUDA_PROCESS_BASELINE",
    "DTYPE_BYTES",
    "GIB",
    "ModelShape",
    "Phase",
    "Prediction",
    "RunShape",
    "apply_phases",
    "load_shapes",
    "model_shape",
    "planned_mb",
    "predict",
    "prune_phases",
    "run_shape",
]
