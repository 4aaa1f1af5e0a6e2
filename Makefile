# The two commands a newcomer needs: `make run` (the embedded default) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
# CPU-only machines get the CPU wheel of torch (a plain `torch` would pull several GB of CUDA packages);
# a machine with an NVIDIA driver gets the default (CUDA) build. Override with `make TORCH_SPEC=...`.
TORCH_SPEC ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch,torch==2.13.0)

# The hash-pinned environment (every package but torch), its refresh's tools, and the pip that installs it
LOCK := requirements/lock.txt
PIP_VERSION ?= 26.3
PIP_TOOLS ?= pip-tools==7.7.0
LOCK_ARGS ?=

# compressed-tensors' sparse format is written by compressed-tensors 0.14.0.1, the last version with sparse compressors;
# it requires transformers < 5, so it gets a venv of its own (prunescope.pruning.compressed_tensors_peer runs there)
CT_VENV ?= .venv-compressed-tensors

.PHONY: setup lock run study models dry-run report findings repro pull export bench bench-llmcompressor test test-scale lint plan

setup: $(VENV)/.installed

# Every package but torch comes from the lock, pinned and hash-checked (--require-hashes; --no-deps: nothing
# unlocked slips in); torch first, with its own dependencies (the CUDA build brings its nvidia-* packages), which the
# lock then sets to its versions; the project itself last, built with the lock's setuptools; `pip check` at the end.
$(VENV)/.installed: pyproject.toml $(LOCK)
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "pip==$(PIP_VERSION)"
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

# requirements/lock.txt: pyproject.toml's dependencies and its `test` extra, resolved by pip-compile (pip-tools, in a
# throwaway venv) against the CPU torch wheel (requirements/lock-constraints.txt), torch itself left out. A refresh
# keeps every pin already in the lock and resolves only what pyproject.toml changed; LOCK_ARGS=--upgrade moves
# everything to the newest releases, LOCK_ARGS="--upgrade-package NAME" one package. It fails if a CUDA package
# (nvidia-*, triton, cuda-*) got in, i.e. if torch was resolved to its CUDA build.
lock:  ## Refresh requirements/lock.txt (hash-pinned environment) from pyproject.toml; then `make setup`
	@set -euo pipefail; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	python3 -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet "pip==$(PIP_VERSION)" "$(PIP_TOOLS)"; \
	CUSTOM_COMPILE_COMMAND="make lock" "$$tmp/venv/bin/pip-compile" --quiet --generate-hashes --extra test \
	    --unsafe-package torch --strip-extras --no-emit-index-url --no-emit-find-links \
	    --constraint requirements/lock-constraints.txt $(LOCK_ARGS) --output-file $(LOCK) pyproject.toml; \
	if grep -qiE '^(nvidia-|triton|cuda-)' $(LOCK); then \
	    echo "make lock: a CUDA package got into $(LOCK) (torch resolved to its CUDA build): is the CPU wheel of" \
	        "requirements/lock-constraints.txt reachable?" >&2; exit 1; fi; \
	{ sed -n '1,6p' $(LOCK); \
	  echo "# Resolved on $$(uname -s) $$(uname -m), CPython $$("$$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())'), $(PIP_TOOLS), pip $(PIP_VERSION)."; \
	  echo "# pip-compile writes no platform markers: the pins are this machine's resolution. The hashes cover every file"; \
	  echo "# of each pinned release (all platforms), so Linux aarch64 installs the same pins; a dependency needed on another"; \
	  echo "# platform or Python only would be missing, and make setup's \`pip check\` would say so."; \
	  echo "# torch is not here: make setup installs it first (TORCH_SPEC: the CPU wheel, or the CUDA build with its"; \
	  echo "# nvidia-* packages), then this file: pip install --require-hashes --no-deps -r $(LOCK)."; \
	  echo "#"; \
	  sed '1,6d' $(LOCK); } > "$$tmp/lock.txt"; \
	cp "$$tmp/lock.txt" $(LOCK)

