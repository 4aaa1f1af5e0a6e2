"""NSA's typed options, built once from the validated params (params.yaml's `nsa` block) and the job's inputs, and
passed by name to the stages (nsa.stages): which model, which examples, and how each step runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from prunescope.data.prepare import read_dataset
from prunescope.data.records import subsample_records
from prunescope.models.offload import loaded_model
from prunescope.nsa.prompts import Example, render_with_spans, tokenize_words


@dataclass(frozen=True)
class NsaModel:
    """The model a job loads: the prepared dense model (its dtype and family from params.yaml's models entry),
    the device it runs on, the offload settings, and for a compared variant its pruned artifact."""

    model_dir: str
    dtype: str
    family: str
    device: torch.device
    offload: Mapping | None = None
    pruned_dir: str | None = None

    @classmethod
    def from_spec(cls, model_dir: str, spec: Mapping, device: torch.device, offload: Mapping | None = None,
                  pruned_dir: str | None = None) -> NsaModel:
        return cls(str(model_dir), spec["dtype"], spec["family"], device, offload,
                   None if pruned_dir is None else str(pruned_dir))

    def loaded(self):
        """loaded_model's (model, tokenizer) context."""
        return loaded_model(self.model_dir, self.dtype, self.device, self.offload, self.pruned_dir)


@dataclass(frozen=True)
class NsaData:
    """A dataset's NSA examples: its prepared records, prompt template, the grid's nsa_examples (None: all) and the
    subsample seed (evaluation.subsample_seed)."""

    dataset_path: str
    template: str
    limit: int | None
    seed: int

    def examples(self, tokenizer) -> list[Example]:
        """A fixed seeded subsample of `limit` records, each with its prompt's record words, its choices as scored
        after the prompt (lm-eval's " " delimiter), gold and group.

        Group = the gold label word where every example has the same label words (sentiment, NLI), else "correct"
        (multiple choice: the words push toward the correct option)."""
        records = subsample_records(read_dataset(self.dataset_path), self.limit, self.seed)
        fixed_labels = all(record["choices"] == records[0]["choices"] for record in records)
        return [Example(tokenize_words(tokenizer, *render_with_spans(self.template, record)),
                        [tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
                         for choice in record["choices"]],
                        record["label"], record["choices"][record["label"]] if fixed_labels else "correct")
                for record in records]


@dataclass(frozen=True)
class WordOptions:
    """Step 1: the words kept per example (top_k), the examples a word needs (min_count), the attribution method,
    its batch and integrated-gradient steps, and the attribution floor in nats and as a share of the total."""

    top_k: int
    min_count: int
    attribution: str
    batch_size: int
    steps: int
    floor: float
    share: float


@dataclass(frozen=True)
class PaperOptions:
    """The paper's learned association (nsa.matching: paper): std floor, projected-Adam epochs, learning rate,
    L1 weight, neurons matched per word and the fit's seed."""

    std_floor: float
    epochs: int
    lr: float
    lam: float
    neurons_per_word: int
    seed: int


@dataclass(frozen=True)
class MediationOptions:
    """Mediated matching: share_floor and effect_floor (mediated_matches), the neurons patched per occurrence, and
    the prompts per forward."""

    share_floor: float
    effect_floor: float
    candidates: int
    batch_size: int


@dataclass(frozen=True)
class CausalOptions:
    """Step 4: up to `ablate` of the neurons matched to the words (the curve: each word's neurons_per_word best per
    layer) ablated or patched, against `draws` random draws, seeded; the pairing test on each group's strongest
    `pairing_occurrences` patched occurrences."""

    neurons_per_word: int
    ablate: int
    draws: int
    seed: int
    pairing_occurrences: int


@dataclass(frozen=True)
class NsaOptions:
    """Every NSA step's options; `mediation` is None under the paper's matching."""

    layers: Sequence[int] | None
    words: WordOptions
    paper: PaperOptions
    mediation: MediationOptions | None
    causal: CausalOptions
    drop_threshold: float

    @classmethod
    def from_params(cls, nsa: Mapping) -> NsaOptions:
        """From params.yaml's `nsa` block, as validated by the schema."""
        return cls(
            layers=nsa["layers"],
            words=WordOptions(nsa["top_k_words"], nsa["min_count"], nsa["attribution"], nsa["attribution_batch"],
                              nsa["ig_steps"], nsa["attribution_floor"], nsa["attribution_share"]),
            paper=PaperOptions(nsa["std_floor"], nsa["epochs"], nsa["lr"], nsa["lambda"], nsa["neurons_per_word"],
                               nsa["seed"]),
            mediation=MediationOptions(nsa["share_floor"], nsa["effect_floor"], nsa["candidates"],
                                       nsa["attribution_batch"]) if nsa["matching"] == "mediated" else None,
            causal=CausalOptions(nsa["neurons_per_word"], nsa["ablate_neurons"], nsa["random_draws"], nsa["seed"],
                                 nsa["pairing_occurrences"]),
            drop_threshold=nsa["drop_threshold"])
