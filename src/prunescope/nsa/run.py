"""NSA jobs on one dataset's evaluated examples: select words, learn the association, compare a pruned variant,
run the causal check. Each writes one artifact; the rules in workflow/rules/nsa.smk call these."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from prunescope.evaluation.tasks import DATA_FILE, task_name
from prunescope.io import atomic_path, read_jsonl, read_result, sha256_file, verify_sha256, write_result
from prunescope.models.families import get_family
from prunescope.models.prepare import load_model
from prunescope.nsa.causal import ablation_accuracies
from prunescope.nsa.compare import activation_drops, group_drop_fractions, matched_pairs, semantic_retention
from prunescope.nsa.matching import fit_association, top_words, zscore
from prunescope.nsa.neurons import mlp_activations
from prunescope.nsa.words import TokenizedPrompt, influential_words, render_with_spans, tokenize_words
from prunescope.pruning import apply_artifact

logger = logging.getLogger(__name__)
TOP_WORDS_SHOWN = 5


def task_prompts(tokenizer, task_dir: str | os.PathLike, template: str) -> tuple[list[TokenizedPrompt], list[str],
                                                                                  list[str]]:
    """(prompts with their record words, gold answers, groups) of a task's evaluated examples.

    Group = the gold label word where every example has the same label words (sentiment, NLI), else "correct"
    (multiple choice: the words push toward the correct option).
    """
    records = read_jsonl(Path(task_dir) / DATA_FILE)
    prompts = [tokenize_words(tokenizer, *render_with_spans(template, record)) for record in records]
    answers = [record["choices"][record["label"]] for record in records]
    fixed_labels = all(record["choices"] == records[0]["choices"] for record in records)
    return prompts, answers, answers if fixed_labels else ["correct"] * len(records)


def select_words(model_dir: str, dtype: str, task_dir: str, template: str, top_k: int, min_count: int,
                 device: torch.device, out_path: str | os.PathLike) -> dict:
    """Step 1 on the dense model: the influential vocabulary with each word's group."""
    model, tokenizer = load_model(model_dir, dtype, device)
    prompts, answers, groups = task_prompts(tokenizer, task_dir, template)
    vocabulary = influential_words(model, tokenizer, prompts, answers, groups, top_k, min_count)
    if not vocabulary:
        raise ValueError(f"no word of {task_dir} is among the top {top_k} of at least {min_count} examples: lower "
                         "nsa.min_count or use more examples")
    result = {"words": vocabulary, "examples": len(prompts), "top_k": top_k, "min_count": min_count,
              "task_data_sha256": sha256_file(Path(task_dir) / DATA_FILE)}
    write_result(out_path, result)
    logger.info("%d influential words from %d examples", len(vocabulary), len(prompts))
    return result


def _token_words(prompts: Sequence[TokenizedPrompt], vocabulary: list[str]) -> torch.Tensor:
    index = {word: i for i, word in enumerate(vocabulary)}
    return torch.tensor([index.get(p.words[w], -1) if w >= 0 else -1 for p in prompts for w in p.token_words])


def _activations(model, family: str, prompts: Sequence[TokenizedPrompt], layers: Sequence[int] | None
                 ) -> dict[int, torch.Tensor]:
    adapter = get_family(family)
    depth = len(adapter.blocks(model))
    if layers is not None and max(layers) >= depth:
        raise ValueError(f"nsa.layers lists layer {max(layers)}, but the model has {depth} blocks (0 to {depth - 1}): "
                         "fix nsa.layers in params.yaml")
    chosen = range(depth) if layers is None else layers
    return mlp_activations(model, adapter, [p.input_ids for p in prompts], list(chosen))


def _associations(activations: dict[int, torch.Tensor], token_words: torch.Tensor, n_words: int, epochs: int,
                  lr: float, lam: float, seed: int) -> dict[int, torch.Tensor]:
    layers = list(activations)
    fitted = fit_association(torch.stack([zscore(activations[layer])[0] for layer in layers]), token_words, n_words,
                             epochs, lr, lam, seed)
    return dict(zip(layers, fitted, strict=True))


def learn_association(model_dir: str, dtype: str, family: str, task_dir: str, template: str, words_path: str,
                      layers: Sequence[int] | None, epochs: int, lr: float, lam: float, seed: int,
                      device: torch.device, out_path: str | os.PathLike) -> None:
    """Step 2 on the dense model: A per layer (safetensors, key layer<L>) plus <out>.json with the vocabulary,
    groups, sha256 and each associated neuron's top words."""
    words = read_result(words_path, "nsa_words")["words"]
    vocabulary = sorted(words)
    model, tokenizer = load_model(model_dir, dtype, device)
    prompts, _, _ = task_prompts(tokenizer, task_dir, template)
    token_words = _token_words(prompts, vocabulary)
    associations = _associations(_activations(model, family, prompts, layers), token_words, len(vocabulary),
                                 epochs, lr, lam, seed)
    with atomic_path(out_path) as tmp:
        save_file({f"layer{layer}": a.contiguous() for layer, a in associations.items()}, tmp)
        digest = sha256_file(tmp)
    write_result(Path(out_path).with_suffix(".json"), {
        "vocabulary": vocabulary, "groups": [words[w]["group"] for w in vocabulary], "sha256": digest,
        "top_words": {f"{layer}:{neuron}": ranked for layer, a in associations.items()
                      for neuron, ranked in top_words(a, vocabulary, TOP_WORDS_SHOWN).items()},
    })


