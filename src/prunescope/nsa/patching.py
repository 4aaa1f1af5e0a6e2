"""Patched forwards: one example's prompt run again with chosen neurons set to other activations (NSA step 2's exact
mediated effects, the pruned variants' paired comparison and the pairing test all measure with them).

A patched forward repeats what the intact pass already computed wherever the patch cannot have reached: the
tokens before the first changed position (it starts after the intact prefix's key/value cache) and the blocks
below the lowest patched layer (it resumes from what the intact pass's block below returned). With multi-token
choices the choices continue from the prompt's cache, so a resumed forward adds the intact key/value states of the
skipped blocks to it, and the continuation resumes from the intact continuation's block output too. Rows share a
forward where that saves work (forward_groups).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from prunescope.models.families import Family
from prunescope.models.offload import input_device
from prunescope.nsa.answers import PrefixCaches, choice_logprobs, margin, single_token
from prunescope.nsa.neurons import repeated, resume_points, resumed_at
from prunescope.nsa.prompts import Example


@contextlib.contextmanager
def _prompt_hooks(model, family: Family, layers: Sequence[int], rows: int, edit) -> Iterator[None]:
    """Call edit(layer_position, activation) on each studied layer's MLP intermediate activation (down_proj's
    input) in the prompt's pass only (a multi-token choice continues from the cache in a second pass); a returned
    tensor replaces the activation."""
    blocks, seen = family.blocks(model), set()

    def hook(position: int):
        def run(_module, args):
            if position in seen:
                return None
            seen.add(position)
            activation = args[0]  # (rows, tokens, width), or (rows x tokens, width) for OPT
            replaced = edit(position, activation.reshape(rows, -1, activation.shape[-1]))
            return None if replaced is None else (replaced.reshape(activation.shape), *args[1:])
        return run

    handles = [family.mlp_out(blocks[layer]).register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def prompt_logprobs(model, family, example: Example, embeds: torch.Tensor, layers, edit,
                    prefix: tuple[object, int] | None = None) -> torch.Tensor:
    """(rows, choices) log p(choice | prompt) for rows of embedded prompts (from the prefix's end on, with a prefix:
    answers.choice_logprobs), with `edit` on the prompt's pass."""
    with _prompt_hooks(model, family, layers, embeds.shape[0], edit):
        return choice_logprobs(model, [example.prompt.input_ids] * embeds.shape[0], example.choices, embeds, prefix)


def embedded_prompt(model, example: Example) -> torch.Tensor:
    return model.get_input_embeddings()(torch.tensor([example.prompt.input_ids], device=input_device(model))).detach()


def prompt_margin(model, example: Example, embeds: torch.Tensor) -> float:
    """The gold margin of one embedded prompt, no gradient."""
    with torch.no_grad():
        return float(margin(choice_logprobs(model, [example.prompt.input_ids], example.choices, embeds),
                            example.label)[0])


@dataclass
class IntactPrompt:
    """One example's intact prompt on one model, what its patched forwards start from: the embedded prompt (1,
    tokens, hidden), its gold margin, the intact pass's block outputs under the studied layers (resume_points:
    {block: [the prompt's, then the choices' continuation's]}; empty: every forward from block 0) and, built at the
    first forward that needs them and shared by the rest, the prompt's prefix caches."""

    model: object
    family: Family
    example: Example
    layers: Sequence[int]
    embeds: torch.Tensor
    margin: float
    below: dict[int, list] = field(default_factory=dict)
    _prefixes: PrefixCaches | None = field(default=None, repr=False)

    @property
    def length(self) -> int:
        return len(self.example.prompt.input_ids)

    @property
    def multi_token(self) -> bool:
        return not single_token(self.example.choices)

    def prefixes(self) -> PrefixCaches:
        if self._prefixes is None:
            self._prefixes = PrefixCaches(self.model, self.embeds)
        return self._prefixes

    def resumable(self) -> bool:
        """Whether forwards may resume above block 0: with multi-token choices, only where the whole prompt's cache
        holds every position (the skipped blocks' states are taken from it)."""
        return bool(self.below) and (not self.multi_token or self.prefixes().croppable)

    def resumed(self, block: int, start: int, rows: int):
        """A forward of `rows` patched rows from position `start` skipping blocks under `block` (resumed_at)."""
        if block == 0:
            return contextlib.nullcontext()
        prompt, *continuation = self.below[block - 1]
        outputs = [repeated(prompt, rows, start), *(repeated(output, rows) for output in continuation)]
        appended = {index: self.prefixes().states(index, start, rows) for index in range(block)} if (
            self.multi_token) else None
        return resumed_at(self.model, self.family, block, outputs, appended)


def intact_prompt(model, family: Family, example: Example, layers: Sequence[int]) -> IntactPrompt:
    """The example's IntactPrompt on `model`: one forward of the prompt, its block outputs recorded."""
    embeds = embedded_prompt(model, example)
    with resume_points(model, family, layers) as below:
        intact_margin = prompt_margin(model, example, embeds)
    return IntactPrompt(model, family, example, layers, embeds, intact_margin, below)


