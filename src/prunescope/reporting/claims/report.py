"""The claims table written out: CSV (every column), Markdown (a section per claim), the JSON headline (a DVC
metric), and the README's Findings block generated from a committed claims CSV."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from prunescope.io import atomic_path, write_json
from prunescope.reporting.claims.rows import CLAIMS, VERDICTS, Settings

README_START, README_END = "<!-- findings:start -->", "<!-- findings:end -->"
FINDINGS_SOURCE = "reports/models/claims.csv"  # the README's Findings: the study on models that can do the tasks


def headline(table: pd.DataFrame, at_floor: Mapping[str, Sequence[str]] | None = None) -> dict:
    """For reports/claims.json (a DVC metric): verdict counts over the table and per claim, each row's verdict,
    effect and Holm p, and the datasets every accuracy claim left out as at floor (floor.at_floor_by_model)."""
    counts = {verdict: int((table["verdict"] == verdict).sum()) for verdict in VERDICTS}
    claims: dict = {}
    for claim in CLAIMS:
        rows = table[table["claim"] == claim]
        claims[claim] = {"counts": {v: int((rows["verdict"] == v).sum()) for v in VERDICTS}, "rows": {
            row.scope: {"verdict": row.verdict, **({} if row.verdict == "not tested" else {
                "effect": round(float(row.effect), 4), "p_holm": round(float(row.p_holm), 6)})}
            for row in rows.itertuples()}}
    return {"counts": counts, "at_floor": {model: list(datasets) for model, datasets in (at_floor or {}).items()},
            "claims": claims}


def write_claims(table: pd.DataFrame, csv_path: str, markdown_path: str, json_path: str, settings: Settings,
                 at_floor: Mapping[str, Sequence[str]] | None = None) -> None:
    """The table as CSV (every column), as Markdown (a section per claim) and its headline as JSON, atomically;
    at_floor (floor.at_floor_by_model) is named at the top of the Markdown and in the JSON."""
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(claims_markdown(table, settings, at_floor), encoding="utf-8")
    write_json(json_path, headline(table, at_floor))


def _number(value: float, digits: int = 3) -> str:
    return "--" if value is None or pd.isna(value) else f"{value:+.{digits}f}"


def _p(value: float) -> str:
    return "--" if pd.isna(value) else f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def claims_markdown(table: pd.DataFrame, settings: Settings, at_floor: Mapping[str, Sequence[str]] | None = None
                    ) -> str:
    counts = {v: int((table["verdict"] == v).sum()) for v in VERDICTS}
    tested = sum(counts[v] for v in VERDICTS[:3])
    lines = ["# Claims: what the data say", ""]
    if at_floor:
        listed = "; ".join(f"{model}: {', '.join(datasets)}" for model, datasets in at_floor.items())
        lines += [f"**Left out as at floor** (the dense model is not clearly above chance and the majority label "
                  f"there, so pruning cannot show damage; reports/tables/floor.md): {listed}. No accuracy claim "
                  f"below uses them; categories are compared by retained headroom, (pruned - floor) / "
                  f"(dense - floor).", ""]
    lines += [f"{tested} tested comparisons ({counts['supported']} supported, {counts['contradicted']} contradicted, "
              f"{counts['inconclusive']} inconclusive) and {counts['not tested']} not tested. Holm's correction over "
              f"the {tested} tests at alpha = {settings.alpha}; 95% intervals from {settings.bootstrap_iters} "
              f"bootstrap draws; 'to resolve': data at which an effect of the observed size is found at alpha / "
              f"{tested} with {settings.power:.0%} power (see prunescope.reporting.claims).", ""]
    if tested and 2 / (settings.bootstrap_iters + 1) >= settings.alpha / tested:
        lines += [f"**Too few bootstrap draws:** the smallest bootstrap p, 2 / ({settings.bootstrap_iters} + 1), is "
                  f"not below alpha / {tested}, so no bootstrap-tested row can pass Holm's first step: raise "
                  f"claims.bootstrap_iters above {math.ceil(2 * tested / settings.alpha)}.", ""]
    for claim, text in CLAIMS.items():
        rows = table[table["claim"] == claim]
        lines += [f"## {text}", ""]
        untested = rows[rows["verdict"] == "not tested"]
        lines += [f"- {row.scope}: {row.note}" for row in untested.itertuples()] + ([""] if len(untested) else [])
        rows = rows[rows["verdict"] != "not tested"]
        if len(rows):
            view = pd.DataFrame({
                "scope": rows["scope"], "comparison": rows["comparison"],
                "effect [95% CI]": [f"{_number(r.effect)} [{_number(r.ci_low)}, {_number(r.ci_high)}] {r.unit}"
                                    for r in rows.itertuples()],
                "n": rows["n"].astype(str), "test": rows["test"], "p": rows["p"].map(_p),
                "Holm p": rows["p_holm"].map(_p), "verdict": rows["verdict"],
                "to resolve": [f"{r.resolve_n} {r.resolve_unit}" if not pd.isna(r.resolve_n) else "--"
                               for r in rows.itertuples()]})
            notes = rows["note"].fillna("").astype(str)
            if (notes != "").any():
                view["note"] = notes.where(notes != "", "--").to_numpy()
            lines += [view.to_markdown(index=False)]
        lines.append("")
    return "\n".join(lines)


def findings_markdown(table: pd.DataFrame, source: str = FINDINGS_SOURCE) -> str:
    """The README's Findings block from the claims table at `source`: per claim, its verdict counts and its most
    significant row's numbers (lowest Holm p, then p, then the largest effect), or why it was not tested."""
    lines = [f"Generated from `{source}` by `make findings`; the numbers, tests and verdicts are in "
             f"`{Path(source).with_suffix('.md').as_posix()}`.", ""]
    for claim, text in CLAIMS.items():
        rows = table[table["claim"] == claim]
        tested = rows[rows["verdict"] != "not tested"]
        if tested.empty:
            lines.append(f"- **{text}**: {'; '.join(rows['note'].fillna(''))}.")
            continue
        counts = ", ".join(f"{int((tested['verdict'] == v).sum())} {v}" for v in VERDICTS[:3])
        top = tested.assign(size=tested["effect"].abs()).sort_values(
            ["p_holm", "p", "size", "scope"], ascending=[True, True, False, True], kind="stable").iloc[0]
        resolve = (f"; {int(top.resolve_n)} {top.resolve_unit} would resolve it" if top.verdict == "inconclusive"
                   and not pd.isna(top.resolve_n) else "")
        lines.append(f"- **{text}**: {counts} of {len(tested)}. Most significant: {top.scope}, {top.comparison} = "
                     f"{_number(top.effect)} [{_number(top.ci_low)}, {_number(top.ci_high)}] {top.unit}, "
                     f"Holm p = {_p(top.p_holm)} ({top.verdict}{resolve}).")
    return "\n".join(lines) + "\n"


def readme_with_findings(readme: str, table: pd.DataFrame, source: str = FINDINGS_SOURCE) -> str:
    """The README text with the block between the findings markers replaced by findings_markdown(table, source)."""
    pattern = re.compile(re.escape(README_START) + r"\n.*?" + re.escape(README_END), re.S)
    if not pattern.search(readme):
        raise ValueError(f"README.md has no {README_START} ... {README_END} block: put both markers, each on its own "
                         "line, where the findings belong")
    return pattern.sub(lambda _: f"{README_START}\n{findings_markdown(table, source)}{README_END}", readme)


def read_claims(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"note": str}, keep_default_na=True)
