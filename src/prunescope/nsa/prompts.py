"""NSA's examples: a prompt's tokens with the record words they belong to, its choices, gold label and group.

Kept apart from the scoring (nsa.answers) and the attribution (nsa.words), which both read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prunescope.data.records import PLACEHOLDER

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")  # letter and digit runs ("10", "5-star"); punctuation is not a word


@dataclass(frozen=True)
class TokenizedPrompt:
    """A prompt's token ids and, per token, the index of the word it belongs to in `words` (-1: none)."""

    input_ids: list[int]
    token_words: list[int]
    words: list[str]


@dataclass(frozen=True)
class Example:
    """One NSA example: the tokenized prompt, each choice's token ids (as scored after the prompt), the gold
    choice and the group its words are pooled into."""

    prompt: TokenizedPrompt
    choices: list[list[int]]
    label: int
    group: str


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
