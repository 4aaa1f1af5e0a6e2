"""NSA step 2: the learned neuron-word association A (words x neurons), non-negative and sparse.

Minimises mean_t ||z_t - A^T x_t||^2 + lambda ||A||_1 subject to A >= 0 by projected Adam, where z_t are the
standardised activations of token t (per-neuron mean removed, divided by the neuron's standard deviation floored
at a per-layer scale: see neuron_scale) and x_t the one-hot indicator of the influential word token t belongs to
(zero for other tokens). With one-hot x the optimum has a closed form, the soft-thresholded per-word mean of z,
which the tests hold the optimiser to. Everything is computed from streamed sums (nsa.neurons.LayerStats).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prunescope.nsa.neurons import LayerStats

NUMERICAL_ZERO = 1e-3  # z-score units: Adam's steps around the L1 kink leave ~1e-5 residues where the optimum is 0


@dataclass(frozen=True)
class ZSums:
    """What the loss needs of z, per layer: per-word sums of z (layers, words, neurons), the words' token counts,
    sum_t ||z_t||^2 (layers,) and the number of tokens."""

    word_sums: torch.Tensor
    counts: torch.Tensor
    squares: torch.Tensor
    tokens: int


def neuron_scale(std: torch.Tensor, floor: float) -> torch.Tensor:
    """Each neuron's z-score divisor: its own standard deviation, floored at `floor` x the layer's median.

    A plain per-neuron z-score erases activation size: a near-silent neuron (std 0.01) slightly higher on a word
    would get as large an association as one firing at 100 on it. Below the floor a neuron is measured on the
    layer's typical scale, so only a neuron whose activation really moves with a word can be matched.
    """
    return std.clamp_min(max(floor * float(std.median()), 1e-6))


def zsums_from_stats(stats: Sequence[LayerStats], floor: float) -> ZSums:
    """ZSums of several layers from their streamed statistics (all over the same tokens)."""
    word_sums, squares = [], []
    for layer in stats:
        mean, std = layer.mean, layer.std
        scale = neuron_scale(std, floor)
        word_sums.append((layer.word_sums - layer.word_counts[:, None] * mean) / scale)
        squares.append((layer.tokens * std ** 2 / scale ** 2).sum())
    return ZSums(torch.stack(word_sums), stats[0].word_counts, torch.stack(squares), stats[0].tokens)


def zsums_from_activations(activations: torch.Tensor, token_words: torch.Tensor, n_words: int,
                           floor: float = 0.0) -> ZSums:
    """ZSums of one layer's (tokens, neurons) activations held in memory (tests and small cases)."""
    layer = LayerStats.empty(n_words, activations.shape[1], importance=False)
    layer.add(activations, token_words, None)
    return zsums_from_stats([layer], floor)


def fit_association(z: ZSums, epochs: int, lr: float, lam: float, seed: int = 0) -> torch.Tensor:
    """A (layers, words, neurons) >= 0 by full-batch projected Adam on mean_t ||z_t - A^T x_t||^2 + lam ||A||_1.

    With one-hot x_t the loss expands per word into counts, per-word sums of z and sum_t ||z_t||^2, so each epoch
    costs O(words x neurons), not O(tokens). The layers' losses are independent and Adam is elementwise, so each
    layer gets the A its own fit would (tested), in one optimizer loop.
    """
    sums, counts = z.word_sums.to(torch.float64), z.counts.to(torch.float64)
    generator = torch.Generator().manual_seed(seed)
    start = 0.01 * torch.rand(sums.shape[1], sums.shape[2], generator=generator, dtype=torch.float64)
    association = start.expand(sums.shape[0], -1, -1).clone().requires_grad_()
    optimizer = torch.optim.Adam([association], lr=lr)
    # lr decays linearly to 0: with a constant lr, projected Adam keeps oscillating around the L1 kink at zero
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1 - epoch / epochs)
    constant = z.squares.to(torch.float64).sum()  # no gradient
    for _ in range(epochs):
        optimizer.zero_grad()
        squared = (counts[None, :, None] * association ** 2 - 2 * association * sums).sum()
        loss = (squared + constant) / max(z.tokens, 1) + lam * association.abs().sum()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            association.clamp_(min=0)
    return association.detach().masked_fill(association.detach() < NUMERICAL_ZERO, 0.0).float()


def closed_form_association(z: ZSums, lam: float) -> torch.Tensor:
    """The exact minimiser for one-hot x: max(0, mean of z over word w's tokens - lambda * T / (2 * count_w))."""
    counts = z.counts.to(torch.float64).clamp_min(1)[None, :, None]
    return (z.word_sums.to(torch.float64) / counts - lam * z.tokens / (2 * counts)).clamp_min(0).float()


def top_words(association: torch.Tensor, vocabulary: list[str], k: int) -> dict[int, list[tuple[str, float]]]:
    """Per neuron with any association, its k strongest words and their weights."""
    result = {}
    for neuron in torch.nonzero(association.sum(0) > 0).flatten().tolist():
        column = association[:, neuron]
        order = torch.argsort(-column, stable=True)[:k]
        result[neuron] = [(vocabulary[i], round(float(column[i]), 6)) for i in order.tolist() if column[i] > 0]
    return result
