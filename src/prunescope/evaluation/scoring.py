"""Multiple-choice log-likelihoods with each context encoded once.

lm-eval's HFLM runs one forward pass of context + continuation per (example, choice) pair and a
log-softmax over the whole vocabulary at every position of the batch. For multiple choice the choices of
one example share their context, and only the continuation positions are ever read. SharedContextLM packs
each distinct context with all of its continuations into one sequence: an attention mask lets every
continuation see the context and its own earlier tokens only, and position ids restart after the context
for each continuation, so every token is computed exactly as in its own context + continuation sequence.
Sliding-window layers (Gemma 3's local layers, Mistral) get a mask of their own that also hides keys a window or
more positions back, as the model's own masks do. The output head and log-softmax run only at the positions that
predict a continuation token. The answers are lm-eval's (log-probability, is-greedy) pairs, equal to HFLM's up to
float rounding (tested); everything else (prompts, metrics, aggregation) stays lm-eval's.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from prunescope.models.offload import input_device

logger = logging.getLogger(__name__)
Request = tuple[tuple[str, str], list[int], list[int]]
PACKED_ATTENTION = ("sdpa", "eager")  # attention implementations that take the packed 4-D additive mask
CONTEXT, PADDING = 0, -1  # segment ids: the context, padding; continuation j is segment j + 1


@dataclass
class Packed:
    """One context followed by the continuations' tokens but their last (no position reads past it)."""

    tokens: list[int]
    positions: list[int]
    segments: list[int]
    reads: list[list[int]]  # per continuation: the packed indices whose outputs predict its tokens

    @classmethod
    def of(cls, context: tuple[int, ...], continuations: list[list[int]]) -> Packed:
        tokens, positions, segments = list(context), list(range(len(context))), [CONTEXT] * len(context)
        reads = []
        for segment, continuation in enumerate(continuations, start=1):
            tail = continuation[:-1]
            reads.append([len(context) - 1, *range(len(tokens), len(tokens) + len(tail))])
            tokens += tail
            positions += range(len(context), len(context) + len(tail))
            segments += [segment] * len(tail)
        return cls(tokens, positions, segments, reads)


class SharedContextLM(HFLM):
    """HFLM for decoder-only models whose loglikelihood shares each context across its continuations."""

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        attention = getattr(self.model.config, "_attn_implementation", None)
        if self.backend != "causal" or attention not in PACKED_ATTENTION:
            if self.backend == "causal":
                logger.warning("attention implementation %r takes no packed 4-D mask: all %d requests scored by "
                               "lm-eval's own loop (load the model with attn_implementation='sdpa' for the packed "
                               "scorer)", attention, len(requests))
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        answers: list[tuple[float, bool] | None] = [None] * len(requests)
        too_long = [i for i, (_, context, continuation) in enumerate(requests)
                    if len(context) + len(continuation) > self.max_length]
        if too_long:
            # lm-eval truncates an over-long input from the left, which no shared context survives: those requests
            # alone go through lm-eval's own loop
            logger.info("%d of %d requests exceed max_length %d: scored by lm-eval's own loop (left-truncated)",
                        len(too_long), len(requests), self.max_length)
            for index, answer in zip(too_long, super()._loglikelihood_tokens(
                    [requests[i] for i in too_long], disable_tqdm, override_bs), strict=True):
                answers[index] = answer
        skipped = set(too_long)
        fitting = [i for i in range(len(requests)) if i not in skipped]
        by_context, packed = pack_by_context([requests[i] for i in fitting])
        by_context = {context: [fitting[i] for i in indices] for context, indices in by_context.items()}
        order = sorted(by_context, key=lambda context: (-len(packed[context].tokens), context))  # little padding
        batch_size = override_bs or (self.batch_size if isinstance(self.batch_size, int) else 16)
        with tqdm(total=len(fitting), disable=disable_tqdm or self.rank != 0,
                  desc="Scoring choices (shared contexts)") as progress:
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                indices = [index for context in batch for index in by_context[context]]
                scores = self._score_batch([packed[context] for context in batch],
                                           [requests[index][2] for index in indices])
                for index, answer in zip(indices, scores, strict=True):
                    answers[index] = answer
                    self.cache_hook.add_partial("loglikelihood", requests[index][0], answer)
                progress.update(len(indices))
        return answers

    @torch.no_grad()
    def _score_batch(self, rows: list[Packed], continuations: list[list[int]]) -> list[tuple[float, bool]]:
        """(sum log-prob, every token greedy) of each continuation, in the rows' order."""
        logprobs = packed_logprobs(self.model, rows, self.tokenizer.pad_token_id or 0, self.vocab_size,
                                   self.softmax_dtype)
        answers, first = [], 0
        for continuation in continuations:
            answers.append(token_scores(logprobs[first:first + len(continuation)], continuation))
            first += len(continuation)
        return answers


