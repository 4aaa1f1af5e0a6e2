"""Perplexity: the computation against the references' loop and by hand, the windows, the held-out split of the
gensim Wikipedia text, the hub sources (with a fake hub loader), the per-variant job and the reports."""

import copy
import math
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch
import yaml

from conftest import make_tiny_model
from prunescope.calibration import text as text_module
from prunescope.calibration.sample import (
    CalibrationError,
    check_heldout_excluded,
    perplexity_windows,
    sample_calibration,
    save_calibration,
)
from prunescope.calibration.text import CalibrationTextError, download_hub_documents, extract_gensim_text
from prunescope.config import ParamsError, validate_params
from prunescope.evaluation import PerplexityOptions, VariantModel
from prunescope.evaluation.perplexity import WINDOWS_RULE, perplexity, perplexity_variant
from prunescope.io import read_jsonl, read_result
from prunescope.pruning import PruneOptions, model_weights, prune_model, save_artifact
from prunescope.pruning.artifact import pruning_record, read_manifest
from prunescope.reporting.perplexity import (
    correlation_table,
    load_perplexity,
    perplexity_headline,
    perplexity_table,
    plot_perplexity_vs_accuracy,
    variant_points,
    write_perplexity_tables,
)
from prunescope.reporting.tables import StaleResultError

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def reference_perplexity(model, windows: torch.Tensor) -> float:
    """A literal port of wanda's eval_ppl_wikitext loop: one window a forward, the HF logits shifted by one,
    CrossEntropyLoss's mean per window times seqlen, exp of the sum over (windows x seqlen)."""
    nsamples, seqlen = windows.shape
    nlls = []
    for i in range(nsamples):
        inputs = windows[i:i + 1]
        lm_logits = model(inputs).logits
        shift_logits = lm_logits[:, :-1, :].contiguous()
        shift_labels = inputs[:, 1:]
        loss_fct = torch.nn.CrossEntropyLoss()
        loss = loss_fct(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1))
        nlls.append(loss.float() * seqlen)
    return torch.exp(torch.stack(nlls).sum() / (nsamples * seqlen)).item()


@pytest.fixture
def windows(tiny_tokenizer):
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, len(tiny_tokenizer), (5, 24), generator=generator)


@torch.no_grad()
def test_perplexity_equals_the_reference_loop(tiny_llama, windows):
    ours = perplexity(tiny_llama, windows, batch_size=2)
    assert ours["perplexity"] == pytest.approx(reference_perplexity(tiny_llama, windows), rel=1e-6)
    assert ours["tokens"] == 5 * 23 and ours["windows"] == 5 and ours["seqlen"] == 24


@torch.no_grad()
def test_perplexity_equals_a_hand_computation_on_two_windows(tiny_llama, windows):
    two = windows[:2]
    logits = tiny_llama(two).logits.double()
    nll = []
    for window in range(2):
        for position in range(two.shape[1] - 1):
            row = logits[window, position]
            log_z = math.log(sum(math.exp(value) for value in row.tolist()))
            nll.append(log_z - row[two[window, position + 1]].item())
    assert perplexity(tiny_llama, two, batch_size=2)["perplexity"] == pytest.approx(math.exp(sum(nll) / len(nll)),
                                                                                     rel=1e-6)


@pytest.mark.parametrize("batch_size", [1, 3, 5, 8])
def test_batch_size_does_not_change_the_perplexity(tiny_llama, windows, batch_size):
    assert perplexity(tiny_llama, windows, batch_size)["perplexity"] == pytest.approx(
        perplexity(tiny_llama, windows, 2)["perplexity"], rel=1e-6)


def test_uniform_logits_give_the_vocabulary_size(tiny_tokenizer, windows):
    """A planted model: a zero output head makes every next token equally likely, so the perplexity is exactly V."""
    model = make_tiny_model("llama", len(tiny_tokenizer))
    torch.nn.init.zeros_(model.lm_head.weight)
    assert perplexity(model, windows, 2)["perplexity"] == pytest.approx(len(tiny_tokenizer), rel=1e-6)  # fp32 round-off


def test_a_certain_next_token_gives_perplexity_one(tiny_tokenizer):
    """A planted model whose output head ignores the hidden state (zero weights) and adds +40 to token 7's logit:
    windows of token 7 alone are predicted with certainty, NLL (V - 1) e^-40 per token."""
    model = make_tiny_model("llama", len(tiny_tokenizer))
    head = torch.nn.Linear(model.config.hidden_size, len(tiny_tokenizer), bias=True)
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()
        head.bias[7] = 40.0
    model.lm_head = head
    score = perplexity(model, torch.full((3, 16), 7), batch_size=2)
    assert score["perplexity"] == pytest.approx(1.0, abs=1e-12)
    assert score["mean_nll"] == pytest.approx((len(tiny_tokenizer) - 1) * math.exp(-40.0), rel=1e-6)


