"""NSA jobs on one dataset's NSA examples: select words, learn the association, compare a pruned variant, run the
causal check. Each writes one artifact; the rules in workflow/rules/nsa.smk call these."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from prunescope.io import atomic_path, read_result, sha256_file, verify_sha256, write_result
from prunescope.models.families import get_family
from prunescope.nsa.answers import mean_embedding
from prunescope.nsa.causal import causal_curve, check_supply, ranked_neurons
from prunescope.nsa.compare import (
    drop_row,
    group_drop_fractions,
    match_scores,
    matched_pairs,
    paired_effects,
    semantic_retention,
    weighted_drop,
)
from prunescope.nsa.matching import fit_association, top_words, zsums_from_stats
from prunescope.nsa.mediation import (
    Occurrence,
    mediated_matches,
    mediated_tensors,
    mediation_sums,
    pushed_groups,
)
from prunescope.nsa.neurons import LayerStats, activation_stats, token_activations, vocabulary_ids
from prunescope.nsa.options import NsaData, NsaModel, NsaOptions, PaperOptions
from prunescope.nsa.pairing import pairing_test
from prunescope.nsa.prompts import Example
from prunescope.nsa.words import influential_words

logger = logging.getLogger(__name__)
TOP_WORDS_SHOWN = 5


def select_words(model: NsaModel, data: NsaData, options: NsaOptions, out_path: str | os.PathLike) -> dict:
    """Step 1 on the dense model: the influential vocabulary with each word's group."""
    words = options.words
    with model.loaded() as (loaded, tokenizer):
        examples = data.examples(tokenizer)
        vocabulary = influential_words(loaded, examples, words.top_k, words.min_count, words.attribution,
                                       mean_embedding(loaded), words.batch_size, words.steps, words.floor, words.share)
    if not vocabulary:
        raise ValueError(f"no word of {data.dataset_path} raises the gold answer's margin by at least {words.floor} "
                         f"nats and {words.share} of the example's total among the top {words.top_k} of at least "
                         f"{words.min_count} examples ({words.attribution}): lower nsa.attribution_floor, "
                         "nsa.attribution_share or nsa.min_count, or raise the grid's nsa_examples")
    result = {"words": vocabulary, "examples": len(examples), "top_k": words.top_k, "min_count": words.min_count,
              "attribution": words.attribution, "baseline": "the vocabulary's mean input embedding",
              "attribution_floor": words.floor, "attribution_share": words.share,
              "dataset_sha256": sha256_file(data.dataset_path)}
    write_result(out_path, result)
    logger.info("%d influential words from %d examples (%s)", len(vocabulary), len(examples), words.attribution)
    return result


def _studied_layers(model, family: str, layers: Sequence[int] | None) -> list[int]:
    """nsa.layers (None: every block), checked against the model's depth."""
    depth = len(get_family(family).blocks(model))
    if layers is not None and max(layers) >= depth:
        raise ValueError(f"nsa.layers lists layer {max(layers)}, but the model has {depth} blocks (0 to {depth - 1}): "
                         "fix nsa.layers in params.yaml")
    return sorted(range(depth) if layers is None else layers)


def _stats(model, family: str, examples: Sequence[Example], vocabulary: list[str], layers: Sequence[int] | None,
           importance: bool, desc: str) -> dict[int, LayerStats]:
    index = {word: i for i, word in enumerate(vocabulary)}
    return activation_stats(model, get_family(family), examples, [vocabulary_ids(e, index) for e in examples],
                            _studied_layers(model, family, layers), len(vocabulary), importance, desc)


def _associations(stats: dict[int, LayerStats], paper: PaperOptions) -> dict[int, torch.Tensor]:
    layers = list(stats)
    fitted = fit_association(zsums_from_stats([stats[layer] for layer in layers], paper.std_floor), paper.epochs,
                             paper.lr, paper.lam, paper.seed)
    return dict(zip(layers, fitted, strict=True))


def _paper_matching(stats: dict[int, LayerStats], vocabulary: list[str], groups: list[str], paper: PaperOptions
                    ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], list[dict]]:
    """The paper's matching: per layer the learned association A and each pair's importance (mean activation x
    gradient of the gold margin over the word's tokens), and the matched pairs (each word's neurons_per_word best
    per layer by association x importance)."""
    associations = _associations(stats, paper)
    importance = {layer: s.word_importance / s.word_counts.clamp_min(1)[:, None] for layer, s in stats.items()}
    matches = []
    for layer, association in associations.items():
        scores = match_scores(association, importance[layer])
        means = stats[layer].word_means()
        matches += [{"layer": layer, "word": vocabulary[w], "group": groups[w], "neuron": n,
                     "association": round(float(association[w, n]), 6), "score": round(float(scores[w, n]), 6),
                     "importance": round(float(importance[layer][w, n]), 6), "dense": round(float(means[w, n]), 6)}
                    for w, n in matched_pairs(scores, paper.neurons_per_word)]
    return associations, importance, matches


