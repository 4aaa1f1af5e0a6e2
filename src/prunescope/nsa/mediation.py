"""NSA step 2, mediated matching: which neurons carry a word's effect on the answer, wherever they read it.

A word's information travels: an attention head may move it to the last position, where a later layer's neuron
reads it. So a neuron is paired with a word by the share of the word's occlusion effect that flows through it, at
every position from the word on, never by its activation at the word's own tokens.

Per occurrence of a vocabulary word (one example, all its tokens), three forwards of the same prompt:
  intact (with gradients), occluded (the word's input embeddings replaced by the vocabulary's mean embedding, a
  label-neutral baseline that keeps every position where it was), and patched (the intact prompt with one
  candidate neuron set to its occluded activations). The word's effect is e = margin(intact) - margin(occluded)
  (nsa.answers.margin). A neuron's first-order mediated effect is sum over prompt positions t >= the word's first
  token of (a_intact[t] - a_occluded[t]) x d margin / d a[t] (attribution patching); its exact mediated effect is
  margin(intact) - margin(patched), run for the `candidates` neurons with the largest first-order |effect|.
Patching runs once per word and example (its strongest occurrence there), and once more with each candidate set at
the last prompt token alone: how much of its exact effect it carries there, where an attention head may have moved
the word, rather than at the word's own and the following tokens (the position split). Each patched forward runs the
prompt from its first patched token on (before the word, occluded and intact activations are the same) and from its
lowest patched layer up (nsa.patching).
Per word, effects are pooled over occurrences with sums only, each occurrence oriented by the sign of its own effect
(the direction it pushes this example), so a word that pushes toward "negative" in a positive review and in a
negative one adds up. A (word, neuron) pair is matched when the word's mean |effect| reaches `effect_floor` and
the neuron's exact share of it (pooled exact effect over the pooled |effect| of the occurrences where it was
patched) reaches `share_floor`; nothing is matched to fill a quota. First order only picks the candidates: it
saturates where a norm or a large activation flattens the margin (a neuron that moves the margin by 15 nats can
get a first-order estimate of 1), so it is recorded beside the exact effect, never matched on. Positions are the
prompt's: with multi-token choices, the choices' own positions are not patched.

A pruned variant is measured on exactly the dense model's patched occurrences, each matched pair on the examples it
was patched on, oriented by the dense effect's sign (nsa.compare.paired_effects): a paired comparison, at three
forwards an example.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from prunescope.models.families import Family
from prunescope.models.offload import offloaded_weights_reread_in_backward
from prunescope.nsa.answers import margin, mean_embedding
from prunescope.nsa.neurons import LayerStats, resume_points, vocabulary_ids
from prunescope.nsa.options import MediationOptions
from prunescope.nsa.patching import IntactPrompt, embedded_prompt, occluded_pass, patched_effects, prompt_logprobs
from prunescope.nsa.prompts import Example


def word_occurrences(example: Example, vocabulary: dict[str, int]) -> list[tuple[int, list[int]]]:
    """(vocabulary index, token positions) of each occurrence of a vocabulary word in the example's prompt."""
    positions: dict[int, list[int]] = {}
    for position, occurrence in enumerate(example.prompt.token_words):
        if occurrence >= 0 and example.prompt.words[occurrence] in vocabulary:
            positions.setdefault(occurrence, []).append(position)
    return [(vocabulary[example.prompt.words[occurrence]], found) for occurrence, found in sorted(positions.items())]


@dataclass(frozen=True)
class Occurrence:
    """A word occurrence the dense model patched: the example (its index among the NSA examples), the word (its
    vocabulary index), its token positions, its effect there (nats, signed: the sign orients every exact effect
    measured on it, before pruning and after) and each patched candidate's exact effect, oriented ((layer position,
    neuron, nats), ...: what the pairing test ranks neurons by on the examples it does not test)."""

    example: int
    word: int
    positions: tuple[int, ...]
    effect: float
    exact: tuple[tuple[int, int, float], ...] = ()
    last: tuple[tuple[int, int, float], ...] = ()  # the same candidates patched at the last prompt token alone


