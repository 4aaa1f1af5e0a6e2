"""Remove the files a DVC stage's output folders hold that the current Snakemake DAG does not produce.

The DVC stages persist their outputs (dvc.yaml: `persist: true`) so that Snakemake, not DVC, decides what to
rebuild. Then nothing deletes the files of a grid point removed from params.yaml (an old sweep sparsity's masks and
results), and DVC would keep tracking them. Each stage's last step runs

    python -m prunescope.glue.stale TARGET FOLDER...

which asks Snakemake for every output of TARGET's DAG (`snakemake --summary`: all jobs, done or not) and removes
each file under the FOLDERs (the stage's output folders) that is neither such an output nor inside a directory()
output, then the folders left empty. Nothing outside the FOLDERs is touched, and a FOLDER outside the working
directory is refused.
"""

import argparse
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

SUMMARY_HEADER = "output_file\tdate\trule\tlog-file(s)\tstatus\tplan"


class StaleError(ValueError):
    """A folder the remover must not touch, or a Snakemake summary it cannot read."""


def _inside(root: Path, path: str | Path) -> Path:
    """root / path with `..` folded away (lexically: a folder that is a link stays where the project has it)."""
    return Path(os.path.normpath(root.absolute() / path))


def checked_folders(folders: Iterable[str], root: Path) -> list[Path]:
    """The folders as paths inside root; one outside it (absolute elsewhere, through `..`) is an error."""
    root = _inside(root, ".")
    checked = []
    for folder in folders:
        path = _inside(root, folder)
        if path == root or root not in path.parents:
            raise StaleError(f"{folder!r} is not a folder inside {root}: the stale-file remover only cleans a DVC "
                             "stage's output folders (paths relative to the project, e.g. results/pruned)")
        checked.append(path)
    return checked


def stale_files(folders: Iterable[str], produced: Iterable[str], root: Path) -> list[Path]:
    """Files under the folders that are not a produced path and not inside a produced directory, sorted.
    `produced` holds paths relative to root, as Snakemake prints them."""
    kept = {_inside(root, path) for path in produced}
    stale = []
    for folder in checked_folders(folders, root):
        for parent, _, names in os.walk(folder):  # links to folders are not followed
            for name in names:
                path = Path(parent) / name
                if path not in kept and not any(ancestor in kept for ancestor in path.parents):
                    stale.append(path)
    return sorted(stale)


def remove_stale(folders: Iterable[str], produced: Iterable[str], root: Path) -> list[Path]:
    """Remove the stale files, then the folders under the given ones that this left empty; returns the files."""
    folders = list(folders)
    stale = stale_files(folders, produced, root)
    for path in stale:
        path.unlink()
    emptied = {parent for path in stale for parent in path.parents}
    for folder in checked_folders(folders, root):
        for parent in sorted((path for path in emptied if folder in path.parents), key=lambda p: -len(p.parts)):
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
    return stale


def dag_outputs(target: str, snakemake: list[str] | None = None) -> list[str]:
    """Every output path of the target's DAG, from `snakemake --summary` run in the working directory."""
    command = (snakemake or [sys.executable, "-m", "snakemake"]) + ["--summary", target]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise StaleError(f"`{' '.join(command)}` failed, so no file was removed:\n{run.stderr[-3000:]}")
    lines = run.stdout.splitlines()
    if SUMMARY_HEADER not in lines:
        raise StaleError(f"`{' '.join(command)}` printed no summary table (header {SUMMARY_HEADER!r}), so no file "
                         f"was removed; its output began:\n{run.stdout[:1000]}")
    return [line.split("\t")[0] for line in lines[lines.index(SUMMARY_HEADER) + 1:] if "\t" in line]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prunescope.glue.stale", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="the Snakemake target whose DAG the stage runs (e.g. prune_all)")
    parser.add_argument("folders", nargs="+", help="the stage's output folders, relative to the working directory")
    args = parser.parse_args(argv)
    root = Path.cwd()
    checked_folders(args.folders, root)  # before asking Snakemake anything
    for path in remove_stale(args.folders, dag_outputs(args.target), root):
        print(f"removed stale {path.relative_to(_inside(root, '.'))}")


if __name__ == "__main__":
    try:
        main()
    except StaleError as err:
        sys.exit(str(err))
