"""End-to-end cost of the workflow per stage, from Snakemake's benchmark files, and of a rerun with nothing changed.

With --run this times `snakemake --cores N all` (in a fresh clone: the whole embedded default from scratch; in a
finished checkout: only what is out of date), then times the same command again, which must find nothing to do.
The per-stage table sums the benchmark files (benchmarks/<rule>/...tsv: wall seconds and peak RSS per job) of the
jobs the first run executed; without --run, of every job on record. Writes <out>/workflow.csv and workflow.md.

  python bench/workflow.py --run --cores 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outputs import write_outputs  # noqa: E402

COLUMNS = ["stage", "jobs", "seconds_total", "seconds_mean", "seconds_max", "max_rss_mib"]
NOTHING_TO_DO = "Nothing to be done"


def timed_snakemake(cores: str) -> tuple[float, str]:
    """Wall seconds and console output of one `snakemake --cores N all` from this interpreter's environment."""
    start = time.perf_counter()
    run = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "--cores", cores, "all"],
                         capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"snakemake failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return time.perf_counter() - start, run.stdout + run.stderr


def stage_costs(benchmarks: Path, since: float) -> list[dict]:
    """Per stage (first folder under benchmarks/): jobs, seconds (total, mean, max) and peak RSS, over the
    benchmark files written at or after `since`."""
    jobs = defaultdict(list)
    for path in sorted(benchmarks.rglob("*.tsv")):
        if path.stat().st_mtime < since:
            continue
        header, *values = path.read_text(encoding="utf-8").splitlines()
        record = dict(zip(header.split("\t"), values[-1].split("\t"), strict=True))
        rss = float(record["max_rss"]) if record["max_rss"] not in ("", "NA", "-") else 0.0
        jobs[path.relative_to(benchmarks).parts[0]].append((float(record["s"]), rss))
    rows = []
    for stage, runs in sorted(jobs.items(), key=lambda item: -sum(s for s, _ in item[1])):
        seconds = [s for s, _ in runs]
        rows.append({"stage": stage, "jobs": len(runs), "seconds_total": round(sum(seconds), 1),
                     "seconds_mean": round(sum(seconds) / len(runs), 1), "seconds_max": round(max(seconds), 1),
                     "max_rss_mib": round(max(rss for _, rss in runs))})
    return rows


def write_reports(rows: list[dict], walls: dict, cores: str, out_dir: Path) -> None:
    total = sum(row["seconds_total"] for row in rows)
    lines = ["# Workflow cost per stage", ""]
    if walls:
        lines += [f"`snakemake --cores {cores} all`: {walls['first']:.0f} s wall ({walls['first'] / 60:.1f} min); "
                  f"the same command again with nothing changed: {walls['second']:.1f} s "
                  f"({'nothing to be done' if walls['idle'] else 'it RAN JOBS'}).", ""]
    lines += [f"Job seconds summed per stage (the first folder under benchmarks/: a rule, or `report` for the report "
              f"rules) over {sum(row['jobs'] for row in rows)} jobs, {total:.0f} s in all.", "",
              "| stage | jobs | seconds, total | mean | max | share | peak RSS MiB |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['stage']} | {row['jobs']} | {row['seconds_total']:.1f} | {row['seconds_mean']:.1f} "
              f"| {row['seconds_max']:.1f} | {row['seconds_total'] / total:.0%} | {row['max_rss_mib']:,} |"
              for row in rows]
    write_outputs(out_dir, "workflow", COLUMNS, rows, lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="time `snakemake all`, then a rerun with nothing changed")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--benchmarks", type=Path, default=Path("benchmarks"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    args = parser.parse_args(argv)
    since, walls = 0.0, {}
    if args.run:
        since = time.time()
        walls["first"], _ = timed_snakemake(args.cores)
        walls["second"], output = timed_snakemake(args.cores)
        walls["idle"] = NOTHING_TO_DO in output
    rows = stage_costs(args.benchmarks, since)
    if not rows:
        raise SystemExit(f"no benchmark files under {args.benchmarks}{' from this run' if args.run else ''}: "
                         "run the workflow first (`make run`), or pass --run in a fresh clone")
    write_reports(rows, walls, args.cores, args.out)


if __name__ == "__main__":
    main()
