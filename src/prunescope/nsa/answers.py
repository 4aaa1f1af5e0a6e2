"""What NSA explains: the gold answer's log-probability margin over the other choices.

Every NSA step scores the same quantity: word attribution (how much a word raises the margin), neuron importance
(how much a neuron's activation does) and the causal check (how much ablating neurons lowers it). The margin,
log p(gold) - logsumexp(log p(other choices)), is the log-odds of the gold answer for two choices; a word that
raises every choice alike does not move it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from prunescope.evaluation.scoring import Packed, layer_masks, packed_logprobs
from prunescope.models.offload import input_device
from prunescope.nsa.prompts import Example

OCCLUDED = -1  # a token id occlusion writes where a word was: embedded as the baseline (mean_embedding)
EMBEDDING_CHUNK = 32768  # vocabulary rows embedded at a time for the mean embedding


def mean_embedding(model) -> torch.Tensor:
    """The mean input embedding over the vocabulary (as the model embeds: Gemma's scale included): occlusion's
    baseline, which favours no label when the vocabulary does not (tested on a planted model), and keeps every
    other token at its position."""
    embed = model.get_input_embeddings()
    rows = embed.weight.shape[0]
    total = torch.zeros(embed.weight.shape[1], dtype=torch.float64, device=embed.weight.device)
    with torch.no_grad():
        for start in range(0, rows, EMBEDDING_CHUNK):
            ids = torch.arange(start, min(start + EMBEDDING_CHUNK, rows), device=embed.weight.device)
            total += embed(ids).to(torch.float64).sum(0)
    return (total / rows).to(embed.weight.dtype)


def embedded(model, ids: torch.Tensor, baseline: torch.Tensor | None) -> torch.Tensor:
    """The model's input embeddings of `ids`, with `baseline` wherever an id is OCCLUDED."""
    occluded = ids == OCCLUDED
    embeds = model.get_input_embeddings()(ids.clamp_min(0))
    if occluded.any():
        if baseline is None:
            raise ValueError("occluded tokens need a baseline embedding")
        embeds = torch.where(occluded[..., None], baseline.to(embeds.dtype), embeds)
    return embeds


def single_token(choices: Sequence[Sequence[int]]) -> bool:
    """Whether every choice is one token: then one forward of the prompt scores them all."""
    return all(len(choice) == 1 for choice in choices)


def prefix_cache(model, embeds: torch.Tensor):
    """The key/value cache of one embedded prompt (embeds: (1, tokens, hidden)): a forward of more tokens continues
    from it as the whole sequence would (choice_logprobs' prefix)."""
    with torch.no_grad():
        return model.base_model(inputs_embeds=embeds, use_cache=True).cache


class PrefixCaches:
    """One prompt's prefix caches, each for the forwards that continue from one position: cropped copies of the
    whole prompt's cache (one forward for all), or, where a sliding window already evicted early states from it, a
    forward of each prefix (once per position)."""

    def __init__(self, model, embeds: torch.Tensor):
        self.model, self.embeds, self.by_start = model, embeds, {}
        self.whole = prefix_cache(model, embeds)
        self.croppable = all(layer.keys is not None and layer.keys.shape[-2] == embeds.shape[1]
                             for layer in self.whole.layers)

    def repeated(self, start: int, rows: int):
        """A fresh cache of the prompt's first `start` tokens for `rows` rows (a forward appends to its cache)."""
        if self.croppable:
            cache = copy.deepcopy(self.whole)
            cache.crop(start - self.embeds.shape[1])
        else:
            if start not in self.by_start:
                self.by_start[start] = prefix_cache(self.model, self.embeds[:, :start])
            cache = copy.deepcopy(self.by_start[start])
        cache.batch_repeat_interleave(rows)
        return cache

    def states(self, layer: int, start: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Block `layer`'s cached keys and values of the prompt's tokens from `start` on, for `rows` rows (the whole
        prompt's cache must hold every position: croppable)."""
        cached = self.whole.layers[layer]
        return tuple(states[:, :, start:].repeat(rows, 1, 1, 1) for states in (cached.keys, cached.values))


def choice_logprobs(model, prompts: Sequence[Sequence[int]], choices: Sequence[Sequence[int]],
                    prompt_embeds: torch.Tensor | None = None, prefix: tuple[object, int] | None = None
                    ) -> torch.Tensor:
    """(prompts, choices): log p(choice | prompt) summed over the choice's tokens, the same choices after each prompt
    (occlusion's variants of one prompt, or one prompt).

    With single-token choices each prompt is one row, read at its last position (prompts right-padded: a causal
    model's scores at a position ignore later tokens). Otherwise the prompts (of equal length) run once and every
    choice continues from their key/value cache. Only positions that predict a choice token reach the output head.
    prompt_embeds (prompts, length, hidden), for the gradient attributions, replaces the embedded prompts. With
    prefix = (the cache of the prompts' shared first `start` tokens, start), prompt_embeds holds only the
    prompts' tokens from `start` on.
    """
    device = input_device(model)
    head = model.get_output_embeddings()
    cache, start = prefix if prefix is not None else (None, 0)
    if cache is not None and prompt_embeds is None:
        raise ValueError("a prefix cache needs the prompts' embedded rest (prompt_embeds)")
    options = {} if cache is None else {"cache": cache}
    if single_token(choices):
        width = max(map(len, prompts))
        ids = torch.tensor([list(p) + [0] * (width - len(p)) for p in prompts], device=device)
        hidden = _run(model, ids, prompt_embeds, **options).last_hidden_state  # the final norm included (all families)
        last = hidden[torch.arange(len(prompts), device=device), torch.tensor([len(p) - 1 - start for p in prompts])]
        return torch.log_softmax(head(last).float(), dim=-1)[:, [c[0] for c in choices]]
    if len({len(p) for p in prompts}) != 1:
        raise ValueError("multi-token choices are scored after prompts of one length")
    out = _run(model, torch.tensor([list(p) for p in prompts], device=device), prompt_embeds, use_cache=True,
               **options)
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


def variant_margins(model, example: Example, variants: torch.Tensor, baseline: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """The gold margin after each row of `variants` (the example's prompt with some tokens replaced, as occlusion
    makes them: OCCLUDED ids are embedded as `baseline`), with the tokens a row shares with the prompt computed once.

    One packed sequence holds the prompt, then each row from its first changed token on, then each row's choices: a
    tree of segments. A token sees the earlier tokens of its own segment and, up the tree, its ancestors' tokens
    before the position where its branch leaves them, so every token is computed as in its own full sequence
    (tested equal to gold_margin row by row), at about half the tokens of a forward per row.
    """
    device = input_device(model)
    prompt, rows = list(example.prompt.input_ids), variants.tolist()
    length = len(prompt)
    tokens, positions, segments = list(prompt), list(range(length)), [0] * length
    parents: list[tuple[int, int]] = [(-1, 0)]  # per segment: its parent and the position where it branches off
    reads = []
    for row in rows:
        start = next((i for i, (a, b) in enumerate(zip(row, prompt, strict=True)) if a != b), length)
        last, segment = length - 1, 0  # an unchanged row reads the prompt itself
        if start < length:
            segment = len(parents)
            parents.append((0, start))
            tokens += row[start:]
            positions += range(start, length)
            segments += [segment] * (length - start)
            last = len(tokens) - 1
        for choice in example.choices:
            reads.append(last)
            if len(choice) > 1:
                parents.append((segment, length))
                reads += range(len(tokens), len(tokens) + len(choice) - 1)
                tokens += choice[:-1]
                positions += range(length, length + len(choice) - 1)
                segments += [len(parents) - 1] * (len(choice) - 1)
    ids, position_ids = torch.tensor([tokens], device=device), torch.tensor([positions], device=device)
    allowed = _tree_allowed(torch.tensor(segments), torch.tensor(positions), parents).to(device)
    mask = layer_masks(model.config, allowed[None], position_ids, model.dtype)
    hidden = model.base_model(inputs_embeds=embedded(model, ids, baseline), position_ids=position_ids,
                              attention_mask=mask).last_hidden_state[0]
    logprobs = torch.log_softmax(model.get_output_embeddings()(hidden[torch.tensor(reads, device=device)]).float(),
                                 dim=-1)
    return margin(_choice_sums(logprobs, example.choices * len(rows)).view(len(rows), len(example.choices)),
                  example.label)


def _choice_sums(logprobs: torch.Tensor, choices: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per choice: its tokens' log-probabilities summed, from [reads, vocab] whose rows read the choices' tokens in
    order (choice after choice, token after token)."""
    targets = torch.tensor([token for choice in choices for token in choice], device=logprobs.device)
    owners = torch.tensor([index for index, choice in enumerate(choices) for _ in choice], device=logprobs.device)
    return torch.zeros(len(choices), dtype=logprobs.dtype, device=logprobs.device).index_add_(
        0, owners, logprobs.gather(1, targets[:, None])[:, 0])


def _tree_allowed(segments: torch.Tensor, positions: torch.Tensor, parents: list[tuple[int, int]]) -> torch.Tensor:
    """Which keys each query sees [query, key] in variant_margins' tree: visible[s, a] = the positions of segment a
    that segment s sees (all of its own; an ancestor's below the smallest branch position on the way up; none
    else); scoring.layer_masks adds sliding windows."""
    count = len(parents)
    cutoff = torch.zeros((count, count), dtype=torch.long)
    for segment in range(count):
        cutoff[segment, segment] = torch.iinfo(torch.long).max
        parent, bound = parents[segment]
        while parent >= 0:
            cutoff[segment, parent] = bound
            parent, branch = parents[parent]
            bound = min(bound, branch)
    width = len(segments)
    earlier = torch.ones((width, width), dtype=torch.bool).tril()
    return earlier & (positions[None, :] < cutoff[segments[:, None], segments[None, :]])


def example_batches(examples: Sequence[Example], batch_size: int) -> list[list[int]]:
    """Example indices in batches of `batch_size`, longest packed row first (little padding in each batch)."""
    order = sorted(range(len(examples)), key=lambda i: (-_packed_length(examples[i]), i))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def _packed_length(example: Example) -> int:
    return len(example.prompt.input_ids) + sum(len(choice) - 1 for choice in example.choices)


def batch_scores(model, examples: Sequence[Example]) -> tuple[list[float], list[bool]]:
    """Per example: the gold margin and whether the gold choice has the highest log-probability (lm-eval's acc),
    from one packed forward over the batch (each prompt with all its choices in one row, scoring.packed_logprobs).
    """
    rows = [Packed.of(tuple(e.prompt.input_ids), e.choices) for e in examples]
    logprobs = packed_logprobs(model, rows, pad_id=0)  # padding is masked and never read: any id will do
    sums = _choice_sums(logprobs, [choice for e in examples for choice in e.choices])
    margins, correct = [], []
    for example, choice_sums in zip(examples, sums.split([len(e.choices) for e in examples]), strict=True):
        margins.append(float(margin(choice_sums[None], example.label)[0]))
        correct.append(int(choice_sums.argmax()) == example.label)
    return margins, correct


def score_examples(model, examples: Sequence[Example], batch_size: int = 16) -> tuple[list[float], list[bool]]:
    """batch_scores over all examples, `batch_size` per forward, in the examples' order."""
    margins, correct = [0.0] * len(examples), [False] * len(examples)
    with torch.no_grad():
        for batch in example_batches(examples, batch_size):
            for i, m, c in zip(batch, *batch_scores(model, [examples[i] for i in batch]), strict=True):
                margins[i], correct[i] = m, c
    return margins, correct
