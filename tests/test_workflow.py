"""The workflow as a whole: dry runs of both grids, bad params stop before any job, DVC and Snakemake agree."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prunescope.config import grid_variants, guided_variants, studied_variants
from prunescope.glue.rulecode import code_digest, library_modules

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "-d", str(workdir), "--cores", "1", *args],
                          capture_output=True, text=True, timeout=600)


def workdir_with(tmp_path: Path, params: dict) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


@pytest.fixture
def params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize(("grid", "profile", "models"), [("mini", None, None), ("models", None, None),
                                                       ("paper", None, None), ("paper", "local", 1),
                                                       ("paper", "slurm", 1)])
def test_dry_run_plans_the_whole_grid(tmp_path, params, grid, profile, models):
    """The grids plan every job (the models grid: its split-wheel models fetched and joined first). Every profile
    parses (the SLURM one with its executor plugin, job groups and per-rule resources) and plans every rule of the
    paper grid; without --workflow-profile Snakemake takes profiles/default. The whole paper grid (14 models) is
    planned once, through profiles/default; the other profiles plan it with its first model only (every rule,
    dataset, method, pattern, calibration source and sweep of the paper grid, about a quarter of the time: nothing in
    a profile depends on the model count). The SLURM run itself is tested on a real SLURM in test_end_to_end."""
    params["grid"] = grid
    if models:
        params["grids"][grid]["models"] = params["grids"][grid]["models"][:models]
    run = snakemake(workdir_with(tmp_path, params), *(["--workflow-profile", profile] if profile else []),
                    "--dry-run", "all")
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-3000:]
    assert f"Using workflow specific profile profiles/{profile or 'default'}" in run.stdout + run.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", run.stdout, flags=re.M))
    n_datasets, n_models = len(params["grids"][grid]["datasets"]), len(params["grids"][grid]["models"])
    assert int(counts["evaluate_dense"]) == n_models  # one job per model variant scores every dataset
    assert int(counts["build_task"]) == n_datasets
    assert int(counts["prepare_dataset"]) == n_datasets
    assert int(counts["prepare_model"]) == n_models
    spec, n_nsa = params["grids"][grid], len(params["grids"][grid]["nsa_datasets"])
    variants, guided = grid_variants(spec, params["calibration_sources"]), guided_variants(spec,
                                                                                          params["calibration_sources"])
    nsa_models = spec["nsa_models"] or spec["models"]
    n_nsa_runs = len(nsa_models) * n_nsa
    assert int(counts["nsa_words"]) == int(counts["nsa_association"]) == int(counts["nsa_causal"]) == n_nsa_runs
    studied = [v for v in studied_variants(spec, params["calibration_sources"]) if v.model in nsa_models]
    assert int(counts["nsa_compare"]) == len(studied) * n_nsa  # each studied variant against the dense NSA
    assert int(counts.get("prune_guided", 0)) == int(counts.get("evaluate_guided", 0)) == len(guided)
    assert counts["nsa_report"] == "1" and counts["power"] == "1"
    split = [m for m in spec["models"] if params["models"][m]["source"] == "wheel_parts"]
    assert int(counts.get("fetch_model_parts", 0)) == len(split)
    assert int(counts["prune"]) == len(variants) and counts["experiment_report"] == counts["prune_cost"] == "1"
    n_sources = len(spec["perplexity_sources"])
    assert int(counts["perplexity_text"]) == n_sources and int(counts["perplexity_windows"]) == n_sources * n_models
    assert int(counts["perplexity_dense"]) == n_models and int(counts["perplexity_pruned"]) == len(variants)
    assert int(counts.get("perplexity_guided", 0)) == len(guided) and counts["perplexity_report"] == "1"
    assert counts["claims"] == "1"


def test_make_run_plans_every_stage_on_the_quick_grid_and_prints_the_summary(tmp_path, params):
    """`make run`'s own commands (make -n): its Snakemake command, planned as a dry run on a fresh folder, covers every
    stage of the quick grid (dense, magnitude, Wanda, SparseGPT, one dataset per category, perplexity, NSA, claims,
    the summary) and nothing of the mini study's extras; then the summary is printed."""
    venv = Path(sys.executable).parent.parent
    recipe = subprocess.run(["make", "--no-print-directory", "-n", "run", f"VENV={venv}", "-o", f"{venv}/.installed"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    command = next(line for line in recipe if "snakemake" in line)
    printed = subprocess.run(["bash", "-c", recipe[-1].replace("cat ", "echo ", 1)], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=True).stdout.strip()
    assert printed == "reports/quick/summary.md"  # the quick grid's own folder: the committed reports stay
    words = shlex.split(command.split("#")[0])
    assert words[0].endswith("bin/snakemake")
    plan = subprocess.run([*SNAKEMAKE, "-d", str(workdir_with(tmp_path, params)), "--dry-run", *words[1:]],
                          capture_output=True, text=True, timeout=600)  # its words last: --config takes the rest
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.stdout.split("Job stats:")[1].split("total")[0], re.M))
    assert {"prune": "3", "evaluate_dense": "1", "evaluate_pruned": "3", "perplexity_pruned": "3", "nsa_words": "1",
            "nsa_compare": "3", "nsa_causal": "1", "claims": "1", "summary": "1"}.items() <= jobs.items(), jobs
    assert not {"prune_guided", "evaluate_guided"} & jobs.keys()  # the study's extras
    assert "reports/quick/claims.csv" in plan.stdout and " reports/claims.csv" not in plan.stdout
    assert "sparsegpt" in plan.stdout and "similarities_abstraction" in plan.stdout


