"""Predicted peak memory of the prune and evaluate stages, from a model's config and the run's parameters alone.

Every term is a small function named for what it holds, its docstring saying where in the code the memory is
taken; a stage's peak is the largest of its phases, each phase a sum of terms, and the breakdown is returned so a
printout explains itself. On a GPU job the device terms are GPU memory and the rest host memory; on a CPU job
(device "cpu") the device terms are host memory too. Measured against the real prune and apply paths at the 7B and
13B widths on the CPU by tests/test_memory.py; the GPU figures are checked against reports/bench/gpu.md.

  prunescope-plan                       # the configured grid (params.yaml), every stage, fits on 24/40/80 GB
  prunescope-plan --grid paper --methods wanda sparsegpt
  python -m prunescope.memory --model path/to/model_dir     # a local config.json
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

GIB = 2 ** 30
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
FP32, INT64 = 4, 8
CONFIGS = Path(__file__).with_name("models") / "configs.yaml"
GPU_SIZES_GB = (24, 40, 80)
# pruning.stats.ERROR_SAMPLE_PER_SEQUENCE (tests check they agree; this module imports no torch)
ERROR_SAMPLE_PER_SEQUENCE = 16
# Process baselines (interpreter, torch, transformers, the model code; lazily loaded kernels): measured resident sets.
# CPU torch: 0.24 GiB after the imports, 0.50-0.61 GiB between the prune and apply stages (tests/memory_probe.py)
CPU_PROCESS_BASELINE = int(0.5 * GIB)
CUDA_PROCESS_BASELINE = int(1.31 * GIB)  # with a CUDA context: reports/bench/gpu.md, dense_forward_x2 host peak
# Mask selection (pruning/masks.lowest_k_mask), bytes per score. CPU, kth_lowest_k_mask: kthvalue's contiguous value
# copy and int64 index buffer (12), then the tie accounting's bool masks and their int64 sums: 18 measured in all.
# CUDA, sorted_lowest_k_mask: a stable radix sort of the scores with int64 indices, keys and values double-buffered.
SELECTION_BYTES = {"cpu": 18, "cuda": 2 * (FP32 + INT64)}
# The packed evaluation scorer reads the log-softmax at the continuation positions only (scoring.packed_logprobs):
# multiple-choice continuations of a packed row, all choices together (a handful of tokens each).
CONTINUATION_READS_PER_ROW = 32


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a model's config.json that set its memory."""

    name: str
    family: str
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    blocks: int
    tied_embeddings: bool
    dtype: str
    max_positions: int = 2048
    head_size: int | None = None  # config.head_dim where the config sets it (Gemma 3: 256, not hidden / heads)
    attention_types: int = 1  # distinct attention types (Gemma 3: sliding-window and full): one packed mask each

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def head_dim(self) -> int:
        return self.head_size or self.hidden // self.heads

    @property
    def gated_mlp(self) -> bool:
        """LLaMA, Mistral, Qwen2: down(act(gate(x)) * up(x)); OPT: fc2(relu(fc1(x)))."""
        return self.family != "opt"

    def linears(self) -> list[tuple[str, int, int]]:
        """(name, C_out, C_in) of every Linear of one block: what the driver prunes (driver.block_linears)."""
        kv = self.kv_heads * self.head_dim
        attention = [("q", self.heads * self.head_dim, self.hidden), ("k", kv, self.hidden), ("v", kv, self.hidden),
                     ("o", self.hidden, self.heads * self.head_dim)]
        mlp = ([("gate", self.intermediate, self.hidden)] if self.gated_mlp else []) + [
            ("up", self.intermediate, self.hidden), ("down", self.hidden, self.intermediate)]
        return attention + mlp

    def distinct_inputs(self) -> list[int]:
        """C_in of each distinct Linear input (stats.collect_inputs shares q/k/v and gate/up): one InputStats each."""
        return [self.hidden, self.heads * self.head_dim, self.hidden, self.intermediate]

    @classmethod
    def from_config(cls, name: str, config: dict, dtype: str | None = None) -> ModelShape:
        """From a config.json (or a configs.yaml entry, the same keys); dtype: params.yaml's, else the config's.
        Gemma 3 configs without layer_types get them from transformers (always sliding-window and full mixed), and
        tie their head by default, as OPT does."""
        family = config.get("model_type", "llama")
        heads = config["num_attention_heads"]
        layer_types = config.get("layer_types")
        return cls(name=name, family=family, hidden=config["hidden_size"],
                   intermediate=config.get("intermediate_size") or config["ffn_dim"], heads=heads,
                   kv_heads=config.get("num_key_value_heads") or heads, vocab=config["vocab_size"],
                   blocks=config["num_hidden_layers"],
                   tied_embeddings=config.get("tie_word_embeddings", family in ("opt", "gemma3_text")),
                   dtype=dtype or str(config.get("dtype") or config.get("torch_dtype") or "float16"),
                   max_positions=config.get("max_position_embeddings", 2048), head_size=config.get("head_dim"),
                   attention_types=len(set(layer_types)) if layer_types else 2 if family == "gemma3_text" else 1)


