"""A stage's phases and its predicted peaks: a phase is a sum of terms held at once (prunescope.memory.terms), a
stage's peak the largest of its phases."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prunescope.memory.shapes import ModelShape, RunShape
from prunescope.memory.terms import (
    GIB,
    block_activations,
    block_weights,
    captured_hidden_states,
    captured_window_masks,
    column_statistics,
    embedding_weights,
    eval_width,
    gram_sums,
    layer_workspace,
    mapped_kept_values,
    model_weights,
    next_block_inputs,
    output_head_weights,
    output_logprobs,
    packed_attention_mask,
    packed_masks,
    scratch_block_copy,
    statistics_hook_temporaries,
    streamed_tensor,
    unpacked_mask_workspace,
)

# Process baselines (interpreter, torch, transformers, the model code; lazily loaded kernels): measured resident sets.
# CPU torch: 0.24 GiB after the imports, 0.50-0.61 GiB between the prune and apply stages (tests/memory_probe.py)
CPU_PROCESS_BASELINE = int(0.5 * GIB)
CUDA_PROCESS_BASELINE = int(1.31 * GIB)  # with a CUDA context: reports/bench/gpu.md, dense_forward_x2 host peak


@dataclass
class Phase:
    """One moment of a stage: named terms (bytes) that are all held at once, on the device or on the host."""

    name: str
    device: dict[str, int] = field(default_factory=dict)
    host: dict[str, int] = field(default_factory=dict)


@dataclass
class Prediction:
    """A stage's predicted peaks (bytes) and the phases they come from."""

    model: str
    stage: str
    gpu_bytes: int
    host_bytes: int
    phases: list[Phase]

    def fits(self, gpu_gb: float) -> bool:
        """Whether the peak GPU memory fits a GPU sold as gpu_gb GB, counted as gpu_gb x 10^9 bytes: below the
        card's gpu_gb x 2^30, the difference left to the CUDA context and the allocator's fragmentation."""
        return self.gpu_bytes <= gpu_gb * 1e9


def _baseline(run: RunShape) -> int:
    return CUDA_PROCESS_BASELINE if run.device == "cuda" else CPU_PROCESS_BASELINE


def prune_phases(model: ModelShape, method: str, run: RunShape) -> list[Phase]:
    """The prune rule (workflow/scripts/prune.py): capture, then per block the statistics pass, the pruning of its
    Linears, the pass that feeds the next block, and save_artifact. Magnitude runs data-free (no calibration)."""
    calibrated = method != "magnitude"
    gram = method == "sparsegpt"
    batch = min(run.calibration_batch_size, run.nsamples)
    host = {"process baseline": _baseline(run), "embeddings (pre-block modules)": embedding_weights(model),
            "packed masks (1 bit/weight)": packed_masks(model)}
    block = {"block weights": block_weights(model)}
    # the block is read before its passes: the tensor in flight is held only then
    reading = Phase("read block from the checkpoint", dict(block),
                    {**host, "streamed checkpoint tensor": streamed_tensor(model)})
    stats = {"Gram sums (fp32)": gram_sums(model)} if gram else {
        "column statistics + error sample": column_statistics(model, run)}
    workspace = {"largest layer's pruning workspace": layer_workspace(model, method, run)}
    if not calibrated:
        phases = [reading, Phase("prune layer (data-free)", {**block, **workspace}, dict(host))]
    else:
        hidden = {"captured hidden states": captured_hidden_states(model, run)}
        if model.attention_types > 1:
            hidden["captured sliding-window masks"] = captured_window_masks(model, run)
        phases = [
            Phase("capture block 0 inputs", {"embeddings (on the device)": embedding_weights(model), **hidden},
                  dict(host)),
            Phase(reading.name, {**hidden, **reading.device}, reading.host),
            Phase("statistics pass", {**hidden, **block, **stats,
                                      "block activations (one batch)": block_activations(model, batch, run.seqlen),
                                      "statistics hook temporaries": statistics_hook_temporaries(model, run)},
                  dict(host)),
            Phase("prune layer", {**hidden, **block, **stats, **workspace}, dict(host)),
            Phase("feed next block", {**hidden, "next block's inputs": next_block_inputs(model, run), **block,
                                      "block activations (one batch)": block_activations(model, batch, run.seqlen)},
                  dict(host)),
        ]
    if gram:
        phases.append(Phase("save pruned block to scratch", {}, {**host, "scratch copy of the block":
                                                                 scratch_block_copy(model, run)}))
    phases.append(Phase("save artifact", {}, {**host, "masks serialised (save_file copy)": packed_masks(model)}))
    return phases


