"""Calibration side: text sources, the seeded window sampling rule, and the checksummed saved sample."""

from __future__ import annotations

import pytest
import torch

from prunescope.calibration.sample import (
    CalibrationError,
    load_calibration,
    manifest_path,
    pack_calibration,
    sample_calibration,
    save_calibration,
)
from prunescope.calibration.text import download_hub_pairs, download_hub_text, extract_gensim_text, task_pairs
from prunescope.data.hub import HubAccessError
from prunescope.data.prepare import write_manifest
from prunescope.io import ChecksumError, read_json, read_jsonl, read_result, sha256_file, write_json, write_jsonl

WORDS = "the quick brown fox jumps over a lazy dog while movie reviews praise wonderful acting".split()


def synthetic_documents() -> list[str]:
    """Documents of very different lengths: only some are long enough for a 32-token window."""
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(length))
            for i, length in enumerate([3, 80, 5, 200, 12, 60, 1, 150])]


def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


def is_window_of(window: list[int], ids: list[int]) -> bool:
    return any(ids[start:start + len(window)] == window for start in range(len(ids) - len(window)))


def test_sampling_is_deterministic_per_seed(tiny_tokenizer):
    docs = synthetic_documents()
    first = sample_calibration(docs, tiny_tokenizer, 8, 32, seed=0)
    assert first.shape == (8, 32) and first.dtype == torch.long
    assert torch.equal(first, sample_calibration(docs, tiny_tokenizer, 8, 32, seed=0))
    assert not torch.equal(first, sample_calibration(docs, tiny_tokenizer, 8, 32, seed=1))


def test_samples_are_windows_of_documents_longer_than_seqlen(tiny_tokenizer):
    docs = synthetic_documents()
    seqlen = 32
    long_docs = [ids for ids in (token_ids(tiny_tokenizer, d) for d in docs) if len(ids) > seqlen]
    assert 0 < len(long_docs) < len(docs)
    samples = sample_calibration(docs, tiny_tokenizer, 16, seqlen, seed=3)
    for window in samples.tolist():
        assert any(is_window_of(window, ids) for ids in long_docs)


def test_a_corpus_without_long_documents_is_a_clear_error(tiny_tokenizer):
    docs = ["short text", "another short one"]
    with pytest.raises(CalibrationError) as err:
        sample_calibration(docs, tiny_tokenizer, 4, 64, seed=0, source="tiny_corpus")
    message = str(err.value)
    assert "tiny_corpus" in message and "4 samples of 64 tokens" in message
    assert "0 of its 2 documents are longer than 64 tokens" in message


def test_an_empty_corpus_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(CalibrationError, match="tiny_corpus has no documents"):
        sample_calibration([], tiny_tokenizer, 4, 64, seed=0, source="tiny_corpus")


def test_save_is_byte_identical_and_load_round_trips(tmp_path, tiny_tokenizer):
    ids = sample_calibration(synthetic_documents(), tiny_tokenizer, 4, 16, seed=0)
    manifest = {"source": "synthetic", "format": "raw", "seed": 0, "tokenizer": "tiny"}
    path = tmp_path / "calib.safetensors"
    save_calibration(ids, path, manifest)
    written = path.read_bytes(), manifest_path(path).read_bytes()
    save_calibration(ids, path, manifest)
    assert (path.read_bytes(), manifest_path(path).read_bytes()) == written
    assert read_result(manifest_path(path), "sample_calibration") == {**manifest, "n": 4, "seqlen": 16,
                                                                       "sha256": sha256_file(path)}
    assert torch.equal(load_calibration(path), ids)


def test_load_rejects_a_swapped_or_truncated_file(tmp_path):
    path = tmp_path / "calib.safetensors"
    save_calibration(torch.arange(12).reshape(3, 4), path, {"source": "synthetic"})
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ChecksumError) as err:
        load_calibration(path)
    assert str(path) in str(err.value) and "sample_calibration rule rebuilds it" in str(err.value)