@dataclass(frozen=True)
class RunShape:
    """The run's parameters that set memory (params.yaml: calibration, pruning, evaluation, offload)."""

    nsamples: int = 128
    seqlen: int = 2048
    calibration_batch_size: int = 8
    eval_batch_size: int = 16
    eval_context: int = 2048  # tokens of the widest packed evaluation row (a context with its continuations)
    device: str = "cuda"  # "cpu": every device term is host memory
    offload_gpu_gib: float | None = None  # params.yaml offload.max_gpu_memory: weights beyond it wait on the host
    sparsegpt_blocksize: int = 128


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


# ---- terms: weights ----------------------------------------------------------------------------------------------

def block_weights(model: ModelShape) -> int:
    """One decoder block in the model dtype: what CheckpointBlocks.resident reads onto the device per block."""
    norms = 2 * model.hidden
    return (sum(rows * cols for _, rows, cols in model.linears()) + norms) * model.dtype_bytes


def embedding_weights(model: ModelShape) -> int:
    """The input embeddings (plus OPT's learned positions): the pre-block modules CheckpointBlocks loads for the
    capture of block 0's inputs (driver._capture_block_inputs)."""
    positions = (model.max_positions + 2) * model.hidden if model.family == "opt" else 0
    return (model.vocab * model.hidden + positions) * model.dtype_bytes


def output_head_weights(model: ModelShape) -> int:
    """lm_head, unless tied to the embeddings: read by the evaluation's output head, never by pruning."""
    return 0 if model.tied_embeddings else model.vocab * model.hidden * model.dtype_bytes


def model_weights(model: ModelShape) -> int:
    """The whole model in its dtype: what load_model reads for evaluation."""
    return (embedding_weights(model) + model.blocks * block_weights(model) + output_head_weights(model)
            + model.hidden * model.dtype_bytes)


def largest_linear(model: ModelShape) -> tuple[int, int]:
    """(C_out, C_in) of the block's largest Linear: the layer whose per-layer workspace is the largest."""
    _, rows, cols = max(model.linears(), key=lambda linear: linear[1] * linear[2])
    return rows, cols


def streamed_tensor(model: ModelShape) -> int:
    """The largest tensor in flight from the checkpoint (streamed.CheckpointBlocks._load: safe_open maps the file
    and get_tensor copies one tensor out, its mapped pages resident until the handle closes)."""
    rows, cols = largest_linear(model)
    return rows * cols * model.dtype_bytes


def packed_masks(model: ModelShape) -> int:
    """Every pruned Linear's keep-mask at 1 bit per weight on the host (driver.PruneResult.masks, pack_mask)."""
    return model.blocks * sum(math.ceil(rows * cols / 8) for _, rows, cols in model.linears())


def scratch_block_copy(model: ModelShape, run: RunShape) -> int:
    """SparseGPT's pruned block saved to the scratch folder (CheckpointBlocks.resident, keep_pruned): safetensors'
    save_file copies each tensor to bytes; from a GPU the .cpu() copies come first."""
    linear = sum(rows * cols for _, rows, cols in model.linears()) * model.dtype_bytes
    return linear * (2 if run.device == "cuda" else 1)


# ---- terms: calibration data and activations ---------------------------------------------------------------------

def captured_hidden_states(model: ModelShape, run: RunShape) -> int:
    """Every calibration sequence's hidden states at the current block's input, held on the device by the driver
    (driver._capture_block_inputs, then each block's outputs in driver._sequential)."""
    return run.nsamples * run.seqlen * model.hidden * model.dtype_bytes


def captured_window_masks(model: ModelShape, run: RunShape) -> int:
    """The boolean [batch, 1, seqlen, seqlen] sliding-window mask transformers builds for a model mixing attention
    types (Gemma 3), captured with every batch's block arguments and held to the last block
    (driver._capture_block_inputs); full attention and single-type models need none under sdpa."""
    return run.nsamples * run.seqlen * run.seqlen if model.attention_types > 1 else 0