def apply_phases(model: ModelShape, method: str, run: RunShape) -> list[Phase]:
    """The evaluate rule (offload.loaded_model): load the model (memory-mapped on the CPU; read whole to move it to a
    GPU), apply the artifact layer by layer, then score batches of packed rows (evaluation.scoring)."""
    weights = model_weights(model)
    on_device = weights if run.offload_gpu_gib is None else min(weights, int(run.offload_gpu_gib * GIB))
    width = eval_width(model, run)
    forward = {"block activations (eval batch)": block_activations(model, run.eval_batch_size, width),
               "packed attention mask": packed_attention_mask(run.eval_batch_size, width, model.dtype_bytes,
                                                              model.attention_types),
               "output log-probs": output_logprobs(model, run.eval_batch_size)}
    apply = {"largest layer's unpacked mask": unpacked_mask_workspace(model, method)} if method else {}
    host = {"process baseline": _baseline(run)}
    if method:
        host["packed masks (1 bit/weight)"] = packed_masks(model)
    if method == "sparsegpt":
        host["kept values file, mapped"] = mapped_kept_values(model, method)
    if run.device == "cpu":
        # from_pretrained maps the checkpoint: apply touches (and copies on write) the blocks' weights only; scoring
        # then reads the embeddings' used rows and the whole output head
        blocks = {"block weights (written by apply)": model.blocks * block_weights(model)}
        return [Phase("load and apply", {}, {**host, **blocks, **apply}),
                Phase("evaluate", {}, {**host, **blocks, "embeddings and output head":
                                       embedding_weights(model) + output_head_weights(model), **forward})]
    device_weights = {"model weights on the device": on_device}
    read = {"model weights read on the host": weights}
    return [Phase("load and apply", {**device_weights, **apply}, {**host, **read}),
            Phase("evaluate", {**device_weights, **forward}, {**host, **({} if run.offload_gpu_gib is None else read)})]


def predict(model: ModelShape, stage: str, run: RunShape, method: str | None = None) -> Prediction:
    """Peak GPU and host bytes of `stage` ("prune" with a method; "evaluate" with the pruning method or None for the
    dense model). On a CPU run the device terms are added to the host and the GPU peak is 0."""
    if stage == "prune":
        phases = prune_phases(model, method, run)
    elif stage == "evaluate":
        phases = apply_phases(model, method, run)
    else:
        raise ValueError(f"stage must be 'prune' or 'evaluate', got {stage!r}")
    on_gpu = run.device == "cuda"
    gpu = max((sum(phase.device.values()) for phase in phases), default=0) if on_gpu else 0
    host = max(sum(phase.host.values()) + (0 if on_gpu else sum(phase.device.values())) for phase in phases)
    label = stage if stage == "evaluate" and method is None else f"{stage} ({method})"
    return Prediction(model.name, label, gpu, host, phases)


def planned_mb(prediction: Prediction, which: str, margin: float = 1.25) -> int:
    """A SLURM request (MB) from a prediction: the peak x margin, rounded up to a whole GB (1000 MB)."""
    peak = prediction.gpu_bytes if which == "gpu" else prediction.host_bytes
    return 1000 * math.ceil(peak * margin / 1e9)
