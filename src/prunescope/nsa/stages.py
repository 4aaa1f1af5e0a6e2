"""NSA jobs on one dataset's NSA examples: select words, learn the association, compare a pruned variant, run the
causal check. Each writes one artifact; the rules in workflow/rules/nsa.smk call these."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from prunescope.data.prepare import read_dataset
from prunescope.data.records import subsample_records
from prunescope.io import atomic_path, read_result, sha256_file, verify_sha256, write_result
from prunescope.models.families import get_family
from prunescope.models.offload import loaded_model
from prunescope.nsa.answers import mean_embedding
from prunescope.nsa.causal import causal_curve, check_supply, ranked_neurons
from prunescope.nsa.compare import (
    drop_row,
    group_drop_fractions,
    match_scores,
    matched_pairs,
    semantic_retention,
    weighted_drop,
)
from prunescope.nsa.matching import fit_association, top_words, zsums_from_stats
from prunescope.nsa.mediation import (
    MediationOptions,
    mediated_matches,
    mediated_tensors,
    mediation_sums,
    pushed_groups,
)
from prunescope.nsa.neurons import LayerStats, activation_stats, token_activations
from prunescope.nsa.prompts import Example, render_with_spans, tokenize_words
from prunescope.nsa.words import influential_words

logger = logging.getLogger(__name__)
TOP_WORDS_SHOWN = 5


def nsa_examples(tokenizer, dataset_path: str | os.PathLike, template: str, limit: int | None, seed: int
                 ) -> list[Example]:
    """A dataset's NSA examples: a fixed seeded subsample of `limit` records (the grid's nsa_examples), each with its
    prompt's record words, its choices as scored after the prompt (lm-eval's " " delimiter), gold and group.

    Group = the gold label word where every example has the same label words (sentiment, NLI), else "correct"
    (multiple choice: the words push toward the correct option).
    """
    records = subsample_records(read_dataset(dataset_path), limit, seed)
    fixed_labels = all(record["choices"] == records[0]["choices"] for record in records)
    return [Example(tokenize_words(tokenizer, *render_with_spans(template, record)),
                    [tokenizer(" " + choice, add_special_tokens=False)["input_ids"] for choice in record["choices"]],
                    record["label"], record["choices"][record["label"]] if fixed_labels else "correct")
            for record in records]


def select_words(model_dir: str, dtype: str, dataset_path: str, template: str, limit: int | None, seed: int,
                 top_k: int, min_count: int, attribution: str, batch_size: int, steps: int, device: torch.device,
                 out_path: str | os.PathLike, offload: Mapping | None = None, floor: float = 0.0,
                 share: float = 0.0) -> dict:
    """Step 1 on the dense model: the influential vocabulary with each word's group (floor, share: the attribution
    floor in nats and as a share of the example's total |attribution|)."""
    with loaded_model(model_dir, dtype, device, offload) as (model, tokenizer):
        examples = nsa_examples(tokenizer, dataset_path, template, limit, seed)
        vocabulary = influential_words(model, examples, top_k, min_count, attribution, mean_embedding(model),
                                       batch_size, steps, floor, share)
    if not vocabulary:
        raise ValueError(f"no word of {dataset_path} raises the gold answer's margin by at least {floor} nats and "
                         f"{share} of the example's total among the top {top_k} of at least {min_count} examples "
                         f"({attribution}): lower nsa.attribution_floor, nsa.attribution_share or nsa.min_count, or "
                         "raise the grid's nsa_examples")
    result = {"words": vocabulary, "examples": len(examples), "top_k": top_k, "min_count": min_count,
              "attribution": attribution, "baseline": "the vocabulary's mean input embedding",
              "attribution_floor": floor, "attribution_share": share, "dataset_sha256": sha256_file(dataset_path)}
    write_result(out_path, result)
    logger.info("%d influential words from %d examples (%s)", len(vocabulary), len(examples), attribution)
    return result


def _word_ids(examples: Sequence[Example], vocabulary: list[str]) -> list[torch.Tensor]:
    index = {word: i for i, word in enumerate(vocabulary)}
    return [torch.tensor([index.get(e.prompt.words[w], -1) if w >= 0 else -1 for w in e.prompt.token_words])
            for e in examples]