def _make_report(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`make report` in a folder holding the Makefile and params.yaml, with a venv whose snakemake and
    `python -m` (the browser check) only print their words."""
    for name in ("Makefile", "params.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "snakemake").write_text('#!/bin/sh\necho snakemake "$@"\n')
    (bin_dir / "python").write_text(f'#!/bin/sh\n[ "$1" = -m ] && exec echo python "$@"\nexec {sys.executable} "$@"\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    (tmp_path / "venv" / ".installed").touch()
    return subprocess.run(["make", "--no-print-directory", "report", "VENV=venv", "-o", "venv/.installed",
                           "CHROMIUM=/bin/true", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_make_report_reports_the_grid_run_last_and_says_when_none_was(tmp_path):
    none = _make_report(tmp_path)
    assert none.returncode != 0 and "no grid has finished a run yet" in none.stderr and "snakemake" not in none.stdout
    grids = yaml.safe_load((ROOT / "params.yaml").read_text())["grids"]
    for age, grid in enumerate(["models", "quick", "mini"]):  # quick's summary written last
        summary = tmp_path / grids[grid]["reports"] / "summary.md"
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text("done")
        os.utime(summary, (1e9, 1e9 + (age % 2) * 100))
    last = _make_report(tmp_path)
    assert last.returncode == 0, last.stderr
    quick = grids["quick"]["reports"]
    assert f"--report {quick}/report.html all --config grid=quick" in last.stdout
    assert f"prunescope.glue.browser {quick}/report.html --screenshot {quick}/report.png" in last.stdout
    chosen = _make_report(tmp_path, "REPORT_GRID=models")
    assert "--config grid=models" in chosen.stdout, chosen.stderr


def test_dry_run_plans_perplexity_for_the_end_to_end_config(tmp_path):
    """The shrunk config of the end-to-end run plans perplexity for the dense model and every variant; the
    calibration sample of the Wikipedia text waits for the held-out text it is checked against."""
    from test_end_to_end import shrunk_params

    params = shrunk_params()
    run = snakemake(workdir_with(tmp_path, params), "--dry-run", "all")
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", run.stdout, flags=re.M))
    variants = grid_variants(params["grids"]["mini"], params["calibration_sources"])
    assert counts["perplexity_text"] == counts["perplexity_windows"] == counts["perplexity_dense"] == "1"
    assert int(counts["perplexity_pruned"]) == len(variants) and counts["perplexity_report"] == "1"
    assert "results/perplexity/smollm2-135m/dense/gensim_wiki_heldout.json" in run.stdout
    assert "reports/tables/perplexity.csv" in run.stdout
    sample = next(block for block in run.stdout.split("\n\n") if "rule sample_calibration:" in block)
    assert "data/text/perplexity/gensim_wiki_heldout.jsonl" in sample


def test_slurm_profile_sends_every_gpu_rule_to_the_gpu_partition():
    """A rule that asks for gpu=1 (directly or through `use rule`) but is missing from the profile would be sent
    to the CPU partition with a GPU request: pending forever or rejected."""
    text = "\n".join(path.read_text() for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    gpu_rules = {match.group(1) for block in re.split(r"\n(?=rule |use rule )", text)
                 if (match := re.match(r"rule (\w+):", block)) and "gpu=1" in block}
    gpu_rules |= {alias for base, alias in re.findall(r"use rule (\w+) as (\w+)", text) if base in gpu_rules}
    assert {"prune", "evaluate_pruned", "prune_guided", "nsa_compare"} <= gpu_rules
    resources = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())["set-resources"]
    for rule in sorted(gpu_rules):
        assert resources.get(rule, {}).get("slurm_partition") == "gpu" and resources[rule]["gpu"] == 1, rule


def test_dry_run_plans_task_derived_calibration(tmp_path, params):
    params["grids"]["mini"]["calibration"].update(sources=["gensim_wiki", "strategyqa_train"],
                                                  formats=["raw", "icl", "cot"], seeds=[0])
    params["grids"]["mini"]["sweeps"]["methods"] = []
    run = snakemake(workdir_with(tmp_path, params), "--dry-run", "all")
    assert run.returncode == 0, run.stderr + run.stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", run.stdout, flags=re.M))
    assert counts["prepare_train_pool"] == "1"  # strategyqa's held-out pool
    assert counts["calibration_text"] == "2"
    assert counts["sample_calibration"] == counts["calibration_similarity"] == "3"  # raw, icl and cot samples
    assert "data/calibration/smollm2-135m/strategyqa_train-cot-n32-l256-s0.safetensors" in run.stdout


BREAKAGES = {  # what a hand edit gets wrong -> the one line that must stop the run
    "N:M at another sparsity": (("grids", "mini", "patterns"), [{"structure": "2:4", "sparsity": 0.7}],
                                "params.yaml: grids.mini.patterns[0].sparsity = 0.7 is not allowed: structure 2:4 "
                                "prunes exactly 2/4 = 0.5"),
    "typo in a model entry": (("models", "smollm2-135m", "trust_remote_cod"), True,
                              "params.yaml: unknown key models.smollm2-135m.trust_remote_cod: allowed: one of archive, "
                              "dtype, family, file, hub_id, revision, sha256, source, trust_remote_code, wheel_parts"),
    "float for a count": (("grids", "mini", "eval_limit"), 64.0,
                          "params.yaml: grids.mini.eval_limit = 64.0 is not allowed: an integer >= 1 (examples per "
                          "dataset, a fixed seeded subsample), null (all), or power (what claims.design needs at "
                          "claims.power after Holm over the grid's variants; reports/<grid>/tables/power.md)"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_bad_params_stop_before_any_job_and_write_nothing(tmp_path, params, breakage):
    path, value, line = BREAKAGES[breakage]
    node = params
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    workdir = workdir_with(tmp_path, params)
    (workdir / "results").mkdir()
    (workdir / "results" / "earlier.json").write_text("{}")
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*") if ".snakemake" not in p.parts)
    run = snakemake(workdir, "all")
    assert run.returncode != 0
    lines = [line for line in (run.stderr + run.stdout).splitlines() if line.startswith("params.yaml:")]
    assert lines == [line]
    after = sorted(p.relative_to(workdir) for p in workdir.rglob("*") if ".snakemake" not in p.parts)
    assert after == before


def stage_outs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for kind in ("outs", "metrics", "plots")
            for o in stage.get(kind, [])]


def test_dvc_stages_run_snakemake_targets_then_remove_stale_files(tmp_path, params):
    """Each stage runs one Snakemake target, then prunescope.glue.stale on the same target and exactly the stage's
    output folders; every output persists (Snakemake decides what to rebuild); every params key exists for the grid."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    listed = snakemake(workdir_with(tmp_path, params), "--list-target-rules")
    assert listed.returncode == 0, listed.stderr
    targets = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    produced = outputs_of_rules()
    for name, stage in dvc["stages"].items():
        commands = [stage["cmd"]] if isinstance(stage["cmd"], str) else stage["cmd"]
        run = commands[0].split()
        assert run[:3] == ["snakemake", "--cores", "all"] and run[3] in targets and len(run) == 4, name
        folders = [out for out in stage_outs(stage) if out not in produced]  # the rest are the rules' own files
        assert all(any(p.startswith(folder + "/") for p in produced) for folder in folders), name
        if folders:
            assert commands[1].split() == ["python", "-m", "prunescope.glue.stale", run[3], *folders], name
        assert len(commands) == (2 if folders else 1), name
        for kind in ("outs", "metrics", "plots"):
            assert all(next(iter(out.values())).get("persist") for out in stage.get(kind, [])), f"{name} {kind}"
        for key in stage.get("params", []):
            node = params
            for part in key.replace("${grid}", params["grid"]).split("."):
                assert part in node, f"stage {name}: params key {key} is not in params.yaml"
                node = node[part]
        for dep in stage["deps"]:
            assert (ROOT / dep).exists() or any(p.startswith(dep) for p in produced), f"stage {name}: dep {dep}"


def workflow_rules() -> list:
    """The Snakefile's rules as Snakemake parses them (each with its rule file, script and output patterns)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet=True)) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=ROOT / "Snakefile",
                                workdir=ROOT)
        return list(workflow._workflow.rules)  # no public API lists a rule's script


def test_every_rule_with_a_script_passes_the_digest_of_the_code_it_runs():
    """Snakemake's code trigger sees a rule's script only: the `code` param (common.smk: library_code) is what
    reruns a job when a prunescope module its script imports changes. A rule added without it would not rerun."""
    missing = {}
    for rule in workflow_rules():
        if rule.script:
            script = (Path(rule.snakefile).parent / rule.script).resolve()
            if dict(rule.params.items()).get("code") != code_digest(script, ROOT / "src/prunescope"):
                missing[rule.name] = rule.script
    assert missing == {}


ALWAYS_DEPS = ["Snakefile", "workflow/rules", "workflow/schemas",  # any of them can change any DAG
               "src/prunescope/config.py", "src/prunescope/glue/rulecode.py"]  # validation and variants; the digests


def test_dvc_stage_deps_are_the_code_their_rules_run():
    """A change to any code a stage's rules run makes `dvc repro` rerun the stage (then Snakemake reruns the jobs
    whose library-code digest changed, prunescope.glue.rulecode): each rule belongs to the stage whose outputs hold its
    outputs, and the stage's deps cover the rule's script and every prunescope module it runs (the digest's own
    list). Conversely every script and library dep is run by one of the stage's rules, so an edit elsewhere (NSA
    code for the prune stage) leaves the stage alone."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    package = ROOT / "src/prunescope"

    def covers(dep: str, path: str) -> bool:
        return path == dep or path.startswith(dep.rstrip("/") + "/")

    owners, problems = {}, []
    for rule in workflow_rules():
        if not rule.script:
            continue
        patterns = [str(pattern) for pattern in rule.output]
        stages = {name for name, stage in dvc["stages"].items()
                  if all(any(covers(out, p) for out in stage_outs(stage)) for p in patterns)}
        if rule.name in ("export", "prepare_train_pool"):  # on demand; task-derived pools (not in a DVC stage)
            assert not stages, rule.name
            continue
        assert len(stages) == 1, f"rule {rule.name}: outputs {patterns} in stages {stages}"
        script = (Path(rule.snakefile).parent / rule.script).resolve()
        code = [script] + library_modules(script, package)
        owners.setdefault(stages.pop(), []).extend(str(path.relative_to(ROOT)) for path in code)
    assert set(owners) == set(dvc["stages"])
    for name, stage in dvc["stages"].items():
        deps, code = stage["deps"], set(owners[name])
        problems += [f"{name}: {dep} missing" for dep in ALWAYS_DEPS if dep not in deps]
        problems += [f"{name}: {path} not a dep" for path in sorted(code) if not any(covers(d, path) for d in deps)]
        problems += [f"{name}: {dep} runs in none of its rules" for dep in deps
                     if dep.startswith(("src/", "workflow/scripts/")) and dep not in ALWAYS_DEPS
                     and dep != "src/prunescope/glue/stale.py" and not any(covers(dep, path) for path in code)]
    assert problems == []


def outputs_of_rules() -> list[str]:
    """Output path patterns of every rule, read from the rule files (wildcards kept)."""
    text = "\n".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    paths = re.findall(r'"((?:data|results|reports|\{REPORTS\})/[^"]+)"', text)
    return [path.replace("{REPORTS}", "reports") for path in paths]  # the mini grid's folder: what DVC tracks