@dataclass
class MediationSums:
    """Per vocabulary word, pooled over its occurrences, each oriented by the sign of its effect (float64):
    occurrences, |effect| (nats), per layer and neuron the first-order mediated effect and, where patched, the exact
    one with the count and the |effect| of the occurrences patched; and, not oriented, per choice index the fall of
    its log-probability among the choices when the word is occluded (the label it pushes toward: its group). Beside
    them, the occurrences patched, with each patched candidate's exact effect: what a pruned model is patched on
    again (nsa.compare.paired_effects); and each neuron's salience, whatever the word (the pairing test's control of
    generally important neurons, nsa.pairing)."""

    occurrences: torch.Tensor  # (words,)
    effect: torch.Tensor  # (words,)
    first_order: torch.Tensor  # (layers, words, width)
    exact: torch.Tensor  # (layers, words, width)
    exact_count: torch.Tensor  # (layers, words, width)
    patched_effect: torch.Tensor  # (layers, words, width)
    push: torch.Tensor  # (words, choices): sum of log p(choice | intact) - log p(choice | occluded), normalised
    salience: torch.Tensor  # (layers, width): sum over examples of |activation x d margin / d activation|, all tokens
    examples: int = 0  # the examples that added to `salience` (those with a vocabulary word)
    patched: list[Occurrence] = field(default_factory=list)
    # {layer: LayerStats of the intact pass over every example, importance included}: the paper's association fits
    # on these (nsa.stages), at no further pass; None unless mediation_sums is asked for them
    stats: dict[int, LayerStats] | None = None

    @classmethod
    def empty(cls, words: int, layers: int, width: int, choices: int) -> MediationSums:
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
        return cls(zeros(words), zeros(words), *(zeros(layers, words, width) for _ in range(4)), zeros(words, choices),
                   zeros(layers, width))

    def share(self) -> torch.Tensor:
        """(layers, words, width): each neuron's exact mediated share of the word's |effect| over the occurrences
        where it was patched, NaN where never patched."""
        return torch.where(self.exact_count > 0, self.exact / self.patched_effect.clamp_min(1e-12), torch.nan)

    def first_order_share(self) -> torch.Tensor:
        """(layers, words, width): each neuron's pooled first-order mediated effect over the word's pooled |effect|."""
        return self.first_order / self.effect.clamp_min(1e-12)[None, :, None]

    def exact_mean(self) -> torch.Tensor:
        """(layers, words, width): the mean exact mediated effect where patched, NaN elsewhere."""
        return torch.where(self.exact_count > 0, self.exact / self.exact_count.clamp_min(1), torch.nan)