def _stats(model, family: str, examples: Sequence[Example], vocabulary: list[str], layers: Sequence[int] | None,
           importance: bool, desc: str) -> dict[int, LayerStats]:
    adapter = get_family(family)
    depth = len(adapter.blocks(model))
    if layers is not None and max(layers) >= depth:
        raise ValueError(f"nsa.layers lists layer {max(layers)}, but the model has {depth} blocks (0 to {depth - 1}): "
                         "fix nsa.layers in params.yaml")
    chosen = list(range(depth) if layers is None else layers)
    return activation_stats(model, adapter, examples, _word_ids(examples, vocabulary), chosen, len(vocabulary),
                            importance, desc)


def _associations(stats: dict[int, LayerStats], floor: float, epochs: int, lr: float, lam: float, seed: int
                  ) -> dict[int, torch.Tensor]:
    layers = list(stats)
    fitted = fit_association(zsums_from_stats([stats[layer] for layer in layers], floor), epochs, lr, lam, seed)
    return dict(zip(layers, fitted, strict=True))


def learn_association(model_dir: str, dtype: str, family: str, dataset_path: str, template: str, limit: int | None,
                      sample_seed: int, words_path: str, layers: Sequence[int] | None, floor: float, epochs: int,
                      lr: float, lam: float, k: int, seed: int, device: torch.device, out_path: str | os.PathLike,
                      offload: Mapping | None = None, mediation: MediationOptions | None = None) -> None:
    """Step 2 on the dense model: which neurons carry each word (safetensors association<L>, importance<L>, mean<L>)
    plus <out>.json with the vocabulary, groups, sha256, the matched pairs, each associated neuron's top words and
    the token heatmap's example.

    With `mediation` (nsa.matching: mediated), association<L> is each pair's exact mediated share of the word's
    effect where matched (else 0) and importance<L> its exact mediated effect in nats (nsa.mediation); groups come
    from the label each word pushes toward. Without it (paper), one streaming pass learns A and each pair's causal
    importance (mean activation x gradient of the gold margin over the word's tokens)."""
    words = read_result(words_path, "nsa_words")["words"]
    vocabulary = sorted(words)
    with loaded_model(model_dir, dtype, device, offload) as (model, tokenizer):
        examples = nsa_examples(tokenizer, dataset_path, template, limit, sample_seed)
        stats = _stats(model, family, examples, vocabulary, layers, importance=mediation is None,
                       desc="dense activations")
        if mediation is None:
            associations = _associations(stats, floor, epochs, lr, lam, seed)
            importance = {layer: s.word_importance / s.word_counts.clamp_min(1)[:, None] for layer, s in stats.items()}
            groups = [words[w]["group"] for w in vocabulary]
            matches = []
            for layer, association in associations.items():
                scores = match_scores(association, importance[layer])
                means = stats[layer].word_means()
                matches += [{"layer": layer, "word": vocabulary[w], "group": groups[w], "neuron": n,
                             "association": round(float(association[w, n]), 6), "score": round(float(scores[w, n]), 6),
                             "importance": round(float(importance[layer][w, n]), 6),
                             "dense": round(float(means[w, n]), 6)}
                            for w, n in matched_pairs(scores, k)]
        else:
            studied = sorted(stats)
            sums = mediation_sums(model, get_family(family), examples, vocabulary, studied, mediation)
            groups = pushed_groups(sums, examples, [words[w]["group"] for w in vocabulary])
            matches = mediated_matches(sums, vocabulary, groups, studied, mediation.share_floor,
                                       mediation.effect_floor)
            associations, importance = mediated_tensors(sums, matches, vocabulary, studied)
        with atomic_path(out_path) as tmp:
            save_file({f"{name}{layer}": tensor.float().contiguous() for layer in associations
                       for name, tensor in (("association", associations[layer]), ("importance", importance[layer]),
                                            ("mean", stats[layer].mean))}, tmp)
            digest = sha256_file(tmp)
        write_result(Path(out_path).with_suffix(".json"), {
            "vocabulary": vocabulary, "groups": groups, "sha256": digest,
            "matching": "paper" if mediation is None else "mediated",
            "examples": len(examples), "neurons_per_word": k, "std_floor": floor, "matches": matches,
            "example": heatmap_example(model, get_family(family), tokenizer, examples, vocabulary, matches),
            "top_words": {f"{layer}:{neuron}": ranked for layer, a in associations.items()
                          for neuron, ranked in top_words(a, vocabulary, TOP_WORDS_SHOWN).items()},
        })
    logger.info("%d matched (word, neuron) pairs over %d layers", len(matches), len(associations))


def load_association(path: str | os.PathLike) -> tuple[dict[str, dict[int, torch.Tensor]], dict]:
    """{"association" | "importance" | "mean": {layer: tensor}} and the sidecar, after checking the sha256."""
    info = read_result(Path(path).with_suffix(".json"), "nsa_association")
    verify_sha256(path, info["sha256"], "the nsa_association rule rebuilds it")
    tensors: dict[str, dict[int, torch.Tensor]] = {"association": {}, "importance": {}, "mean": {}}
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