# `make run` is a newcomer's first run: every stage (dense, magnitude, Wanda, SparseGPT, the four task categories,
# perplexity, NSA, the reports) on the small `quick` grid, about 10 minutes on 2 CPU cores. `make study` is the whole
# study of params.yaml's grid (the embedded `mini` grid: sweeps, seeds, OWL, NSA-guided pruning), what `dvc repro`
# reproduces and what reports/ holds. `make models` is the study on three real model families (grids.models). Each
# grid writes its own reports folder (grids.<name>.reports) and each target ends by printing that run's summary.
RUN_GRID ?= quick
reports_of = $$($(BIN)/python -c 'import sys, yaml; print(yaml.safe_load(open("params.yaml"))["grids"][sys.argv[1]]["reports"])' $(1))

run: setup  ## A first run: every stage on the quick grid (params.yaml grids.quick), then its summary
	$(BIN)/snakemake --cores $(CORES) all --config grid=$(RUN_GRID)  # --config last: it takes every word after it
	@cat "$(call reports_of,$(RUN_GRID))/summary.md"

study: setup  ## The whole study of params.yaml's grid (default: the embedded mini grid on CPU), then its summary
	$(BIN)/snakemake --cores $(CORES) all
	@cat reports/summary.md

models: setup  ## The study on the three real models offline (grids.models: about 90 min on 2 CPU cores), then its summary
	$(BIN)/snakemake --cores $(CORES) all --config grid=models
	@cat "$(call reports_of,models)/summary.md"

dry-run: setup
	$(BIN)/snakemake --cores $(CORES) --dry-run all

# `make report` ends with a check in headless Chromium (prunescope.glue.browser finds $CHROMIUM, else chromium or
# chromium-browser on PATH): without one it stops here, before the study runs, instead of failing after the work.
ifneq ($(filter report,$(MAKECMDGOALS)),)
CHROMIUM_FOUND := $(shell for c in "$(CHROMIUM)" chromium chromium-browser; do [ -n "$$c" ] && command -v "$$c" && break; done)
ifeq ($(CHROMIUM_FOUND),)
$(error make report needs Chromium for its browser check and found none ($$CHROMIUM, chromium or chromium-browser on PATH): install it (apt-get install -y chromium) or set CHROMIUM=/path/to/chromium)
endif
endif

# The grid whose run finished last (its reports folder's summary.md is the newest), unless REPORT_GRID names one.
last_grid = $$($(BIN)/python -c 'import os, yaml; grids = yaml.safe_load(open("params.yaml"))["grids"]; runs = [(os.path.getmtime(f), name) for name, g in grids.items() for f in [os.path.join(g["reports"], "summary.md")] if os.path.exists(f)]; print(max(runs)[1] if runs else "")')

report: setup  ## The HTML report of the grid run last (make run, study or models; REPORT_GRID=name picks one), checked in headless Chromium
	@grid="$${REPORT_GRID:-$(last_grid)}"; \
	if [ -z "$$grid" ]; then echo "make report: no grid has finished a run yet (no summary.md in any grid's reports folder): run make run, make study or make models first" >&2; exit 1; fi; \
	dir="$(call reports_of,$$grid)"; \
	if [ ! -f "$$dir/summary.md" ]; then echo "make report: grid $$grid has not finished a run ($$dir/summary.md is missing): run it first" >&2; exit 1; fi; \
	echo "make report: grid $$grid -> $$dir/report.html"; \
	$(BIN)/snakemake --cores $(CORES) --report "$$dir/report.html" all --config grid="$$grid" && \
	$(BIN)/python -m prunescope.glue.browser "$$dir/report.html" --screenshot "$$dir/report.png" \
	    --expect "$$dir/figures/**/*.png" --expect "$$dir/tables/*.csv" --expect "$$dir/claims.csv"

findings: setup  ## The README's Findings block, generated from reports/models/claims.csv (which `make models` writes)
	$(BIN)/python -m prunescope.reporting.claims README.md reports/models/claims.csv

repro: setup  ## DVC reproduction of every stage whose code, params or inputs changed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

pull: setup  ## After cloning: every DVC-tracked output from the DVC remote, marked up to date for Snakemake
	@$(BIN)/dvc remote default >/dev/null 2>&1 || { echo 'no DVC remote: add one with `$(BIN)/dvc remote add -d storage <path|s3://...|ssh://...>` (docs/reproducibility.md), or rebuild everything without one: `make repro`' >&2; exit 1; }
	$(BIN)/dvc pull
	$(BIN)/snakemake --cores 1 --touch all

