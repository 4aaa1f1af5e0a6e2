"""`python -m prunescope.reporting.claims README.md reports/models/claims.csv` (make findings): rewrite the README's
Findings block from a claims CSV."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from prunescope.io import atomic_path
from prunescope.reporting.claims.report import FINDINGS_SOURCE, read_claims, readme_with_findings


def main(argv: Sequence[str]) -> None:
    """`python -m prunescope.reporting.claims README.md reports/models/claims.csv`: rewrite the README's findings
    block."""
    if len(argv) != 2:
        sys.exit(f"usage: python -m prunescope.reporting.claims README.md {FINDINGS_SOURCE}")
    readme, csv_path = map(Path, argv)
    if not csv_path.exists():
        sys.exit(f"{csv_path} does not exist: run the workflow first (make run)")
    text = readme_with_findings(readme.read_text(encoding="utf-8"), read_claims(csv_path), csv_path.as_posix())
    with atomic_path(readme) as tmp:
        tmp.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