def next_block_inputs(model: ModelShape, run: RunShape) -> int:
    """The block's outputs for the next block, built while its inputs are still held (driver._sequential's list
    comprehension): the hidden states once more, less the batch being computed."""
    batch = min(run.calibration_batch_size, run.nsamples)
    return (run.nsamples - batch) * run.seqlen * model.hidden * model.dtype_bytes


def attention_scores(model: ModelShape, batch: int, width: int, attention: str = "sdpa") -> int:
    """Attention probabilities of one batch: sdpa's fused kernels (flash, memory-efficient; the CPU flash kernel)
    never materialise them; eager attention holds heads x width^2 (and its softmax copy) per sequence."""
    if attention == "sdpa":
        return 0
    return 2 * batch * model.heads * width * width * model.dtype_bytes


def block_activations(model: ModelShape, batch: int, width: int) -> int:
    """One block's forward on one batch (decoder layer code): its input and residual, then the larger of the
    attention part (q, k, v, rotated q and k, the attention output, heads x head_dim wide for q; scores with
    attention_scores) and the MLP part (gated: gate output, its activation, up output and their product alive
    together; OPT: fc1 output and its ReLU)."""
    tokens = batch * width
    queries, kv = model.heads * model.head_dim, model.kv_heads * model.head_dim
    residual = 2 * tokens * model.hidden * model.dtype_bytes
    attention = tokens * (3 * queries + 3 * kv) * model.dtype_bytes + attention_scores(model, batch, width)
    mlp = (3 if model.gated_mlp else 2) * tokens * model.intermediate * model.dtype_bytes
    return residual + max(attention, mlp)


def statistics_hook_temporaries(model: ModelShape, run: RunShape) -> int:
    """InputStats.add, one sequence at a time: its fp32 copy (unless already fp32) and the squares, at the widest
    input (the MLP intermediate)."""
    copies = 1 if model.dtype_bytes == FP32 else 2
    return copies * run.seqlen * model.intermediate * FP32


def column_statistics(model: ModelShape, run: RunShape) -> int:
    """Wanda/RIA/magnitude's statistics of one block (InputStats without a Gram): C_in squares and the error sample,
    ERROR_SAMPLE_PER_SEQUENCE fp32 token rows per calibration sequence, for each distinct input."""
    sample = run.nsamples * min(run.seqlen, ERROR_SAMPLE_PER_SEQUENCE)
    return sum((1 + sample) * width * FP32 for width in model.distinct_inputs())


def gram_sums(model: ModelShape) -> int:
    """SparseGPT's statistics of one block (InputStats(gram=True)): a C_in x C_in fp32 Gram sum per distinct input,
    shared by the Linears fed that input, all alive while the block is pruned."""
    return sum((width * width + width) * FP32 for width in model.distinct_inputs())


# ---- terms: one layer's pruning ----------------------------------------------------------------------------------

def weight_fp32_copy(model: ModelShape, rows: int, cols: int) -> int:
    """layer.weight.float() handed to prune_layer (driver.prune_block): a copy unless the model is fp32."""
    return 0 if model.dtype_bytes == FP32 else rows * cols * FP32


def score_selection(model: ModelShape, rows: int, cols: int, device: str) -> int:
    """Magnitude, Wanda, RIA on one layer: the fp32 scores (|W| itself for magnitude; wanda_scores' and ria_scores'
    intermediates are freed before the selection) and the mask selection's workspace (masks.lowest_k_mask:
    SELECTION_BYTES per score)."""
    return weight_fp32_copy(model, rows, cols) + rows * cols * (FP32 + SELECTION_BYTES[device])


def cholesky_workspace(cols: int) -> int:
    """sparsegpt.prune_layer's H = 2/n Gram (C_in^2 fp32) and inverse_cholesky's damped copy, lower factor, its
    cholesky_inverse and the upper factor of that: five C_in^2 fp32 matrices at once."""
    return 5 * cols * cols * FP32


def sparsegpt_column_loop(rows: int, cols: int, blocksize: int) -> int:
    """sparsegpt.prune_layer's column loop: H and U (2 C_in^2), the keep mask and, at the first column block, the
    mm temporary errors @ U[block, rest] (C_out x (C_in - blocksize) fp32)."""
    return 2 * cols * cols * FP32 + rows * cols + rows * max(cols - blocksize, 0) * FP32


def sparsegpt_layer(model: ModelShape, rows: int, cols: int, blocksize: int) -> int:
    """SparseGPT on one layer: the fp32 weight handed in and its working copy W, then the larger of the Cholesky
    workspace and the column loop."""
    weights = weight_fp32_copy(model, rows, cols) + rows * cols * FP32
    return weights + max(cholesky_workspace(cols), sparsegpt_column_loop(rows, cols, blocksize))


