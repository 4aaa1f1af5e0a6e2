"""Calibration sources as JSONL: documents {"text"} for text sources, or question-answer pairs
{"question", "answer", "rationale"?} for the task formats (zero, single, icl, cot).

Offline, the text comes from the corpora in gensim's wheel (a shortened English Wikipedia dump, the Lee news
corpus) and the pairs from the stand-in datasets' held-out pools; with hub access, from hub text datasets (C4,
WikiText-2, the Pile, RedPajama), GSM8K, and the train splits of the registry's datasets.

Perplexity text comes from here too: every WIKI_HELDOUT_EVERY-th article of the Wikipedia dump is held out (the
calibration text never contains it), and the hub's evaluation splits are kept verbatim, as the references read them.
"""

from __future__ import annotations

import bz2
import logging
import os
import re

from prunescope.data.hub import load_hub_split
from prunescope.data.prepare import read_dataset
from prunescope.data.records import render_template
from prunescope.io import write_jsonl

logger = logging.getLogger(__name__)

GENSIM_FILES = {
    "wiki": "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
    "lee": "lee_background.cor",
}
ARTICLE_NAMESPACE = "0"
_EMPHASIS = re.compile(r"'{2,}")  # ''italic'' and '''bold''' markup that filter_wiki leaves in
_HEADING = re.compile(r"^=+\s*(.*?)\s*=+$")
_SPACES = re.compile(r"\s+")
JOIN_SEPARATOR = "\n\n"  # line-split corpora (WikiText) become one document, as in the SparseGPT reference
# Held out of every calibration pool for perplexity: the articles at positions 9, 19, 29, ... (0-based) of the dump's
# articles in dump order (redirects and empty pages skipped): 10 of the 106, 44k words, about 58k SmolLM2 tokens.
WIKI_HELDOUT_EVERY = 10
PARTS = ("calibration", "heldout")


class CalibrationTextError(ValueError):
    """A calibration text source that yields no usable documents."""


def extract_gensim_text(corpus: str, out_path: str | os.PathLike, part: str = "calibration") -> int:
    """Write the documents of one gensim test corpus ("wiki" or "lee"); returns the number of documents.

    part "calibration" is what calibration may sample (for wiki: every article but the held-out ones); part "heldout"
    is wiki's held-out articles alone, the offline perplexity text (split_wiki_heldout)."""
    from gensim.test.utils import datapath

    if corpus not in GENSIM_FILES:
        raise CalibrationTextError(f"unknown gensim corpus {corpus!r}: use one of {', '.join(GENSIM_FILES)}")
    if part not in PARTS or (part == "heldout" and corpus != "wiki"):
        raise CalibrationTextError(f"gensim corpus {corpus!r} has no part {part!r}: calibration, or heldout of wiki")
    path = datapath(GENSIM_FILES[corpus])
    if corpus == "lee":
        return _write_documents(_lines(path), "gensim lee", out_path)
    calibration, heldout = split_wiki_heldout(_wiki_articles(path))
    return _write_documents(calibration if part == "calibration" else heldout, f"gensim wiki ({part})", out_path)


def split_wiki_heldout(articles: list[str]) -> tuple[list[str], list[str]]:
    """(calibration, held-out) articles: every WIKI_HELDOUT_EVERY-th article in dump order is held out, so that
    perplexity is measured on text no calibration sample was drawn from."""
    heldout = [i % WIKI_HELDOUT_EVERY == WIKI_HELDOUT_EVERY - 1 for i in range(len(articles))]
    return ([a for a, held in zip(articles, heldout, strict=True) if not held],
            [a for a, held in zip(articles, heldout, strict=True) if held])


