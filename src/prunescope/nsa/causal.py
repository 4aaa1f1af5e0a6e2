"""NSA step 4, the causal check: zero the neurons matched to a task's influential words in the dense model and
compare the accuracy change with zeroing as many random neurons of the same layers."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from prunescope.evaluation.run import evaluate_model
from prunescope.models.families import Family
from prunescope.nsa.neurons import ablated


def random_neurons(matched: Mapping[int, Sequence[int]], width: int, seed: int) -> dict[int, list[int]]:
    """As many neurons per layer as `matched` has there, drawn from that layer's other neurons (seeded)."""
    rng = random.Random(seed)
    return {layer: sorted(rng.sample(sorted(set(range(width)) - set(indices)), len(indices)))
            for layer, indices in sorted(matched.items())}


def ablation_accuracies(model, tokenizer, family: Family, task_dir: str, task_name: str,
                        matched: Mapping[int, Sequence[int]], width: int, seed: int, batch_size: int,
                        device: str) -> dict:
    """acc of the intact model, with the matched neurons zeroed, and with random neurons zeroed."""
    control = random_neurons(matched, width, seed)

    def accuracy() -> float:
        return evaluate_model(model, tokenizer, task_dir, task_name, batch_size, 0, device)["acc"]

    intact = accuracy()
    with ablated(model, family, matched):
        matched_acc = accuracy()
    with ablated(model, family, control):
        random_acc = accuracy()
    return {"acc": intact, "acc_matched_ablated": matched_acc, "acc_random_ablated": random_acc,
            "matched_change": matched_acc - intact, "random_change": random_acc - intact,
            "neurons_ablated": sum(len(v) for v in matched.values()),
            "matched": {str(k): list(v) for k, v in matched.items()}, "random": {str(k): v for k, v in control.items()}}
