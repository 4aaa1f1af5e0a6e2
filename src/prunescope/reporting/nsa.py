"""NSA's tables, headline numbers and figures: matched-neuron drops against accuracy drops, the causal check,
the matched neurons' share of the words' effect by layer and position, the paper's matching beside the mediated
one, NSA-guided vs plain pruning, and the token heatmaps."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from prunescope.io import atomic_path, read_result
from prunescope.reporting.figures import plt, save_figure, set_style  # plt on the Agg backend
from prunescope.reporting.statistics import change_draws, percentile_interval, resample_seeds, row_rng
from prunescope.reporting.tables import CATEGORIES, calibration_group

DROP_KEYS = ["model", "dataset", "method", "pattern", "calib"]
HEATMAP_CONTEXT = 10  # tokens shown on each side of the key word


def drop_table(compare_paths: Iterable[str], results: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and pruned variant: matched-neuron drops, semantic retention and the accuracy drop."""
    rows = []
    for path in compare_paths:
        result = read_result(path, "nsa_compare")
        rows.append({**{key: result[key] for key in DROP_KEYS}, "pairs": result["pairs"],
                     "mean_relative_drop": result["mean_relative_drop"],
                     "weighted_relative_drop": result["weighted_relative_drop"],
                     "fraction_dropped": sum(g["fraction_dropped"] * g["pairs"] for g in result["groups"].values())
                     / max(result["pairs"], 1),
                     "semantic_retention": result["semantic_retention"]})
    drops = pd.DataFrame(rows)
    dense = results[results["method"] == "dense"].set_index(["model", "dataset"])["acc"].rename("dense_acc")
    table = drops.merge(results[DROP_KEYS + ["acc"]], on=DROP_KEYS, how="left", validate="one_to_one")
    table = table.join(dense, on=["model", "dataset"])
    table["acc_drop"] = table["dense_acc"] - table["acc"]
    return table.sort_values(DROP_KEYS, kind="stable").reset_index(drop=True)


def drop_correlation(table: pd.DataFrame, drop: str = "mean_relative_drop") -> dict:
    """Pearson and Spearman correlation of an NSA drop column with the accuracy drop (None when undefined)."""
    def corr(method: str) -> float | None:
        if len(table) < 3:
            return None
        value = table[drop].corr(table["acc_drop"], method=method)
        return None if pd.isna(value) else round(float(value), 4)

    return {"n": len(table), "pearson": corr("pearson"), "spearman": corr("spearman")}


def causal_table(causal_paths: Iterable[str]) -> pd.DataFrame:
    """One row per dataset, K and ablation: matched vs random change of the gold margin and of accuracy."""
    rows = []
    for path in causal_paths:
        result = read_result(path, "nsa_causal")
        for point in result["curve"]:
            row = {"dataset": result["dataset"], "k": point["k"], "ablation": point["ablation"],
                   "examples": result["examples"], "acc": result["acc"], "margin": result["margin"]}
            for measure in ("margin", "acc"):
                random = point[f"random_{measure}_change"]
                row |= {f"matched_{measure}_change": point[f"matched_{measure}_change"],
                        f"random_{measure}_change": random["mean"], f"random_{measure}_low": random["low"],
                        f"random_{measure}_high": random["high"]}
            row["beyond_random"] = row["matched_margin_change"] < row["random_margin_low"]
            rows.append(row)
    return pd.DataFrame(rows)


PAIRING_COLUMNS = ["model", "dataset", "group", "k", "occurrences", "effect", "matched", "random", "random_low",
                   "random_high", "other_group", "important", "specific"]


def pairing_table(causal_paths: Iterable[str]) -> pd.DataFrame:
    """One row per model, NSA dataset, word group and K: the share of the group's words' effect that patching its K
    best-matched neurons carries, against random neurons of the same layers (mean and 95% interval over draws),
    the other groups' matched neurons and the most salient ones (nsa.pairing). specific: matched beats all three."""
    rows = []
    for path in causal_paths:
        result = read_result(path, "nsa_causal")
        for group, test in sorted((result.get("pairing") or {}).items()):
            for point in test["curve"]:
                controls = [point["random"]["high"], point["other_group"], point["important"]]
                rows.append({"model": Path(path).parts[-3], "dataset": result["dataset"], "group": group,
                             "k": point["k"], "occurrences": test["occurrences"], "effect": test["effect"],
                             "matched": point["matched"], "random": point["random"]["mean"],
                             "random_low": point["random"]["low"], "random_high": point["random"]["high"],
                             "other_group": point["other_group"], "important": point["important"],
                             "specific": all(point["matched"] > c for c in controls if c is not None)})
    return pd.DataFrame(rows, columns=PAIRING_COLUMNS)