def test_load_rejects_an_edited_manifest(tmp_path):
    path = tmp_path / "calib.safetensors"
    save_calibration(torch.arange(12).reshape(3, 4), path, {"source": "synthetic", "seed": 0})
    write_json(manifest_path(path), {**read_json(manifest_path(path)), "seed": 1})
    with pytest.raises(ChecksumError, match=r"calib\.json does not match its own checksum.*sample_calibration"):
        load_calibration(path)


def test_load_without_manifest_is_a_clear_error(tmp_path):
    path = tmp_path / "calib.safetensors"
    save_calibration(torch.zeros(2, 4, dtype=torch.long), path, {})
    manifest_path(path).unlink()
    with pytest.raises(CalibrationError, match="no readable manifest"):
        load_calibration(path)


def test_save_rejects_non_token_tensors(tmp_path):
    with pytest.raises(CalibrationError, match="2-D integer tensor"):
        save_calibration(torch.zeros(2, 4), tmp_path / "x.safetensors", {})


def test_gensim_lee_corpus_one_document_per_line(tmp_path):
    out = tmp_path / "lee.jsonl"
    assert extract_gensim_text("lee", out) == 300
    docs = read_jsonl(out)
    assert all(set(d) == {"text"} and d["text"] and "\n" not in d["text"] for d in docs)
    assert docs[0]["text"].startswith("Hundreds of people have been forced to vacate their homes")


def test_gensim_wiki_corpus_is_plain_article_text(tmp_path):
    out = tmp_path / "wiki.jsonl"
    assert extract_gensim_text("wiki", out) == 96  # 106 articles less every 10th, held out for perplexity
    texts = [d["text"] for d in read_jsonl(out)]
    assert sum(len(t.split()) for t in texts) > 400_000  # the 96 calibration articles: 434k words (docs/methods.md)
    assert texts[0].startswith("Anarchism is a political philosophy")
    assert not any("#REDIRECT" in t or "'''" in t or "  " in t for t in texts)


def test_unknown_gensim_corpus(tmp_path):
    with pytest.raises(ValueError, match="unknown gensim corpus 'brown'"):
        extract_gensim_text("brown", tmp_path / "x.jsonl")


def test_hub_text_fails_fast_offline(tmp_path):
    with pytest.raises(HubAccessError, match="allenai/c4"):
        download_hub_text("allenai/c4", None, "en/c4-train.00000-of-01024.json.gz", "train", "text", False,
                          tmp_path / "c4.jsonl")


def test_hub_text_code_path_on_local_files_joins_line_split_corpora(tmp_path):
    """The hub reader is datasets.load_dataset: pointed at a local json file it runs offline, same code."""
    rows = tmp_path / "wiki.jsonl"
    write_jsonl(rows, [{"text": " = Title = \n"}, {"text": ""}, {"text": " A line of text .\n"}])
    assert download_hub_text("json", None, str(rows), "train", "text", False, tmp_path / "lines.jsonl") == 2
    assert download_hub_text("json", None, str(rows), "train", "text", True, tmp_path / "joined.jsonl") == 1
    assert read_jsonl(tmp_path / "joined.jsonl") == [{"text": "= Title =\n\nA line of text ."}]
    with pytest.raises(ValueError, match=r"no column\(s\) \['body'\]"):
        download_hub_text("json", None, str(rows), "train", "body", False, tmp_path / "x.jsonl")
    # a lone data file is read as the split asked for, not as datasets' default "train" (C4's validation shard)
    assert download_hub_text("json", None, str(rows), "validation", "text", False, tmp_path / "valid.jsonl") == 2


# --- question-answer sources and the task formats --------------------------------------------------------------

GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 2. How many?", "answer": "3 + 2 = 5 apples.\n#### 5"},
    {"question": "A box holds 4 pens. How many in 2 boxes?", "answer": "2 * 4 = 8.\n#### 8"},
]