def packed_logprobs(model, rows: list[Packed], pad_id: int, vocab_size: int | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[reads, vocab] log-softmax at every read position of the rows, row by row, continuation by continuation,
    token by token (the order of Packed.reads): one forward over the left-padded batch, the output head only at
    the read positions."""
    device = input_device(model)
    ids, positions, segments = left_pad(rows, pad_id, device)
    mask = layer_masks(model.config, packed_allowed(segments), positions, model.dtype)
    hidden = model.base_model(input_ids=ids, position_ids=positions, attention_mask=mask).last_hidden_state
    width = ids.shape[1]
    reads = [(row, width - len(packed.tokens) + index)
             for row, packed in enumerate(rows) for read in packed.reads for index in read]
    row_index, column_index = (torch.tensor(axis, device=device) for axis in zip(*reads, strict=True))
    logits = model.get_output_embeddings()(hidden[row_index, column_index])[:, :vocab_size]
    return F.log_softmax(logits, dim=-1, dtype=dtype)


def pack_by_context(requests: list[Request]) -> tuple[dict[tuple, list[int]], dict[tuple, Packed]]:
    """The request indices of each distinct context, and that context packed with all its continuations."""
    by_context = defaultdict(list)
    for index, (_, context, _) in enumerate(requests):
        by_context[tuple(context)].append(index)
    packed = {context: Packed.of(context, [requests[i][2] for i in indices]) for context, indices in by_context.items()}
    return by_context, packed


def token_scores(logprobs: torch.Tensor, targets: list[int]) -> tuple[float, bool]:
    """Summed log-prob of the target tokens and whether each is the argmax; logprobs: [tokens, vocab]."""
    target_ids = torch.tensor(targets, device=logprobs.device)
    total = logprobs.gather(1, target_ids[:, None]).sum()
    return float(total), bool((logprobs.argmax(dim=1) == target_ids).all())


def left_pad(rows: list[Packed], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, position ids and segment ids with every row ending at the last column."""
    width = max(len(packed.tokens) for packed in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.full((len(rows), width), PADDING, dtype=torch.long)
    for row, packed in enumerate(rows):
        start = width - len(packed.tokens)
        ids[row, start:] = torch.tensor(packed.tokens)
        positions[row, start:] = torch.tensor(packed.positions)
        segments[row, start:] = torch.tensor(packed.segments)
    return ids.to(device), positions.to(device), segments.to(device)


def packed_allowed(segments: torch.Tensor) -> torch.Tensor:
    """Which keys each query sees [rows, query, key]: the earlier context tokens and the earlier tokens of its own
    continuation; padding sees only itself (its outputs are never read)."""
    query, key = segments[:, :, None], segments[:, None, :]
    width = segments.shape[1]
    causal = torch.ones((width, width), dtype=torch.bool, device=segments.device).tril()
    allowed = causal & (key != PADDING) & ((key == CONTEXT) | (key == query))
    return allowed | torch.eye(width, dtype=torch.bool, device=segments.device)


def attention_windows(config) -> dict[str | None, int | None]:
    """{attention type: sliding window in tokens, None for full attention} of the model's layers: per
    config.layer_types where the config has them (Gemma 3, Qwen2), else one type (None) windowed by
    config.sliding_window if set (Mistral)."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if not layer_types:
        return {None: window}
    return {kind: window if kind == "sliding_attention" else None for kind in dict.fromkeys(layer_types)}


def layer_masks(config, allowed: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype
                ) -> torch.Tensor | dict[str, torch.Tensor]:
    """Additive attention mask(s) [rows, 1, query, key] from `allowed` [rows, query, key]: a sliding-window type
    also hides keys `window` or more positions (position ids, not packed columns) before the query, as transformers'
    sliding_window_overlay does. One tensor for a model of one attention type; else {layer type: mask}, which
    models with config.layer_types take as their ready mask mapping."""
    masks = {}
    for kind, window in attention_windows(config).items():
        seen = allowed if window is None else allowed & (positions[:, :, None] - positions[:, None, :] < window)
        mask = torch.zeros(seen.shape, dtype=dtype, device=seen.device)  # on the model's device, as the ids
        masks[kind] = mask.masked_fill(~seen, torch.finfo(dtype).min)[:, None]
    return masks if len(masks) > 1 else next(iter(masks.values()))