LAYER_SHARE_COLUMNS = ["model", "dataset", "group", "layer", "neurons", "occurrences", "effect", "share",
                       "share_last_token"]


OVERLAP_COLUMNS = ["model", "dataset", "mediated_pairs", "paper_pairs", "both", "mediated_effect_found"]


@dataclass(frozen=True)
class NsaTables:
    """What nsa_report writes its markdown and headline numbers from, one table per section."""

    drops: pd.DataFrame  # drop_table
    causal: pd.DataFrame  # causal_table
    pairing: pd.DataFrame  # pairing_table
    guided: pd.DataFrame  # guided_table
    layers: pd.DataFrame  # layer_share_table
    overlap: pd.DataFrame  # paper_overlap_table


def _mediated_associations(association_paths: Iterable[str]) -> Iterator[tuple[str, str, dict]]:
    """(model, dataset, association.json) of each file written by mediated matching with patched occurrences (a
    file written with `matching: paper` patches nothing)."""
    for path in association_paths:
        info = read_result(Path(path).with_suffix(".json"), "nsa_association")
        if info.get("matching") == "mediated" and info.get("occurrences"):
            yield info.get("model", Path(path).parts[-3]), info.get("dataset", Path(path).parts[-2]), info


def paper_overlap_table(association_paths: Iterable[str]) -> pd.DataFrame:
    """One row per model and NSA dataset: the (word, layer, neuron) pairs mediated matching made, those the paper's
    learned association made on the same examples (association.json "paper_matches": each word's neurons_per_word
    best per layer), the pairs both made, and the share of the mediated pairs' summed exact effect that the pairs
    both made carry: how much of what carries the words the paper's matching finds."""
    rows = []
    for model, dataset, info in _mediated_associations(association_paths):
        if info.get("paper_matches") is None:
            continue  # written before the comparison
        paper = {tuple(pair) for pair in info["paper_matches"]}
        mediated = {(m["word"], m["layer"], m["neuron"]): m["exact"] for m in info["matches"]}
        both = [pair for pair in mediated if pair in paper]
        total = sum(max(effect, 0.0) for effect in mediated.values())
        rows.append({"model": model, "dataset": dataset, "mediated_pairs": len(mediated), "paper_pairs": len(paper),
                     "both": len(both), "mediated_effect_found": (sum(max(mediated[pair], 0.0) for pair in both)
                                                                  / total if total > 0 else None)})
    return pd.DataFrame(rows, columns=OVERLAP_COLUMNS)


def layer_share_table(association_paths: Iterable[str]) -> pd.DataFrame:
    """One row per model, NSA dataset, word group and layer holding a neuron matched to one of the group's words
    (mediated matching; a file written with `matching: paper` has no patched occurrences and gives no row):
    neurons, the (layer, neuron)s matched to the group's words there; occurrences and effect, the group's patched
    occurrences and their mean |effect| (nats); share, the sum over those occurrences of the exact mediated effects
    of the neurons matched to the occurrence's word in that layer, over the sum of their |effect|;
    share_last_token, the same with each neuron patched at the last prompt token alone (the position split: what
    it carries where a head may have moved the word, against its own and the following tokens).

    The exact effects are association.json's "occurrences" as step 2 measured them (nsa.mediation: each already
    oriented by its occurrence's effect sign, as stages._patched_occurrences reads them back for the pairing test);
    a matched neuron counts only on the occurrences where it was among the patched candidates. A share is a sum of
    single-neuron effects (each neuron patched alone): shares across layers need not add to 1 and are not the
    effect of the layer's neurons patched together (the pairing test measures joint effects), and the last token's
    share need not be below the whole one (the margin is not additive over positions)."""
    rows = []
    for model, dataset, info in _mediated_associations(association_paths):
        group_of = dict(zip(info["vocabulary"], info["groups"], strict=True))
        matched: dict[str, set[tuple[int, int]]] = {}  # word: its matched (layer, neuron)s
        neurons: dict[tuple[str, int], set[int]] = {}  # (group, layer): the neurons matched to its words
        for match in info["matches"]:
            matched.setdefault(match["word"], set()).add((match["layer"], match["neuron"]))
            neurons.setdefault((group_of[match["word"]], match["layer"]), set()).add(match["neuron"])
        carried: dict[tuple[str, str, int], float] = {}  # (patched where, group, layer): matched neurons' effects
        effect: dict[str, list[float]] = {}  # group: its patched occurrences' |effect|
        for occurrence in info["occurrences"]:
            group = group_of[occurrence["word"]]
            effect.setdefault(group, []).append(abs(occurrence["effect"]))
            for where in ("exact", "last"):
                for layer, neuron, value in occurrence.get(where, ()):
                    if (layer, neuron) in matched.get(occurrence["word"], ()):
                        carried[where, group, layer] = carried.get((where, group, layer), 0.0) + value
        for (group, layer), found in sorted(neurons.items()):
            if group not in effect:
                continue
            total = max(sum(effect[group]), 1e-12)
            rows.append({"model": model, "dataset": dataset, "group": group, "layer": layer, "neurons": len(found),
                         "occurrences": len(effect[group]), "effect": sum(effect[group]) / len(effect[group]),
                         "share": carried.get(("exact", group, layer), 0.0) / total,
                         # association files from before the position split hold no "last": no number, not 0
                         "share_last_token": (carried.get(("last", group, layer), 0.0) / total
                                              if "last" in info["occurrences"][0] else None)})
    return pd.DataFrame(rows, columns=LAYER_SHARE_COLUMNS)