def learn_association(model: NsaModel, data: NsaData, options: NsaOptions, words_path: str | os.PathLike,
                      out_path: str | os.PathLike) -> None:
    """Step 2 on the dense model: which neurons carry each word (safetensors association<L>, importance<L>, mean<L>)
    plus <out>.json with the vocabulary, groups, sha256, the matched pairs, each associated neuron's top words and
    the token heatmap's example.

    Mediated matching (options.mediation): association<L> is each pair's exact mediated share of the word's effect
    where matched (else 0) and importance<L> its exact mediated effect in nats (nsa.mediation); groups come from the
    label each word pushes toward; the sidecar keeps the occurrences patched, which a pruned variant is patched on
    again, and "paper_matches" the pairs the paper's matching makes on the same examples, for the comparison.
    Paper matching: one streaming pass learns A and each pair's causal importance (mean activation x gradient of
    the gold margin over the word's tokens)."""
    words = read_result(words_path, "nsa_words")["words"]
    vocabulary, mediation, paper = sorted(words), options.mediation, options.paper
    occurrences: list[dict] = []
    salience: dict[int, torch.Tensor] = {}
    paper_pairs = None
    with model.loaded() as (loaded, tokenizer):
        examples = data.examples(tokenizer)
        family = get_family(model.family)
        step_one_groups = [words[w]["group"] for w in vocabulary]
        if mediation is None:
            stats = _stats(loaded, model.family, examples, vocabulary, options.layers, importance=True,
                           desc="dense activations")
            associations, importance, matches = _paper_matching(stats, vocabulary, step_one_groups, paper)
            groups = step_one_groups
        else:
            studied = _studied_layers(loaded, model.family, options.layers)
            sums = mediation_sums(loaded, family, examples, vocabulary, studied, mediation, layer_stats=True)
            stats = sums.stats  # the intact passes' sums: the paper's association fits on them, beside
            paper_pairs = [[m["word"], m["layer"], m["neuron"]]
                           for m in _paper_matching(stats, vocabulary, step_one_groups, paper)[2]]
            groups = pushed_groups(sums, examples, step_one_groups)
            matches = mediated_matches(sums, vocabulary, groups, studied, mediation.share_floor,
                                       mediation.effect_floor)
            associations, importance = mediated_tensors(sums, matches, vocabulary, studied)
            occurrences = [{"example": o.example, "word": vocabulary[o.word], "positions": list(o.positions),
                            "effect": round(o.effect, 6),
                            "exact": [[studied[p], n, round(value, 6)] for p, n, value in o.exact],
                            "last": [[studied[p], n, round(value, 6)] for p, n, value in o.last]}
                           for o in sums.patched]
            salience = {layer: sums.salience[p] / max(sums.examples, 1) for p, layer in enumerate(studied)}
        with atomic_path(out_path) as tmp:
            save_file({f"{name}{layer}": tensor.float().contiguous() for layer in associations
                       for name, tensor in (("association", associations[layer]), ("importance", importance[layer]),
                                            ("mean", stats[layer].mean), ("salience", salience.get(layer)))
                       if tensor is not None}, tmp)
            digest = sha256_file(tmp)
        write_result(Path(out_path).with_suffix(".json"), {
            "vocabulary": vocabulary, "groups": groups, "sha256": digest,
            "matching": "paper" if mediation is None else "mediated",
            "examples": len(examples), "neurons_per_word": paper.neurons_per_word, "std_floor": paper.std_floor,
            "matches": matches, "occurrences": occurrences, "paper_matches": paper_pairs,
            "example": heatmap_example(loaded, family, tokenizer, examples, vocabulary, matches),
            "top_words": {f"{layer}:{neuron}": ranked for layer, a in associations.items()
                          for neuron, ranked in top_words(a, vocabulary, TOP_WORDS_SHOWN).items()},
        })
    logger.info("%d matched (word, neuron) pairs over %d layers", len(matches), len(associations))


