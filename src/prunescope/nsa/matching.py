"""NSA step 2: the learned neuron-word association A (words x neurons), non-negative and sparse.

Minimises mean_t ||z_t - A^T x_t||^2 + lambda ||A||_1 subject to A >= 0 by projected Adam, where z_t are the
z-scored activations of token t and x_t the one-hot indicator of the influential word token t belongs to (zero for
other tokens). With one-hot x the optimum has a closed form, the soft-thresholded per-word mean of z, which the
tests hold the optimiser to.
"""

from __future__ import annotations

import torch

NUMERICAL_ZERO = 1e-3  # z-score units: Adam's steps around the L1 kink leave ~1e-5 residues where the optimum is 0


def zscore(activations: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z, mean, std) per neuron over all tokens, so neurons that fire everywhere do not win every word."""
    mean = activations.mean(0)
    std = activations.std(0, unbiased=False).clamp_min(eps)
    return (activations - mean) / std, mean, std


def fit_association(z: torch.Tensor, token_words: torch.Tensor, n_words: int, epochs: int, lr: float,
                    lam: float, seed: int = 0) -> torch.Tensor:
    """A (n_words, neurons) >= 0 by full-batch projected Adam; token_words[t] is t's word index or -1.

    z is (tokens, neurons), or (layers, tokens, neurons) to fit one A per layer in a single run: the layers'
    losses are independent and Adam is elementwise, so each layer gets the A its own fit would (tested), at
    one optimizer loop instead of one per layer.
    """
    single = z.dim() == 2
    z = (z[None] if single else z).to(torch.float64)
    generator = torch.Generator().manual_seed(seed)
    start = 0.01 * torch.rand(n_words, z.shape[2], generator=generator, dtype=torch.float64)
    association = start.expand(z.shape[0], -1, -1).clone().requires_grad_()
    optimizer = torch.optim.Adam([association], lr=lr)
    # lr decays linearly to 0: with a constant lr, projected Adam keeps oscillating around the L1 kink at zero
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1 - epoch / epochs)
    tagged = token_words >= 0
    sums = torch.zeros(z.shape[0], n_words, z.shape[2], dtype=torch.float64).index_add_(1, token_words[tagged],
                                                                                       z[:, tagged])
    counts = torch.bincount(token_words[tagged], minlength=n_words).to(torch.float64)
    constant = (z ** 2).sum()  # sum_t ||z_t||^2: no gradient, so computed once
    tokens = z.shape[1]
    for _ in range(epochs):
        optimizer.zero_grad()
        # sum_t ||z_t - A^T x_t||^2 expanded per word, so each epoch costs O(words x neurons), not O(tokens)
        squared = (counts[:, None] * association ** 2 - 2 * association * sums).sum()
        loss = (squared + constant) / tokens + lam * association.abs().sum()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            association.clamp_(min=0)
    fitted = association.detach().masked_fill(association.detach() < NUMERICAL_ZERO, 0.0).float()
    return fitted[0] if single else fitted


def closed_form_association(z: torch.Tensor, token_words: torch.Tensor, n_words: int, lam: float) -> torch.Tensor:
    """The exact minimiser for one-hot x: max(0, mean of z over word w's tokens - lambda * T / (2 * count_w))."""
    tagged = token_words >= 0
    sums = torch.zeros(n_words, z.shape[1], dtype=torch.float64).index_add_(0, token_words[tagged],
                                                                          z[tagged].to(torch.float64))
    counts = torch.bincount(token_words[tagged], minlength=n_words).to(torch.float64).clamp_min(1)[:, None]
    return (sums / counts - lam * z.shape[0] / (2 * counts)).clamp_min(0).float()


def top_words(association: torch.Tensor, vocabulary: list[str], k: int) -> dict[int, list[tuple[str, float]]]:
    """Per neuron with any association, its k strongest words and their weights."""
    result = {}
    for neuron in torch.nonzero(association.sum(0) > 0).flatten().tolist():
        column = association[:, neuron]
        order = torch.argsort(-column, stable=True)[:k]
        result[neuron] = [(vocabulary[i], round(float(column[i]), 6)) for i in order.tolist() if column[i] > 0]
    return result


def top_neurons(association: torch.Tensor, k: int) -> list[list[int]]:
    """Per word, the indices of its k strongest neurons (only those with a positive association)."""
    order = torch.argsort(-association, dim=1, stable=True)[:, :k]
    return [[n for n in row.tolist() if association[w, n] > 0] for w, row in enumerate(order)]