def test_windows_are_consecutive_non_overlapping_and_exactly_seqlen(tiny_tokenizer):
    documents = ["The movie was wonderful and the acting was great.", "", "She went home early."] * 6
    ids = tiny_tokenizer("\n\n".join(documents), return_tensors="pt")["input_ids"][0]
    every = perplexity_windows(documents, "\n\n", tiny_tokenizer, seqlen=16, windows=None)
    assert every.shape == (ids.numel() // 16, 16)
    assert torch.equal(every.flatten(), ids[: every.numel()])  # back to back: no overlap, no gap
    first = perplexity_windows(documents, "\n\n", tiny_tokenizer, seqlen=16, windows=2)
    assert torch.equal(first, every[:2])
    spread = perplexity_windows(documents, "\n\n", tiny_tokenizer, seqlen=16, windows=3, pick="spread")
    last = len(every) - 1
    assert torch.equal(spread, every[[0, last // 2, last]])  # evenly spaced, the first and the last window kept
    assert torch.equal(perplexity_windows(documents, "\n\n", tiny_tokenizer, 16, len(every), "spread"), every)
    with pytest.raises(CalibrationError, match=r"fewer than the 1000 asked for \(perplexity.windows"):
        perplexity_windows(documents, "\n\n", tiny_tokenizer, seqlen=16, windows=1000)


@pytest.fixture(scope="module")
def wiki_parts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wiki")
    counts = {part: extract_gensim_text("wiki", folder / f"{part}.jsonl", part=part)
              for part in ("calibration", "heldout")}
    return counts, {part: [row["text"] for row in read_jsonl(folder / f"{part}.jsonl")] for part in counts}


def test_no_heldout_article_is_in_the_wikipedia_calibration_pool(wiki_parts):
    counts, parts = wiki_parts
    assert counts == {"calibration": 96, "heldout": 10}  # every 10th of the dump's 106 articles
    assert not any(held in document for held in parts["heldout"] for document in parts["calibration"])
    check_heldout_excluded(parts["calibration"], parts["heldout"], "gensim_wiki")  # no error


def test_a_planted_heldout_article_in_a_calibration_pool_is_one_clear_error(wiki_parts, tiny_tokenizer):
    _, parts = wiki_parts
    leaked = parts["calibration"][:3] + ["Preface.\n" + parts["heldout"][4] + "\nAppendix."]
    with pytest.raises(CalibrationError, match=r"gensim_wiki: document 4 \(1-based\) contains held-out perplexity "
                                                r"document 5"):
        sample_calibration(leaked, tiny_tokenizer, 2, 16, 0, source="gensim_wiki", heldout=parts["heldout"])


def test_only_wikipedia_has_a_heldout_part(tmp_path):
    with pytest.raises(CalibrationTextError, match="no part 'heldout'"):
        extract_gensim_text("lee", tmp_path / "lee.jsonl", part="heldout")


class FakeHub:
    """Stands in for data.hub.load_hub_split: records each call and serves the rows given."""

    def __init__(self, rows: list[str]):
        self.rows, self.calls = rows, []

    def __call__(self, hub_id, config, split, data_files=None):
        self.calls.append((hub_id, config, split, data_files))
        return datasets.Dataset.from_dict({"text": self.rows})


def hub_text(monkeypatch, tmp_path, source: str, rows: list[str]) -> tuple[list[str], list]:
    """perplexity_text's hub path for params.yaml's `source`, on a fake hub: the documents written, the calls."""
    fake = FakeHub(rows)
    monkeypatch.setattr(text_module, "load_hub_split", fake)
    spec = PARAMS["perplexity"]["sources"][source]
    download_hub_documents(spec["hub_id"], spec["config"], spec["data_files"], spec["split"], spec["text_field"],
                           spec["documents"], tmp_path / f"{source}.jsonl")
    return [row["text"] for row in read_jsonl(tmp_path / f"{source}.jsonl")], fake.calls


def test_wikitext2_test_split_is_joined_verbatim_as_the_reference(monkeypatch, tmp_path, tiny_tokenizer):
    rows = ["", " = Heading = \n", "", " The film was terrible . \n", " Is the sky blue ? Yes . \n"] * 20
    documents, calls = hub_text(monkeypatch, tmp_path, "wikitext2", rows)
    assert calls == [("Salesforce/wikitext", "wikitext-2-raw-v1", "test", None)]
    assert documents == rows  # blank rows kept: "\n\n".join of every row, as eval_ppl_wikitext
    separator = PARAMS["perplexity"]["sources"]["wikitext2"]["separator"]
    ids = tiny_tokenizer("\n\n".join(rows), return_tensors="pt")["input_ids"][0]
    windows = perplexity_windows(documents, separator, tiny_tokenizer, 32, None,
                                 PARAMS["perplexity"]["sources"]["wikitext2"]["pick"])
    assert torch.equal(windows, ids[: ids.numel() // 32 * 32].reshape(-1, 32))


def test_c4_takes_the_first_1100_validation_documents_joined_by_a_space(monkeypatch, tmp_path, tiny_tokenizer):
    rows = [f"Document {i}: the movie was great." for i in range(1200)]
    documents, calls = hub_text(monkeypatch, tmp_path, "c4", rows)
    assert calls == [("allenai/c4", None, "validation", "en/c4-validation.00000-of-00008.json.gz")]
    assert documents == rows[:1100]
    windows = perplexity_windows(documents, " ", tiny_tokenizer, 64, 4, PARAMS["perplexity"]["sources"]["c4"]["pick"])
    ids = tiny_tokenizer(" ".join(rows[:1100]), return_tensors="pt")["input_ids"][0]
    assert torch.equal(windows.flatten(), ids[: 4 * 64])  # the first windows x seqlen tokens
    with pytest.raises(CalibrationTextError, match="fewer than the 1100 asked for"):
        hub_text(monkeypatch, tmp_path, "c4", rows[:50])


def test_params_check_perplexity_sources_and_settings():
    params = copy.deepcopy(PARAMS)
    validate_params(params)
    params["grids"]["mini"]["perplexity_sources"] = ["gensim_wiki_heldout", "wikitext3"]
    with pytest.raises(ParamsError, match=r"grids.mini.perplexity_sources\[1\] = 'wikitext3' is not allowed: one of "
                                          "gensim_wiki_heldout, wikitext2, c4"):
        validate_params(params)
    params = copy.deepcopy(PARAMS)
    params["perplexity"]["windows"] = 0
    with pytest.raises(ParamsError, match=r"perplexity.windows = 0 is not allowed: null \(every whole window of the "
                                          r"text\) or an integer >= 1"):
        validate_params(params)
    params = copy.deepcopy(PARAMS)
    params["perplexity"]["sources"]["gensim_wiki_heldout"]["corpus"] = "lee"
    with pytest.raises(ParamsError, match="perplexity.sources.gensim_wiki_heldout.corpus = 'lee' is not allowed"):
        validate_params(params)


def test_perplexity_job_writes_one_result_per_source_with_labels_and_params(tiny_llama, tiny_tokenizer, windows,
                                                                           tmp_path):
    tiny_llama.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    paths = [tmp_path / "windows" / f"{name}.safetensors" for name in ("a", "b")]
    save_calibration(windows, paths[0], {"source": "a"})
    save_calibration(windows[:2], paths[1], {"source": "b"})
    outs = [tmp_path / "out" / f"{name}.json" for name in ("a", "b")]
    params = {"perplexity": {"seqlen": 24, "windows": 5, "batch_size": 2}}
    perplexity_variant(VariantModel(str(tmp_path / "model"), "float32"),
                       PerplexityOptions.from_params(params["perplexity"]), sources=["a", "b"],
                       window_paths=[str(p) for p in paths], out_paths=[str(o) for o in outs],
                       device=torch.device("cpu"),
                       labels={"method": "dense", "pattern": "none", "calib": "none", "model": "tiny"})
    first = read_result(outs[0], "perplexity")
    assert first["source"] == "a" and first["method"] == "dense" and first["params"] == params
    assert "pruning" not in first and first["environment"]["device"] == "cpu"
    assert first["metrics"]["perplexity"] == pytest.approx(reference_perplexity(tiny_llama, windows), rel=1e-5)
    assert read_result(outs[1], "perplexity")["metrics"]["windows"] == 2
    assert WINDOWS_RULE == "perplexity_windows"
    table = load_perplexity([str(o) for o in outs], params, PARAMS["pruning"])
    assert list(table["source"]) == ["a", "b"]
    with pytest.raises(StaleResultError, match="a.json was made with params"):
        load_perplexity([str(outs[0])], {"perplexity": {**params["perplexity"], "windows": 16}}, PARAMS["pruning"])


def test_a_pruned_variant_is_scored_with_its_artifact_and_records_its_pruning(tiny_llama, tiny_tokenizer,
                                                                            windows, tmp_path):
    tiny_llama.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    model = copy.deepcopy(tiny_llama)
    result = prune_model(model, "llama", PruneOptions("magnitude", 0.5), None, torch.device("cpu"))
    save_artifact(result, model_weights(model), tmp_path / "artifact", {"base_model": "tiny"})
    save_calibration(windows, tmp_path / "w.safetensors", {"source": "a"})
    params = {"perplexity": {"seqlen": 24, "windows": 5, "batch_size": 4}}
    perplexity_variant(VariantModel(str(tmp_path / "model"), "float32", str(tmp_path / "artifact")),
                       PerplexityOptions.from_params(params["perplexity"]), sources=["a"],
                       window_paths=[str(tmp_path / "w.safetensors")], out_paths=[str(tmp_path / "a.json")],
                       device=torch.device("cpu"),
                       labels={"model": "tiny", "method": "magnitude", "pattern": "unstructured-0.5", "calib": "none"})
    written = read_result(tmp_path / "a.json", "perplexity")
    assert written["pruning"] == pruning_record(read_manifest(tmp_path / "artifact"))
    assert written["metrics"]["perplexity"] == pytest.approx(perplexity(model, windows, 2)["perplexity"], rel=1e-6)
    assert written["metrics"]["perplexity"] != pytest.approx(perplexity(tiny_llama, windows, 2)["perplexity"])


def synthetic(relation: dict[str, list[float]], ratios: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A perplexity table and evaluation results of len(ratios) wanda variants on one dataset per category, each
    category's accuracy change per variant given by `relation`."""
    variants = [("wanda", f"unstructured-0.{i + 1}", "gensim_wiki-raw-n32-l256-s0") for i in range(len(ratios))]
    ppl = [{"model": "m", "method": "dense", "pattern": "none", "calib": "none", "protect": None, "source": "wiki",
            "perplexity": 10.0, "windows": 4, "seqlen": 8, "tokens": 28}]
    ppl += [{"model": "m", "method": method, "pattern": pattern, "calib": calib, "protect": None, "source": "wiki",
             "perplexity": 10.0 * ratio, "windows": 4, "seqlen": 8, "tokens": 28}
            for (method, pattern, calib), ratio in zip(variants, ratios, strict=True)]
    results = []
    for category, changes in relation.items():
        base = {"model": "m", "category": category, "dataset": f"{category}_set", "protect": None}
        results.append({**base, "method": "dense", "pattern": "none", "calib": "none", "acc": 0.8})
        results += [{**base, "method": method, "pattern": pattern, "calib": calib, "acc": 0.8 + change}
                    for (method, pattern, calib), change in zip(variants, changes, strict=True)]
    return perplexity_table(pd.DataFrame(ppl)), pd.DataFrame(results)


def test_correlation_recovers_a_planted_monotone_relation(tmp_path):
    ratios = [1.1, 1.5, 2.0, 4.0, 30.0]
    table, results = synthetic({"sentiment": [-0.01, -0.02, -0.05, -0.2, -0.21],  # monotone, not linear
                                "qa": [0.01, 0.02, 0.03, 0.04, 0.5]}, ratios)
    assert list(table["ratio"]) == pytest.approx([1.0, *ratios])
    points = variant_points(table, results)
    correlation = correlation_table(points).set_index("category")
    assert correlation.loc["sentiment", "spearman"] == pytest.approx(-1.0)
    assert correlation.loc["qa", "spearman"] == pytest.approx(1.0)
    assert -1 < correlation.loc["sentiment", "pearson"] < 0 and correlation.loc["qa", "n"] == 5
    headline = perplexity_headline(table, correlation_table(points))
    assert headline["perplexity"]["m"]["wiki"]["dense"] == 10.0
    assert headline["perplexity_vs_accuracy"]["wiki/qa"]["spearman"] == 1.0
    outputs = [tmp_path / name for name in ("p.csv", "p.md", "c.csv", "c.md", "f.png", "f.svg")]
    write_perplexity_tables(table, correlation_table(points), *map(str, outputs[:4]))
    plot_perplexity_vs_accuracy(points, correlation_table(points), str(outputs[4]), str(outputs[5]))
    assert outputs[4].read_bytes()[:4] == b"\x89PNG" and "x30.00" in outputs[1].read_text()


def test_correlation_needs_three_variants(tmp_path):
    table, results = synthetic({"nli": [-0.1, -0.2]}, [1.5, 2.0])
    row = correlation_table(variant_points(table, results)).iloc[0]
    assert row["n"] == 2 and pd.isna(row["spearman"]) and pd.isna(row["pearson"])
