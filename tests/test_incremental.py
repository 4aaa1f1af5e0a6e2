"""What makes `dvc repro` incremental: the library-code digest each rule passes as a param (prunescope.glue.rulecode)
and the remover of files a stage's DAG no longer produces (prunescope.glue.stale). The DVC round trip itself is tested
on the shared end-to-end run (test_end_to_end.TestOnClones)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from prunescope.glue.rulecode import code_digest, library_modules
from prunescope.glue.stale import StaleError, main, remove_stale, stale_files

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def toy_package(tmp_path):
    """A package named prunescope whose import graph is known: the script imports a.x, which imports b.y inside a
    function and a.w relatively; c is imported by nobody."""
    root = tmp_path / "src/prunescope"
    write(root / "__init__.py")
    write(root / "a/__init__.py")
    write(root / "a/x.py", "from . import w\n\n\ndef f():\n    from prunescope.b.y import g\n    return g()\n")
    write(root / "a/w.py", "import os\n")
    write(root / "b/__init__.py")
    write(root / "b/y.py", "def g():\n    return 1\n")
    write(root / "c.py", "import prunescope.a\n")
    script = write(tmp_path / "workflow/scripts/job.py", "import sys\n\nfrom prunescope.a import x\n")
    return root, script


def test_library_modules_follow_imports_at_any_depth_and_nothing_else(toy_package):
    root, script = toy_package
    found = {path.relative_to(root).as_posix() for path in library_modules(script, root)}
    assert found == {"__init__.py", "a/__init__.py", "a/x.py", "a/w.py", "b/__init__.py", "b/y.py"}


def test_code_digest_changes_with_the_code_the_script_runs_only(toy_package):
    root, script = toy_package
    before = code_digest(script, root)
    (root / "c.py").write_text("import prunescope.a\n# not run by the script\n")
    assert code_digest(script, root) == before
    with open(root / "b/y.py", "a") as f:
        f.write("# a comment is a change\n")
    after = code_digest(script, root)
    assert after != before
    with open(script, "a") as f:
        f.write("# so is one in the script\n")
    assert code_digest(script, root) != after


def test_plain_pruning_runs_no_nsa_code_and_guided_pruning_does():
    """The prune rule's script reaches no prunescope.nsa module, so an NSA edit reruns no plain prune job; NSA-guided
    pruning's script reaches the association it protects and the shared pruning job."""
    scripts = ROOT / "workflow/scripts"
    package = ROOT / "src/prunescope"
    plain = {path.relative_to(package).as_posix() for path in library_modules(scripts / "prune.py", package)}
    guided = {path.relative_to(package).as_posix() for path in library_modules(scripts / "prune_guided.py", package)}
    assert "pruning/job.py" in plain and "pruning/wanda.py" in plain
    assert not [path for path in plain if path.startswith("nsa/")]
    assert {"nsa/stages.py", "pruning/job.py"} <= guided


def test_stale_files_are_those_no_output_is_or_holds(tmp_path):
    kept = [write(tmp_path / "out/a.json"), write(tmp_path / "out/model/manifest.json"),
            write(tmp_path / "out/model/.hidden"), write(tmp_path / "elsewhere/old.json")]
    stale = [write(tmp_path / "out/old.json"), write(tmp_path / "out/gone/deep/x.bin"), write(tmp_path / "out/.tmp1")]
    produced = ["out/a.json", "out/model", "out/missing.json"]
    assert stale_files(["out"], produced, tmp_path) == sorted(stale)
    assert remove_stale(["out"], produced, tmp_path) == sorted(stale)
    assert all(path.exists() for path in kept) and not any(path.exists() for path in stale)
    assert not (tmp_path / "out/gone").exists() and (tmp_path / "out").is_dir()


@pytest.mark.parametrize("folder", ["..", "../other", "/tmp", ".", "out/../.."])
def test_stale_remover_refuses_a_folder_outside_the_project(tmp_path, folder):
    project = tmp_path / "project"
    old = write(project / "out/old.json")
    outside = write(tmp_path / "other/old.json")
    with pytest.raises(StaleError, match="only cleans a DVC stage's output folders"):
        remove_stale([folder], [], project)
    assert old.exists() and outside.exists()


def test_stale_remover_asks_snakemake_for_the_dag(tmp_path, monkeypatch):
    """A real Snakemake DAG: after a grid point is dropped from the config, its file and directory output are
    removed from `out`, the current point's outputs stay, and a file beside `out` is not touched."""
    write(tmp_path / "Snakefile", """configfile: "config.yaml"


rule all:
    input:
        expand("out/files/{x}.txt", x=config["x"]),
        expand("out/dirs/{x}", x=config["x"]),


rule file:
    output:
        "out/files/{x}.txt",
    shell:
        "echo {wildcards.x} > {output}"


rule folder:
    output:
        directory("out/dirs/{x}"),
    shell:
        "mkdir -p {output} && echo {wildcards.x} > {output}/inside.txt"
""")
    write(tmp_path / "config.yaml", "x: [1, 2]\n")
    beside = write(tmp_path / "notes/2.txt", "mine")
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    write(tmp_path / "config.yaml", "x: [1]\n")
    monkeypatch.chdir(tmp_path)
    main(["all", "out"])
    left = sorted(path.relative_to(tmp_path).as_posix() for path in (tmp_path / "out").rglob("*"))
    assert left == ["out/dirs", "out/dirs/1", "out/dirs/1/.snakemake_timestamp", "out/dirs/1/inside.txt", "out/files",
                    "out/files/1.txt"]
    assert beside.read_text() == "mine"


def test_stale_remover_removes_nothing_when_snakemake_fails(tmp_path, monkeypatch):
    write(tmp_path / "Snakefile", "rule all:\n    input:\n        'out/a.txt'\n")
    old = write(tmp_path / "out/old.txt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StaleError, match="failed, so no file was removed"):
        main(["no_such_target", "out"])
    assert old.exists() and os.listdir(tmp_path / "out") == ["old.txt"]
