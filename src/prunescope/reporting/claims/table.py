"""The claims table: every claim's rows, Holm's correction over the tested ones, each row's verdict and, when
inconclusive, how much data would resolve it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict

import numpy as np
import pandas as pd

from prunescope.reporting.claims.accuracy import (
    calibration_changes_result,
    calibration_over_method,
    nsa_guided_recovers,
    sentiment_hurt_most,
    task_calibration_helps_own_task,
)
from prunescope.reporting.claims.proxies import nsa_drop_tracks_accuracy, nsa_neurons_causal, perplexity_predicts_damage
from prunescope.reporting.claims.rows import COLUMNS, EXPECTED, Row, Settings
from prunescope.reporting.floor import above_floor
from prunescope.reporting.statistics import examples_needed, holm, points_needed


def claims_table(rows: Sequence[Row], settings: Settings) -> pd.DataFrame:
    """Holm over the tested rows, then each row's verdict and, when inconclusive, how much data would resolve it."""
    tested = [row for row in rows if math.isfinite(row.p)]
    adjusted = dict(zip(map(id, tested), holm([row.p for row in tested]), strict=True)) if tested else {}
    level = settings.alpha / max(len(tested), 1)
    records = []
    for row in rows:
        record = {key: value for key, value in asdict(row).items() if key in COLUMNS}
        if id(row) not in adjusted:
            records.append(record | {"verdict": "not tested", "p_holm": math.nan, "resolve_n": None,
                                     "resolve_unit": ""})
            continue
        p_holm = float(adjusted[id(row)])
        sign = EXPECTED[row.expected]
        if p_holm < settings.alpha:
            verdict = "supported" if sign == 0 or np.sign(row.effect) == sign else "contradicted"
            resolve = None
        else:
            verdict = "inconclusive"
            alpha = level / row.factor
            resolve = (points_needed(row.effect, alpha, settings.power) if row.resolve_unit == "variants"
                       else examples_needed(row.effect, row.se, row.n, alpha, settings.power))
        records.append(record | {"p_holm": p_holm, "verdict": verdict, "resolve_n": resolve,
                                 "resolve_unit": row.resolve_unit if verdict == "inconclusive" else ""})
    table = pd.DataFrame(records, columns=COLUMNS)
    table["resolve_n"] = table["resolve_n"].astype("Int64")
    table["n"] = table["n"].astype("Int64").where(table["verdict"] != "not tested")
    return table


def all_claims(results: pd.DataFrame, guided: pd.DataFrame, perplexity_points: pd.DataFrame,
               drops: pd.DataFrame | None,
               causal_paths: Iterable[str], sources: Mapping[str, dict], base_group: str, grid: str,
               settings: Settings, floors: pd.DataFrame) -> pd.DataFrame:
    """Every claim's rows, in CLAIMS order, as one table. floors (floor.floor_table): the accuracy claims use only
    above-floor datasets (sentiment_hurt_most says which it left out; perplexity_points and drops come filtered)."""
    kept = above_floor(results, floors)
    kept_guided = above_floor(guided, floors) if len(guided) else guided
    guided_rows = nsa_guided_recovers(kept, kept_guided, grid, settings)
    if len(guided) and kept_guided.empty:
        guided_rows = [Row("nsa_guided_recovers", "all", note="not tested: every dataset of the protected categories "
                                                               "is at floor (reports/tables/floor.md)")]
    rows = (sentiment_hurt_most(results, base_group, grid, settings, floors)
            + calibration_changes_result(kept, grid, settings)
            + calibration_over_method(kept, grid, settings)
            + task_calibration_helps_own_task(kept, sources, grid, settings)
            + perplexity_predicts_damage(perplexity_points, grid, settings)
            + nsa_drop_tracks_accuracy(drops, grid, settings)
            + nsa_neurons_causal(causal_paths, grid, settings)
            + guided_rows)
    return claims_table(rows, settings)