def compare_variant(model_dir: str, dtype: str, family: str, pruned_dir: str, dataset_path: str, template: str,
                    limit: int | None, sample_seed: int, association_path: str, threshold: float, floor: float,
                    epochs: int, lr: float, lam: float, seed: int, device: torch.device, out_path: str | os.PathLike,
                    labels: dict, offload: Mapping | None = None, mediation: MediationOptions | None = None) -> dict:
    """Step 3 on the pruned model, per matched pair and per group (plain and weighted by the dense effect).

    Mediated matching (the association says which): each pair's exact mediated effect, patched on the same
    occluded inputs, before (dense) and after pruning; semantic retention is the share of the matched pairs' summed
    dense mediated effect the pruned model keeps. Paper matching: each pair's mean activation over the word's
    tokens, and semantic retention of the association refitted on the pruned model."""
    tensors, info = load_association(association_path)
    vocabulary, groups = info["vocabulary"], info["groups"]
    mediated = info.get("matching") == "mediated"
    if mediated and mediation is None:
        raise ValueError(f"{association_path} matched by mediated effect: compare_variant needs its MediationOptions")
    with loaded_model(model_dir, dtype, device, offload, pruned_dir) as (model, tokenizer):
        examples = nsa_examples(tokenizer, dataset_path, template, limit, sample_seed)
        layers = sorted(tensors["association"])
        index = {word: i for i, word in enumerate(vocabulary)}
        drops = []
        if mediated:
            forced: dict[int, list[tuple[int, int]]] = {}
            for match in info["matches"]:
                forced.setdefault(index[match["word"]], []).append((layers.index(match["layer"]), match["neuron"]))
            after = mediation_sums(model, get_family(family), examples, vocabulary, layers, mediation, forced,
                                   desc="pruned mediated effects").exact_mean()
            for match in info["matches"]:
                pruned_effect = float(after[layers.index(match["layer"]), index[match["word"]], match["neuron"]])
                drops.append({**drop_row(match["word"], match["neuron"], match["exact"], pruned_effect,
                                         match["exact"]), "layer": match["layer"]})
            total = sum(row["dense"] for row in drops)
            retention = [sum(row["pruned"] for row in drops) / total] if total > 0 else []
        else:
            pruned = _stats(model, family, examples, vocabulary, layers, importance=False, desc="pruned activations")
            refitted = _associations(pruned, floor, epochs, lr, lam, seed)
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
                model, get_family(family), examples[example["example"]].prompt.input_ids, example["layer"],
                example["neuron"])]}
    result = {**labels, "pairs": len(drops), "threshold": threshold, "example": example,
              "matching": "mediated" if mediated else "paper",
              "groups": group_drop_fractions(drops, dict(zip(vocabulary, groups, strict=True)), threshold),
              "mean_relative_drop": sum(r["relative_drop"] for r in drops) / max(len(drops), 1),
              "weighted_relative_drop": weighted_drop(drops),
              "semantic_retention": sum(retention) / max(len(retention), 1),
              "largest_drops": sorted(drops, key=lambda r: (-r["relative_drop"], r["layer"], r["neuron"]))[:20]}
    write_result(out_path, result)
    return result


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


def causal_check(model_dir: str, dtype: str, family: str, dataset: str, dataset_path: str, template: str,
                 limit: int | None, sample_seed: int, association_path: str, k: int, ablate: int, draws: int,
                 seed: int, device: torch.device, out_path: str | os.PathLike, offload: Mapping | None = None
                 ) -> dict:
    """Step 4 on the dense model: the causal curve of matched vs random ablation (see nsa.causal)."""
    tensors, _ = load_association(association_path)
    scores, matched = _matched(tensors, k)
    width = next(iter(scores.values())).shape[1]
    check_supply(ranked_neurons(scores, matched), matched, width, ablate)  # before loading anything
    with loaded_model(model_dir, dtype, device, offload) as (model, tokenizer):
        examples = nsa_examples(tokenizer, dataset_path, template, limit, sample_seed)
        result = causal_curve(model, get_family(family), examples, scores, matched, tensors["mean"], width,
                              ablate, draws, seed)
    result = {"dataset": dataset, "ablate_neurons": ablate, "seed": seed, "matched_neurons": sum(map(len,
              matched.values())), **result}
    write_result(out_path, result)
    return result

