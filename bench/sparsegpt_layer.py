"""SparseGPT's parts on one Linear at the 7B shapes, each beside its baseline: the Gram accumulation in fp32 GEMMs
against half-precision tensor cores with fp32 accumulation (CUDA only), and our column loop against a literal port
of the reference's (IST-DASLab/sparsegpt fasterprune, with our exact-k mask: docs/methods.md#count-and-tie-rules),
on the same Hessian.

    python bench/sparsegpt_layer.py --device cuda            # q_proj (4096 x 4096) and down_proj (4096 x 11008)
    python bench/sparsegpt_layer.py --device cpu --shapes 64x128 --nsamples 4 --seqlen 64

Writes sparsegpt_layer.md and .json into --out (default reports/bench).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prunescope.io import write_json  # noqa: E402
from prunescope.pruning import sparsegpt  # noqa: E402
from prunescope.pruning.stats import InputStats  # noqa: E402


def reference_loop(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, nm: tuple[int, int] | None,
                   percdamp: float = 0.01, blocksize: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference fasterprune, line for line (Q1, Err1, the per-column clone and the 7-kernel update), except the
    unstructured count: exactly floor(G * s) per block, lower index first on ties (docs/methods.md), where the reference
    prunes every score <= the k-th. Returns (keep-mask, pruned weight)."""
    W = weight.clone().float()
    H = hessian.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(H.shape[0], device=H.device)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    pruned = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, W.shape[1], blocksize):
        i2 = min(i1 + blocksize, W.shape[1])
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if nm is None:
            tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            order = torch.sort(tmp.flatten(), stable=True)[1][:int(tmp.numel() * sparsity)]
            mask1 = torch.zeros(tmp.numel(), dtype=torch.bool, device=W.device)
            mask1[order] = True
            mask1 = mask1.reshape(tmp.shape)
        else:
            mask1 = torch.zeros_like(W1) == 1
        for i in range(i2 - i1):
            w = W1[:, i]
            d = Hinv1[i, i]
            if nm is not None and i % nm[1] == 0:
                tmp = W1[:, i:(i + nm[1])] ** 2 / (torch.diag(Hinv1)[i:(i + nm[1])].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, nm[0], dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        pruned[:, i1:i2] = mask1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return ~pruned, W


@contextlib.contextmanager
def timed(device: torch.device, into: dict, key: str) -> Iterator[None]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    into[key] = time.perf_counter() - start


def measure(shape: tuple[int, int], nsamples: int, seqlen: int, dtype: torch.dtype, device: torch.device,
            nm: tuple[int, int] | None) -> dict:
    """One layer of `shape` (C_out, C_in): Gram both ways, then both loops on the fast Gram's Hessian."""
    rows, cols = shape
    generator = torch.Generator(device=device).manual_seed(0)
    weight = torch.randn(rows, cols, generator=generator, device=device).to(dtype)
    half, full = InputStats(cols, device, gram=True), InputStats(cols, device, gram=True)
    seconds: dict[str, float] = {}
    batches = [torch.randn(1, seqlen, cols, generator=generator, device=device).to(dtype) for _ in range(nsamples)]
    with timed(device, seconds, "gram_fp32"):
        for batch in batches:
            full.add(batch.float())
    with timed(device, seconds, "gram_model_dtype"):
        for batch in batches:
            half.add(batch)
    gram_difference = float((half.gram - full.gram).abs().max() / full.gram.abs().max())
    hessian = half.gram * (2.0 / half.n_sequences)
    with torch.no_grad():
        with timed(device, seconds, "factorise"):
            sparsegpt.inverse_cholesky(hessian.clone(), 0.01)
        with timed(device, seconds, "prune_layer"):
            ours = sparsegpt.prune_layer(weight, half, 0.5, nm)
        with timed(device, seconds, "reference_loop"):
            keep, pruned = reference_loop(weight, hessian, 0.5, nm)
    return {"shape": f"{rows}x{cols}", "structure": "unstructured" if nm is None else f"{nm[0]}:{nm[1]}",
            **{key: round(value, 4) for key, value in seconds.items()},
            "gram_max_relative_difference": gram_difference,
            "masks_equal": bool(torch.equal(ours.mask, keep)), "weights_equal": bool(torch.equal(ours.weight, pruned))}


def ratio(baseline: float, ours: float) -> str:
    return f"{baseline / ours:.2f}" if ours > 0 else "--"  # timings round to 0 at test sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shapes", nargs="+", default=["4096x4096", "4096x11008"], help="C_out x C_in")
    parser.add_argument("--nsamples", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    parser.add_argument("--out", type=Path, default=Path("reports/bench"))
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.set_float32_matmul_precision("highest")  # as the driver runs SparseGPT
    rows = [measure(tuple(int(n) for n in shape.split("x")), args.nsamples, args.seqlen, dtype, device, nm)
            for shape in args.shapes for nm in (None, (2, 4))]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"# SparseGPT on one layer: {name}, {args.dtype}, calibration {args.nsamples} x {args.seqlen}", "",
             "| shape | structure | Gram fp32 s | Gram model dtype s | ratio | factorise s | prune_layer s | "
             "reference loop s | ratio | Gram max rel. diff | masks equal | weights equal |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for row in rows:
        lines.append(f"| {row['shape']} | {row['structure']} | {row['gram_fp32']} | {row['gram_model_dtype']} | "
                     f"{ratio(row['gram_fp32'], row['gram_model_dtype'])} | {row['factorise']} | {row['prune_layer']} "
                     f"| {row['reference_loop']} | {ratio(row['reference_loop'], row['prune_layer'])} | "
                     f"{row['gram_max_relative_difference']:.1e} | {row['masks_equal']} | {row['weights_equal']} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sparsegpt_layer.md").write_text("\n".join(lines) + "\n")
    write_json(args.out / "sparsegpt_layer.json", {"device": name, "dtype": args.dtype, "rows": rows})
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