def test_hub_pairs_split_rationale_and_answer(tmp_path, monkeypatch):
    rows = tmp_path / "gsm8k.jsonl"
    write_jsonl(rows, GSM8K_ROWS)
    import datasets

    monkeypatch.setattr("prunescope.calibration.text.load_hub_split",
                        lambda hub_id, config, split, data_files=None: datasets.load_dataset(
                            "json", data_files=str(rows), split="train"))
    out = tmp_path / "pairs.jsonl"
    assert download_hub_pairs("openai/gsm8k", "main", "train", "question", "answer", "####",
                              "Question: {input}\nAnswer:", out) == 2
    assert read_jsonl(out)[0] == {"question": "Question: Tom has 3 apples and buys 2. How many?\nAnswer:",
                                  "answer": "5", "rationale": "3 + 2 = 5 apples."}
    with pytest.raises(ValueError, match="has no rationale separator '@@'"):
        download_hub_pairs("openai/gsm8k", "main", "train", "question", "answer", "@@", "{input}", out)


def test_task_pairs_render_the_evaluation_prompt(tmp_path):
    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, [{"id": "0", "input": "Is ice cold?", "choices": ["Yes", "No"], "label": 0,
                        "rationale": "Ice is frozen water."},
                       {"id": "1", "input": "Is fire cold?", "choices": ["Yes", "No"], "label": 1}])
    write_manifest(pool, {"part": "train"})
    assert task_pairs(pool, "Question: {input}\nAnswer:", "demo", tmp_path / "pairs.jsonl") == 2
    assert read_jsonl(tmp_path / "pairs.jsonl") == [
        {"question": "Question: Is ice cold?\nAnswer:", "answer": "Yes", "rationale": "Ice is frozen water."},
        {"question": "Question: Is fire cold?\nAnswer:", "answer": "No"},
    ]


def qa_pairs(count: int) -> list[dict]:
    return [{"question": f"Question: is number {i} {WORDS[i % len(WORDS)]}?\nAnswer:",
             "answer": "yes" if i % 2 else "no", "rationale": f"the {WORDS[(i + 3) % len(WORDS)]} is lazy"}
            for i in range(count)]


def tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("fmt", ["zero", "single", "icl", "cot"])
def test_packing_starts_each_sample_on_a_pair_and_uses_each_pair_once(tiny_tokenizer, fmt):
    pairs = qa_pairs(40)
    texts = {"zero": "{question}", "single": "{question} {answer}", "icl": "{question} {answer}",
             "cot": "{question} {rationale} So the answer is {answer}."}
    units = [tokens(tiny_tokenizer, texts[fmt].format(**pair)) for pair in pairs]
    separator = [tiny_tokenizer.eos_token_id] if fmt in ("zero", "single") else tokens(tiny_tokenizer, "\n\n")
    seqlen = 3 * max(map(len, units))  # two to three pairs per sample
    ids = pack_calibration(pairs, fmt, tiny_tokenizer, 3, seqlen, seed=0)
    assert ids.shape == (3, seqlen)
    assert torch.equal(ids, pack_calibration(pairs, fmt, tiny_tokenizer, 3, seqlen, seed=0))
    assert not torch.equal(ids, pack_calibration(pairs, fmt, tiny_tokenizer, 3, seqlen, seed=1))
    used = []
    for row in ids.tolist():  # rebuild each sample from whole units and separators; only its last unit is cut
        position = 0
        while position < len(row):
            if position > 0:
                assert row[position:position + len(separator)] == separator[:len(row) - position]
                position += len(separator)
            rest = row[position:]
            whole = [i for i, unit in enumerate(units) if rest[:len(unit)] == unit and len(unit) <= len(rest)]
            if not whole:  # the cut unit at the end of the sample
                assert any(unit[:len(rest)] == rest for unit in units)
                break
            used.append(whole[0])
            position += len(units[whole[0]])
    assert len(used) == len(set(used)) >= 6


def test_packing_too_little_text_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(CalibrationError) as err:
        pack_calibration(qa_pairs(4), "icl", tiny_tokenizer, 8, 64, seed=0, source="tiny_pool")
    message = str(err.value)
    assert "tiny_pool cannot supply 8 samples of 64 tokens in format icl" in message and "its 4 pairs hold" in message


def test_cot_needs_a_rationale_in_every_pair(tiny_tokenizer):
    pairs = qa_pairs(6)
    del pairs[2]["rationale"]
    with pytest.raises(CalibrationError, match=r"no rationale in 1 of 6 pairs \(rows \[3\]"):
        pack_calibration(pairs, "cot", tiny_tokenizer, 1, 16, seed=0, source="demo")
