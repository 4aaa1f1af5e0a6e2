"""fp32 input statistics of Linear layers, accumulated by forward hooks during the dense block pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

ERROR_SAMPLE_PER_SEQUENCE = 16  # tokens per calibration sequence kept for the reconstruction-error estimate


class InputStats:
    """What the methods need to know about one Linear's calibration inputs, in fp32 whatever the model dtype.

    Always the column sums of squares (Wanda's and RIA's ||X_j||^2: C_in numbers). With gram=True (SparseGPT, whose
    Hessian it is) the Gram sum X X^T (C_in^2), which also gives the exact reconstruction error. Without it, the
    error is estimated on a uniform sample of ERROR_SAMPLE_PER_SEQUENCE token positions per sequence, drawn from a
    generator seeded by the sequence's index: memory O(C_in x tokens sampled) instead of C_in^2, and the same
    tokens whatever the batch size.
    """

    def __init__(self, features: int, device: torch.device | str, gram: bool):
        self.squares = torch.zeros(features, dtype=torch.float32, device=device)
        self.gram = torch.zeros(features, features, dtype=torch.float32, device=device) if gram else None
        self.error_sample: list[torch.Tensor] = []
        self.n_sequences = 0

    def add(self, inputs: torch.Tensor) -> None:
        """Add a (batch, seq, C_in) or (tokens, C_in) input.

        One sequence at a time: the fp32 sum order, hence every bit of the statistics and of the masks chosen from
        them, is then the same whatever the calibration batch size (one product over a whole batch rounds
        differently).
        """
        sequences = inputs.detach() if inputs.dim() == 3 else inputs.detach()[None]
        half_on_gpu = sequences.is_cuda and sequences.dtype in (torch.float16, torch.bfloat16)
        for sequence in sequences:
            x = sequence.float()
            self.squares.add_(x.square().sum(dim=0))
            if self.gram is not None and half_on_gpu:
                # the product of two fp16 (bf16) numbers is exact in fp32, so a tensor-core GEMM with fp32
                # accumulation is the fp32 Gram up to summation order, about 10x faster than fp32 GEMM
                self.gram.add_(torch.mm(sequence.T, sequence, out_dtype=torch.float32))
            elif self.gram is not None:
                self.gram.addmm_(x.T, x)
            else:
                self.error_sample.append(x[_sample_positions(len(x), self.n_sequences).to(x.device)])
            self.n_sequences += 1

    @property
    def col_norms(self) -> torch.Tensor:
        """||X_j||_2 over all calibration tokens."""
        return self.squares.sqrt()

    @property
    def error_method(self) -> str:
        """How reconstruction_error is obtained, for the manifest."""
        if self.gram is not None:
            return "exact, from the Gram sum over all calibration tokens"
        return (f"estimated on {ERROR_SAMPLE_PER_SEQUENCE} uniformly sampled token positions per calibration "
                "sequence (both sums unbiased, their ratio taken)")

    def reconstruction_error(self, dense: torch.Tensor, pruned: torch.Tensor) -> float | None:
        """||WX - W'X||_F / ||WX||_F over the calibration tokens (None when WX = 0)."""
        diff = dense - pruned
        if self.gram is not None:
            num = ((diff @ self.gram) * diff).sum().clamp_min(0.0)
            den = ((dense @ self.gram) * dense).sum()
        else:
            sample = torch.cat(self.error_sample)
            num, den = (sample @ diff.T).square().sum(), (sample @ dense.T).square().sum()
        return float((num / den).sqrt()) if den > 0 else None

    @classmethod
    def from_inputs(cls, inputs: torch.Tensor, gram: bool = True) -> InputStats:
        stats = cls(inputs.shape[-1], inputs.device, gram)
        stats.add(inputs)
        return stats


def _sample_positions(length: int, sequence_index: int) -> torch.Tensor:
    """min(length, ERROR_SAMPLE_PER_SEQUENCE) distinct positions, uniform, fixed by the sequence's index."""
    generator = torch.Generator().manual_seed(sequence_index)
    return torch.randperm(length, generator=generator)[:ERROR_SAMPLE_PER_SEQUENCE].sort().values


@contextlib.contextmanager
def collect_inputs(layers: dict[str, nn.Linear], gram: bool) -> Iterator[dict[str, InputStats]]:
    """Hook `layers`; yields name -> InputStats (with the Gram sum if `gram`) filled by every forward inside the block.

    Consecutive layers fed the very same tensor (q/k/v, gate/up) share one InputStats, so each statistic is computed
    once. The sharing pattern is fixed by the block's code, hence identical on every batch.

    A block may flatten its tokens to (batch x seq, C_in) before a layer (OPT's fc1 and fc2): such an input is cut
    back into sequences of the length of the last (batch, seq, C_in) input of the same block, so that it counts
    its sequences (SparseGPT's 2 / n) and sums them in the same order whatever the calibration batch size.
    """
    stats: dict[str, InputStats] = {}
    previous: dict[str, object] = {"input": None, "name": None, "length": None}

    def hook(name: str):
        def accumulate(module: nn.Linear, args: tuple, output: torch.Tensor) -> None:
            x = args[0]
            if x is previous["input"]:
                stats[name] = stats[previous["name"]]
                return
            previous["input"], previous["name"] = x, name
            if x.dim() == 3:
                previous["length"] = x.shape[1]
            elif previous["length"] is None:
                raise ValueError(f"{name} got a flattened (tokens, features) input before any layer of its block saw "
                                 "(batch, sequence, features): its calibration sequences cannot be told apart")
            else:
                x = x.reshape(-1, previous["length"], x.shape[-1])
            stats.setdefault(name, InputStats(module.in_features, x.device, gram)).add(x)
        return accumulate

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()
        previous.clear()