def record_layer(model: ModelShape, rows: int, cols: int, gram: bool) -> int:
    """driver._prune_linear after prune_layer: the keep mask and the pruned fp32 weight, the dense fp32 clone for the
    reconstruction error, its difference and (Gram) diff @ gram and their product; pack_mask's uint8 copies."""
    error = (3 if gram else 1) * rows * cols * FP32
    return weight_fp32_copy(model, rows, cols) + rows * cols * (1 + 2 * FP32 + 3) + error


def layer_workspace(model: ModelShape, method: str, run: RunShape) -> int:
    """The largest per-layer workspace of the block's Linears for `method`."""
    peaks = []
    for _, rows, cols in model.linears():
        gram = method == "sparsegpt"
        prune = (sparsegpt_layer(model, rows, cols, run.sparsegpt_blocksize) if gram
                 else score_selection(model, rows, cols, run.device))
        peaks.append(max(prune, record_layer(model, rows, cols, gram)))
    return max(peaks)


# ---- terms: evaluation -------------------------------------------------------------------------------------------

def unpacked_mask_workspace(model: ModelShape, method: str) -> int:
    """apply_artifact on the largest layer: unpack_mask's shifted uint8 bits and the bool mask, then ~mask for
    masked_fill_ (1 byte each per weight); SparseGPT: the kept values and weight[mask] = values' int64 (row, col)
    index of every kept weight instead."""
    rows, cols = largest_linear(model)
    if method == "sparsegpt":
        kept = rows * cols // 2
        return rows * cols * 2 + kept * (model.dtype_bytes + 2 * INT64)
    return rows * cols * 3


def mapped_kept_values(model: ModelShape, method: str) -> int:
    """SparseGPT's kept values (half the blocks' weights at 0.5) on the host: apply_artifact keeps weights.safetensors
    open (safe_open maps it) while it applies every layer, so each layer's pages read stay resident to the end."""
    if method != "sparsegpt":
        return 0
    return model.blocks * sum(rows * cols for _, rows, cols in model.linears()) // 2 * model.dtype_bytes


def packed_attention_mask(batch: int, width: int, dtype_bytes: int, attention_types: int = 1) -> int:
    """scoring.layer_masks: the additive [rows, 1, width, width] mask in the model dtype per attention type and the
    bool building blocks (allowed, the key and query comparisons, a window's)."""
    return batch * width * width * (attention_types * (dtype_bytes + 1) + 2)


def output_logprobs(model: ModelShape, batch: int) -> int:
    """scoring.packed_logprobs: logits (model dtype) and their fp32 log-softmax at the continuation positions only."""
    return batch * CONTINUATION_READS_PER_ROW * model.vocab * (model.dtype_bytes + FP32)


def eval_width(model: ModelShape, run: RunShape) -> int:
    """The widest packed row: the configured context, at most what the model's positions allow."""
    return min(run.eval_context, model.max_positions)


# ---- stages ------------------------------------------------------------------------------------------------------

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


# ---- configs and the command -------------------------------------------------------------------------------------

@functools.cache
def load_shapes(path: str | Path = CONFIGS) -> dict[str, dict]:
    """configs.yaml: name -> the public config.json numbers (read once)."""
    return yaml.safe_load(Path(path).read_text())["models"]


def model_shape(name: str, dtype: str | None = None, configs: dict[str, dict] | None = None) -> ModelShape:
    """A model's shape by its params.yaml name (configs.yaml), or from a local folder's config.json."""
    folder = Path(name)
    if (folder / "config.json").is_file():
        return ModelShape.from_config(folder.name, json.loads((folder / "config.json").read_text()), dtype)
    configs = load_shapes() if configs is None else configs
    if name not in configs:
        raise ValueError(f"memory plan: no config for model {name!r}: add its config.json numbers to {CONFIGS}, "
                         "or give a folder holding a config.json")
    return ModelShape.from_config(name, configs[name], dtype)


def run_shape(params: dict, grid: str | None = None, device: str = "cuda", eval_context: int = 2048) -> RunShape:
    """The memory-relevant parameters of params.yaml (its selected grid unless `grid`); eval_context: the widest
    evaluation row in tokens (the datasets set it, not params.yaml)."""
    chosen = params["grids"][grid or params["grid"]]
    offload = params.get("offload") or {}
    return RunShape(nsamples=chosen["calibration"]["nsamples"], seqlen=chosen["calibration"]["seqlen"],
                    calibration_batch_size=params["pruning"]["calibration_batch_size"],
                    eval_batch_size=params["evaluation"]["batch_size"], eval_context=eval_context, device=device,
                    offload_gpu_gib=offload.get("max_gpu_memory"),
                    sparsegpt_blocksize=params["pruning"]["sparsegpt"]["blocksize"])


def plan(params: dict, grid: str | None = None, methods: list[str] | None = None, device: str = "cuda",
         models: list[str] | None = None, eval_context: int = 2048) -> list[Prediction]:
    """Every (model, stage) prediction of a grid: prune per method, then evaluate (after the heaviest apply)."""
    chosen = params["grids"][grid or params["grid"]]
    run = run_shape(params, grid, device, eval_context)
    predictions = []
    for name in models or chosen["models"]:
        spec = params.get("models", {}).get(name, {})
        model = model_shape(name, spec.get("dtype"))
        for method in methods or chosen["methods"]:
            predictions.append(predict(model, "prune", run, method))
        predictions.append(predict(model, "evaluate", run, "sparsegpt" if "sparsegpt" in (
            methods or chosen["methods"]) else (methods or chosen["methods"])[0]))
    return predictions


def format_table(predictions: list[Prediction], breakdown: bool = False) -> str:
    """A plain-text table: model, stage, peak GPU and host GiB, fits on 24/40/80 GB; optionally each phase's terms."""
    header = f"{'model':<16} {'stage':<22} {'GPU GiB':>8} {'host GiB':>9}  " + "  ".join(
        f"{size}GB" for size in GPU_SIZES_GB)
    lines = [header, "-" * len(header)]
    for prediction in predictions:
        fits = "  ".join(f"{'yes' if prediction.fits(size) else 'no':>4}" for size in GPU_SIZES_GB)
        lines.append(f"{prediction.model:<16} {prediction.stage:<22} {prediction.gpu_bytes / GIB:>8.2f} "
                     f"{prediction.host_bytes / GIB:>9.2f}  {fits}")
        if breakdown:
            for phase in prediction.phases:
                terms = [f"device {name} {size / GIB:.3f}" for name, size in phase.device.items()]
                terms += [f"host {name} {size / GIB:.3f}" for name, size in phase.host.items()]
                lines.append(f"    {phase.name}: " + "; ".join(terms))
    return "\n".join(lines)


def format_markdown(predictions: list[Prediction]) -> str:
    """One markdown row per model: each stage's peak GPU / host GiB side by side (docs/scaling.md's table)."""
    stages = list(dict.fromkeys(prediction.stage for prediction in predictions))
    rows: dict[str, dict[str, Prediction]] = {}
    for prediction in predictions:
        rows.setdefault(prediction.model, {})[prediction.stage] = prediction
    lines = ["| model | " + " | ".join(f"{stage}: GPU / host GiB" for stage in stages) + " |",
             "|---|" + "---:|" * len(stages)]
    for model, by_stage in rows.items():
        cells = [f"{by_stage[stage].gpu_bytes / GIB:.1f} / {by_stage[stage].host_bytes / GIB:.1f}"
                 if stage in by_stage else "--" for stage in stages]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--grid", help="a grid of params.yaml (default: its `grid`); `paper` for the paper's")
    parser.add_argument("--methods", nargs="+", help="default: the grid's")
    parser.add_argument("--model", nargs="+", dest="models", help="params.yaml names, configs.yaml names or folders")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--eval-context", type=int, default=2048, help="tokens of the widest evaluation row")
    parser.add_argument("--breakdown", action="store_true", help="print every phase's terms")
    parser.add_argument("--markdown", action="store_true", help="a markdown table, one row per model")
    args = parser.parse_args(argv)
    params = yaml.safe_load(args.params.read_text())
    predictions = plan(params, args.grid, args.methods, args.device, args.models, args.eval_context)
    run = run_shape(params, args.grid, args.device, args.eval_context)
    print(f"calibration {run.nsamples} x {run.seqlen} (batch {run.calibration_batch_size}), evaluation batch "
          f"{run.eval_batch_size} x {run.eval_context} tokens, device {run.device}, offload "
          f"{'off' if run.offload_gpu_gib is None else f'{run.offload_gpu_gib} GiB on the GPU'}")
    print(format_markdown(predictions) if args.markdown else format_table(predictions, args.breakdown))


__all__ = ["ModelShape", "Prediction", "RunShape", "model_shape", "plan", "planned_mb", "predict"]

if __name__ == "__main__":
    main()
