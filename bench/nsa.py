"""NSA's scoring and causal curve against their plain baselines, side by side on the same examples.

1. Occlusion: the gold margin of every one-word-occluded variant of each prompt (the batches Captum's
   FeatureAblation asks for, 32 variants per call), with the tokens shared with the prompt computed once
   (answers.variant_margins) against a full forward of every variant (answers.gold_margin).
2. Scoring: the gold margins of the NSA examples, packed 16 per forward (each prompt with all its choices in one
   row) against one example per forward.
3. The causal curve's ablated settings (K = 1, 2, 4, ..., --ablate best-matched neurons of an association file,
   zero ablation, with --draws random draws of the same layers each): resumed from the block below each setting's
   lowest ablated layer (nsa.causal) against a full forward of every setting (the plain loop).
4. Mediated matching (step 2, nsa.mediation.mediation_sums over the association's vocabulary, params.yaml's
   candidates): each patched forward resumed at its rows' lowest patched layer (neurons.resume_points) and run
   from the occluded word's first token after the intact prefix's key/value cache, against patched forwards of
   the whole prompt from the embeddings (patching.patched_effects without the resume points and the starts);
   against the same from the word on through every block (no resume points: multi-token answers before they
   resumed); and the rows grouped into forwards by cost (patching.forward_groups) against the same rows batched in
   order.
Each pair must give the same margins (the largest difference is recorded; for 4, of the pooled exact effects).
Writes <out>/nsa.csv and <out>/nsa.md.

  python bench/nsa.py --model-dir data/models/smollm2-135m --association results/nsa/smollm2-135m/{dataset}/\
association.safetensors --datasets movie_reviews social_iqa --examples 32

Multi-token answers, mediated matching only (step 1's words, no association needed; reports/bench/nsa_social_iqa.md):
  python bench/nsa.py --association results/nsa/smollm2-135m/{dataset}/association.safetensors \
      --words results/nsa/smollm2-135m/{dataset}/words.json --datasets social_iqa --examples 8 --stem nsa_social_iqa
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outputs import write_outputs  # noqa: E402

from prunescope.io import read_result  # noqa: E402
from prunescope.models.families import Family, get_family  # noqa: E402
from prunescope.models.prepare import load_model  # noqa: E402
from prunescope.nsa import mediation, patching  # noqa: E402
from prunescope.nsa.answers import gold_margin, score_examples, variant_margins  # noqa: E402
from prunescope.nsa.causal import _score_settings, by_layer, k_values, random_neurons, ranked_neurons  # noqa: E402
from prunescope.nsa.neurons import ablated  # noqa: E402
from prunescope.nsa.options import MediationOptions, NsaData  # noqa: E402
from prunescope.nsa.stages import _matched, _studied_layers, load_association  # noqa: E402

COLUMNS = ["dataset", "measure", "examples", "settings", "baseline_s", "ours_s", "speedup", "max_margin_diff"]


def causal_settings(tensors: dict, k: int, limit: int, draws: int, seed: int) -> list[dict[int, list[int]]]:
    """The causal curve's neuron sets: top-K matched and `draws` random draws of the same layers, per K."""
    scores, matched = _matched(tensors, k)
    ranked, width = ranked_neurons(scores, matched), next(iter(scores.values())).shape[1]
    rng, settings = random.Random(seed), []
    for top in k_values(limit):
        chosen = by_layer(ranked[:top])
        counts = {layer: len(found) for layer, found in chosen.items()}
        settings += [chosen, *(random_neurons(counts, matched, width, rng) for _ in range(draws))]
    return settings


def occlusion_variants(example, pad_id: int) -> torch.Tensor:
    """The prompt with each record word's tokens replaced by pad_id, one row per word occurrence."""
    prompt, words = example.prompt.input_ids, example.prompt.token_words
    return torch.tensor([[pad_id if w == word else t for t, w in zip(prompt, words, strict=True)]
                         for word in sorted(set(words) - {-1})])


def compare(model, family: Family, examples, settings: list[dict[int, list[int]]], pad_id: int = 0) -> list[dict]:
    """Three rows: occlusion (a forward per variant vs shared prefixes), scoring (one example per forward vs
    packed) and the causal settings (full forwards vs resumed)."""
    batches = [(example, variants[start:start + 32]) for example in examples
               for variants in [occlusion_variants(example, pad_id)] for start in range(0, len(variants), 32)]
    with torch.no_grad():
        start = time.perf_counter()
        full = [gold_margin(model, example, variants) for example, variants in batches]
        middle = time.perf_counter()
        shared = [variant_margins(model, example, variants) for example, variants in batches]
        end = time.perf_counter()
    occlusion = {"measure": "occlusion", "examples": len(examples), "settings": 1, "baseline_s": middle - start,
                 "ours_s": end - middle,
                 "max_margin_diff": max(float((a - b).abs().max()) for a, b in zip(full, shared, strict=True))}
    start = time.perf_counter()
    single = score_examples(model, examples, batch_size=1)
    middle = time.perf_counter()
    packed = score_examples(model, examples)
    end = time.perf_counter()
    rows = [occlusion, {"measure": "scoring", "examples": len(examples), "settings": 1, "baseline_s": middle - start,
             "ours_s": end - middle, "max_margin_diff": float(np.abs(np.subtract(single[0], packed[0])).max())}]
    start = time.perf_counter()
    plain = []
    for neurons in settings:
        with ablated(model, family, neurons):
            plain.append(score_examples(model, examples))
    middle = time.perf_counter()
    _, resumed = _score_settings(model, family, examples, [(neurons, "zero") for neurons in settings], {}, 16)
    end = time.perf_counter()
    difference = max(abs(float(np.mean(a[0])) - float(np.mean(b[0]))) for a, b in zip(plain, resumed, strict=True))
    rows.append({"measure": "causal settings", "examples": len(examples), "settings": len(settings),
                 "baseline_s": middle - start, "ours_s": end - middle, "max_margin_diff": difference})
    for row in rows:
        row["speedup"] = row["baseline_s"] / row["ours_s"]
    return rows