def occluded_pass(intact: IntactPrompt, baseline: torch.Tensor, rows: Sequence[Sequence[int]], columns
                  ) -> tuple[torch.Tensor, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """One forward of the prompt with each row's token positions replaced by `baseline`: its (rows, choices)
    log-probabilities and, per layer position p, (neurons, their occluded activations (rows, tokens, neurons)) for
    the neurons columns(p, occluded activations (rows, tokens, width)) picks, a (rows, neurons) index."""
    length = intact.length
    embeds = intact.embeds.repeat(len(rows), 1, 1)
    for row, positions in enumerate(rows):
        embeds[row, list(positions)] = baseline.to(embeds.dtype)
    kept = {}

    def capture(p, activation):
        occluded = activation[:, :length].float()
        picked = columns(p, occluded)
        kept[p] = (picked, occluded.gather(2, picked[:, None, :].expand(-1, length, -1)))

    with torch.no_grad():
        logprobs = prompt_logprobs(intact.model, intact.family, intact.example, embeds, intact.layers, capture)
    return logprobs, kept


# A forward's fixed cost per block, in token rows of work: what grouping patched rows into forwards weighs a forward
# of its own against the rows' shared work. Timed by hand on SmolLM2-135M (CPU, 1 thread): ~45 ms a 30-block forward
# whatever its size, against ~3 ms a token.
FORWARD_OVERHEAD = 16


def forward_groups(keys: Sequence[tuple[int, int]], length: int, blocks: int, batch_size: int, tail: int = 0
                   ) -> list[list[int]]:
    """Rows (by key: (first block run, first position run)) grouped into forwards of at most batch_size rows. A
    forward runs its rows from its lowest block and earliest position, and `tail` tokens more per row (a multi-token
    choice's continuation), so it costs (blocks run) x (FORWARD_OVERHEAD + rows x (positions run + tail)); in
    (block, position) order, a row joins the open forward where that costs less than a forward of its own."""
    def cost(block: int, position: int, rows: int) -> int:
        return (blocks - block) * (FORWARD_OVERHEAD + rows * (length - position + tail))

    groups: list[list[int]] = []
    earliest = 0  # the open forward's earliest position
    for row in sorted(range(len(keys)), key=lambda r: (keys[r], r)):
        block, position = keys[row]
        if groups and len(groups[-1]) < batch_size:
            lowest, rows = keys[groups[-1][0]][0], len(groups[-1])
            if cost(lowest, min(earliest, position), rows + 1) <= cost(lowest, earliest, rows) + cost(
                    block, position, 1):
                groups[-1].append(row)
                earliest = min(earliest, position)
                continue
        groups.append([row])
        earliest = position
    return groups


def patched_effects(intact: IntactPrompt, patches: Sequence[Sequence[tuple[int, int, torch.Tensor]]],
                    batch_size: int, starts: Sequence[int] | None = None) -> list[float]:
    """Per row of patches [(layer position, neuron, activations), ...]: margin(intact) - margin(intact with each
    of those neurons set to its activations at every prompt position), one forward row per patch row, at most
    `batch_size` rows per forward. Each forward resumes at its rows' lowest patched layer where the intact prompt
    is resumable: the blocks under it would only repeat the intact pass. With `starts` (per row: the first position
    where its activations differ from the intact ones, the occluded word's first token) a forward runs its rows'
    prompt from their earliest start on, after the intact prefix's key/value cache (answers.PrefixCaches): the
    tokens before it would only repeat the intact pass too. Rows share a forward where that saves work
    (forward_groups)."""
    layers, example = intact.layers, intact.example
    resumable = intact.resumable()
    starts = starts or [0] * len(patches)
    keys = [(min(intact.layers[p] for p, _, _ in listed) if resumable and listed else 0, start)
            for listed, start in zip(patches, starts, strict=True)]
    tail = len(example.choices) * (max(map(len, example.choices)) - 1)
    effects = [0.0] * len(patches)
    for rows in forward_groups(keys, intact.length, len(intact.family.blocks(intact.model)), batch_size, tail):
        batch = [patches[row] for row in rows]
        block, start = min(keys[row][0] for row in rows), min(starts[row] for row in rows)

        def patch(p, activation, batch=batch, start=start):
            listed = [(row, neuron, values) for row, found in enumerate(batch) for q, neuron, values in found if q == p]
            if not listed:
                return None
            patched = activation.clone()
            for row, neuron, values in listed:
                patched[row, :, neuron] = values[start:].to(patched.dtype)
            return patched

        prefix = (intact.prefixes().repeated(start, len(batch)), start) if start else None
        with torch.no_grad(), intact.resumed(block, start, len(batch)):
            logprobs = prompt_logprobs(intact.model, intact.family, example,
                                       intact.embeds[:, start:].repeat(len(batch), 1, 1), layers, patch, prefix)
        for row, value in zip(rows, (intact.margin - margin(logprobs, example.label)).double().cpu().tolist(),
                              strict=True):
            effects[row] = value
    return effects
