"""NSA step 4, the causal test of the pairing: do the neurons NSA pairs with a group's words carry those words' effect?

The causal curve (nsa.causal) tests neurons: ablating the matched ones moves the answer more than random ones. That
holds for any important neuron, whatever word it was paired with. This tests the pairing itself, on the
occurrences step 2 patched (association.json): for a neuron set N, the joint mediated effect on an occurrence is
margin(intact) - margin(intact with every neuron of N set to its activations with the word occluded), oriented by
the occurrence's effect; a group's share is the sum of those over the sum of its occurrences' |effect|.

Cross-fitted, so that no neuron is chosen on the occurrences it is tested on: each group's examples are split into
two halves (alternately, in index order: halves); on each half, a group's neurons are ranked by the exact mediated
effect step 2 measured for them on the group's occurrences in the *other* half (summed, positive only: NSA's
mediated matching, pooled over the group), and its K best, K = 1, 2, 4, ... up to nsa.ablate_neurons, are tested
against:
  - random: as many neurons per layer, from those neither half ranks for any group (nsa.random_draws draws, seeded);
  - other group: the other groups' K best by the same ranking (not ranked for this group): is it specific?
  - important: as many neurons per layer with the largest salience (mean |activation x gradient| over all prompt
    tokens, whatever the word), not ranked for this group: is it more than "these neurons matter"?
The halves' occurrences are pooled. A pairing that names the right neurons takes most of the words' effect with its
own set and little with the others. Each half tests the group's strongest `pairing_occurrences` / 2 occurrences
(by |effect|): the cost is bounded by that cap, not by the examples.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from prunescope.models.families import Family
from prunescope.nsa.answers import mean_embedding
from prunescope.nsa.causal import k_values
from prunescope.nsa.mediation import Occurrence
from prunescope.nsa.options import CausalOptions
from prunescope.nsa.patching import intact_prompt, occluded_pass, patched_effects
from prunescope.nsa.prompts import Example

Neurons = list[tuple[int, int]]  # (layer, neuron)
CONTROLS = ("random", "other_group", "important")


def halves(occurrences: Sequence[Occurrence], word_groups: Sequence[str]) -> dict[tuple[str, int], int]:
    """{(group, example): 0 or 1}: each group's examples (those holding a patched occurrence of its words), in
    index order, alternately in half 0 and half 1, so each half has about half of every group's examples."""
    examples: dict[str, set[int]] = {}
    for occurrence in occurrences:
        examples.setdefault(word_groups[occurrence.word], set()).add(occurrence.example)
    return {(group, example): i % 2 for group, found in examples.items() for i, example in enumerate(sorted(found))}


def fold_rankings(occurrences: Sequence[Occurrence], word_groups: Sequence[str], layers: Sequence[int],
                  held_out: int) -> dict[str, Neurons]:
    """Per group: the (layer, neuron)s patched on its occurrences outside its held-out half (halves), by their summed
    oriented exact effect there, largest first, positive sums only."""
    half = halves(occurrences, word_groups)
    sums: dict[str, dict[tuple[int, int], float]] = {}
    for occurrence in occurrences:
        group_name = word_groups[occurrence.word]
        if half[group_name, occurrence.example] == held_out:
            continue
        group = sums.setdefault(group_name, {})
        for p, neuron, value in occurrence.exact:
            group[layers[p], neuron] = group.get((layers[p], neuron), 0.0) + value
    return {group: sorted((n for n, v in found.items() if v > 0), key=lambda n: (-found[n], n))
            for group, found in sorted(sums.items())}


def _per_layer(neurons: Neurons) -> dict[int, int]:
    counts: dict[int, int] = {}
    for layer, _ in neurons:
        counts[layer] = counts.get(layer, 0) + 1
    return counts


def control_sets(ranked: Mapping[str, Neurons], group: str, k: int, salience: Mapping[int, torch.Tensor],
                 width: int, draws: int, rng: random.Random) -> dict[str, list[Neurons] | Neurons | None]:
    """The neuron sets compared at one K for one group: matched (its K best), `draws` random sets, other_group
    (None where the other groups have fewer than K neurons not ranked for this group) and important."""
    matched = ranked[group][:k]
    own = set(ranked[group])
    anywhere = {neuron for neurons in ranked.values() for neuron in neurons}
    counts = _per_layer(matched)
    randoms = []
    for _ in range(draws):
        drawn = []
        for layer, count in sorted(counts.items()):
            pool = sorted(set(range(width)) - {n for lay, n in anywhere if lay == layer})
            if len(pool) < count:
                raise ValueError(f"the pairing test needs {count} unranked neurons in layer {layer}, which has "
                                 f"{len(pool)}: lower nsa.ablate_neurons")
            drawn += [(layer, n) for n in sorted(rng.sample(pool, count))]
        randoms.append(drawn)
    position = {neuron: min(ranked[g].index(neuron) for g in ranked if g != group and neuron in ranked[g])
                for g2 in ranked if g2 != group for neuron in ranked[g2] if neuron not in own}
    others = sorted(position, key=lambda n: (position[n], n))
    important = []
    for layer, count in sorted(counts.items()):
        order = torch.argsort(-salience[layer].double(), stable=True).tolist()
        important += [(layer, n) for n in order if (layer, n) not in own][:count]
    return {"matched": matched, "random": randoms, "other_group": others[:k] if len(others) >= k else None,
            "important": important}


