"""NSA step 4, the causal check: ablate the K neurons matched most strongly to a task's influential words in the
dense model, K = 1, 2, 4, ... up to a limit, and compare with ablating K random neurons of the same layers, over
several random draws (mean and 95% percentile interval over draws), by zero and by mean ablation.

The effect is measured on the gold margin (nsa.answers) and on accuracy, over the NSA examples.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from prunescope.models.families import Family
from prunescope.nsa.answers import score_examples
from prunescope.nsa.neurons import ABLATIONS, ablated
from prunescope.nsa.words import Example


def k_values(limit: int) -> list[int]:
    """1, 2, 4, ... below `limit`, then `limit` itself."""
    values = [1 << i for i in range(limit.bit_length()) if 1 << i < limit]
    return values + [limit]


def ranked_neurons(scores: Mapping[int, torch.Tensor], matched: Mapping[int, Sequence[int]]
                   ) -> list[tuple[int, int]]:
    """The matched (layer, neuron)s, strongest first: by the neuron's best match score over the words."""
    strength = [(float(scores[layer][:, n].max()), layer, n) for layer, neurons in matched.items() for n in neurons]
    return [(layer, n) for _, layer, n in sorted(strength, key=lambda t: (-t[0], t[1], t[2]))]


def by_layer(neurons: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = {}
    for layer, neuron in neurons:
        grouped.setdefault(layer, []).append(neuron)
    return {layer: sorted(found) for layer, found in sorted(grouped.items())}


def check_supply(ranked: Sequence[tuple[int, int]], matched: Mapping[int, Sequence[int]], width: int,
                 limit: int) -> None:
    """One clear error, before any work, when the layers cannot supply `limit` matched or random neurons."""
    if limit > len(ranked):
        raise ValueError(f"nsa.ablate_neurons is {limit}, but only {len(ranked)} neurons are matched to this task's "
                         "words: lower nsa.ablate_neurons, or raise nsa.neurons_per_word or the number of words")
    for layer, neurons in by_layer(ranked[:limit]).items():
        others = width - len(matched[layer])
        if len(neurons) > others:
            raise ValueError(f"nsa.ablate_neurons = {limit} needs {len(neurons)} random neurons in layer {layer}, "
                             f"which has only {others} unmatched of {width}: lower nsa.ablate_neurons")


def random_neurons(counts: Mapping[int, int], matched: Mapping[int, Sequence[int]], width: int,
                   rng: random.Random) -> dict[int, list[int]]:
    """counts[layer] neurons per layer, drawn from that layer's unmatched neurons."""
    return {layer: sorted(rng.sample(sorted(set(range(width)) - set(matched[layer])), count))
            for layer, count in sorted(counts.items())}


def _summary(values: Sequence[float]) -> dict:
    array = np.asarray(values, dtype=np.float64)
    low, high = np.percentile(array, [2.5, 97.5])
    return {"mean": float(array.mean()), "low": float(low), "high": float(high)}


def causal_curve(model, family: Family, examples: Sequence[Example], scores: Mapping[int, torch.Tensor],
                 matched: Mapping[int, Sequence[int]], means: Mapping[int, torch.Tensor], width: int, limit: int,
                 draws: int, seed: int) -> dict:
    """Per K and ablation: the change of mean gold margin and accuracy with the top-K matched neurons ablated, and
    the same over `draws` random draws of as many neurons per layer (mean and 95% percentile interval)."""
    ranked = ranked_neurons(scores, matched)
    check_supply(ranked, matched, width, limit)
    rng = random.Random(seed)
    plan = []
    for k in k_values(limit):
        chosen = by_layer(ranked[:k])
        counts = {layer: len(neurons) for layer, neurons in chosen.items()}
        plan.append((k, chosen, [random_neurons(counts, matched, width, rng) for _ in range(draws)]))

    def measure(neurons: Mapping[int, Sequence[int]] | None, ablation: str) -> tuple[float, float]:
        if neurons is None:
            margins, correct = score_examples(model, examples)
        else:
            with ablated(model, family, neurons, None if ablation == "zero" else means):
                margins, correct = score_examples(model, examples)
        return float(np.mean(margins)), float(np.mean(correct))

    intact_margin, intact_acc = measure(None, "zero")
    curve = []
    with tqdm(total=len(plan) * len(ABLATIONS) * (1 + draws), desc="causal check", mininterval=10) as progress:
        for k, chosen, controls in plan:
            for ablation in ABLATIONS:
                margin, acc = measure(chosen, ablation)
                progress.update()
                random_margin, random_acc = [], []
                for control in controls:
                    m, a = measure(control, ablation)
                    random_margin.append(m - intact_margin)
                    random_acc.append(a - intact_acc)
                    progress.update()
                curve.append({"k": k, "ablation": ablation,
                              "matched_margin_change": margin - intact_margin, "matched_acc_change": acc - intact_acc,
                              "random_margin_change": _summary(random_margin),
                              "random_acc_change": _summary(random_acc),
                              "matched": {str(layer): n for layer, n in chosen.items()}})
    return {"acc": intact_acc, "margin": intact_margin, "examples": len(examples), "draws": draws, "curve": curve}
