"""NSA's neurons: the MLP intermediate activations (the input of down_proj / fc2), summarised and ablated by hooks.

The association needs only sums over tokens (per-neuron mean and variance, per-word sums and counts) and the
importance only per-word sums of activation x gradient, so they are accumulated example by example, layer by
layer: memory is O(layers x words x neurons) plus one example's activations, whatever the number of examples
(never tokens x layers x neurons).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from prunescope.models.families import Family
from prunescope.models.offload import input_device, offloaded_weights_reread_in_backward
from prunescope.nsa.answers import gold_margin
from prunescope.nsa.prompts import Example


@dataclass
class LayerStats:
    """Sums over every prompt token of the examples seen, for one layer (float64).

    word_sums[w] and word_counts[w] cover the tokens of influential word w; word_importance[w] sums
    activation x d margin / d activation over those tokens (the first-order fall of the gold margin if the neuron
    were zeroed there) and neuron_importance the same over all prompt tokens, per example on average.
    """

    tokens: int
    sums: torch.Tensor
    squares: torch.Tensor
    word_sums: torch.Tensor
    word_counts: torch.Tensor
    word_importance: torch.Tensor | None = None
    neuron_importance: torch.Tensor | None = None

    @classmethod
    def empty(cls, n_words: int, width: int, importance: bool) -> LayerStats:
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        return cls(0, zeros(width), zeros(width), zeros(n_words, width), zeros(n_words),
                   zeros(n_words, width) if importance else None, zeros(width) if importance else None)

    @property
    def mean(self) -> torch.Tensor:
        return self.sums / max(self.tokens, 1)

    @property
    def std(self) -> torch.Tensor:
        return (self.squares / max(self.tokens, 1) - self.mean ** 2).clamp_min(0).sqrt()

    def word_means(self) -> torch.Tensor:
        """(words, neurons): the mean raw activation over each word's tokens (0 for a word never seen)."""
        return self.word_sums / self.word_counts.clamp_min(1)[:, None]

    def per_example_importance(self, examples: int) -> None:
        """neuron_importance as a mean per example, once every example is added."""
        self.neuron_importance /= max(examples, 1)

    def add(self, activations: torch.Tensor, token_words: torch.Tensor, importance: torch.Tensor | None) -> None:
        """Add one example's (tokens, neurons) activations; importance: its (tokens, neurons) activation x grad."""
        values = activations.to(torch.float64)
        tagged = token_words >= 0
        self.tokens += values.shape[0]
        self.sums += values.sum(0)
        self.squares += (values ** 2).sum(0)
        self.word_sums.index_add_(0, token_words[tagged], values[tagged])
        self.word_counts += torch.bincount(token_words[tagged], minlength=len(self.word_counts)).to(torch.float64)
        if importance is not None:
            importance = importance.to(torch.float64)
            self.word_importance.index_add_(0, token_words[tagged], importance[tagged])
            self.neuron_importance += importance.sum(0)


def vocabulary_ids(example: Example, index: Mapping[str, int]) -> torch.Tensor:
    """Per prompt token: the vocabulary index of the record word it belongs to, -1 for template tokens and other
    words (activation_stats' word_ids, LayerStats.add's token_words)."""
    prompt = example.prompt
    return torch.tensor([index.get(prompt.words[w], -1) if w >= 0 else -1 for w in prompt.token_words])


def activation_stats(model, family: Family, examples: Sequence[Example], word_ids: Sequence[torch.Tensor],
                     layers: Sequence[int], n_words: int, importance: bool = False, desc: str = "activations"
                     ) -> dict[int, LayerStats]:
    """{layer: LayerStats} over every prompt token of `examples`; word_ids[i] maps example i's tokens to
    vocabulary indices (-1: no influential word).

    With `importance`, each example is scored (nsa.answers) with gradients, and the gold margin's gradient w.r.t.
    each studied prompt activation gives activation x gradient (the choices read the prompt through its cache, so
    the gradient carries every choice's path).
    Without it, only the prompt runs, without the output head.
    """
    blocks = family.blocks(model)
    width = family.mlp_out(blocks[layers[0]]).in_features
    stats = {layer: LayerStats.empty(n_words, width, importance) for layer in layers}
    captured: dict[int, torch.Tensor] = {}

    def capture(layer: int):
        def hook(_module, args):
            activation = args[0]
            if importance:
                activation.retain_grad()
            captured.setdefault(layer, activation)  # the prompt's pass (choices may continue from its cache)
        return hook

    handles = [family.mlp_out(blocks[layer]).register_forward_pre_hook(capture(layer)) for layer in layers]
    device = input_device(model)
    try:
        for example, words in tqdm(list(zip(examples, word_ids, strict=True)), desc=desc, mininterval=10):
            ids = torch.tensor([example.prompt.input_ids], device=device)
            length = ids.shape[1]
            if importance:
                model.zero_grad(set_to_none=True)
                with offloaded_weights_reread_in_backward(model):
                    gold_margin(model, example, ids).sum().backward()
            else:
                with torch.no_grad():
                    model.base_model(input_ids=ids)  # no output head: ~20% of the cost
            for layer in layers:
                prompt = captured[layer].reshape(-1, width)[:length]  # one row: (1, tokens, width), or OPT's 2-D
                effect = prompt * captured[layer].grad.reshape(-1, width)[:length] if importance else None
                stats[layer].add(prompt.detach().float().cpu(), words,
                                 None if effect is None else effect.detach().float().cpu())
            captured.clear()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    if importance:
        for layer_stats in stats.values():
            layer_stats.per_example_importance(len(examples))
    return stats


