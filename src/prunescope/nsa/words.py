"""NSA step 1: influential words, by gradient x input on the dense model.

For each example the gold answer's log-probability is attributed to every prompt token (gradient x input on the
input embeddings, summed over the hidden dimension); sub-word tokens are merged into words by their character
spans, the top-k words per example are kept, and words kept in at least min_count examples form the vocabulary,
each grouped by the label it pushes toward.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import torch

from prunescope.data.records import PLACEHOLDER

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")  # words are letter runs: numbers and punctuation carry no semantics here


@dataclass(frozen=True)
class TokenizedPrompt:
    """A prompt's token ids and, per token, the index of the word it belongs to in `words` (-1: none)."""

    input_ids: list[int]
    token_words: list[int]
    words: list[str]


def render_with_spans(template: str, record: dict) -> tuple[str, list[tuple[int, int]]]:
    """The prompt and the character spans of the record's own text in it (the template's words are not data)."""
    text, spans, position = "", [], 0
    for match in PLACEHOLDER.finditer(template):
        text += template[position:match.start()]
        value = record[match.group(1)]
        spans.append((len(text), len(text) + len(value)))
        text += value
        position = match.end()
    return text + template[position:], spans


def tokenize_words(tokenizer, text: str, fields: list[tuple[int, int]] | None = None) -> TokenizedPrompt:
    """Tokens with their words: a token belongs to the (lower-cased) word its character span overlaps; with
    `fields`, only words inside those character spans count (template words are the same in every prompt)."""
    encoded = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    spans = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)
             if fields is None or any(start <= m.start() and m.end() <= end for start, end in fields)]
    token_words = []
    for start, end in encoded["offset_mapping"]:
        token_words.append(next((i for i, (s, e, _) in enumerate(spans) if start < e and s < end), -1))
    return TokenizedPrompt(list(encoded["input_ids"]), token_words, [word for _, _, word in spans])


def token_attributions(model, prompt_ids: list[int], answer_ids: list[int]) -> torch.Tensor:
    """Gradient x input of log p(answer | prompt) w.r.t. each prompt token's input embedding, summed over hidden."""
    embedding = model.get_input_embeddings()
    ids = torch.tensor([prompt_ids + answer_ids], device=embedding.weight.device)
    inputs = embedding(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=inputs).logits[0].float()
    positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) + len(answer_ids) - 1)
    log_probs = torch.log_softmax(logits[positions], dim=-1)
    target = log_probs[torch.arange(len(answer_ids)), torch.tensor(answer_ids)].sum()
    (gradient,) = torch.autograd.grad(target, inputs)
    return (gradient * inputs).sum(-1)[0, :len(prompt_ids)].detach().float().cpu()


def word_attributions(prompt: TokenizedPrompt, token_scores: torch.Tensor) -> dict[str, float]:
    """Sum of token attributions per word occurrence; a word seen twice keeps its larger occurrence."""
    per_occurrence: dict[int, float] = defaultdict(float)
    for word_index, score in zip(prompt.token_words, token_scores.tolist(), strict=True):
        if word_index >= 0:
            per_occurrence[word_index] += score
    scores: dict[str, float] = {}
    for word_index, score in per_occurrence.items():
        word = prompt.words[word_index]
        scores[word] = max(score, scores.get(word, float("-inf")))
    return scores


def influential_words(model, tokenizer, prompts: list[TokenizedPrompt], answers: list[str], groups: list[str],
                      top_k: int, min_count: int) -> dict[str, dict]:
    """{word: {"group", "count", "mean_attribution"}} for words among an example's top_k (by positive
    attribution toward its gold answer) in at least min_count examples; group = the label it most often pushed to.
    """
    kept: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for prompt, answer, group in zip(prompts, answers, groups, strict=True):
        answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
        scores = word_attributions(prompt, token_attributions(model, prompt.input_ids, answer_ids))
        ranked = sorted(((s, w) for w, s in scores.items() if s > 0), key=lambda sw: (-sw[0], sw[1]))[:top_k]
        for score, word in ranked:
            kept[word].append((group, score))
    vocabulary = {}
    for word in sorted(kept):
        if len(kept[word]) >= min_count:
            votes = Counter(group for group, _ in kept[word])
            vocabulary[word] = {"group": min(votes, key=lambda g: (-votes[g], g)), "count": len(kept[word]),
                                "mean_attribution": sum(s for _, s in kept[word]) / len(kept[word])}
    return vocabulary