def load_association(path: str | os.PathLike) -> tuple[dict[int, torch.Tensor], dict]:
    """A per layer and its sidecar, after checking the file's sha256."""
    info = read_result(Path(path).with_suffix(".json"), "nsa_association")
    verify_sha256(path, info["sha256"], "the nsa_association rule rebuilds it")
    return {int(key.removeprefix("layer")): a for key, a in load_file(path).items()}, info


def compare_variant(model_dir: str, dtype: str, family: str, pruned_dir: str, task_dir: str, template: str,
                    association_path: str, k: int, threshold: float, epochs: int, lr: float, lam: float, seed: int,
                    device: torch.device, out_path: str | os.PathLike, labels: dict) -> dict:
    """Step 3: matched pairs' activation drops on the pruned model, per group, and semantic retention."""
    associations, info = load_association(association_path)
    vocabulary, groups = info["vocabulary"], info["groups"]
    model, tokenizer = load_model(model_dir, dtype, device)
    prompts, _, _ = task_prompts(tokenizer, task_dir, template)
    token_words = _token_words(prompts, vocabulary)
    layers = sorted(associations)
    dense = _activations(model, family, prompts, layers)
    apply_artifact(model, pruned_dir)
    pruned = _activations(model, family, prompts, layers)
    refitted = _associations(pruned, token_words, len(vocabulary), epochs, lr, lam, seed)
    drops, retention = [], []
    for layer in layers:
        rows = activation_drops(dense[layer], pruned[layer], token_words, matched_pairs(associations[layer], k))
        drops += [{**row, "layer": layer, "word": vocabulary[row["word"]]} for row in rows]
        retention += list(semantic_retention(associations[layer], refitted[layer]).values())
    by_group = group_drop_fractions(drops, dict(zip(vocabulary, groups, strict=True)), threshold)
    example = heatmap_example(tokenizer, prompts, token_words, vocabulary, associations, dense, pruned)
    result = {**labels, "pairs": len(drops), "groups": by_group, "threshold": threshold, "example": example,
              "mean_relative_drop": sum(r["relative_drop"] for r in drops) / max(len(drops), 1),
              "semantic_retention": sum(retention) / max(len(retention), 1),
              "largest_drops": sorted(drops, key=lambda r: (-r["relative_drop"], r["layer"], r["neuron"]))[:20]}
    write_result(out_path, result)
    return result


def heatmap_example(tokenizer, prompts: Sequence[TokenizedPrompt], token_words: torch.Tensor, vocabulary: list[str],
                    associations: dict[int, torch.Tensor], dense: dict[int, torch.Tensor],
                    pruned: dict[int, torch.Tensor]) -> dict:
    """One neuron on one example, for the token heatmap: the strongest (word, neuron) association of the dense
    model, on the example where that word fires the neuron most. It depends on the dense model only, so every
    pruned variant shows the same neuron and example."""
    layer, word, neuron = max(((float(a.max()), layer, *divmod(int(a.argmax()), a.shape[1]))
                               for layer, a in sorted(associations.items())), key=lambda t: t[0])[1:]
    starts = torch.tensor([0] + [len(p.input_ids) for p in prompts]).cumsum(0)
    on_word = torch.nonzero(token_words == word).flatten()
    best = int(on_word[dense[layer][on_word, neuron].argmax()])
    index = int(torch.searchsorted(starts, best, right=True)) - 1
    span = slice(int(starts[index]), int(starts[index + 1]))
    return {"layer": layer, "neuron": neuron, "word": vocabulary[word], "example": index,
            "tokens": [tokenizer.decode([i]) for i in prompts[index].input_ids],
            "key_tokens": torch.nonzero(token_words[span] == word).flatten().tolist(),
            "dense": [round(v, 4) for v in dense[layer][span, neuron].tolist()],
            "pruned": [round(v, 4) for v in pruned[layer][span, neuron].tolist()]}


def protected_neurons(association_paths: Sequence[str], k: int) -> dict[int, list[int]]:
    """NSA-guided pruning's exempt neurons: every influential word's k strongest neurons (its matched pairs),
    pooled over the protected category's datasets, per layer."""
    neurons: dict[int, set[int]] = {}
    for path in association_paths:
        for layer, association in load_association(path)[0].items():
            neurons.setdefault(layer, set()).update(n for _, n in matched_pairs(association, k))
    return {layer: sorted(found) for layer, found in sorted(neurons.items())}


def causal_check(model_dir: str, dtype: str, family: str, dataset: str, task_dir: str, association_path: str,
                 k: int, seed: int, batch_size: int, device: torch.device, out_path: str | os.PathLike) -> dict:
    """Step 4 on the dense model: zero the k most strongly matched neurons, then k random ones of the same layers."""
    associations, _ = load_association(association_path)
    strongest = sorted(((float(a[:, n].max()), layer, n) for layer, a in associations.items()
                        for n in range(a.shape[1]) if a[:, n].max() > 0), reverse=True)[:k]
    matched: dict[int, list[int]] = {}
    for _, layer, neuron in strongest:
        matched.setdefault(layer, []).append(neuron)
    model, tokenizer = load_model(model_dir, dtype, device)
    width = next(iter(associations.values())).shape[1]
    result = ablation_accuracies(model, tokenizer, get_family(family), task_dir, task_name(dataset), matched, width,
                                 seed, batch_size, str(device))
    write_result(out_path, {"dataset": dataset, "k": k, "seed": seed, **result})
    return result
