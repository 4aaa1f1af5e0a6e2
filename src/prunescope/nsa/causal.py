"""NSA step 4, the causal check: ablate the K neurons matched most strongly to a task's influential words in the
dense model, K = 1, 2, 4, ... up to a limit, and compare with ablating K random neurons of the same layers, over
several random draws (mean and 95% percentile interval over draws), by zero and by mean ablation.

The effect is measured on the gold margin (nsa.answers) and on accuracy, over the NSA examples.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from prunescope.models.families import Family
from prunescope.nsa.answers import batch_scores, example_batches
from prunescope.nsa.neurons import ABLATIONS, ablated, recorded_outputs, resumed_at
from prunescope.nsa.prompts import Example


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
                 draws: int, seed: int, batch_size: int = 16) -> dict:
    """Per K and ablation: the change of mean gold margin and accuracy with the top-K matched neurons ablated, and
    the same over `draws` random draws of as many neurons per layer (mean and 95% percentile interval); each
    point's per_example holds every example's margin change, matched and per random draw.

    Batches are the outer loop: each batch runs intact once, recording the output of the block below each setting's
    lowest ablated layer, and every ablated setting resumes from there (neurons.resumed_at)."""
    ranked = ranked_neurons(scores, matched)
    check_supply(ranked, matched, width, limit)
    rng = random.Random(seed)
    plan = []
    for k in k_values(limit):
        chosen = by_layer(ranked[:k])
        counts = {layer: len(neurons) for layer, neurons in chosen.items()}
        plan.append((k, chosen, [random_neurons(counts, matched, width, rng) for _ in range(draws)]))
    settings = [(neurons, ablation) for _, chosen, controls in plan for ablation in ABLATIONS
                for neurons in (chosen, *controls)]
    intact, ablated_scores = _score_settings(model, family, examples, settings, means, batch_size)

    def change(measured: tuple[list[float], list[bool]]) -> tuple[float, float, list[float]]:
        per_example = (np.asarray(measured[0], dtype=np.float64) - np.asarray(intact[0], dtype=np.float64))
        return (float(np.mean(measured[0])) - float(np.mean(intact[0])),
                float(np.mean(measured[1])) - float(np.mean(intact[1])), per_example.tolist())

    curve, changes = [], iter(map(change, ablated_scores))
    for k, chosen, _ in plan:
        for ablation in ABLATIONS:
            margin, acc, per_example = next(changes)
            controls = [next(changes) for _ in range(draws)]
            curve.append({"k": k, "ablation": ablation, "matched_margin_change": margin, "matched_acc_change": acc,
                          "random_margin_change": _summary([m for m, _, _ in controls]),
                          "random_acc_change": _summary([a for _, a, _ in controls]),
                          "matched": {str(layer): n for layer, n in chosen.items()},
                          # each example's margin change, for the paired test of matched vs random (reporting.claims)
                          "per_example": {"matched_margin_change": per_example,
                                          "random_margin_change": [c for _, _, c in controls]}})
    return {"acc": float(np.mean(intact[1])), "margin": float(np.mean(intact[0])), "examples": len(examples),
            "draws": draws, "curve": curve}


def _score_settings(model, family: Family, examples: Sequence[Example],
                    settings: Sequence[tuple[Mapping[int, Sequence[int]], str]], means: Mapping[int, torch.Tensor],
                    batch_size: int) -> tuple[tuple[list[float], list[bool]], list[tuple[list[float], list[bool]]]]:
    """Per-example (margins, correct) of the intact model and of each (neurons, ablation) setting, in batch order."""
    starts = [min(neurons) for neurons, _ in settings]
    resume_points = sorted({start for start in starts if start > 0})
    intact: tuple[list[float], list[bool]] = ([], [])
    scored: list[tuple[list[float], list[bool]]] = [([], []) for _ in settings]
    batches = example_batches(examples, batch_size)
    with torch.no_grad(), tqdm(total=len(batches) * (1 + len(settings)), desc="causal check",
                               mininterval=10) as progress:
        for batch in batches:
            chunk = [examples[i] for i in batch]
            with recorded_outputs(model, family, [start - 1 for start in resume_points]) as below:
                _extend(intact, batch_scores(model, chunk))
            progress.update()
            for (neurons, ablation), start, into in zip(settings, starts, scored, strict=True):
                resume = resumed_at(model, family, start, below[start - 1]) if start > 0 else contextlib.nullcontext()
                with resume, ablated(model, family, neurons, None if ablation == "zero" else means):
                    _extend(into, batch_scores(model, chunk))
                progress.update()
    return intact, scored


def _extend(into: tuple[list[float], list[bool]], measured: tuple[list[float], list[bool]]) -> None:
    into[0].extend(measured[0])
    into[1].extend(measured[1])