def example_mediation(model, family: Family, example: Example, vocabulary: dict[str, int], layers: Sequence[int],
                      baseline: torch.Tensor, options: MediationOptions, sums: MediationSums,
                      example_index: int = 0) -> None:
    """Add one example's occurrences of vocabulary words to `sums` (see the module docstring). Every occurrence
    counts for the effect and first order; patching, the cost, runs once per word and example, on its strongest
    occurrence there, and not at all where that moves the margin by less than options.effect_floor."""
    occurrences = word_occurrences(example, vocabulary)
    if not occurrences and sums.stats is None:
        return
    intact_embeds = embedded_prompt(model, example)
    with resume_points(model, family, layers) as below:
        intact, grads, logprobs = _intact_pass(model, family, example, intact_embeds, layers)
    importance = [intact[p] * grads[p] for p in range(len(layers))]  # activation x gradient, (tokens, width)
    if sums.stats is not None:
        words = vocabulary_ids(example, vocabulary)
        for p, layer in enumerate(layers):
            sums.stats[layer].add(intact[p].cpu(), words, importance[p].cpu())
    if not occurrences:
        return
    prompt = IntactPrompt(model, family, example, layers, intact_embeds, float(margin(logprobs, example.label)[0]),
                          below)
    intact_choices = torch.log_softmax(logprobs[0], dim=-1)
    sums.salience += torch.stack([value.abs().sum(0) for value in importance]).double().cpu()
    sums.examples += 1
    length = len(example.prompt.input_ids)
    strongest: dict[int, tuple[float, list[int], dict, list]] = {}  # word: its strongest occurrence's effect, ...
    for start in range(0, len(occurrences), options.batch_size):
        batch = occurrences[start:start + options.batch_size]
        from_word = torch.zeros(len(batch), length, 1, device=intact_embeds.device)  # positions >= the word's first
        for row, (_, positions) in enumerate(batch):
            from_word[row, min(positions):] = 1.0
        first_order = {}

        def candidates(p, occluded, first_order=first_order, from_word=from_word):
            first_order[p] = ((intact[p] - occluded) * grads[p] * from_word).sum(1)  # (rows, width)
            return torch.topk(first_order[p].abs(), min(options.candidates, occluded.shape[-1]), dim=1).indices

        occluded_logprobs, kept = occluded_pass(prompt, baseline, [positions for _, positions in batch], candidates)
        margins = margin(occluded_logprobs, example.label)
        for row, (word, positions) in enumerate(batch):
            effect = prompt.margin - float(margins[row])
            sums.occurrences[word] += 1
            sums.effect[word] += abs(effect)
            sums.push[word] += (intact_choices - torch.log_softmax(occluded_logprobs[row], dim=-1)).double().cpu()
            row_first_order = torch.stack([first_order[p][row] for p in range(len(layers))])
            sums.first_order[:, word] += (1.0 if effect >= 0 else -1.0) * row_first_order.double().cpu()
            values = {(p, int(n)): kept[p][1][row, :, c] for p in kept for c, n in enumerate(kept[p][0][row])}
            chosen = sorted(values, key=lambda pn: (-abs(float(row_first_order[pn])), pn))[:options.candidates]
            if abs(effect) > abs(strongest.get(word, (0.0,))[0]):
                strongest[word] = (effect, positions, values, chosen)
    patched = [(word, found) for word, found in sorted(strongest.items())
               if abs(found[0]) >= options.effect_floor]  # a weaker word is not worth the patching here
    # each word's candidates patched from the word on, and at the last prompt token alone (where a head may have moved
    # the word: one-token forwards after the intact prefix), all words' rows in one call each
    rows = [[(p, n, values[p, n])] for _, (_, _, values, chosen) in patched for p, n in chosen]
    at_last = iter(patched_effects(prompt, rows, options.batch_size, [length - 1] * len(rows)))
    exact_effects = iter(patched_effects(prompt, rows, options.batch_size,
                                         [min(positions) for _, (_, positions, _, chosen) in patched for _ in chosen]))
    for word, (effect, positions, _, chosen) in patched:
        exact = [next(exact_effects) for _ in chosen]
        sign = 1.0 if effect >= 0 else -1.0
        oriented = tuple((p, n, sign * value) for (p, n), value in zip(chosen, exact, strict=True))
        last = tuple((p, n, sign * next(at_last)) for p, n in chosen)
        sums.patched.append(Occurrence(example_index, word, tuple(positions), effect, oriented, last))
        for (p, neuron), value in zip(chosen, exact, strict=True):
            sums.exact[p, word, neuron] += sign * value
            sums.exact_count[p, word, neuron] += 1
            sums.patched_effect[p, word, neuron] += abs(effect)


def _intact_pass(model, family: Family, example: Example, embeds: torch.Tensor, layers: Sequence[int]
                 ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], torch.Tensor]:
    """The intact prompt's activations and d margin / d activation per layer position, both (tokens, width) at
    prompt positions, and its (1, choices) log-probabilities."""
    length = len(example.prompt.input_ids)
    captured = {}

    def keep(position, activation):
        activation.retain_grad()
        captured[position] = activation
        return activation  # the forward goes on through this tensor, so its gradient is computed

    model.zero_grad(set_to_none=True)
    with offloaded_weights_reread_in_backward(model):
        logprobs = prompt_logprobs(model, family, example, embeds, layers, keep)
        margin(logprobs, example.label).sum().backward()
    model.zero_grad(set_to_none=True)
    grads = {p: a.grad[0, :length].float() for p, a in captured.items()}
    return {p: a.detach()[0, :length].float() for p, a in captured.items()}, grads, logprobs.detach()


def mediation_sums(model, family: Family, examples: Sequence[Example], vocabulary: Sequence[str],
                   layers: Sequence[int], options: MediationOptions, desc: str = "mediated effects",
                   layer_stats: bool = False) -> MediationSums:
    """MediationSums of every example's vocabulary words; memory O(layers x words x neurons) for the sums, plus
    the patched occurrences' records (at most examples x words x candidates). With `layer_stats`, also the intact
    pass's LayerStats per layer over every example (sums.stats; an example without a vocabulary word then runs
    its intact pass for them alone)."""
    width = family.mlp_out(family.blocks(model)[layers[0]]).in_features
    choices = max(len(example.choices) for example in examples)
    sums = MediationSums.empty(len(vocabulary), len(layers), width, choices)
    if layer_stats:
        sums.stats = {layer: LayerStats.empty(len(vocabulary), width, importance=True) for layer in layers}
    index = {word: i for i, word in enumerate(vocabulary)}
    baseline = mean_embedding(model)
    for i, example in enumerate(tqdm(examples, desc=desc, mininterval=10)):
        example_mediation(model, family, example, index, layers, baseline, options, sums, i)
    for stats in (sums.stats or {}).values():
        stats.per_example_importance(len(examples))
    return sums


