"""fp32 input statistics of Linear layers, accumulated by forward hooks during the dense block pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class InputStats:
    """Running Gram sum X X^T over calibration tokens of one Linear input.

    One statistic serves all: its diagonal gives Wanda's and RIA's ||X_j||^2, it is SparseGPT's Hessian up to
    scale, and it gives every method's exact reconstruction error ||(W - W')X||.
    """

    def __init__(self, features: int, device: torch.device | str):
        self.gram = torch.zeros(features, features, dtype=torch.float32, device=device)
        self.n_sequences = 0

    def add(self, inputs: torch.Tensor) -> None:
        """Add a (batch, seq, C_in) or (tokens, C_in) input; statistics in fp32 whatever the model dtype.

        One sequence at a time: the fp32 sum order, hence every bit of the Gram and of the masks chosen from it,
        is then the same whatever the calibration batch size (one product over a whole batch rounds differently).
        """
        sequences = inputs.detach() if inputs.dim() == 3 else inputs.detach()[None]
        for sequence in sequences:
            x = sequence.float()
            self.gram.addmm_(x.T, x)
        self.n_sequences += len(sequences)

    @property
    def col_norms(self) -> torch.Tensor:
        """||X_j||_2 over all calibration tokens."""
        return self.gram.diagonal().sqrt()

    @classmethod
    def from_inputs(cls, inputs: torch.Tensor) -> InputStats:
        stats = cls(inputs.shape[-1], inputs.device)
        stats.add(inputs)
        return stats


@contextlib.contextmanager
def collect_inputs(layers: dict[str, nn.Linear]) -> Iterator[dict[str, InputStats]]:
    """Hook `layers`; yields name -> InputStats filled by every forward run inside the block.

    Consecutive layers fed the very same tensor (q/k/v, gate/up) share one InputStats, so each Gram is computed
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
            stats.setdefault(name, InputStats(module.in_features, x.device)).add(x)
        return accumulate

    handles = [layer.register_forward_hook(hook(name)) for name, layer in layers.items()]
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()
        previous.clear()