def load_association(path: str | os.PathLike) -> tuple[dict[str, dict[int, torch.Tensor]], dict]:
    """{"association" | "importance" | "mean" | "salience" (mediated only): {layer: tensor}} and the sidecar, after
    checking the sha256."""
    info = read_result(Path(path).with_suffix(".json"), "nsa_association")
    verify_sha256(path, info["sha256"], "the nsa_association rule rebuilds it")
    tensors: dict[str, dict[int, torch.Tensor]] = {"association": {}, "importance": {}, "mean": {}, "salience": {}}
    for key, tensor in load_file(path).items():
        name = key.rstrip("0123456789")
        tensors[name][int(key[len(name):])] = tensor
    return tensors, info


def heatmap_example(model, family, tokenizer, examples: Sequence[Example], vocabulary: list[str],
                    matches: Sequence[dict]) -> dict | None:
    """One neuron on one example, for the token heatmap: the highest-scoring matched (word, neuron) of the dense
    model, on the first example that contains the word. It depends on the dense model only, so every pruned
    variant shows the same neuron and example."""
    if not matches:
        return None
    best = max(matches, key=lambda m: (m["score"], -m["layer"], -m["neuron"]))
    index = next(i for i, e in enumerate(examples) if best["word"] in {e.prompt.words[w] for w in e.prompt.token_words
                                                                         if w >= 0})
    prompt = examples[index].prompt
    return {"layer": best["layer"], "neuron": best["neuron"], "word": best["word"], "example": index,
            "tokens": [tokenizer.decode([i]) for i in prompt.input_ids],
            "key_tokens": [t for t, w in enumerate(prompt.token_words) if w >= 0 and prompt.words[w] == best["word"]],
            "dense": [round(v, 4) for v in token_activations(model, family, prompt.input_ids, best["layer"],
                                                              best["neuron"])]}


def compare_variant(model: NsaModel, data: NsaData, options: NsaOptions, association_path: str | os.PathLike,
                    out_path: str | os.PathLike, labels: Mapping[str, str]) -> dict:
    """Step 3 on the pruned model (model.pruned_dir), per matched pair and per group (plain and weighted by the
    dense effect).

    Mediated matching (the association says which): each pair's exact mediated effect on the occurrences the dense
    model patched it on, oriented as there (nsa.compare.paired_effects), before (dense) and after pruning, and each
    word's effect on its patched occurrences; semantic retention is the share of the matched pairs' summed dense
    mediated effect the pruned model keeps. Paper matching: each pair's mean activation over the word's tokens, and
    semantic retention of the association refitted on the pruned model."""
    tensors, info = load_association(association_path)
    vocabulary, groups = info["vocabulary"], info["groups"]
    mediated = info.get("matching") == "mediated"
    with model.loaded() as (loaded, tokenizer):
        examples = data.examples(tokenizer)
        if len(examples) != info["examples"]:
            raise ValueError(f"{association_path} was learned on {info['examples']} NSA examples, this job has "
                             f"{len(examples)}: rerun the nsa_association rule (snakemake rebuilds it when the grid's "
                             "nsa_examples changes)")
        layers = sorted(tensors["association"])
        index = {word: i for i, word in enumerate(vocabulary)}
        family = get_family(model.family)
        drops, words = [], {}
        if mediated:
            pairs: dict[tuple[int, int], list[tuple[int, int]]] = {}
            for match in info["matches"]:
                for example in match["examples"]:
                    pairs.setdefault((example, index[match["word"]]), []).append(
                        (layers.index(match["layer"]), match["neuron"]))
            occurrences = _patched_occurrences(info, layers)
            word_effects, pair_effects = paired_effects(loaded, family, examples, layers, occurrences, pairs,
                                                        options.words.batch_size, desc="pruned mediated effects")
            for match in info["matches"]:
                w, p = index[match["word"]], layers.index(match["layer"])
                after = [pair_effects[e, w, p, match["neuron"]] for e in match["examples"]]
                drops.append({**drop_row(match["word"], match["neuron"], match["exact"], sum(after) / len(after),
                                         match["exact"]), "layer": match["layer"]})
            for word in sorted({vocabulary[o.word] for o in occurrences}):
                found = [o for o in occurrences if vocabulary[o.word] == word]
                words[word] = {"occurrences": len(found),
                               "dense_effect": round(sum(abs(o.effect) for o in found) / len(found), 6),
                               "pruned_effect": round(sum(word_effects[o.example, o.word] for o in found) / len(found),
                                                      6)}
            total = sum(row["dense"] for row in drops)
            retention = [sum(row["pruned"] for row in drops) / total] if total > 0 else []
        else:
            pruned = _stats(loaded, model.family, examples, vocabulary, layers, importance=False,
                            desc="pruned activations")
            refitted = _associations(pruned, options.paper)
            means = {layer: stats.word_means() for layer, stats in pruned.items()}
            for match in info["matches"]:
                activation = float(means[match["layer"]][index[match["word"]], match["neuron"]])
                drops.append({**drop_row(match["word"], match["neuron"], match["dense"], activation,
                                         match["importance"]), "layer": match["layer"]})
            retention = [value for layer in layers
                         for value in semantic_retention(tensors["association"][layer], refitted[layer]).values()]
        example = info["example"]
        if example is not None:
            example = {**example, "pruned": [round(v, 4) for v in token_activations(
                loaded, family, examples[example["example"]].prompt.input_ids, example["layer"], example["neuron"])]}
    threshold = options.drop_threshold
    result = {**labels, "pairs": len(drops), "threshold": threshold, "example": example,
              "matching": "mediated" if mediated else "paper",
              "groups": group_drop_fractions(drops, dict(zip(vocabulary, groups, strict=True)), threshold),
              "mean_relative_drop": sum(r["relative_drop"] for r in drops) / max(len(drops), 1),
              "weighted_relative_drop": weighted_drop(drops),
              "semantic_retention": sum(retention) / max(len(retention), 1),
              "word_effects": words,
              "largest_drops": sorted(drops, key=lambda r: (-r["relative_drop"], r["layer"], r["neuron"]))[:20]}
    write_result(out_path, result)
    return result


