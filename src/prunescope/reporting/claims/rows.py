"""What a claims table is made of: the claims, the verdicts, the columns, the tests' names, the claims section of
params.yaml (Settings) and one tested comparison (Row)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

CLAIMS = {
    "sentiment_hurt_most": "Sentiment is hurt most by pruning",
    "calibration_changes_result": "The calibration data changes the result",
    "calibration_over_method": "At high sparsity, the calibration data matters more than the pruning method "
                               "(Ji et al., ICLR 2025)",
    "task_calibration_helps_own_task": "Task-derived calibration helps its own task (Bandari et al., EMNLP 2024)",
    "perplexity_predicts_damage": "Perplexity predicts the task damage",
    "nsa_drop_tracks_accuracy": "NSA's effect-weighted matched-pair drop tracks the accuracy drop",
    "nsa_neurons_causal": "NSA's pairing is causal: a word group's matched neurons carry more of its words' effect "
                          "than random neurons of the same layers",
    "nsa_guided_recovers": "NSA-guided pruning recovers the protected category at equal sparsity",
}
VERDICTS = ("supported", "contradicted", "inconclusive", "not tested")
COLUMNS = ["claim", "scope", "comparison", "expected", "unit", "effect", "ci_low", "ci_high", "n", "test", "p",
           "p_holm", "verdict", "resolve_n", "resolve_unit", "note"]
EXPECTED = {"negative": -1, "positive": 1, "nonzero": 0}
MCNEMAR = "exact McNemar"
BOOTSTRAP = "paired bootstrap (examples; seeds)"
PERMUTATION = "permutation (Spearman)"


@dataclass(frozen=True)
class Settings:
    """The claims section of params.yaml."""

    alpha: float = 0.05
    power: float = 0.8
    bootstrap_iters: int = 9999
    seed: int = 0
    high_sparsity: float = 0.6
    design: dict | None = None  # the example-count design (reporting.power), read by the power rule


@dataclass
class Row:
    """One tested (or untestable) comparison of a claim. `factor` is a Bonferroni factor already in p (a row that
    picks the strongest of several comparisons); `se` and `n` feed the figure of how much data would resolve it."""

    claim: str
    scope: str
    comparison: str = ""
    expected: str = ""  # negative, positive or nonzero: the sign the claim predicts
    unit: str = ""
    effect: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0
    test: str = ""
    p: float = math.nan
    note: str = ""
    se: float = field(default=math.nan, repr=False)
    factor: int = field(default=1, repr=False)
    resolve_unit: str = "examples per dataset"


def grid_hint(grid: str) -> str:
    """Where in params.yaml a claim without data says to add it."""
    return f"grids.{grid}"