def guided_table(results: pd.DataFrame, guided: pd.DataFrame, iterations: int, seed: int) -> pd.DataFrame:
    """Per protected category, guided variant (calibration seeds pooled) and task category: dense, plain and guided
    mean accuracy, and the recovery (guided - plain) with a 95% percentile bootstrap interval that resamples each
    dataset's examples (the same ones for plain and guided: paired) and the seeds, as category_drop does."""
    dense = {(row.model, row.dataset): row.acc for row in results[results["method"] == "dense"].itertuples()}
    plain = results.set_index(DROP_KEYS)[["acc", "acc_per_example"]]
    keys = ["model", "protect", "method", "pattern", "calibration", "category"]
    columns = [*keys, "seeds", "dense_acc", "plain_acc", "guided_acc", "recovered", "ci_low", "ci_high"]
    if guided.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for key, group in guided.assign(calibration=guided["calib"].map(calibration_group)).groupby(keys, sort=True):
        rng = row_rng(seed, " ".join(map(str, key)))
        seeds = sorted(set(group["calib"]))
        seed_counts = resample_seeds(len(seeds), iterations, rng)
        accs, draws = [], []
        for dataset, per_dataset in group.groupby("dataset", sort=True):
            ours = per_dataset.set_index("calib")
            baseline = plain.loc[[(key[0], dataset, key[2], key[3], calib) for calib in seeds]]
            accs.append((dense[key[0], dataset], baseline["acc"].mean(), ours.loc[seeds, "acc"].mean()))
            matrix = np.asarray([*baseline["acc_per_example"], *ours.loc[seeds, "acc_per_example"]],
                                dtype=np.int64).T  # (examples, plain seeds + guided seeds)
            draws.append(change_draws(matrix, len(seeds), seed_counts, rng))
        low, high = percentile_interval(np.mean(draws, axis=0), iterations)
        dense_acc, plain_acc, guided_acc = np.mean(accs, axis=0)
        rows.append({**dict(zip(keys, key, strict=True)), "seeds": len(seeds), "dense_acc": dense_acc,
                     "plain_acc": plain_acc, "guided_acc": guided_acc, "recovered": guided_acc - plain_acc,
                     "ci_low": float(low), "ci_high": float(high)})
    table = pd.DataFrame(rows, columns=columns)
    table["category"] = pd.Categorical(table["category"], CATEGORIES, ordered=True)
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def nsa_metrics(tables: NsaTables) -> dict:
    """Headline numbers: the drop-accuracy correlation, matched vs random ablation, the pairing test at the largest
    K, the matched neurons' share of each group's effect per layer, whole and at the last prompt token
    (layer_share_table), the paper's matching beside the mediated one, guided recovery."""
    drops, causal, pairing, guided = tables.drops, tables.causal, tables.pairing, tables.guided
    metrics = {"drop_vs_accuracy": drop_correlation(drops),
               "weighted_drop_vs_accuracy": drop_correlation(drops, "weighted_relative_drop"), "causal": {},
               "pairing": {}, "layer_share": {}, "paper_overlap": {}}
    for row in tables.overlap.itertuples():
        metrics["paper_overlap"][f"{row.model} {row.dataset}"] = {
            "mediated_pairs": row.mediated_pairs, "paper_pairs": row.paper_pairs, "both": row.both,
            "mediated_effect_found": None if pd.isna(row.mediated_effect_found)
            else round(row.mediated_effect_found, 4)}
    for row in tables.layers.itertuples():
        metrics["layer_share"].setdefault(f"{row.model} {row.dataset}", {}).setdefault(row.group, {})[
            str(row.layer)] = round(row.share, 4)
        if row.share_last_token is not None and not pd.isna(row.share_last_token):
            metrics.setdefault("layer_share_last_token", {}).setdefault(f"{row.model} {row.dataset}", {}).setdefault(
                row.group, {})[str(row.layer)] = round(row.share_last_token, 4)
    for row in pairing.itertuples():  # the largest K of each model, dataset and group
        metrics["pairing"].setdefault(f"{row.model} {row.dataset}", {})[row.group] = {
            "k": row.k, "occurrences": row.occurrences,
            **{name: None if getattr(row, name) is None or pd.isna(getattr(row, name)) else round(getattr(row, name), 4)
               for name in ("matched", "random", "random_low", "random_high", "other_group", "important")},
            "specific": bool(row.specific)}
    for row in causal.itertuples():  # the largest K of each dataset and ablation
        metrics["causal"].setdefault(row.dataset, {})[row.ablation] = {
            "k": row.k, "matched_margin_change": round(row.matched_margin_change, 4),
            "random_margin_change": round(row.random_margin_change, 4),
            "random_margin_interval": [round(row.random_margin_low, 4), round(row.random_margin_high, 4)],
            "matched_acc_change": round(row.matched_acc_change, 4),
            "random_acc_change": round(row.random_acc_change, 4), "beyond_random": bool(row.beyond_random)}
    for row in guided.itertuples():
        key = f"guided_{row.protect}_{row.method}_{row.pattern}_{row.calibration}"
        metrics.setdefault(key, {})[str(row.category)] = {
            "plain": round(row.plain_acc, 4), "guided": round(row.guided_acc, 4), "recovered": round(row.recovered, 4),
            "recovered_interval": [round(row.ci_low, 4), round(row.ci_high, 4)]}
    return metrics