def pairing_test(model, family: Family, examples: Sequence[Example], layers: Sequence[int],
                 occurrences: Sequence[Occurrence], word_groups: Sequence[str], salience: Mapping[int, torch.Tensor],
                 options: CausalOptions, batch_size: int) -> dict:
    """{group: {"occurrences", "effect", "curve": [per K: each set's share of the words' effect (both halves
    pooled), random as mean and 95% percentile interval over draws, each half's matched neurons, and per occurrence
    the oriented joint effects (nats)]}} (module docstring)."""
    width = next(iter(salience.values())).shape[0]
    rng = random.Random(options.seed)
    baseline = mean_embedding(model)
    rankings = [fold_rankings(occurrences, word_groups, layers, held_out) for held_out in (0, 1)]
    half = halves(occurrences, word_groups)
    cap = max(options.pairing_occurrences // 2, 1)
    result = {}
    for group in sorted({word_groups[o.word] for o in occurrences}):
        parts = []
        for held_out, ranked in enumerate(rankings):
            tested = sorted((o for o in occurrences if word_groups[o.word] == group
                             and half[group, o.example] == held_out),
                            key=lambda o: (-abs(o.effect), o.example, o.word))[:cap]
            if tested and ranked.get(group):
                parts.append((ranked, tested))
        if not parts:
            continue
        ks = k_values(min(options.ablate, *(len(ranked[group]) for ranked, _ in parts)))
        measured = []  # per half: per K, the sets and their effects
        for ranked, tested in parts:
            plan = [control_sets(ranked, group, k, salience, width, options.draws, rng) for k in ks]
            effects = iter(_joint_effects(model, family, examples, layers, tested,
                                          [s for sets in plan for s in _flat(sets)], baseline, batch_size))
            measured.append([{name: _read(sets[name], effects) for name in ("matched", *CONTROLS)} | {
                "neurons": sets["matched"]} for sets in plan])
        tested_all = [o for _, tested in parts for o in tested]
        total = sum(abs(o.effect) for o in tested_all)
        curve = []
        for i, k in enumerate(ks):
            at_k = [half[i] for half in measured]
            per_occurrence = {"matched": [v for half in at_k for v in half["matched"]],
                              "random": [[v for half in at_k for v in half["random"][d]] for d in range(options.draws)]}
            for name in ("other_group", "important"):
                per_occurrence[name] = None if any(half[name] is None for half in at_k) else [
                    v for half in at_k for v in half[name]]
            shares = [sum(draw) / total for draw in per_occurrence["random"]]
            low, high = np.percentile(shares, [2.5, 97.5])
            curve.append({"k": k, "neurons": {"matched": [[list(n) for n in half["neurons"]] for half in at_k]},
                          "matched": sum(per_occurrence["matched"]) / total,
                          "random": {"mean": float(np.mean(shares)), "low": float(low), "high": float(high)},
                          **{name: None if per_occurrence[name] is None else sum(per_occurrence[name]) / total
                             for name in ("other_group", "important")},
                          "per_occurrence": per_occurrence})
        result[group] = {"occurrences": len(tested_all), "effect": total / len(tested_all), "curve": curve}
    return result


def _read(chosen, effects: Iterator[list[float]]):
    """One set's per-occurrence effects (a list per draw for the random sets; None for a set not run)."""
    if chosen is None:
        return None
    if chosen and isinstance(chosen[0], list):
        return [next(effects) for _ in chosen]
    return next(effects)


def _flat(sets_at_k: Mapping) -> list[Neurons]:
    """The sets of one K in the order pairing_test reads their effects back."""
    flat = [sets_at_k["matched"], *sets_at_k["random"]]
    return flat + [sets_at_k[name] for name in ("other_group", "important") if sets_at_k[name] is not None]


def _joint_effects(model, family: Family, examples: Sequence[Example], layers: Sequence[int],
                   occurrences: Sequence[Occurrence], sets: Sequence[Neurons], baseline: torch.Tensor,
                   batch_size: int) -> list[list[float]]:
    """Per neuron set, per occurrence (in order): the set's joint mediated effect, oriented by the occurrence's
    effect (nats)."""
    position = {layer: p for p, layer in enumerate(layers)}
    wanted: dict[int, list[int]] = {}
    for neurons in sets:
        for layer, neuron in neurons:
            wanted.setdefault(position[layer], []).append(neuron)
    wanted = {p: sorted(set(found)) for p, found in wanted.items()}
    effects = [[0.0] * len(occurrences) for _ in sets]
    by_example: dict[int, list[int]] = {}
    for i, occurrence in enumerate(occurrences):
        by_example.setdefault(occurrence.example, []).append(i)
    for example_index, rows in tqdm(sorted(by_example.items()), desc="pairing test", mininterval=10):
        example = examples[example_index]
        intact = intact_prompt(model, family, example, layers)

        def columns(p, occluded):
            return torch.tensor(wanted.get(p, []), dtype=torch.long, device=occluded.device).expand(
                occluded.shape[0], -1)

        _, kept = occluded_pass(intact, baseline, [occurrences[i].positions for i in rows], columns)
        patches, keys = [], []
        for row, i in enumerate(rows):
            for s, neurons in enumerate(sets):
                patches.append([(position[layer], neuron, kept[position[layer]][1][row, :, wanted[
                    position[layer]].index(neuron)]) for layer, neuron in neurons])
                keys.append((s, i))
        starts = [min(occurrences[i].positions) for _, i in keys]
        for (s, i), value in zip(keys, patched_effects(intact, patches, batch_size, starts), strict=True):
            effects[s][i] = (1.0 if occurrences[i].effect >= 0 else -1.0) * value
    return effects
