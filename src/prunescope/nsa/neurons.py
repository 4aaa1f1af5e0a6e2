"""NSA's neurons: the MLP intermediate activations (the input of down_proj / fc2), read and ablated by hooks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch

from prunescope.models.families import Family


def mlp_activations(model, family: Family, sequences: Sequence[list[int]], layers: Sequence[int]
                    ) -> dict[int, torch.Tensor]:
    """{layer: (total tokens, neurons)} fp32 activations of every token of every sequence, in order."""
    captured: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    blocks = family.blocks(model)
    handles = [family.mlp_out(blocks[layer]).register_forward_pre_hook(
        lambda _module, args, layer=layer: captured[layer].append(args[0][0].detach().float().cpu()))
        for layer in layers]
    device = model.get_input_embeddings().weight.device
    try:
        with torch.no_grad():
            for ids in sequences:
                model.base_model(input_ids=torch.tensor([ids], device=device))  # no lm_head: ~20% of the cost
    finally:
        for handle in handles:
            handle.remove()
    return {layer: torch.cat(parts) for layer, parts in captured.items()}


@contextlib.contextmanager
def ablated(model, family: Family, neurons: Mapping[int, Sequence[int]]) -> Iterator[None]:
    """Zero the given neurons ({layer: [neuron, ...]}) in every forward inside the block (zero ablation)."""
    blocks = family.blocks(model)

    def zero(indices):
        def hook(_module, args):
            activation = args[0].clone()
            activation[..., indices] = 0
            return (activation, *args[1:])
        return hook

    handles = [family.mlp_out(blocks[layer]).register_forward_pre_hook(zero(torch.tensor(sorted(indices))))
               for layer, indices in neurons.items() if indices]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