def write_markdown(tables: NsaTables, path: str) -> None:
    drops = tables.drops
    plain, weighted = drop_correlation(drops), drop_correlation(drops, "weighted_relative_drop")
    text = ("## Matched neurons: activation drop vs accuracy drop\n\n"
            f"Mean relative drop: Pearson r = {plain['pearson']}, Spearman rho = {plain['spearman']}; "
            f"importance-weighted drop: Pearson r = {weighted['pearson']}, Spearman rho = {weighted['spearman']}; "
            f"over {plain['n']} (dataset, variant) pairs.\n\n" + drops.to_markdown(index=False, floatfmt=".3f")
            + "\n\n## Causal curve: the K best-matched neurons ablated vs K random ones of the same layers (dense)\n\n"
            "Change of the mean gold margin (nats) and of accuracy; random: mean and 95% interval over draws; "
            "beyond_random: the matched change is below the random interval.\n\n"
            + tables.causal.to_markdown(index=False, floatfmt=".3f")
            + "\n\n## The pairing test: does a word group's matched set carry its words' effect? (dense)\n\n"
            "Share of the group's words' occlusion effect (on its strongest patched occurrences) that patching a set "
            "of neurons to their occluded activations carries: the group's K best neurons by mediated effect, "
            "ranked on the other half of its examples (cross-fitted), random neurons of the same layers (mean, 95% "
            "interval over draws), the other groups' K best and the most salient neurons of the same layers; "
            "specific: matched beats all three.\n\n"
            + _table(tables.pairing, "(no pairing test: it needs nsa.matching: mediated)")
            + "\n\n## Where the matched neurons carry the words' effect, by layer and position (dense)\n\n"
            "share: the exact mediated effects of the neurons matched to each word in that layer, each patched alone "
            "at every prompt position from the word on (so layers need not add to 1, and a layer's share is not its "
            "neurons' joint effect), summed over the group's patched occurrences and divided by their summed "
            "|effect|; share_last_token: the same with each neuron patched at the last prompt token alone, where an "
            "attention head may have moved the word (near share: the neuron reads the word there; near 0: at the "
            "word's own or the following tokens); neurons: the neurons matched there.\n\n"
            + _table(tables.layers, "(no by-layer shares: they need nsa.matching: mediated)")
            + "\n\n## The paper's matching beside mediated matching (dense)\n\n"
            "Pairs (word, layer, neuron) matched by mediated effect and by the paper's learned association on the "
            "same examples (each word's best neurons per layer by association x activation x gradient at the word's "
            "own tokens), the pairs both made, and the share of the mediated pairs' summed exact effect those carry: "
            "how much of what carries the words the paper's matching finds.\n\n"
            + _table(tables.overlap, "(no comparison: it needs nsa.matching: mediated)")
            + "\n\n## NSA-guided pruning: protected category's matched neurons exempt, equal layer sparsity\n\n"
            "recovered = guided - plain accuracy (calibration seeds pooled); 95% paired bootstrap interval over "
            "examples and seeds.\n\n"
            + _table(tables.guided, "(no guided variants in this grid)")
            + "\n")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _table(table: pd.DataFrame, empty: str) -> str:
    """The table as markdown, or `empty` (what the grid would need) when it has no rows."""
    return table.to_markdown(index=False, floatfmt=".3f") if len(table) else empty


