"""NSA step 1: influential words, by a faithful attribution of the gold answer's margin on the dense model.

Each example's gold margin (nsa.answers) is attributed to the words of the record's own text, never the
template's, with Captum: occlusion (the default: the margin's fall when all tokens of one word occurrence are
replaced by the baseline, the vocabulary's mean input embedding: label-neutral where the vocabulary is, and every
other token keeps its position), integrated gradients from that baseline, or gradient x input (the paper's
choice, kept as an option: it is exactly zero for a word read through a normalisation, since
e . grad g(e / ||e||) = 0). Sub-word tokens are merged into words (letter and digit runs) by their character spans.
A word is kept in an example when it raises the gold margin by at least an attribution floor (in nats, and a share
of the example's total |attribution|), then the top-k of those; words kept in at least min_count examples form the
vocabulary, each grouped by the label it most often pushed toward (mediated matching regroups them by the label
their occlusion pushes away from: nsa.mediation.pushed_groups).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import torch

from prunescope.models.offload import input_device, offloaded_weights_reread_in_backward
from prunescope.nsa.answers import OCCLUDED, embedded, gold_margin, variant_margins
from prunescope.nsa.prompts import Example, TokenizedPrompt

ATTRIBUTIONS = ("occlusion", "integrated_gradients", "gradient_x_input")


def occurrence_attributions(model, example: Example, method: str, baseline: torch.Tensor, batch_size: int,
                            steps: int) -> dict[int, float]:
    """{word occurrence index: attribution of the gold margin to it} for one example, by `method`.

    Occlusion gives one value per occurrence (all its tokens replaced at once); the gradient methods give one per
    token, summed over the occurrence's tokens. Batched: `batch_size` perturbed prompts (occlusion) or
    interpolation steps (integrated gradients) per forward.
    """
    from captum.attr import FeatureAblation, InputXGradient, IntegratedGradients

    device = input_device(model)
    ids = torch.tensor([example.prompt.input_ids], device=device)
    words = torch.tensor([example.prompt.token_words], device=device)
    if not (words >= 0).any():
        return {}

    def forward(prompt_ids: torch.Tensor) -> torch.Tensor:
        return variant_margins(model, example, prompt_ids, baseline)

    if method == "occlusion":
        with torch.no_grad():  # feature 0 holds the template and other non-word tokens: one pass, ignored
            scores = FeatureAblation(forward).attribute(ids, baselines=OCCLUDED, feature_mask=words + 1,
                                                        perturbations_per_eval=batch_size)[0]
        first = {}
        for position, word in enumerate(example.prompt.token_words):
            first.setdefault(word, position)
        return {word: float(scores[position]) for word, position in first.items() if word >= 0}
    embed = model.get_input_embeddings()

    def forward_embeds(embeds: torch.Tensor) -> torch.Tensor:
        return gold_margin(model, example, ids.expand(embeds.shape[0], -1), embeds)

    with offloaded_weights_reread_in_backward(model):
        if method == "integrated_gradients":
            start = embedded(model, torch.where(words >= 0, OCCLUDED, ids), baseline).detach()  # the template stays
            per_token = IntegratedGradients(forward_embeds).attribute(
                embed(ids).detach(), baselines=start, n_steps=steps, internal_batch_size=batch_size)
        elif method == "gradient_x_input":
            per_token = InputXGradient(forward_embeds).attribute(embed(ids).detach().requires_grad_())
        else:
            raise ValueError(f"nsa.attribution is {method!r}; choose one of {', '.join(ATTRIBUTIONS)}")
    token_scores = per_token.detach().float().sum(dim=(0, 2)).cpu()
    totals: dict[int, float] = defaultdict(float)
    for word, score in zip(example.prompt.token_words, token_scores.tolist(), strict=True):
        if word >= 0:
            totals[word] += score
    return dict(totals)


def word_attributions(prompt: TokenizedPrompt, occurrences: dict[int, float]) -> dict[str, float]:
    """Per word: its attribution; a word seen twice keeps its larger occurrence."""
    scores: dict[str, float] = {}
    for word_index, score in occurrences.items():
        word = prompt.words[word_index]
        scores[word] = max(score, scores.get(word, float("-inf")))
    return scores


def influential_words(model, examples: list[Example], top_k: int, min_count: int, method: str, baseline: torch.Tensor,
                      batch_size: int, steps: int, floor: float = 0.0, share: float = 0.0) -> dict[str, dict]:
    """{word: {"group", "count", "mean_attribution"}} for words among an example's top_k (by attribution toward its
    gold answer, at least `floor` nats and `share` of the example's total |attribution|) in at least min_count
    examples; group = the label it most often pushed to."""
    from tqdm import tqdm

    kept: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for example in tqdm(examples, desc=f"word attribution ({method})", mininterval=10):
        scores = word_attributions(example.prompt, occurrence_attributions(model, example, method, baseline,
                                                                           batch_size, steps))
        least = max(floor, share * sum(abs(s) for s in scores.values()))
        ranked = sorted(((s, w) for w, s in scores.items() if s > 0 and s >= least),
                        key=lambda sw: (-sw[0], sw[1]))[:top_k]
        for score, word in ranked:
            kept[word].append((example.group, score))
    vocabulary = {}
    for word in sorted(kept):
        if len(kept[word]) >= min_count:
            votes = Counter(group for group, _ in kept[word])
            vocabulary[word] = {"group": min(votes, key=lambda g: (-votes[g], g)), "count": len(kept[word]),
                                "mean_attribution": sum(s for _, s in kept[word]) / len(kept[word])}
    return vocabulary
