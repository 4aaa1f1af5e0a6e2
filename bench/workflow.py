"""End-to-end cost of the workflow per stage, from Snakemake's benchmark files, and of a rerun with nothing changed.

With --run this times `snakemake --cores N all` (in a fresh clone: the whole embedded default from scratch; in a
finished checkout: only what is out of date), then times the same command again, which must find nothing to do.
The per-stage table sums the benchmark files (benchmarks/<rule>/...tsv: wall seconds and peak RSS per job) of the
jobs the first run executed; without --run, of the jobs since --since (default: every job on record), with
--by-model split by model (the folder under the rule, for rules that have one). Writes <out>/workflow.csv and .md.

  python bench/workflow.py --run --cores 2
  python bench/workflow.py --since "2026-12-07 06:08" --by-model --out reports/models/bench   # a grid's run
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from outputs import write_outputs  # noqa: E402

COLUMNS = ["stage", "model", "jobs", "seconds_total", "seconds_mean", "seconds_max", "cpu_seconds_total", "max_rss_mib"]
NOTHING_TO_DO = "Nothing to be done"


def timed_snakemake(cores: str) -> tuple[float, str]:
    """Wall seconds and console output of one `snakemake --cores N all` from this interpreter's environment."""
    start = time.perf_counter()
    run = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "--cores", cores, "all"],
                         capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"snakemake failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return time.perf_counter() - start, run.stdout + run.stderr


def stage_costs(benchmarks: Path, since: float, by_model: bool = False) -> list[dict]:
    """Per stage (first folder under benchmarks/), and with `by_model` per model (the next folder, '-' for a rule
    without one): jobs, seconds (total, mean, max), CPU seconds and peak RSS, over the benchmark files written at
    or after `since`. Jobs run side by side, so wall seconds add up to more than the run took; CPU seconds are
    what the cores spent."""
    jobs = defaultdict(list)
    for path in sorted(benchmarks.rglob("*.tsv")):
        if path.stat().st_mtime < since:
            continue
        header, *values = path.read_text(encoding="utf-8").splitlines()
        record = dict(zip(header.split("\t"), values[-1].split("\t"), strict=True))
        rss, cpu = (float(record[key]) if record[key] not in ("", "NA", "-") else 0.0
                    for key in ("max_rss", "cpu_time"))
        stage, *rest = path.relative_to(benchmarks).parts
        jobs[stage, rest[0] if by_model and len(rest) > 1 else "-"].append((float(record["s"]), cpu, rss))
    rows = []
    for (stage, model), runs in sorted(jobs.items(), key=lambda item: -sum(s for s, _, _ in item[1])):
        seconds = [s for s, _, _ in runs]
        rows.append({"stage": stage, "model": model, "jobs": len(runs), "seconds_total": round(sum(seconds), 1),
                     "seconds_mean": round(sum(seconds) / len(runs), 1), "seconds_max": round(max(seconds), 1),
                     "cpu_seconds_total": round(sum(cpu for _, cpu, _ in runs), 1),
                     "max_rss_mib": round(max(rss for _, _, rss in runs))})
    return rows


def write_reports(rows: list[dict], walls: dict, cores: str, out_dir: Path) -> None:
    total = sum(row["seconds_total"] for row in rows)
    cpu = sum(row["cpu_seconds_total"] for row in rows)
    lines = ["# Workflow cost per stage", ""]
    if walls:
        lines += [f"`snakemake --cores {cores} all`: {walls['first']:.0f} s wall ({walls['first'] / 60:.1f} min); "
                  f"the same command again with nothing changed: {walls['second']:.1f} s "
                  f"({'nothing to be done' if walls['idle'] else 'it RAN JOBS'}).", ""]
    lines += [f"Job seconds summed per stage (the first folder under benchmarks/: a rule, or `report` for the report "
              f"rules) over {sum(row['jobs'] for row in rows)} jobs: {total:.0f} s in all ({total / 60:.1f} min; jobs "
              f"run side by side, so more than the run's wall time), {cpu:.0f} CPU seconds ({cpu / 60:.1f} min).", "",
              "| stage | model | jobs | seconds, total | mean | max | share | CPU s | peak RSS MiB |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['stage']} | {row['model']} | {row['jobs']} | {row['seconds_total']:.1f} "
              f"| {row['seconds_mean']:.1f} | {row['seconds_max']:.1f} | {row['seconds_total'] / total:.0%} "
              f"| {row['cpu_seconds_total']:.0f} | {row['max_rss_mib']:,} |" for row in rows]
    write_outputs(out_dir, "workflow", COLUMNS, rows, lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="time `snakemake all`, then a rerun with nothing changed")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--benchmarks", type=Path, default=Path("benchmarks"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    parser.add_argument("--since", help="count only jobs since this time, e.g. '2026-12-07 06:08' (local time)")
    parser.add_argument("--by-model", action="store_true", help="one row per stage and model")
    args = parser.parse_args(argv)
    since, walls = datetime.fromisoformat(args.since).timestamp() if args.since else 0.0, {}
    if args.run:
        since = time.time()
        walls["first"], _ = timed_snakemake(args.cores)
        walls["second"], output = timed_snakemake(args.cores)
        walls["idle"] = NOTHING_TO_DO in output
    rows = stage_costs(args.benchmarks, since, args.by_model)
    if not rows:
        raise SystemExit(f"no benchmark files under {args.benchmarks}{' from this run' if args.run else ''}: "
                         "run the workflow first (`make run`), or pass --run in a fresh clone")
    write_reports(rows, walls, args.cores, args.out)


if __name__ == "__main__":
    main()
