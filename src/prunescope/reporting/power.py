"""How many examples a dataset needs for the study to see an accuracy change of a given size, and what a grid's
example count buys.

A pruned variant and the dense model answer the same examples, so a change in accuracy is tested on the examples they
answer differently (McNemar). For a change `effect` with a share `discordance` of examples answered differently, the
normal approximation (Connor 1987) needs n = (z_{1-a/2} sqrt(psi) + z_power sqrt(psi - effect^2))^2 / effect^2
examples; solved for the power, it gives what n examples buy. Holm over m tests compares the smallest p-value with
a / m first, so a design at level a / m keeps its power after the correction (conservatively for the later steps).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# The Snakefile resolves `eval_limit: power` with this module at every parse: the design needs only the standard
# library, and pandas is imported where a table is made.
NORMAL = NormalDist()


@dataclass(frozen=True)
class Design:
    """The change the grid must resolve (params.yaml claims.design) and the claims' level, power and test count."""

    effect: float  # accuracy change, e.g. 0.05
    discordance: float  # share of examples the two models answer differently (>= effect)
    alpha: float
    power: float
    tests: int  # comparisons per dataset corrected together (the grid's pruned variants)

    def __post_init__(self):
        if not 0 < self.effect <= self.discordance <= 1:
            raise ValueError(f"claims.design needs 0 < effect <= discordance <= 1, got effect {self.effect} and "
                             f"discordance {self.discordance}: a change needs at least that share of changed answers")

    @property
    def level(self) -> float:
        return self.alpha / max(self.tests, 1)


def examples_for_change(design: Design) -> int:
    """Examples per dataset at which the design's change is found with the design's power."""
    z_level, z_power = NORMAL.inv_cdf(1 - design.level / 2), NORMAL.inv_cdf(design.power)
    psi, delta = design.discordance, design.effect
    return math.ceil((z_level * math.sqrt(psi) + z_power * math.sqrt(psi - delta**2)) ** 2 / delta**2)


def power_at(n: int, design: Design) -> float:
    """The probability that n examples find the design's change (the same approximation, solved for the power)."""
    psi, delta = design.discordance, design.effect
    z = (math.sqrt(n) * delta - NORMAL.inv_cdf(1 - design.level / 2) * math.sqrt(psi)) / math.sqrt(psi - delta**2)
    return NORMAL.cdf(z)


def grid_eval_limit(limit: int | str | None, claims: Mapping, variants: int) -> int | None:
    """A grid's examples per dataset: its eval_limit, or for `power` the count claims.design needs at claims.power
    with Holm over `variants` comparisons per dataset (each dataset then caps it at what it holds)."""
    if limit != "power":
        return limit
    return examples_for_change(Design(**claims["design"], alpha=claims["alpha"], power=claims["power"],
                                      tests=variants))


def power_table(available: Mapping[str, int], categories: Mapping[str, str], limit: int | None,
                design: Design) -> pd.DataFrame:
    """Per dataset: the examples it holds, the examples the design needs, the examples the grid evaluates (its
    eval_limit, capped by what the dataset holds) and the power they give; `short_by` says which cap bit."""
    import pandas as pd

    needed = examples_for_change(design)
    rows = []
    for dataset, n_available in available.items():
        used = n_available if limit is None else min(limit, n_available)
        rows.append({"dataset": dataset, "category": categories[dataset], "available": n_available,
                     "needed": needed, "evaluated": used, "power": round(power_at(used, design), 3),
                     "short_by": ("" if used >= needed else "data" if used == n_available else "budget")})
    return pd.DataFrame(rows)


def write_power(table: pd.DataFrame, design: Design, csv_path: str, markdown_path: str) -> None:
    from prunescope.reporting.tables import write_csv, write_markdown

    write_csv(table, csv_path)
    write_markdown(table, markdown_path, (
        f"Examples per dataset to find an accuracy change of {design.effect:g} (with {design.discordance:g} of the "
        f"answers changed) at power {design.power:g}, two-sided level {design.alpha:g} Holm-corrected over "
        f"{design.tests} variants (McNemar, normal approximation). `short_by`: budget (the grid's eval_limit) or data "
        "(the dataset holds no more); `power`: what the evaluated examples give."))
