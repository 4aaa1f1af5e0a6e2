"""NSA step 3: the same inputs through the dense and the pruned model, compared on the matched neuron-word pairs.

Mediated matching: each matched pair's exact mediated effect measured again on the pruned model, on the occurrences
the dense model patched it on (paired_effects). The paper's matching: a word's matched neurons are ranked by
association x causal importance: a neuron must both carry the word
(A > 0) and support the gold answer on the word's tokens (activation x gradient > 0), so a neuron that tracks a
word but changes nothing is never matched. Activations are compared raw (not standardised), as means over each
word's tokens; the drops are also averaged with the pairs' importance as weights. Retention compares association
columns refitted on the pruned model with the dense ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from tqdm import tqdm

from prunescope.models.families import Family
from prunescope.nsa.answers import margin, mean_embedding
from prunescope.nsa.mediation import Occurrence
from prunescope.nsa.patching import intact_prompt, occluded_pass, patched_effects
from prunescope.nsa.prompts import Example


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


def paired_effects(model, family: Family, examples: Sequence[Example], layers: Sequence[int],
                   occurrences: Sequence[Occurrence], pairs: Mapping[tuple[int, int], Sequence[tuple[int, int]]],
                   batch_size: int, desc: str = "paired mediated effects"
                   ) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int, int, int], float]]:
    """The dense model's patched occurrences again, on this model (a pruned variant): each occurrence's effect
    {(example, word): nats} and each listed pair's exact mediated effect {(example, word, layer position, neuron):
    nats} for pairs[(example, word)] = [(layer position, neuron), ...], both oriented by the dense effect's sign, so
    a paired comparison with the dense numbers (a flip counts as a loss). Three forwards an example (intact,
    occluded, patched), whatever the vocabulary: only what the dense model patched and matched is measured."""
    baseline = mean_embedding(model)
    by_example: dict[int, list[Occurrence]] = {}
    for occurrence in occurrences:
        by_example.setdefault(occurrence.example, []).append(occurrence)
    word_effects, pair_effects = {}, {}
    for i, found in tqdm(sorted(by_example.items()), desc=desc, mininterval=10):
        example = examples[i]
        intact = intact_prompt(model, family, example, layers)
        for start in range(0, len(found), batch_size):
            batch = found[start:start + batch_size]
            wanted = [pairs.get((i, o.word), ()) for o in batch]

            def columns(p, occluded, wanted=wanted):
                neurons = sorted({n for listed in wanted for q, n in listed if q == p})
                return torch.tensor(neurons, dtype=torch.long, device=occluded.device).expand(occluded.shape[0], -1)

            logprobs, kept = occluded_pass(intact, baseline, [o.positions for o in batch], columns)
            margins = margin(logprobs, example.label)
            patches, keys, starts = [], [], []
            for row, (occurrence, listed) in enumerate(zip(batch, wanted, strict=True)):
                sign = 1.0 if occurrence.effect >= 0 else -1.0
                word_effects[i, occurrence.word] = sign * (intact.margin - float(margins[row]))
                for p, neuron in listed:
                    column = kept[p][0][row].tolist().index(neuron)
                    patches.append([(p, neuron, kept[p][1][row, :, column])])
                    keys.append((i, occurrence.word, p, neuron, sign))
                    starts.append(min(occurrence.positions))
            effects = patched_effects(intact, patches, batch_size, starts)
            for (example_index, word, p, neuron, sign), value in zip(keys, effects, strict=True):
                pair_effects[example_index, word, p, neuron] = sign * value
    return word_effects, pair_effects
