"""NSA step 3: the same inputs through the dense and the pruned model, compared on the matched neuron-word pairs.

Activations are compared raw (not z-scored), on the tokens of each word; retention compares association columns
refitted on the pruned model with the dense ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def matched_pairs(association: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """(word, neuron) for each word's k strongest neurons with a positive association."""
    order = torch.argsort(-association, dim=1, stable=True)[:, :k]
    return [(w, n) for w, row in enumerate(order.tolist()) for n in row if association[w, n] > 0]


def activation_drops(dense: torch.Tensor, pruned: torch.Tensor, token_words: torch.Tensor,
                     pairs: Sequence[tuple[int, int]]) -> list[dict]:
    """Per matched pair: mean dense and pruned activation over the word's tokens, absolute and relative drop."""
    rows = []
    for word, neuron in pairs:
        tokens = token_words == word
        before, after = float(dense[tokens, neuron].mean()), float(pruned[tokens, neuron].mean())
        rows.append({"word": word, "neuron": neuron, "dense": before, "pruned": after, "drop": before - after,
                     "relative_drop": (before - after) / abs(before) if before else 0.0})
    return rows


def group_drop_fractions(drops: Sequence[dict], word_groups: Sequence[str] | Mapping[str, str],
                         threshold: float) -> dict[str, dict]:
    """Per word group (word_groups[row["word"]]): matched pairs, their mean relative drop, and the share of them
    that lost more than `threshold`."""
    groups: dict[str, list[float]] = {}
    for row in drops:
        groups.setdefault(word_groups[row["word"]], []).append(row["relative_drop"])
    return {group: {"pairs": len(values), "mean_relative_drop": sum(values) / len(values),
                    "fraction_dropped": sum(v > threshold for v in values) / len(values)}
            for group, values in sorted(groups.items())}


def semantic_retention(dense_association: torch.Tensor, pruned_association: torch.Tensor) -> dict[int, float]:
    """Per neuron with a dense association: cosine between its dense and refitted pruned column (0 if it lost all)."""
    retention = {}
    for neuron in torch.nonzero(dense_association.sum(0) > 0).flatten().tolist():
        dense, pruned = dense_association[:, neuron], pruned_association[:, neuron]
        norm = float(dense.norm() * pruned.norm())
        retention[neuron] = float(dense @ pruned) / norm if norm else 0.0
    return retention
