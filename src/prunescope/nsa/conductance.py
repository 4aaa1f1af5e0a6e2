"""NSA step 2 by Captum: each studied neuron's conductance for one word occurrence, a check on the mediated effects.

Attribution patching (nsa.mediation's first order) takes d margin / d activation at the intact prompt only, so it
saturates where a norm flattens the margin near the intact end. Conductance (Dhamdhere et al. 2018, Captum's
LayerConductance) integrates d margin / d a x d a / d alpha along the straight path from the occluded input
embeddings (the word's tokens at the baseline, every other token intact) to the intact ones, so a neuron gets the
margin it moved wherever on the path it moved it. It is per position (zero before the word: a causal model's
activations there do not move), summed over positions from the word on like the first order.

Completeness holds for a cut, which a layer of a residual network is not: summed over one layer's neurons,
conductance is the part of margin(intact) - margin(occluded) that flows through that layer's MLP, and Captum's
convergence delta (that sum minus the whole effect) is minus what bypasses the MLP on the residual stream (or
through the norms) plus the integration error; only the latter shrinks with n_steps. The trapezoid grid's
alphas include both ends, so the telescoping sum covers the whole path (Gauss-Legendre's interior nodes do not).

Where it is used: the tests and bench/nsa_conductance.py, not the workflow. On the planted attention model it finds
the neuron that carries the word at the position where it reads it, and lands near its exact patching effect where
first order gets a twentieth of it; on SmolLM2-135M it tracks exact patching less well than first order does (a
neuron's share of the whole path, with every other neuron moving, is not the effect of reverting that neuron
alone), at n_steps + 1 forwards and backwards per layer and occurrence (Captum attributes to one layer per call),
against one forward and backward for every layer's first order: numbers in docs/methods.md. The path needs many
steps where the margin jumps (a gated neuron): 16 overshoot the planted neuron by 40%, 64 by 12%, 256 by 5%.
Single-token choices only: Captum keeps the hooked module's last call, which for a multi-token choice is the
continuation's; and not OPT, whose fc2 reads the activation flattened to (rows x tokens, width).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from prunescope.models.families import Family
from prunescope.models.offload import input_device, offloaded_weights_reread_in_backward
from prunescope.nsa.answers import OCCLUDED, embedded, gold_margin, single_token
from prunescope.nsa.patching import prompt_margin
from prunescope.nsa.prompts import Example


@dataclass(frozen=True)
class WordConductance:
    """One word occurrence: per studied layer, prompt position and neuron its conductance (nats, float64), its
    effect margin(intact) - margin(occluded), and per layer Captum's convergence delta (the layer's sum minus the
    effect: minus the effect that bypasses the layer's MLP, plus the integration error)."""

    per_position: torch.Tensor  # (layers, tokens, width)
    effect: float
    delta: torch.Tensor  # (layers,)

    def neurons(self) -> torch.Tensor:
        """(layers, width): summed over positions."""
        return self.per_position.sum(1)


def word_conductance(model, family: Family, example: Example, positions: Sequence[int], layers: Sequence[int],
                     baseline: torch.Tensor, n_steps: int = 64, batch_size: int | None = None) -> WordConductance:
    """The conductance of every neuron of `layers` for the word occurrence at token `positions` (occluded by
    `baseline`, nsa.answers.mean_embedding), n_steps intervals, `batch_size` path points per forward (None: all)."""
    from captum.attr import LayerConductance

    if not single_token(example.choices):
        raise ValueError("conductance needs single-token choices (Captum would read a continuation's activations)")
    if family.name == "opt":  # Captum steps along the first dimension, which fc2's input folds into tokens
        raise ValueError("conductance needs the MLP activation as (rows, tokens, width); OPT's fc2 reads it flattened")
    ids = torch.tensor([example.prompt.input_ids], device=input_device(model))
    occluded_ids = ids.clone()
    occluded_ids[0, list(positions)] = OCCLUDED
    intact, occluded = embedded(model, ids, None).detach(), embedded(model, occluded_ids, baseline).detach()

    def forward(embeds: torch.Tensor) -> torch.Tensor:
        return gold_margin(model, example, ids.expand(embeds.shape[0], -1), embeds)

    blocks, per_position, deltas = family.blocks(model), [], []
    with offloaded_weights_reread_in_backward(model):
        for layer in layers:  # attribute_to_layer_input: mlp_out's input (down_proj's) is the MLP's activation
            conductance, delta = LayerConductance(forward, family.mlp_out(blocks[layer])).attribute(
                intact, baselines=occluded, n_steps=n_steps, method="riemann_trapezoid",
                internal_batch_size=batch_size, return_convergence_delta=True, attribute_to_layer_input=True)
            per_position.append(conductance[0].detach().double().cpu())
            deltas.append(float(delta))
    effect = prompt_margin(model, example, intact) - prompt_margin(model, example, occluded)
    return WordConductance(torch.stack(per_position), effect, torch.tensor(deltas, dtype=torch.float64))
