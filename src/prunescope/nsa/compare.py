"""NSA step 3: the same inputs through the dense and the pruned model, compared on the matched neuron-word pairs.

A word's matched neurons are ranked by association x causal importance: a neuron must both carry the word
(A > 0) and support the gold answer on the word's tokens (activation x gradient > 0), so a neuron that tracks a
word but changes nothing is never matched. Activations are compared raw (not standardised), as means over each
word's tokens; the drops are also averaged with the pairs' importance as weights. Retention compares association
columns refitted on the pruned model with the dense ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def match_scores(association: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """(words, neurons): association x max(importance, 0), importance being the mean activation x gradient of the
    gold margin over the word's tokens."""
    return association * importance.clamp_min(0)


def matched_pairs(scores: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """(word, neuron) for each word's k highest-scoring neurons with a positive score."""
    order = torch.argsort(-scores, dim=1, stable=True)[:, :k]
    return [(w, n) for w, row in enumerate(order.tolist()) for n in row if scores[w, n] > 0]


def drop_row(word, neuron: int, dense: float, pruned: float, importance: float) -> dict:
    """One matched pair's dense and pruned mean activation, absolute and relative drop, and importance."""
    return {"word": word, "neuron": neuron, "dense": dense, "pruned": pruned, "drop": dense - pruned,
            "relative_drop": (dense - pruned) / abs(dense) if dense else 0.0, "importance": importance}


def weighted_drop(drops: Sequence[dict]) -> float:
    """The pairs' relative drops averaged with their (positive) importance as weights."""
    total = sum(row["importance"] for row in drops)
    return sum(row["relative_drop"] * row["importance"] for row in drops) / total if total > 0 else 0.0


def group_drop_fractions(drops: Sequence[dict], word_groups: Sequence[str] | Mapping[str, str],
                         threshold: float) -> dict[str, dict]:
    """Per word group (word_groups[row["word"]]): matched pairs, their mean and importance-weighted relative drop,
    the share of them that lost more than `threshold`, and that share weighted by importance."""
    groups: dict[str, list[dict]] = {}
    for row in drops:
        groups.setdefault(word_groups[row["word"]], []).append(row)
    result = {}
    for group, rows in sorted(groups.items()):
        weight = sum(r["importance"] for r in rows)
        lost = sum(r["importance"] for r in rows if r["relative_drop"] > threshold)
        result[group] = {"pairs": len(rows), "mean_relative_drop": sum(r["relative_drop"] for r in rows) / len(rows),
                         "weighted_relative_drop": weighted_drop(rows),
                         "fraction_dropped": sum(r["relative_drop"] > threshold for r in rows) / len(rows),
                         "weighted_fraction_dropped": lost / weight if weight else 0.0}
    return result


def semantic_retention(dense_association: torch.Tensor, pruned_association: torch.Tensor) -> dict[int, float]:
    """Per neuron with a dense association: cosine between its dense and refitted pruned column (0 if it lost all)."""
    retention = {}
    for neuron in torch.nonzero(dense_association.sum(0) > 0).flatten().tolist():
        dense, pruned = dense_association[:, neuron], pruned_association[:, neuron]
        norm = float(dense.norm() * pruned.norm())
        retention[neuron] = float(dense @ pruned) / norm if norm else 0.0
    return retention