# One variant's export, on demand: VARIANT is its path under results/pruned ({model}/{method}/{pattern}/{calib}),
# FORMAT the checkpoint format (prunescope.pruning.export.EXPORT_FORMATS); Snakemake prunes the variant first if needed.
FORMAT ?= safetensors
EXPORT_NEEDS := $(if $(filter compressed-tensors,$(FORMAT)),$(CT_VENV)/.installed)
export: setup $(EXPORT_NEEDS)  ## A pruned variant as a checkpoint other tools load: results/exports/$(VARIANT)/$(FORMAT)
	@test -n "$(VARIANT)" || { echo "make export needs VARIANT={model}/{method}/{pattern}/{calib}, e.g." \
	    "VARIANT=smollm2-135m/magnitude/unstructured-0.5/none"; exit 2; }
	$(BIN)/snakemake --cores $(CORES) results/exports/$(VARIANT)/$(FORMAT)

bench: setup  ## Cost of every stage, side by side with its baseline (reports/bench/*.csv, summary.md)
	$(BIN)/python bench/workflow.py --run --cores $(CORES)
	$(BIN)/python bench/evaluate.py --model-dir data/models/smollm2-135m --tasks-dir results/tasks --threads 2
	$(BIN)/python bench/prune.py --model-dir data/models/smollm2-135m --threads 2 \
	    --calibration data/calibration/smollm2-135m/gensim_wiki-raw-n32-l256-s0.safetensors
	$(BIN)/python bench/prune_scaling.py --threads 2
	$(BIN)/python bench/storage.py --pruned-dir results/pruned --models-dir data/models
	$(BIN)/python bench/nsa.py --model-dir data/models/smollm2-135m \
	    --association 'results/nsa/smollm2-135m/{dataset}/association.safetensors'
	cat reports/bench/{workflow,evaluate,prune,prune_scaling,storage,nsa}.md > reports/bench/summary.md

$(CT_VENV)/.installed:
	python3 -m venv $(CT_VENV)
	$(CT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CT_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)" "compressed-tensors[accelerate]==0.14.0.1" psutil  # psutil: imported, not declared
	touch $@

# llm-compressor pins another transformers, so it gets a venv of its own (a bench peer, not a dependency)
LLMC_VENV ?= .venv-llmcompressor
$(LLMC_VENV)/.installed:
	python3 -m venv $(LLMC_VENV)
	$(LLMC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LLMC_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)" "llmcompressor==0.14.0.1"
	touch $@

bench-llmcompressor: setup $(LLMC_VENV)/.installed  ## prunescope beside llm-compressor's Wanda and SparseGPT
	$(BIN)/snakemake --cores $(CORES) data/calibration/smollm2-135m/gensim_wiki-raw-n32-l256-s0.safetensors \
	    data/perplexity/smollm2-135m/gensim_wiki_heldout.safetensors
	$(BIN)/python bench/llmcompressor_side_by_side.py --model-dir data/models/smollm2-135m --threads 2 \
	    --calibration data/calibration/smollm2-135m/gensim_wiki-raw-n32-l256-s0.safetensors \
	    --windows data/perplexity/smollm2-135m/gensim_wiki_heldout.safetensors --peer-python $(LLMC_VENV)/bin/python

# Two pytest-xdist workers: one builds the shared end-to-end run (2 jobs at a time) while the other runs the unit
# tests, then the end-to-end tests are split between them (tests/conftest.py, tests/test_end_to_end.py). (Not
# --dist loadgroup: its xdist_group marks are ignored under pytest 9.2 with pytest-xdist 3.8.)
# `make test PYTEST_XDIST=` runs everything in one process.
PYTEST_XDIST ?= -n 2 --dist loadscope --no-loadscope-reorder

test: setup lint $(CT_VENV)/.installed  ## Lint, then unit, workflow and end-to-end tests (offline, CPU)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_XDIST) $(PYTEST_ARGS)

test-scale: setup  ## Peak memory of every method at the 7B and 13B widths against the memory plan (20 min on 2 cores)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -s -m scale tests/test_memory.py

plan: setup  ## Predicted peak GPU and host memory per model and stage (params.yaml's grid; PLAN_ARGS="--grid paper")
	$(BIN)/prunescope-plan $(PLAN_ARGS)

lint: setup  ## ruff on the Python, snakefmt and `snakemake --lint` on the workflow (part of `make test`)
	$(BIN)/ruff check src tests workflow/scripts bench
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint
