"""The study's claims, each tested on the grid's own results: one row per claim and scope with the comparison made,
the effect size and its 95% interval, a paired test, a Holm correction over the whole table and a verdict.

Statistics (every number here is reproducible: each row draws from its own generator, seeded by `seed` and the row):

- Effects on accuracy compare model variants on the same examples. The 95% interval is a two-level percentile
  bootstrap: each iteration resamples every dataset's examples (the same draws for every variant: paired) and each
  variant's calibration seeds (the second level; variants pruned with the same calibration samples, e.g. NSA-guided
  and plain pruning, draw their seeds together). Its p-value is the bootstrap's two-sided percentile p,
  2 min(#{T* <= 0} + 1, #{T* >= 0} + 1) / (B + 1), so p < 0.05 exactly when the 95% interval excludes 0 (up to the
  +1s). A comparison of two single-seed variants on one dataset uses the exact McNemar test instead (a two-sided
  binomial test of the discordant pairs).
- Correlations across variants (perplexity and NSA's drop against the accuracy change) use Spearman's rho, a
  permutation test of the pairings, and a percentile bootstrap over the points for the interval.
- Holm's step-down correction runs over every tested row of the table; a row is supported when its Holm-adjusted p
  is below alpha and the effect has the claimed sign, contradicted when it is below alpha with the opposite sign,
  inconclusive otherwise. A claim without data in the grid is "not tested", with what to add to params.yaml.
- For an inconclusive row, how much data would resolve an effect of the observed size with probability `power` at
  level alpha / m (m tests in the table: the strictest level Holm applies), by the normal approximation
  n' = n ((z_{1 - a/2} + z_power) se / |effect|)^2, se the bootstrap standard error at the current n examples per
  dataset (for a paired 0/1 difference on one dataset, se^2 = var(d) / n: the textbook paired-difference formula);
  for a correlation, Fisher's z: n' = ((z_{1 - a/2} + z_power) / atanh|r|)^2 + 3 variants.

The package, by role: rows (the claims, Settings, Row), accuracy (the claims tested on accuracy), proxies (perplexity
and NSA as signs of the damage), table (Holm, verdicts and every claim's rows in one table), report (CSV, Markdown,
JSON and the README's Findings block); `python -m prunescope.reporting.claims` rewrites that block (__main__). The
statistics themselves are reporting.statistics, shared with the other report tables.
"""

from prunescope.reporting.claims.report import read_claims, readme_with_findings, write_claims
from prunescope.reporting.claims.rows import CLAIMS, VERDICTS, Row, Settings
from prunescope.reporting.claims.table import all_claims, claims_table

__all__ = ["CLAIMS", "VERDICTS", "Row", "Settings", "all_claims", "claims_table", "read_claims",
           "readme_with_findings", "write_claims"]
