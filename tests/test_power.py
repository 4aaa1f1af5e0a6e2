"""The example-count design against simulation with the exact test the claims use, and the table's caps."""

from __future__ import annotations

import numpy as np
import pytest

from prunescope.reporting.power import Design, examples_for_change, grid_eval_limit, power_at, power_table
from prunescope.reporting.statistics import mcnemar_p

DESIGN = Design(effect=0.05, discordance=0.15, alpha=0.05, power=0.8, tests=10)


def simulated_power(n: int, design: Design, draws: int = 400, seed: int = 0) -> float:
    """Share of simulated paired studies (dense right / pruned wrong with p = (psi + delta) / 2, the reverse with
    (psi - delta) / 2) where the exact McNemar test rejects at the design's Holm-first level."""
    rng = np.random.default_rng(seed)
    lost, gained = (design.discordance + design.effect) / 2, (design.discordance - design.effect) / 2
    hits = 0
    for _ in range(draws):
        outcome = rng.choice(3, size=n, p=[lost, gained, 1 - lost - gained])
        dense, pruned = (outcome == 0).astype(int), (outcome == 1).astype(int)
        hits += mcnemar_p(dense, pruned) < design.level
    return hits / draws


def test_the_designed_count_reaches_the_power_in_simulation_and_half_of_it_does_not():
    n = examples_for_change(DESIGN)
    assert 700 < n < 900  # the hand computation: (2.807 * 0.387 + 0.842 * 0.384)^2 / 0.0025 = 795
    assert power_at(n, DESIGN) == pytest.approx(0.8, abs=0.01)
    assert simulated_power(n, DESIGN) == pytest.approx(0.8, abs=0.08)  # exact McNemar is a little conservative
    assert simulated_power(n // 2, DESIGN) < 0.55


def test_more_tests_or_more_discordance_need_more_examples():
    more_tests = Design(0.05, 0.15, 0.05, 0.8, tests=40)
    noisier = Design(0.05, 0.3, 0.05, 0.8, tests=10)
    assert examples_for_change(more_tests) > examples_for_change(DESIGN)
    assert examples_for_change(noisier) > examples_for_change(DESIGN)


def test_a_design_whose_change_exceeds_its_discordance_is_refused():
    with pytest.raises(ValueError, match="effect <= discordance"):
        Design(effect=0.2, discordance=0.1, alpha=0.05, power=0.8, tests=1)


def test_the_table_says_which_cap_bit():
    table = power_table({"big": 5000, "small": 70}, {"big": "sentiment", "small": "nli"}, 300, DESIGN)
    rows = table.set_index("dataset")
    assert rows.loc["big", "evaluated"] == 300 and rows.loc["big", "short_by"] == "budget"
    assert rows.loc["small", "evaluated"] == 70 and rows.loc["small", "short_by"] == "data"
    assert rows.loc["small", "power"] < rows.loc["big", "power"] < 0.8
    everything = power_table({"big": 5000}, {"big": "sentiment"}, None, DESIGN).iloc[0]
    assert everything["evaluated"] == 5000 and everything["short_by"] == "" and everything["power"] > 0.99


def test_eval_limit_power_is_what_the_design_needs_over_the_grids_variants():
    """`power` resolves to the count for claims.design at claims.power; more variants to correct for need more."""
    claims = {"alpha": 0.05, "power": 0.8, "design": {"effect": 0.05, "discordance": 0.15}}
    assert grid_eval_limit("power", claims, 10) == examples_for_change(DESIGN) > grid_eval_limit("power", claims, 1)
    assert grid_eval_limit(64, claims, 10) == 64 and grid_eval_limit(None, claims, 10) is None
