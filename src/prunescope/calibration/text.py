"""Calibration text sources as JSONL documents {"text": ...}, one document per line.

Offline, the text comes from the corpora in gensim's wheel (a shortened English Wikipedia dump, the Lee news
corpus); with hub access, from a hub text dataset such as C4 or WikiText-2.
"""

from __future__ import annotations

import bz2
import logging
import os
import re

from prunescope.data.hub import load_hub_split
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


class CalibrationTextError(ValueError):
    """A calibration text source that yields no usable documents."""


def extract_gensim_text(corpus: str, out_path: str | os.PathLike) -> int:
    """Write the documents of one gensim test corpus ("wiki" or "lee"); returns the number of documents."""
    from gensim.test.utils import datapath

    if corpus not in GENSIM_FILES:
        raise CalibrationTextError(f"unknown gensim corpus {corpus!r}: use one of {', '.join(GENSIM_FILES)}")
    path = datapath(GENSIM_FILES[corpus])
    documents = _wiki_articles(path) if corpus == "wiki" else _lines(path)
    return _write_documents(documents, f"gensim {corpus}", out_path)


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
                      out_path: str | os.PathLike) -> int:
    """Write the non-empty `text_field` values of a hub split as documents; fails fast without the hub."""
    rows = load_hub_split(hub_id, config, split, data_files)
    if text_field not in rows.column_names:
        raise CalibrationTextError(f"{hub_id} has no column {text_field!r} (columns: {', '.join(rows.column_names)})")
    documents = [text for text in rows[text_field] if text and text.strip()]
    return _write_documents(documents, hub_id, out_path)


def _write_documents(documents: list[str], source: str, out_path: str | os.PathLike) -> int:
    if not documents:
        raise CalibrationTextError(f"calibration source {source} yielded no documents")
    write_jsonl(out_path, [{"text": text} for text in documents])
    words = sum(len(text.split()) for text in documents)
    logger.info("calibration source %s: %d documents, %d words -> %s", source, len(documents), words, out_path)
    return len(documents)
