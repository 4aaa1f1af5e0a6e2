"""NSA step 2's per-neuron measures of a word's mediated effect, side by side on a real model: exact activation
patching (what pairs are matched on), first order (attribution patching, nsa.mediation) and conductance (Captum's
LayerConductance, nsa.conductance) at each --steps.

Per example of an offline dataset, its --words strongest record-word occurrences by occlusion (nsa.words), among
the words it holds once (nsa.mediation pools a word's occurrences in an example); per occurrence, first order and
conductance for every neuron of --layers, and the exact patching effect of the union of each measure's --top
neurons by |value| (no measure is scored only on the pairs it picked). Over those (word, neuron) pairs: each
measure's Spearman correlation with exact, mean |difference| (nats), how often its top pair is exact's top, and
its seconds. Writes <out>/nsa_conductance.csv (one row per pair) and <out>/nsa_conductance.md.

  python bench/nsa_conductance.py --model-dir data/models/smollm2-135m --dataset movie_reviews --examples 4
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outputs import write_outputs  # noqa: E402

from prunescope.models.families import get_family  # noqa: E402
from prunescope.models.prepare import load_model  # noqa: E402
from prunescope.nsa.answers import mean_embedding  # noqa: E402
from prunescope.nsa.conductance import word_conductance  # noqa: E402
from prunescope.nsa.mediation import MediationOptions, MediationSums, example_mediation  # noqa: E402
from prunescope.nsa.options import NsaData  # noqa: E402
from prunescope.nsa.patching import intact_prompt, occluded_pass, patched_effects  # noqa: E402
from prunescope.nsa.words import occurrence_attributions  # noqa: E402
from prunescope.reporting.statistics import spearman  # noqa: E402

COLUMNS = ["example", "word", "effect", "layer", "neuron", "exact", "first_order", "conductance"]


def strongest_occurrences(model, example, baseline, count: int) -> list[tuple[str, list[int]]]:
    """(word, token positions) of the example's `count` occurrences with the largest |occlusion effect|, among
    the words it holds once."""
    words = example.prompt.words
    scores = occurrence_attributions(model, example, "occlusion", baseline, 32, 0)
    once = sorted((o for o in scores if words.count(words[o]) == 1), key=lambda o: -abs(scores[o]))[:count]
    return [(words[o], [t for t, w in enumerate(example.prompt.token_words) if w == o]) for o in once]


class Measured(NamedTuple):
    """One occurrence: its effect (nats), the patched (layer position, neuron) pairs, each measure's values on them
    (nats: exact, first_order, conductance@steps), each measure's seconds, and per layer and --steps the layer's
    conductance summed over its neurons, over the effect."""

    effect: float
    pairs: list[tuple[int, int]]
    values: dict[str, torch.Tensor]
    seconds: dict[str, float]
    layer_sums: list[float]


def measure(model, family, example, word, positions, layers, baseline, top: int, steps: list[int], batch_size: int
            ) -> Measured:
    """One occurrence measured three ways. First order's seconds: the intact pass with gradients and the occluded
    one; exact's: an occluded pass for the pairs' activations, the intact margin and one forward per pair."""
    width = family.mlp_out(family.blocks(model)[layers[0]]).in_features
    clock = time.perf_counter()
    sums = MediationSums.empty(1, len(layers), width, len(example.choices))  # 0 candidates: first order only
    example_mediation(model, family, example, {word: 0}, layers, baseline, MediationOptions(0, 0, 0, batch_size), sums)
    (occurrence,) = sums.patched
    values = {"first_order": sums.first_order[:, 0] * (1.0 if occurrence.effect >= 0 else -1.0)}
    seconds, layer_sums = {"first_order": time.perf_counter() - clock}, []
    for n in steps:
        clock = time.perf_counter()
        found = word_conductance(model, family, example, positions, layers, baseline, n, batch_size)
        values[f"conductance@{n}"] = found.neurons()
        seconds[f"conductance@{n}"] = time.perf_counter() - clock
        layer_sums += (found.neurons().sum(1) / found.effect).tolist()
    clock = time.perf_counter()
    pairs = sorted({divmod(int(i), width) for v in values.values() for i in v.flatten().abs().topk(top).indices})
    columns = {p: [n for q, n in pairs if q == p] for p in range(len(layers))}
    intact = dataclasses.replace(intact_prompt(model, family, example, layers), below={})  # whole-prompt forwards
    _, kept = occluded_pass(intact, baseline, [positions],
                            lambda p, occluded: torch.tensor(columns[p], dtype=torch.long,
                                                             device=occluded.device).expand(occluded.shape[0], -1))
    patches = [[(p, n, kept[p][1][0, :, columns[p].index(n)])] for p, n in pairs]
    exact = patched_effects(intact, patches, batch_size)
    seconds["exact"] = time.perf_counter() - clock
    on_pairs = {name: torch.stack([value[p, n] for p, n in pairs]) for name, value in values.items()}
    return Measured(occurrence.effect, pairs, {"exact": torch.tensor(exact, dtype=torch.float64), **on_pairs},
                    seconds, layer_sums)


def summary(measured: list[Measured], names: list[str]) -> list[dict]:
    """Per measure over every patched pair: Spearman with exact, mean |difference|, top-1 agreement, seconds."""
    exact = np.concatenate([m.values["exact"].numpy() for m in measured])
    rows = []
    for name in names:
        found = np.concatenate([m.values[name].numpy() for m in measured])
        agrees = [int(m.values[name].abs().argmax()) == int(m.values["exact"].abs().argmax()) for m in measured]
        rows.append({"measure": name, "pairs": len(exact), "seconds": sum(m.seconds[name] for m in measured),
                     "spearman": float(spearman(exact, found)) if name != "exact" else 1.0,
                     "mean_abs_diff": float(np.abs(found - exact).mean()), "top1": float(np.mean(agrees))})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default="data/models/smollm2-135m")
    parser.add_argument("--family", default="llama")
    parser.add_argument("--dataset", default="movie_reviews", help="one with single-token choices")
    parser.add_argument("--datasets-dir", default="data/datasets")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--words", type=int, default=1, help="occurrences per example")
    parser.add_argument("--layers", type=int, nargs="+", help="default: five evenly spaced layers")
    parser.add_argument("--top", type=int, default=8, help="pairs patched per measure and occurrence")
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 64], help="conductance's path intervals")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="reports/bench")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, tokenizer = load_model(args.model_dir, "float32", torch.device("cpu"))
    family = get_family(args.family)
    count = len(family.blocks(model))
    layers = args.layers or sorted({round(i * (count - 1) / 4) for i in range(5)})
    template = yaml.safe_load(Path(args.params).read_text())["datasets"][args.dataset]["template"]
    examples = NsaData(str(Path(args.datasets_dir) / f"{args.dataset}.jsonl"), template, args.examples,
                       0).examples(tokenizer)
    baseline, measured, rows = mean_embedding(model), [], []
    for i, example in enumerate(examples):
        for word, positions in strongest_occurrences(model, example, baseline, args.words):
            found = measure(model, family, example, word, positions, layers, baseline, args.top, args.steps,
                            args.batch_size)
            measured.append(found)
            rows += [{"example": i, "word": word, "effect": found.effect, "layer": layers[p], "neuron": n,
                      **{name: float(found.values[name][j]) for name in ("exact", "first_order")},
                      "conductance": float(found.values[f"conductance@{args.steps[-1]}"][j])}
                     for j, (p, n) in enumerate(found.pairs)]
    names = ["exact", "first_order", *(f"conductance@{n}" for n in args.steps)]
    ratios = np.array([ratio for found in measured for ratio in found.layer_sums])
    lines = ["# NSA: exact patching, first order and conductance per (word, neuron)", "",
             f"{Path(args.model_dir).name}, {args.dataset}: {len(measured)} occurrences (the strongest of "
             f"{len(examples)} examples), layers {layers}, the union of each measure's top {args.top} pairs patched; "
             f"{args.threads} thread(s), {time.perf_counter() - started:.0f} s in all. Effects: median |effect| "
             f"{np.median([abs(m.effect) for m in measured]):.3f} nats.", "",
             "| measure | pairs | Spearman vs exact | mean abs diff (nats) | top pair = exact's | seconds |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['measure']} | {r['pairs']} | {r['spearman']:.3f} | {r['mean_abs_diff']:.4f} | {r['top1']:.2f} | "
              f"{r['seconds']:.1f} |" for r in summary(measured, names)]
    lines += ["", f"A layer's conductance summed over its neurons, over the effect (1 for a cut; a residual layer is "
              f"not one): median {np.median(ratios):.2f}, range {ratios.min():.2f} to {ratios.max():.2f}. The CSV "
              f"holds conductance at {args.steps[-1]} steps."]
    write_outputs(Path(args.out), "nsa_conductance", COLUMNS, rows, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