def plot_heatmap(compare_results: Sequence[dict], png_path: str, svg_path: str) -> None:
    """One neuron on one example: the dense row above one row per pruned variant, the key word's values written."""
    set_style()
    example = compare_results[0]["example"]
    if example is None:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, f"{compare_results[0]['dataset']}: no matched (word, neuron) pair", ha="center", va="center")
        ax.set_axis_off()
        save_figure(fig, png_path, svg_path)
        return
    first = example["key_tokens"][0]
    window = slice(max(0, first - HEATMAP_CONTEXT), first + HEATMAP_CONTEXT + 1)
    rows = [example["dense"][window]] + [r["example"]["pruned"][window] for r in compare_results]
    labels = ["dense"] + [f"{r['method']} {r['pattern']}" for r in compare_results]
    tokens = [t.replace("\n", "\\n") for t in example["tokens"][window]]
    values = np.array(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(tokens)), 0.6 * len(rows) + 1.6))
    limit = float(np.abs(values).max()) or 1.0
    sns.heatmap(values, ax=ax, cmap="vlag", vmin=-limit, vmax=limit, xticklabels=tokens, yticklabels=labels,
                cbar_kws={"label": "activation"})
    for position in example["key_tokens"]:
        column = position - window.start
        if 0 <= column < values.shape[1]:
            for row in range(values.shape[0]):
                ax.text(column + 0.5, row + 0.5, f"{values[row, column]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(f"{compare_results[0]['dataset']}: neuron {example['neuron']} of layer {example['layer']}, "
                 f"key word '{example['word']}'")
    ax.tick_params(axis="x", rotation=90)
    save_figure(fig, png_path, svg_path)


def _curves_against_k(panels: Sequence, draw, xlabel: str, ylabel: str, empty: str, png_path: str,
                      svg_path: str) -> None:
    """One panel per key in `panels`, draw(ax, key) plotting its curves against K on a log-2 axis with a zero line;
    the panels share the y label and one legend; `empty` is said when there is no panel."""
    set_style()
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.5 * max(len(panels), 1), 3.8), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=False):
        draw(ax, key)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel if ax is axes[0][0] else "")
    if panels:
        axes[0][-1].legend(frameon=False, bbox_to_anchor=(1.02, 1), loc="upper left")
    else:
        axes[0][0].text(0.5, 0.5, empty, ha="center", va="center")
        axes[0][0].set_axis_off()
    save_figure(fig, png_path, svg_path)


def plot_causal_curve(causal: pd.DataFrame, png_path: str, svg_path: str) -> None:
    """Per dataset and ablation: the gold margin's change against K, matched neurons vs the random draws' mean and
    95% interval."""
    def draw(ax, key):
        dataset, ablation = key
        rows = causal[(causal["dataset"] == dataset) & (causal["ablation"] == ablation)].sort_values("k")
        ax.plot(rows["k"], rows["matched_margin_change"], marker="o", label="matched neurons")
        ax.plot(rows["k"], rows["random_margin_change"], marker="s", label="random neurons (mean)")
        ax.fill_between(rows["k"], rows["random_margin_low"], rows["random_margin_high"], alpha=0.25,
                        label="random: 95% of draws")
        ax.set_title(f"{dataset}, {ablation} ablation")

    panels = sorted(set(zip(causal["dataset"], causal["ablation"], strict=True))) if len(causal) else []
    _curves_against_k(panels, draw, "neurons ablated (K)", "change of mean gold margin (nats)",
                      "no causal check in this grid", png_path, svg_path)


