"""What every benchmark writes: <name>.csv (one row per measurement) and <name>.md (the summary), atomically."""

from __future__ import annotations

import csv
from pathlib import Path

from prunescope.io import atomic_path


def write_outputs(out_dir: Path, name: str, columns: list[str], rows: list[dict], lines: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / f"{name}.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(out_dir / f"{name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