def in_order(keys, length: int, blocks: int, batch_size: int, _tail: int = 0) -> list[list[int]]:
    """The rows in (block, position) order, batch_size to a forward: patched_effects' grouping before forward_groups."""
    order = sorted(range(len(keys)), key=lambda row: (keys[row], row))
    return [order[first:first + batch_size] for first in range(0, len(order), batch_size)]


def mediated(model, family: Family, examples, vocabulary: list[str], layers: list[int],
             options: MediationOptions) -> list[dict]:
    """Step 2's mediation sums four ways: patched forwards of the whole prompt from the embeddings; from the word
    on through every block; resumed at the lowest patched layer too, rows batched in order; and the workflow's,
    rows grouped into forwards by cost."""
    ours = patching.patched_effects

    def every_block(intact, patches, batch_size, starts=None):  # from the word (or position 0), from block 0
        return ours(dataclasses.replace(intact, below={}), patches, batch_size, starts)

    def whole_prompt(intact, patches, batch_size, _starts=None):  # from block 0 and position 0
        return every_block(intact, patches, batch_size)

    runs = {"whole prompt": (whole_prompt, in_order), "every block": (every_block, patching.forward_groups),
            "in order": (ours, in_order), "ours": (ours, patching.forward_groups)}
    timed, sums = {}, {}
    for name, (patches, grouping) in runs.items():
        with mock.patch.object(mediation, "patched_effects", patches), \
                mock.patch.object(patching, "forward_groups", grouping):
            start = time.perf_counter()
            sums[name] = mediation.mediation_sums(model, family, examples, vocabulary, layers, options)
            timed[name] = time.perf_counter() - start
    patched = sum(len(o.exact) for o in sums["ours"].patched)
    return [{"measure": measure, "examples": len(examples), "settings": patched, "baseline_s": timed[base],
             "ours_s": timed["ours"], "speedup": timed[base] / timed["ours"],
             "max_margin_diff": float((sums[base].exact - sums["ours"].exact).abs().max())}
            for measure, base in (("mediated matching", "whole prompt"),
                                  ("mediated, resumed at the lowest patched layer", "every block"),
                                  ("mediated, forwards grouped by cost", "in order"))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default="data/models/smollm2-135m")
    parser.add_argument("--family", default="llama")
    parser.add_argument("--association", required=True, help="path with {dataset}, e.g. results/nsa/m/{dataset}/...")
    parser.add_argument("--words", help="path with {dataset} to step 1's words.json: for a dataset with no association "
                        "file, only mediated matching is measured, on these words and params.yaml's nsa.layers")
    parser.add_argument("--datasets", nargs="+", default=["movie_reviews", "social_iqa"])
    parser.add_argument("--datasets-dir", default="data/datasets")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--ablate", type=int, default=8)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="reports/bench")
    parser.add_argument("--stem", default="nsa", help="the outputs' name: <out>/<stem>.csv and .md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = yaml.safe_load(Path(args.params).read_text())
    model, tokenizer = load_model(args.model_dir, "float32", torch.device("cpu"))
    family, rows = get_family(args.family), []
    for dataset in args.datasets:
        examples = NsaData(str(Path(args.datasets_dir) / f"{dataset}.jsonl"), params["datasets"][dataset]["template"],
                           args.examples, 0).examples(tokenizer)
        nsa, association = params["nsa"], Path(args.association.format(dataset=dataset))
        if association.exists():
            tensors, info = load_association(association)
            settings = causal_settings(tensors, nsa["neurons_per_word"], args.ablate, args.draws, 0)
            rows += [{"dataset": dataset, **row}
                     for row in compare(model, family, examples, settings, tokenizer.pad_token_id)]
            vocabulary, layers = info["vocabulary"], sorted(tensors["mean"])
        elif args.words:
            vocabulary = sorted(read_result(args.words.format(dataset=dataset), "nsa_words")["words"])
            layers = _studied_layers(model, args.family, nsa["layers"])
        else:
            raise SystemExit(f"{association} is missing (its nsa_association job makes it) and no --words was given")
        options = MediationOptions(nsa["share_floor"], nsa["effect_floor"], nsa["candidates"], nsa["attribution_batch"])
        rows += [{"dataset": dataset, **row} for row in mediated(model, family, examples, vocabulary, layers, options)]
    lines = ["# NSA: occlusion, scoring, causal settings and mediated matching vs their plain baselines", "",
             f"{args.examples} NSA examples per dataset, {args.threads} thread(s), zero ablation, "
             f"K up to {args.ablate} with {args.draws} random draws each; mediated matching's settings are its "
             "patched (word, neuron) pairs.", "",
             "| dataset | measure | settings | baseline s | ours s | speedup | max margin diff |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['dataset']} | {r['measure']} | {r['settings']} | {r['baseline_s']:.1f} | {r['ours_s']:.1f} | "
              f"{r['speedup']:.2f}x | {r['max_margin_diff']:.1e} |" for r in rows]
    write_outputs(Path(args.out), args.stem, COLUMNS, rows, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