def _patched_occurrences(info: dict, layers: Sequence[int]) -> list[Occurrence]:
    """The occurrences step 2 patched (association.json), words and layers back to indices (vocabulary, `layers`)."""
    index = {word: i for i, word in enumerate(info["vocabulary"])}
    return [Occurrence(o["example"], index[o["word"]], tuple(o["positions"]), o["effect"],
                       tuple((layers.index(layer), n, value) for layer, n, value in o["exact"]))
            for o in info["occurrences"]]


def _matched(tensors: dict[str, dict[int, torch.Tensor]], k: int) -> tuple[dict[int, torch.Tensor],
                                                                          dict[int, list[int]]]:
    """Per layer: the match scores and the neurons matched to any word (each word's k best)."""
    scores = {layer: match_scores(a, tensors["importance"][layer]) for layer, a in tensors["association"].items()}
    matched = {layer: sorted({n for _, n in matched_pairs(s, k)}) for layer, s in scores.items()}
    return scores, matched


def protected_neurons(association_paths: Sequence[str], k: int) -> dict[int, list[int]]:
    """NSA-guided pruning's exempt neurons: every influential word's k best-matched neurons, pooled over the
    protected category's datasets, per layer."""
    neurons: dict[int, set[int]] = {}
    for path in association_paths:
        for layer, found in _matched(load_association(path)[0], k)[1].items():
            neurons.setdefault(layer, set()).update(found)
    return {layer: sorted(found) for layer, found in sorted(neurons.items()) if found}


def causal_check(model: NsaModel, data: NsaData, options: NsaOptions, dataset: str,
                 association_path: str | os.PathLike, out_path: str | os.PathLike) -> dict:
    """Step 4 on the dense model: the causal curve of matched vs random ablation (nsa.causal) and, under mediated
    matching, the causal test of the pairing (nsa.pairing)."""
    causal = options.causal
    tensors, info = load_association(association_path)
    scores, matched = _matched(tensors, causal.neurons_per_word)
    width = next(iter(scores.values())).shape[1]
    check_supply(ranked_neurons(scores, matched), matched, width, causal.ablate)  # before loading anything
    with model.loaded() as (loaded, tokenizer):
        examples = data.examples(tokenizer)
        family = get_family(model.family)
        result = causal_curve(loaded, family, examples, scores, matched, tensors["mean"], width, causal.ablate,
                              causal.draws, causal.seed)
        pairing = None
        if info.get("matching") == "mediated":
            studied = sorted(tensors["association"])
            pairing = pairing_test(loaded, family, examples, studied, _patched_occurrences(info, studied),
                                   info["groups"], tensors["salience"], causal, options.words.batch_size)
    result = {"dataset": dataset, "ablate_neurons": causal.ablate, "seed": causal.seed,
              "matched_neurons": sum(map(len, matched.values())), **result, "pairing": pairing}
    write_result(out_path, result)
    return result