def plot_pairing(pairing: pd.DataFrame, png_path: str, svg_path: str) -> None:
    """Per model, dataset and word group: the share of the words' effect carried against K, the group's own neurons
    vs random (mean and 95% of draws), the other groups' and the most salient neurons."""
    def draw(ax, key):
        model, dataset, group = key
        rows = pairing[(pairing["model"] == model) & (pairing["dataset"] == dataset) & (pairing["group"] == group)
                       ].sort_values("k")
        ax.plot(rows["k"], rows["matched"], marker="o", label="the group's K best (ranked on the other half)")
        ax.plot(rows["k"], rows["random"], marker="s", label="random, same layers (mean)")
        ax.fill_between(rows["k"], rows["random_low"], rows["random_high"], alpha=0.25, label="random: 95% of draws")
        ax.plot(rows["k"], rows["other_group"].astype(float), marker="^", label="the other groups' K best")
        ax.plot(rows["k"], rows["important"], marker="v", label="most salient, same layers")
        ax.set_title(f"{model}\n{dataset}, {group} words")

    panels = sorted(set(zip(pairing["model"], pairing["dataset"], pairing["group"], strict=True))) if len(
        pairing) else []
    _curves_against_k(panels, draw, "neurons patched (K)", "share of the words' effect carried",
                      "no pairing test in this grid (nsa.matching: paper)", png_path, svg_path)


def plot_drop_scatter(drops: pd.DataFrame, png_path: str, svg_path: str) -> None:
    """Each (dataset, variant): the matched pairs' effect-weighted drop against the accuracy drop."""
    set_style()
    correlation = drop_correlation(drops, "weighted_relative_drop")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    sns.scatterplot(data=drops, x="weighted_relative_drop", y="acc_drop", hue="dataset", style="method", s=80, ax=ax)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("matched pairs' relative drop, weighted by their dense effect")
    ax.set_ylabel("accuracy drop vs dense")
    r = "n/a" if correlation["pearson"] is None else f"{correlation['pearson']:.2f}"
    ax.set_title(f"NSA drop vs accuracy drop (Pearson r = {r}, n = {correlation['n']})")
    ax.legend(frameon=False, bbox_to_anchor=(1.02, 1), loc="upper left")
    save_figure(fig, png_path, svg_path)


def plot_guided(table: pd.DataFrame, png_path: str, svg_path: str) -> None:
    """Dense, plain and NSA-guided accuracy per category (mean over the guided variants' calibration seeds)."""
    set_style()
    long = (table.groupby(["protect", "method", "pattern", "category"], observed=True)
            [["dense_acc", "plain_acc", "guided_acc"]].mean().reset_index()
            .melt(id_vars=["protect", "method", "pattern", "category"], var_name="model variant", value_name="acc"))
    long["model variant"] = long["model variant"].map({"dense_acc": "dense", "plain_acc": "plain pruning",
                                                       "guided_acc": "NSA-guided pruning"})
    long["category"] = long["category"].astype(str)
    panels = sorted(set(zip(long["protect"], long["method"], long["pattern"], strict=True)))
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(6.5 * max(len(panels), 1), 4), squeeze=False)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no NSA-guided variants in this grid (nsa_guided)", ha="center", va="center")
        axes[0][0].set_axis_off()
    for ax, (protect, method, pattern) in zip(axes[0][: len(panels)], panels, strict=True):
        rows = long[(long["protect"] == protect) & (long["method"] == method) & (long["pattern"] == pattern)]
        sns.barplot(data=rows, x="category", y="acc", hue="model variant", ax=ax,
                    order=[c for c in CATEGORIES if c in set(rows["category"])])
        ax.set_title(f"{method} {pattern}, {protect} neurons protected")
        ax.set_xlabel("task category")
        ax.set_ylabel("accuracy")
        ax.legend(frameon=False, bbox_to_anchor=(1.02, 1), loc="upper left")
    save_figure(fig, png_path, svg_path)