def mediated_matches(sums: MediationSums, vocabulary: Sequence[str], groups: Sequence[str], layers: Sequence[int],
                     share_floor: float, effect_floor: float) -> list[dict]:
    """Every (word, neuron) whose exact share of the word's |effect| is at least share_floor, for words whose mean
    |effect| is at least effect_floor (nats), with the share, the first-order share, the mean exact and first-order
    effects per occurrence (nats), the mean exact effect of the neuron patched at the last prompt token alone, the
    occurrences patched of all and the examples patched on."""
    share, first_share, exact = sums.share(), sums.first_order_share(), sums.exact_mean()
    patched_on: dict[tuple[int, int, int], list[int]] = {}  # (layer position, word, neuron): the examples
    at_last: dict[tuple[int, int, int], float] = {}  # ... and its exact effects at the last prompt token, summed
    for occurrence in sums.patched:
        for p, n, _ in occurrence.exact:
            patched_on.setdefault((p, occurrence.word, n), []).append(occurrence.example)
        for p, n, value in occurrence.last:
            at_last[p, occurrence.word, n] = at_last.get((p, occurrence.word, n), 0.0) + value
    strong = (sums.effect / sums.occurrences.clamp_min(1) >= effect_floor)[None, :, None]
    matches = []
    for p, w, n in torch.nonzero((share >= share_floor) & strong).tolist():
        count = float(sums.occurrences[w])
        matches.append({"layer": layers[p], "word": vocabulary[w], "group": groups[w], "neuron": n,
                        "share": round(float(share[p, w, n]), 6),
                        # share x exact effect ranks pairs (heatmap, causal curve); the exact effect weights them
                        "score": round(float(share[p, w, n] * exact[p, w, n]), 6),
                        "importance": round(float(exact[p, w, n]), 6),
                        "first_order_share": round(float(first_share[p, w, n]), 6),
                        "exact": round(float(exact[p, w, n]), 6),
                        "exact_last_token": round(at_last.get((p, w, n), 0.0) / len(patched_on[p, w, n]), 6),
                        "first_order": round(float(sums.first_order[p, w, n]) / count, 6),
                        "word_effect": round(float(sums.effect[w]) / count, 6),
                        "patched": int(sums.exact_count[p, w, n]), "occurrences": int(count),
                        "examples": patched_on[p, w, n]})  # where patched: a pruned model is patched there
    return sorted(matches, key=lambda m: (m["word"], -m["share"], m["layer"], m["neuron"]))


def pushed_groups(sums: MediationSums, examples: Sequence[Example], fallback: Sequence[str]) -> list[str]:
    """Per word: the label it pushes toward (the choice whose share of probability among the choices falls most,
    pooled over its occurrences, when it is occluded) where every example has the same choices (sentiment, NLI);
    else, or for a word never seen, `fallback` (step 1's group)."""
    if not examples or any(example.choices != examples[0].choices for example in examples):
        return list(fallback)
    names = {example.label: example.group for example in examples}  # a fixed-label example's group is its gold label
    return [names.get(int(sums.push[w].argmax()), f"choice {int(sums.push[w].argmax())}")
            if sums.occurrences[w] > 0 else fallback[w] for w in range(len(fallback))]


def mediated_tensors(sums: MediationSums, matches: Sequence[dict], vocabulary: Sequence[str], layers: Sequence[int]
                     ) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Per layer (words, neurons): the matched pairs' exact share ("association") and exact mediated effect in nats
    ("importance"), 0 for every pair not matched: what the causal check and NSA-guided pruning rank."""
    width = sums.first_order.shape[2]
    share = {layer: torch.zeros(len(vocabulary), width) for layer in layers}
    effect = {layer: torch.zeros(len(vocabulary), width) for layer in layers}
    index = {word: i for i, word in enumerate(vocabulary)}
    for match in matches:
        share[match["layer"]][index[match["word"]], match["neuron"]] = match["share"]
        effect[match["layer"]][index[match["word"]], match["neuron"]] = match["exact"]
    return share, effect
