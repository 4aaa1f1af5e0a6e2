"""Multiple-choice log-likelihoods with each context encoded once.

lm-eval's HFLM runs one forward pass of context + continuation per (example, choice) pair and a
log-softmax over the whole vocabulary at every position of the batch. For multiple choice the choices of
one example share their context, and only the continuation positions are ever read. SharedContextLM
encodes each distinct context once (left-padded, keeping its key/value cache), applies the output head only
where a continuation token is predicted, and scores every choice's remaining tokens in one short pass
over the copied cache. The answers are lm-eval's (log-probability, is-greedy) pairs, equal to HFLM's up to
float rounding (tested); everything else (prompts, metrics, aggregation) stays lm-eval's.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm
from transformers import DynamicCache

Request = tuple[tuple[str, str], list[int], list[int]]


class SharedContextLM(HFLM):
    """HFLM for decoder-only models whose loglikelihood shares each context across its continuations."""

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        too_long = [i for i, (_, context, continuation) in enumerate(requests)
                    if len(context) + len(continuation) > self.max_length]
        if self.backend != "causal" or too_long:
            # lm-eval truncates over-long inputs from the left, which no shared context survives
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        by_context = defaultdict(list)
        for index, (_, context, continuation) in enumerate(requests):
            by_context[tuple(context)].append((index, continuation))
        contexts = sorted(by_context, key=lambda context: (-len(context), context))
        answers: list[tuple[float, bool] | None] = [None] * len(requests)
        batch_size = override_bs or (self.batch_size if isinstance(self.batch_size, int) else 16)
        with tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                  desc="Scoring choices (shared contexts)") as progress:
            for start in range(0, len(contexts), batch_size):
                batch = contexts[start:start + batch_size]
                choices = [(row, index, continuation)
                           for row, context in enumerate(batch) for index, continuation in by_context[context]]
                for (_, index, _), answer in zip(choices, self._score_batch(batch, choices), strict=True):
                    answers[index] = answer
                    self.cache_hook.add_partial("loglikelihood", requests[index][0], answer)
                progress.update(len(choices))
        return answers

    @torch.no_grad()
    def _score_batch(self, contexts: list[tuple[int, ...]],
                     choices: list[tuple[int, int, list[int]]]) -> list[tuple[float, bool]]:
        """(sum log-prob, every token greedy) of each (context row, request index, continuation)."""
        pad_id = self.tokenizer.pad_token_id or 0
        context_ids, context_mask = left_pad(contexts, pad_id, self.device)
        hidden, cache = self._decode(context_ids, context_mask, positions_of(context_mask), cache=None)
        first_logprobs = self._logprobs(hidden[:, -1])  # [contexts, vocab]: each continuation's first token
        scores = [token_scores(first_logprobs[row], continuation[:1]) for row, _, continuation in choices]

        # the remaining tokens of multi-token continuations, longest first so each pass pads little
        tails = sorted((choice for choice, (_, _, continuation) in enumerate(choices) if len(continuation) > 1),
                       key=lambda choice: -len(choices[choice][2]))
        context_lengths = context_mask.sum(dim=1)
        for start in range(0, len(tails), 2 * len(contexts)):  # tails are short: twice the rows
            chunk = tails[start:start + 2 * len(contexts)]
            rows = torch.tensor([choices[choice][0] for choice in chunk], device=self.device)
            tail_ids, tail_mask = right_pad([choices[choice][2][:-1] for choice in chunk], pad_id, self.device)
            tail_positions = context_lengths[rows, None] + torch.arange(tail_ids.shape[1], device=self.device)
            tail_hidden, _ = self._decode(tail_ids, torch.cat([context_mask[rows], tail_mask], dim=1),
                                          tail_positions, cache=select_rows(cache, rows))
            tail_logprobs = self._logprobs(tail_hidden)
            for position, choice in enumerate(chunk):
                continuation = choices[choice][2]
                logprob, greedy = token_scores(tail_logprobs[position, :len(continuation) - 1], continuation[1:])
                scores[choice] = (scores[choice][0] + logprob, scores[choice][1] and greedy)
        return scores

    def _decode(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache):
        """The decoder's final hidden states (before the output head) and its key/value cache."""
        output = self.model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                       cache=cache, use_cache=True)
        return output.last_hidden_state, output.past_key_values

    def _logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.get_output_embeddings()(hidden)[..., :self.vocab_size]
        return F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)


def token_scores(logprobs: torch.Tensor, targets: list[int]) -> tuple[float, bool]:
    """Summed log-prob of the target tokens and whether each is the argmax; logprobs: [tokens, vocab]."""
    logprobs = logprobs.reshape(len(targets), -1)
    target_ids = torch.tensor(targets, device=logprobs.device)
    total = logprobs.gather(1, target_ids[:, None]).sum()
    return float(total), bool((logprobs.argmax(dim=1) == target_ids).all())


def select_rows(cache: DynamicCache, rows: torch.Tensor) -> DynamicCache:
    """A new cache holding the given batch rows (repeats allowed); the original is left as it was."""
    return DynamicCache([(layer.keys.index_select(0, rows), layer.values.index_select(0, rows))
                         for layer in cache.layers])


def left_pad(sequences: list[tuple[int, ...]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask with every sequence ending at the last column."""
    width = max(map(len, sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, width - len(sequence):] = torch.tensor(sequence)
        mask[row, width - len(sequence):] = 1
    return ids.to(device), mask.to(device)


def right_pad(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask with every sequence starting at column 0 (at least one column)."""
    width = max(1, max(map(len, sequences)))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, :len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, :len(sequence)] = 1
    return ids.to(device), mask.to(device)


def positions_of(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counting only unmasked tokens (left padding gets position 0)."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)