def token_activations(model, family: Family, input_ids: Sequence[int], layer: int, neuron: int) -> list[float]:
    """One neuron's activation at every token of one prompt (for the token heatmap)."""
    captured = []
    handle = family.mlp_out(family.blocks(model)[layer]).register_forward_pre_hook(
        lambda _module, args: captured.append(args[0].reshape(len(input_ids), -1)[:, neuron].float().cpu()))
    device = input_device(model)
    try:
        with torch.no_grad():
            model.base_model(input_ids=torch.tensor([list(input_ids)], device=device))
    finally:
        handle.remove()
    return captured[0].tolist()


ABLATIONS = ("zero", "mean")


@contextlib.contextmanager
def ablated(model, family: Family, neurons: Mapping[int, Sequence[int]],
            values: Mapping[int, torch.Tensor] | None = None) -> Iterator[None]:
    """Set the given neurons ({layer: [neuron, ...]}) in every forward inside the block: to 0 (zero ablation), or
    with `values` ({layer: per-neuron value}, e.g. the dataset mean: mean ablation) to their value."""
    blocks = family.blocks(model)

    def replace(layer: int, indices: torch.Tensor):
        def hook(_module, args):
            activation = args[0].clone()
            fill = 0.0 if values is None else values[layer][indices].to(activation.device, activation.dtype)
            activation[..., indices] = fill
            return (activation, *args[1:])
        return hook

    handles = [family.mlp_out(blocks[layer]).register_forward_pre_hook(replace(layer, torch.tensor(sorted(indices))))
               for layer, indices in neurons.items() if indices]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def recorded_outputs(model, family: Family, layers: Sequence[int]) -> Iterator[dict[int, list]]:
    """{layer: what block `layer` returned in each forward inside the block, in order}, for resumed_at."""
    blocks, outputs = family.blocks(model), {}

    def record(layer: int):
        def hook(_module, _args, output):
            outputs.setdefault(layer, []).append(output)
        return hook

    handles = [blocks[layer].register_forward_hook(record(layer)) for layer in sorted(set(layers))]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def resumed_at(model, family: Family, layer: int, outputs: Sequence,
               appended: Mapping[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> Iterator[None]:
    """Forwards inside the block skip blocks 0 to layer - 1: in the n-th forward each returns outputs[n], what
    block layer - 1 returned in the n-th forward of the same input (recorded_outputs), so block `layer` and
    everything after it compute exactly what a full forward would. An ablation at layer >= `layer` needs the blocks
    below it run only once, not once per setting. `appended` ({block: (keys, values)}, the intact key/value states
    of the first forward's tokens) is added to that forward's cache in each skipped block's place, so that a second
    forward continuing from the cache (a multi-token choice) finds it as a full forward leaves it."""
    skipped = list(family.blocks(model))[:layer]
    saved = [block.__dict__.get("forward") for block in skipped]  # accelerate's hooks live on the instance
    calls = [0] * layer

    def skip(index: int):
        def forward(*_args, cache=None, **_kwargs):
            call = calls[index]
            if call >= len(outputs):
                raise RuntimeError(f"resumed_at: forward {call + 1} inside the block, but only {len(outputs)} "
                                   "recorded outputs to resume from")
            calls[index] += 1
            if call == 0 and appended:
                cache.update(*appended[index], index)
            return outputs[call]
        return forward

    for index, block in enumerate(skipped):
        block.forward = skip(index)
    try:
        yield
    finally:
        for block, forward in zip(skipped, saved, strict=True):
            if forward is None:
                del block.forward
            else:
                block.forward = forward


@contextlib.contextmanager
def resume_points(model, family: Family, layers: Sequence[int]) -> Iterator[dict[int, list]]:
    """What the block under each studied layer returns in each forward inside (the intact prompt's, and with
    multi-token choices their continuation's), kept after it for nsa.patching's resumed forwards."""
    with recorded_outputs(model, family, [layer - 1 for layer in layers if layer > 0]) as below:
        yield below


def repeated(output, rows: int, start: int = 0):
    """A one-row block output (a tensor, or a tuple led by one) as `rows` rows from position `start` on, detached."""
    if isinstance(output, tuple):
        return (repeated(output[0], rows, start), *output[1:])
    return output[:, start:].detach().repeat(rows, *[1] * (output.dim() - 1))
