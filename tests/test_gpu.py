"""Pruning in half precision on a CUDA device, the GPU lock and deterministic GPU reruns (`pytest -m gpu`).

Each half-precision case also runs on the CPU, unmarked: the CPU's fp16/bf16 forward rounds differently from its
fp32 one too, so the agreement criterion and its tolerances are exercised in CI, where no GPU is. The packed
scorer's CUDA cases are in test_scoring.py (parametrized over the device).
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import input_devices, make_tiny_model
from prunescope.pruning import METHODS, PruneOptions, prune_model, sparsegpt
from prunescope.pruning.stats import InputStats

VOCAB = 300
CALIBRATION = torch.randint(0, VOCAB, (8, 32), generator=torch.Generator().manual_seed(0))
OPTIONS = {"sparsegpt": {"blocksize": 32}}  # several column blocks in the tiny model's 64- and 128-wide layers
# The largest share of a layer's mask that may differ from the fp32 run on the CPU. The weights are the same
# half-precision values in both runs; only the block forwards round differently (fp16 2^-11, bf16 2^-8 relative),
# and with them the fp32 statistics. Magnitude reads no statistics: identical. Wanda and RIA score |W| times a
# column norm, so only an entry whose score is within that rounding of its group's cut-off can change side: a few
# per thousand (at most 0.2% measured on the CPU). SparseGPT's choice in one column changes the updates of every later
# column of the row, so one near-tie can move several entries: at most 3.3% measured (bf16, 2:4), 10% allowed as
# CUDA's kernels round otherwise than the CPU's. Any real error (wrong statistics, wrong group) moves about half.
MASK_AGREEMENT = {"magnitude": 0.0, "wanda": 0.01, "ria": 0.01, "sparsegpt": 0.1}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def pruned_per_group(mask: torch.Tensor, method: str, structure: str) -> tuple[torch.Tensor, int]:
    """Pruned entries per comparison group, and the group size: N:M groups of 4 columns, else Wanda's rows,
    SparseGPT's column blocks, and the whole matrix for magnitude and RIA (their defaults)."""
    pruned, blocksize = (~mask).to(torch.int64), OPTIONS["sparsegpt"]["blocksize"]
    if structure == "2:4":
        return pruned.reshape(mask.shape[0], -1, 4).sum(dim=-1).flatten(), 4
    if method == "wanda":
        return pruned.sum(dim=1), mask.shape[1]
    if method == "sparsegpt":
        return torch.stack([block.sum() for block in pruned.split(blocksize, dim=1)]), mask.shape[0] * blocksize
    return pruned.sum().reshape(1), mask.numel()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("structure", ["unstructured", "2:4"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_half_precision_pruning_is_exact_and_agrees_with_fp32_up_to_ties(method, structure, dtype, device):
    half = make_tiny_model("llama", VOCAB).to(dtype)
    options = PruneOptions(method, 0.5, structure, OPTIONS.get(method, {}), batch_size=4)
    reference = prune_model(copy.deepcopy(half).float(), "llama", options, CALIBRATION, "cpu")
    with input_devices(half) as seen:
        result = prune_model(half, "llama", options, CALIBRATION, device)
    assert seen == {device}
    assert result.masks.keys() == reference.masks.keys() and len(result.masks) == 14
    for name in result.masks:
        mask, weight = result.mask(name), half.get_submodule(name).weight
        assert weight.dtype == dtype and weight.device.type == "cpu", name  # the block went back where it was
        counts, size = pruned_per_group(mask, method, structure)
        assert (counts == math.floor(size * 0.5)).all(), name
        assert (weight[~mask] == 0).all(), name
        differ = (mask != reference.mask(name)).float().mean().item()
        assert differ <= MASK_AGREEMENT[method], f"{name}: {differ:.4f} of the mask differs from the fp32 run"


RERUN = """import json, os, sys, torch
from conftest import input_devices, make_tiny_model
from prunescope.pruning import PruneOptions, model_weights, prune_model, save_artifact
from prunescope.runlog import job_device

device = job_device(1)
out = sys.argv[1]
for method, options in json.loads(sys.argv[2]).items():
    for structure in ("unstructured", "2:4"):
        model = make_tiny_model("llama", 300).to(torch.float16)
        calibration = torch.randint(0, 300, (8, 32), generator=torch.Generator().manual_seed(0))
        with input_devices(model) as seen:
            result = prune_model(model, "llama", PruneOptions(method, 0.5, structure, options, batch_size=4),
                                 calibration, device)
        assert seen == {device.type}, seen
        folder = f"{out}/{method}-{structure.replace(':', 'of')}"
        save_artifact(result, model_weights(model), folder, {"base_model": "tiny"})
print(json.dumps({"device": str(device), "deterministic": torch.are_deterministic_algorithms_enabled(),
                  "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}))
"""


def job_env(**extra: str) -> dict[str, str]:
    """The environment of a job process (each workflow job is one): this one's, with its import path (this
    checkout's sources and tests)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry), **extra}


def run_job(code: str, *args: str) -> dict:
    """Run `code` as a job process; the JSON it printed last."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False,
                          env=job_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.gpu
def test_two_gpu_runs_give_byte_identical_masks_and_kept_values(tmp_path):
    """Each run is a job of its own (job_device: deterministic kernels on); every file of its artifacts the same."""
    options = json.dumps({method: OPTIONS.get(method, {}) for method in sorted(METHODS)})
    jobs = [run_job(RERUN, str(tmp_path / run), options) for run in ("first", "second")]
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # job_device sets it unless it is set
    assert jobs[0] == jobs[1] == {"device": "cuda:0", "deterministic": True, "cublas": cublas}
    files = sorted(path.relative_to(tmp_path / "first") for path in (tmp_path / "first").rglob("*.safetensors"))
    assert len(files) == 2 * len(METHODS) + 2  # masks everywhere, SparseGPT's kept values for both patterns
    for file in files:
        assert (tmp_path / "first" / file).read_bytes() == (tmp_path / "second" / file).read_bytes(), file
    for artifact in (tmp_path / "first").iterdir():
        layers = [json.loads((tmp_path / run / artifact.name / "manifest.json").read_text())["layers"]
                  for run in ("first", "second")]
        assert layers[0] == layers[1], artifact.name  # reconstruction errors too


HOLD = """import json, sys, time, torch
from prunescope.runlog import job_device

device = job_device(1)
tensor = torch.ones(1, device=device)
print(json.dumps({"device": str(device), "tensor": str(tensor.device)}), flush=True)
time.sleep(float(sys.argv[1]))
"""


@pytest.mark.gpu
def test_concurrent_jobs_each_compute_on_the_gpu_job_device_gave_them(tmp_path):
    """As many jobs as GPUs at once: each gets a device its tensors really land on, a different one per job when
    there are several (a lock file each, under TMPDIR), and a later job gets the one a finished job freed. With one
    GPU every job uses it and takes no lock (Snakemake's gpu resource is then what limits the jobs)."""
    count = torch.cuda.device_count()
    env = job_env(TMPDIR=str(tmp_path))

    def job() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", HOLD, "120"], stdout=subprocess.PIPE, text=True, env=env)

    jobs = [job() for _ in range(count)]
    try:
        claims = [json.loads(holder.stdout.readline()) for holder in jobs]
        assert all(claim["device"] == claim["tensor"] for claim in claims), claims
        assert sorted(claim["device"] for claim in claims) == [f"cuda:{index}" for index in range(count)]
        assert len(list(tmp_path.rglob("gpu*.lock"))) == (0 if count == 1 else count)
        jobs.append(job())  # every GPU is in use: with several, it waits for the one a killed job frees
        if count > 1:
            jobs[0].kill()
        assert json.loads(jobs[-1].stdout.readline()) == claims[0]
    finally:
        for holder in jobs:
            holder.kill()
            holder.wait()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_gram_on_tensor_cores_is_the_fp32_gram(dtype):
    """SparseGPT's Gram from fp16/bf16 inputs on CUDA (tensor cores, fp32 accumulation) equals the fp32 Gram of the
    same values up to summation order."""
    inputs = torch.randn(6, 256, 512, generator=torch.Generator().manual_seed(0)).to(dtype)
    fast = InputStats.from_inputs(inputs.cuda())
    exact = InputStats.from_inputs(inputs.double())
    assert fast.gram.dtype == torch.float32 and fast.n_sequences == exact.n_sequences == 6
    relative = (fast.gram.cpu().double() - exact.gram).abs().max() / exact.gram.abs().max()
    assert relative < 1e-5, relative


@pytest.mark.gpu
@pytest.mark.parametrize("nm", [None, (2, 4)], ids=["unstructured", "2:4"])
def test_sparsegpt_graph_replay_on_cuda_equals_the_reference_loop_bit_for_bit(nm):
    """Full column blocks replay a captured CUDA graph, the ragged last block runs eagerly: masks and weights are
    those of the literal reference port run eagerly on the same GPU."""
    from test_methods import correlated_inputs, reference_sparsegpt

    generator = torch.Generator().manual_seed(3)
    stats = InputStats.from_inputs(correlated_inputs(400, 80, seed=4).cuda())
    weight = torch.randn(24, 80, generator=generator).cuda()
    ours = sparsegpt.prune_layer(weight, stats, 0.5, nm, blocksize=32)  # blocks of 32, 32 and 16 columns
    keep, pruned = reference_sparsegpt()(weight, stats.gram * (2.0 / stats.n_sequences), 0.5, nm, blocksize=32)
    assert torch.equal(ours.mask, keep) and torch.equal(ours.weight, pruned)
