"""The memory plan's terms: each a small function named for what it holds, its docstring saying where in the code
the memory is taken (bytes)."""

from __future__ import annotations

import math

from prunescope.memory.shapes import ModelShape, RunShape

GIB = 2 ** 30
FP32, INT64 = 4, 8
# pruning.stats.ERROR_SAMPLE_PER_SEQUENCE (tests check they agree; this module imports no torch)
ERROR_SAMPLE_PER_SEQUENCE = 16
# Mask selection (pruning/masks.lowest_k_mask), bytes per score. CPU, kth_lowest_k_mask: kthvalue's contiguous value
# copy and int64 index buffer (12), then the tie accounting's bool masks and their int64 sums: 18 measured in all.
# CUDA, sorted_lowest_k_mask: a stable radix sort of the scores with int64 indices, keys and values double-buffered.
SELECTION_BYTES = {"cpu": 18, "cuda": 2 * (FP32 + INT64)}
# The packed evaluation scorer reads the log-softmax at the continuation positions only (scoring.packed_logprobs):
# multiple-choice continuations of a packed row, all choices together (a handful of tokens each).
CONTINUATION_READS_PER_ROW = 32


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