def _wiki_articles(path: str) -> list[str]:
    """Plain text of each article (namespace 0, redirects and empty pages skipped), case and punctuation kept."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    articles = []
    with bz2.open(path, "rb") as f:
        for _title, markup, _page_id in extract_pages(f, filter_namespaces=(ARTICLE_NAMESPACE,)):
            if markup.lstrip()[:9].upper() == "#REDIRECT":
                continue
            text = _plain_paragraphs(filter_wiki(markup))
            if text:
                articles.append(text)
    return articles


def _plain_paragraphs(text: str) -> str:
    """One line per paragraph, whitespace collapsed; headings kept as their text, bare list bullets dropped."""
    paragraphs = []
    for line in _EMPHASIS.sub("", text).splitlines():
        line = _SPACES.sub(" ", _HEADING.sub(r"\1", line.strip())).strip()
        if line.strip("* "):
            paragraphs.append(line)
    return "\n".join(paragraphs)


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [_SPACES.sub(" ", line).strip() for line in f if line.strip()]


def download_hub_text(hub_id: str, config: str | None, data_files: str | None, split: str, text_field: str,
                      join: bool, out_path: str | os.PathLike) -> int:
    """Write the non-empty `text_field` values of a hub split as documents; fails fast without the hub."""
    rows = load_hub_split(hub_id, config, split, data_files)
    _check_columns(rows, hub_id, [text_field])
    documents = [text for text in rows[text_field] if text and text.strip()]
    if join and documents:
        documents = [JOIN_SEPARATOR.join(text.strip() for text in documents)]
    return _write_documents(documents, hub_id, out_path)


def download_hub_documents(hub_id: str, config: str | None, data_files: str | None, split: str, text_field: str,
                           limit: int | None, out_path: str | os.PathLike) -> int:
    """The `text_field` of the first `limit` rows (None: all) of a hub split, verbatim, empty rows kept: perplexity
    text is joined and tokenised exactly as the references do it (WikiText-2's blank lines change its tokens)."""
    rows = load_hub_split(hub_id, config, split, data_files)
    _check_columns(rows, hub_id, [text_field])
    if limit is not None and len(rows) < limit:
        raise CalibrationTextError(f"{hub_id} split {split} has {len(rows)} rows, fewer than the {limit} asked for")
    texts = list((rows if limit is None else rows.select(range(limit)))[text_field])
    return _write_documents(texts, hub_id, out_path)


def download_hub_pairs(hub_id: str, config: str | None, split: str, question_field: str, answer_field: str,
                       rationale_separator: str | None, template: str, out_path: str | os.PathLike) -> int:
    """Question-answer pairs of a hub split (GSM8K: the answer holds the rationale, then '####', then the result)."""
    rows = load_hub_split(hub_id, config, split)
    _check_columns(rows, hub_id, [question_field, answer_field])
    pairs = []
    for index, (question, answer) in enumerate(zip(rows[question_field], rows[answer_field], strict=True)):
        pair = {"question": render_template(template, {"input": question.strip()}), "answer": answer.strip()}
        if rationale_separator is not None:
            rationale, separator, result = answer.rpartition(rationale_separator)
            if not separator:
                raise CalibrationTextError(f"{hub_id} row {index}: its {answer_field!r} has no rationale separator "
                                           f"{rationale_separator!r}: check rationale_separator in params.yaml")
            pair.update(answer=result.strip(), rationale=rationale.strip())
        pairs.append(pair)
    return _write_pairs(pairs, hub_id, out_path)


def task_pairs(records_path: str | os.PathLike, template: str, dataset: str, out_path: str | os.PathLike) -> int:
    """A dataset's calibration pool as pairs: its evaluation prompt, the correct choice, and its rationale if any."""
    pairs = []
    for record in read_dataset(records_path):
        pair = {"question": render_template(template, record), "answer": record["choices"][record["label"]]}
        if record.get("rationale"):
            pair["rationale"] = record["rationale"]
        pairs.append(pair)
    return _write_pairs(pairs, f"dataset {dataset} (train pool)", out_path)


def _check_columns(rows, hub_id: str, columns: list[str]) -> None:
    missing = [column for column in columns if column not in rows.column_names]
    if missing:
        raise CalibrationTextError(f"{hub_id} has no column(s) {missing} (columns: {', '.join(rows.column_names)}): "
                                   "fix the field names of this calibration source in params.yaml")


def _write_pairs(pairs: list[dict], source: str, out_path: str | os.PathLike) -> int:
    if not pairs:
        raise CalibrationTextError(f"calibration source {source} yielded no question-answer pairs")
    write_jsonl(out_path, pairs)
    logger.info("calibration source %s: %d question-answer pairs (%d with a rationale) -> %s", source, len(pairs),
                sum("rationale" in pair for pair in pairs), out_path)
    return len(pairs)


def _write_documents(documents: list[str], source: str, out_path: str | os.PathLike) -> int:
    if not documents:
        raise CalibrationTextError(f"calibration source {source} yielded no documents")
    write_jsonl(out_path, [{"text": text} for text in documents])
    words = sum(len(text.split()) for text in documents)
    logger.info("calibration source %s: %d documents, %d words -> %s", source, len(documents), words, out_path)
    return len(documents)
