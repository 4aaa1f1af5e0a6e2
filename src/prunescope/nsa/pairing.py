"""NSA step 4, the causal test of the pairing: do the neurons matched to a group's words carry those words' effect?

The causal curve (nsa.causal) tests neurons: ablating the matched ones moves the answer more than random ones. That
holds for any important neuron, whatever word it was paired with. This tests the pairing itself, on the
occurrences step 2 patched (association.json): for a neuron set N, the joint mediated effect on an occurrence is
margin(intact) - margin(intact with every neuron of N set to its activations with the word occluded), oriented by
the occurrence's effect; a group's share is the sum of those over the sum of its occurrences' |effect|. Per group
and K = 1, 2, 4, ... up to nsa.ablate_neurons, N is the group's K best-matched neurons (by the pair score, share x
exact effect) against:
  - random: as many neurons per layer, from those no word is matched to (nsa.random_draws draws, seeded);
  - other group: the other groups' K best-matched neurons (not matched to this group): is the pairing specific?
  - important: as many neurons per layer with the largest salience (mean |activation x gradient| over all prompt
    tokens, whatever the word), not matched to this group: is it more than "these neurons matter"?
A pairing that names the right neurons takes most of the words' effect with matched N, little with the others.
Each group's occurrences are its strongest `occurrences` (by |effect|): three kinds of forwards an example (intact,
occluded, one patched row per setting and occurrence), so the cost is bounded by that cap, not by the examples.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from prunescope.models.families import Family
from prunescope.nsa.answers import mean_embedding
from prunescope.nsa.causal import k_values
from prunescope.nsa.mediation import Occurrence, embedded_prompt, occluded_pass, patched_effects, prompt_margin
from prunescope.nsa.options import CausalOptions
from prunescope.nsa.prompts import Example

Neurons = list[tuple[int, int]]  # (layer, neuron)
CONTROLS = ("random", "other_group", "important")


def ranked_by_group(matches: Sequence[Mapping], groups: Mapping[str, str]) -> dict[str, Neurons]:
    """Per group (of the matched word, groups[word]): its matched (layer, neuron)s, best pair score first."""
    best: dict[str, dict[tuple[int, int], float]] = {}
    for match in matches:
        neuron = (match["layer"], match["neuron"])
        scores = best.setdefault(groups[match["word"]], {})
        scores[neuron] = max(scores.get(neuron, float("-inf")), match["score"])
    return {group: sorted(scores, key=lambda n: (-scores[n], n)) for group, scores in sorted(best.items())}


def _per_layer(neurons: Neurons) -> dict[int, int]:
    counts: dict[int, int] = {}
    for layer, _ in neurons:
        counts[layer] = counts.get(layer, 0) + 1
    return counts


def control_sets(ranked: Mapping[str, Neurons], group: str, k: int, salience: Mapping[int, torch.Tensor],
                 width: int, draws: int, rng: random.Random) -> dict[str, list[Neurons] | Neurons | None]:
    """The neuron sets compared at one K for one group: matched, `draws` random sets, other_group (None where the
    other groups have fewer than K neurons not matched to this group) and important."""
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
                raise ValueError(f"the pairing test needs {count} unmatched neurons in layer {layer}, which has "
                                 f"{len(pool)}: lower nsa.ablate_neurons")
            drawn += [(layer, n) for n in sorted(rng.sample(pool, count))]
        randoms.append(drawn)
    others = sorted({n for g, neurons in ranked.items() if g != group for n in neurons} - own,
                    key=lambda n: min(ranked[g].index(n) for g in ranked if g != group and n in ranked[g]))
    important = []
    for layer, count in sorted(counts.items()):
        order = torch.argsort(-salience[layer].double(), stable=True).tolist()
        important += [(layer, n) for n in order if (layer, n) not in own][:count]
    return {"matched": matched, "random": randoms, "other_group": others[:k] if len(others) >= k else None,
            "important": important}


def pairing_test(model, family: Family, examples: Sequence[Example], layers: Sequence[int],
                 occurrences: Sequence[Occurrence], word_groups: Sequence[str], matches: Sequence[Mapping],
                 vocabulary: Sequence[str], salience: Mapping[int, torch.Tensor], options: CausalOptions,
                 batch_size: int) -> dict:
    """{group: {"occurrences", "effect", "curve": [per K: each set's share of the words' effect, random as mean and
    95% percentile interval over draws, and per occurrence the oriented joint effects (nats)]}} (module docstring)."""
    groups = {word: word_groups[i] for i, word in enumerate(vocabulary)}
    ranked = ranked_by_group(matches, groups)
    width = next(iter(salience.values())).shape[0]
    rng = random.Random(options.seed)
    baseline = mean_embedding(model)
    result = {}
    for group, neurons in ranked.items():
        found = sorted((o for o in occurrences if word_groups[o.word] == group),
                       key=lambda o: (-abs(o.effect), o.example, o.word))[:options.pairing_occurrences]
        if not found:
            continue
        plan = [(k, control_sets(ranked, group, k, salience, width, options.draws, rng))
                for k in k_values(min(options.ablate, len(neurons)))]
        sets = [s for _, sets_at_k in plan for s in _flat(sets_at_k)]
        effects = _joint_effects(model, family, examples, layers, found, sets, baseline, batch_size)
        total = sum(abs(o.effect) for o in found)
        values = iter(effects)
        curve = []
        for k, sets_at_k in plan:
            point: dict = {"k": k, "neurons": {"matched": [list(n) for n in sets_at_k["matched"]]}}
            per_occurrence = {}
            for name in ("matched", *CONTROLS):
                chosen = sets_at_k[name]
                if chosen is None:
                    point[name], per_occurrence[name] = None, None
                elif name == "random":
                    draws = [next(values) for _ in chosen]
                    shares = [sum(d) / total for d in draws]
                    low, high = np.percentile(shares, [2.5, 97.5])
                    point[name] = {"mean": float(np.mean(shares)), "low": float(low), "high": float(high)}
                    per_occurrence[name] = draws
                else:
                    joint = next(values)
                    point[name], per_occurrence[name] = sum(joint) / total, joint
            point["per_occurrence"] = per_occurrence
            curve.append(point)
        result[group] = {"occurrences": len(found), "effect": total / len(found), "curve": curve}
    return result


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
        intact_embeds = embedded_prompt(model, example)
        intact_margin = prompt_margin(model, example, intact_embeds)

        def columns(p, occluded):
            return torch.tensor(wanted.get(p, []), dtype=torch.long, device=occluded.device).expand(
                occluded.shape[0], -1)

        _, kept = occluded_pass(model, family, example, intact_embeds, layers, baseline,
                                 [occurrences[i].positions for i in rows], columns)
        patches, keys = [], []
        for row, i in enumerate(rows):
            for s, neurons in enumerate(sets):
                patches.append([(position[layer], neuron, kept[position[layer]][1][row, :, wanted[
                    position[layer]].index(neuron)]) for layer, neuron in neurons])
                keys.append((s, i))
        for (s, i), value in zip(keys, patched_effects(model, family, example, intact_embeds, layers, patches,
                                                        intact_margin, batch_size), strict=True):
            effects[s][i] = (1.0 if occurrences[i].effect >= 0 else -1.0) * value
    return effects
