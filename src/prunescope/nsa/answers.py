"""What NSA explains: the gold answer's log-probability margin over the other choices.

Every NSA step scores the same quantity: word attribution (how much a word raises the margin), neuron importance
(how much a neuron's activation does) and the causal check (how much ablating neurons lowers it). The margin,
log p(gold) - logsumexp(log p(other choices)), is the log-odds of the gold answer for two choices; a word that
raises every choice alike does not move it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from prunescope.nsa.words import Example


def single_token(choices: Sequence[Sequence[int]]) -> bool:
    """Whether every choice is one token: then one forward of the prompt scores them all."""
    return all(len(choice) == 1 for choice in choices)


def choice_logprobs(model, prompts: Sequence[Sequence[int]], choices: Sequence[Sequence[int]],
                    prompt_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """(prompts, choices): log p(choice | prompt) summed over the choice's tokens, the same choices after each prompt
    (occlusion's variants of one prompt, or one prompt).

    With single-token choices each prompt is one row, read at its last position (prompts right-padded: a causal
    model's scores at a position ignore later tokens). Otherwise the prompts (of equal length) run once and every
    choice continues from their key/value cache. Only positions that predict a choice token reach the output head.
    prompt_embeds (prompts, length, hidden), for the gradient attributions, replaces the embedded prompts.
    """
    device = model.get_input_embeddings().weight.device
    head = model.get_output_embeddings()
    if single_token(choices):
        width = max(map(len, prompts))
        ids = torch.tensor([list(p) + [0] * (width - len(p)) for p in prompts], device=device)
        hidden = _run(model, ids, prompt_embeds).last_hidden_state  # the final norm included, for every family here
        last = hidden[torch.arange(len(prompts), device=device), torch.tensor([len(p) - 1 for p in prompts])]
        return torch.log_softmax(head(last).float(), dim=-1)[:, [c[0] for c in choices]]
    if len({len(p) for p in prompts}) != 1:
        raise ValueError("multi-token choices are scored after prompts of one length")
    out = _run(model, torch.tensor([list(p) for p in prompts], device=device), prompt_embeds, use_cache=True)
    longest = max(map(len, choices))
    continuation = torch.tensor([list(c) + [0] * (longest - len(c)) for c in choices], device=device)
    out.cache.batch_repeat_interleave(len(choices))
    rows = continuation.repeat(len(prompts), 1)  # (prompt, choice) rows, prompt-major
    hidden = model.base_model(input_ids=rows[:, :-1], cache=out.cache).last_hidden_state if longest > 1 else None
    first = out.last_hidden_state[:, -1:].repeat_interleave(len(choices), 0)  # predicts each choice's first token
    states = first if hidden is None else torch.cat([first, hidden], dim=1)
    token_logprobs = torch.log_softmax(head(states).float(), dim=-1).gather(-1, rows[..., None])[..., 0]
    valid = torch.tensor([[t < len(c) for t in range(longest)] for c in choices], device=device).repeat(len(prompts), 1)
    return (token_logprobs * valid).sum(-1).view(len(prompts), len(choices))


def _run(model, ids: torch.Tensor, embeds: torch.Tensor | None, **options):
    if embeds is None:
        return model.base_model(input_ids=ids, **options)
    return model.base_model(inputs_embeds=embeds, **options)


def margin(logprobs: torch.Tensor, label: int) -> torch.Tensor:
    """Per row: log p(gold) minus logsumexp of the other choices' log p (the gold log p alone for one choice)."""
    others = torch.cat([logprobs[:, :label], logprobs[:, label + 1:]], dim=1)
    if others.shape[1] == 0:
        return logprobs[:, label]
    return logprobs[:, label] - torch.logsumexp(others, dim=1)


def gold_margin(model, example: Example, prompt_ids: torch.Tensor, prompt_embeds: torch.Tensor | None = None
                ) -> torch.Tensor:
    """The margin of `example`'s gold answer for each row of prompt_ids (rows: variants of its prompt), or of
    prompt_embeds (rows of embedded variants)."""
    return margin(choice_logprobs(model, prompt_ids.tolist(), example.choices, prompt_embeds), example.label)


def score_examples(model, examples: Sequence[Example], batch_rows: int = 32) -> tuple[list[float], list[bool]]:
    """Per example: the gold margin and whether the gold choice has the highest log-probability (lm-eval's acc).

    Examples with the same choices (fixed label words) are scored `batch_rows` rows per forward."""
    margins, correct = [0.0] * len(examples), [False] * len(examples)
    groups: dict[tuple, list[int]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(tuple(map(tuple, example.choices)), []).append(index)
    with torch.no_grad():
        for choices, indices in groups.items():
            per_batch = batch_rows if single_token(choices) else 1  # multi-token: one prompt, its cache per choice
            for start in range(0, len(indices), per_batch):
                batch = indices[start:start + per_batch]
                logprobs = choice_logprobs(model, [examples[i].prompt.input_ids for i in batch], choices)
                for row, i in enumerate(batch):
                    margins[i] = float(margin(logprobs[row:row + 1], examples[i].label)[0])
                    correct[i] = int(logprobs[row].argmax()) == examples[i].label
    return margins, correct
