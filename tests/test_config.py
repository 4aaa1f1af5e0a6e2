"""params.yaml validation: every bad value stops with one line naming the key, the value and what is allowed."""

import copy
from pathlib import Path

import pytest
import yaml

from prunescope.config import (
    ParamsError,
    calibration_key,
    grid_variants,
    guided_variants,
    owl_variants,
    parse_calibration_key,
    parse_pattern_key,
    pattern_key,
    studied_variants,
    validate_params,
)

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def test_shipped_params_are_valid():
    validate_params(PARAMS)


def _mutated(path, value):
    params = copy.deepcopy(PARAMS)
    node = params
    for part in path[:-1]:
        node = node[part]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return params


BAD = [
    (("grids", "mini", "patterns", 0, "sparsity"), 1.5, "grids.mini.patterns[0].sparsity = 1.5", "< 1"),
    (("grids", "mini", "patterns", 0, "sparsity"), 0, "grids.mini.patterns[0].sparsity = 0", "> 0"),
    (("grids", "mini", "methods"), ["magnitude", "obs"], "grids.mini.methods[1] = 'obs'", "wanda"),
    (("grids", "mini", "patterns"), [{"structure": "2:4", "sparsity": 0.6}],
     "grids.mini.patterns[0].sparsity = 0.6", "2/4"),
    (("grids", "mini", "patterns"), [{"structure": "2:4", "sparsity": 0.4999}],  # close, but the label would lie
     "grids.mini.patterns[0].sparsity = 0.4999", "2/4 = 0.5"),
    (("grids", "mini", "datasets"), ["movie_reviews", "imaginary"], "grids.mini.datasets[1] = 'imaginary'",
     "movie_reviews"),
    (("grids", "mini", "models"), ["../../etc"], "grids.mini.models[0] = '../../etc'", "safe name"),
    (("grids", "mini", "eval_limit"), -3, "grids.mini.eval_limit = -3", ">= 1"),
    (("grids", "mini", "eval_limit"), "lots", "grids.mini.eval_limit = 'lots'", "or power"),
    (("grid",), "huge", "grid = 'huge'", "mini, models, paper"),
    (("pruning", "sparsegpt", "blocksize"), 100, "pruning.sparsegpt.blocksize = 100", "multiple of 8"),
    (("pruning", "wanda"), KeyError, "missing key pruning.wanda", "written out"),
    (("evaluation", "batch_size"), "16", "evaluation.batch_size = '16'", "integer"),
    (("models", "smollm2-135m", "family"), "gpt2", "models.smollm2-135m.family = 'gpt2'", "llama"),
    (("datasets", "movie_reviews", "source", "subset"), "books", "datasets.movie_reviews.source.subset = 'books'",
     "movieReviewSnippets"),
    (("datasets", "sst2", "category"), "emotion", "datasets.sst2.category = 'emotion'", "sentiment"),
    (("archives", "bigbench", "sha256"), "abc", "archives.bigbench.sha256 = 'abc'", "sha256"),
    (("grids", "mini", "calibration", "formats"), ["raw", "cot"], "grids.mini.calibration.formats lists 'cot'",
     "cot: those with rationales"),
    (("grids", "mini", "calibration", "formats"), ["icl"], "grids.mini.calibration.formats = ['icl']",
     "it supports raw"),
    (("grids", "mini", "calibration", "formats"), ["chat"], "grids.mini.calibration.formats[0] = 'chat'", "icl"),
    (("calibration_sources", "vitaminc_train", "dataset"), "similarities_abstraction",
     "calibration_sources.vitaminc_train.dataset = 'similarities_abstraction'", "no calibration pool"),
    (("datasets", "strategyqa", "train"), {"split": "train", "subsample": None}, "datasets.strategyqa.train",
     "{holdout: ...}"),
    (("datasets", "sst2", "train"), {"holdout": 10}, "datasets.sst2.train", "{split: ...}"),
    (("calibration_sources", "wikitext2", "join"), "yes", "calibration_sources.wikitext2.join = 'yes'",
     "true or false"),
    (("similarity", "chunk_words"), 0, "similarity.chunk_words = 0", ">= 1"),
    (("datasets", "sst2", "template"), "Review: {text}", "datasets.sst2.template uses unknown placeholder(s) {text}",
     "{input}, {premise}, {hypothesis}"),
    (("calibration_sources", "gsm8k", "template"), "Q: {premise}", "calibration_sources.gsm8k.template", "{input}"),
    (("grids", "mini", "nsa_datasets"), ["sst2"], "grids.mini.nsa_datasets = 'sst2'", "movie_reviews"),
    (("nsa", "lr"), 0, "nsa.lr = 0", "> 0"),
    (("nsa", "drop_threshold"), 1.5, "nsa.drop_threshold = 1.5", "< 1"),
    (("grids", "mini", "nsa_guided", "categories"), ["nli"], "grids.mini.nsa_guided.categories lists 'nli'",
     "no dataset of grids.mini.nsa_datasets"),
    (("grids", "mini", "nsa_guided", "methods"), ["sparsegpt"], "grids.mini.nsa_guided.methods = 'sparsegpt'",
     "wanda"),
    (("grids", "mini", "sweeps", "sparsities"), [0.3, 1.0], "grids.mini.sweeps.sparsities[1] = 1.0", "< 1"),
    (("grids", "mini", "sweeps", "seqlens"), [4], "grids.mini.sweeps.seqlens[0] = 4", "8"),
    (("grids", "paper", "reports"), "reports/quick", "grids.paper.reports = 'reports/quick'", "grid 'quick' writes"),
    (("grids", "mini", "reports"), "/tmp/x", "grids.mini.reports = '/tmp/x'", "reports/<name>"),
    (("models", "gemma3-270m", "wheel_parts", "package"), "fixed-name", "models.gemma3-270m.wheel_parts.package",
     "{n}"),
    (("models", "gemma3-270m", "sha256"), KeyError, "models.gemma3-270m", "sha256"),
    (("claims", "design", "effect"), 0.3, "claims.design.effect = 0.3", "discordance = 0.15"),
    (("grids", "models", "exclude", 0, "model"), "smollm2-135m", "grids.models.exclude[0].model = 'smollm2-135m'",
     "qwen2.5-coder-1.5b"),
    (("grids", "models", "exclude", 0, "source"), "wikitext2", "grids.models.exclude[0].source = 'wikitext2'",
     "gensim_lee"),
    (("grids", "models", "exclude", 0), {}, "grids.models.exclude[0]", "model, method"),
    (("grids", "models", "nsa_models"), ["gemma3-270m", "llama-7b"], "grids.models.nsa_models[1] = 'llama-7b'",
     "qwen2.5-coder-1.5b"),
    (("grids", "models", "perplexity_windows"), 0, "grids.models.perplexity_windows = 0", ">= 1"),
]


@pytest.mark.parametrize(("path", "value", "where", "allowed"), BAD, ids=[".".join(map(str, b[0])) for b in BAD])
def test_bad_values_are_rejected_with_one_line(path, value, where, allowed):
    with pytest.raises(ParamsError) as caught:
        validate_params(_mutated(path, value))
    message = str(caught.value)
    assert "\n" not in message
    assert where in message
    assert allowed in message


def test_wanda_variant_with_n_m_is_rejected_before_any_job():
    params = copy.deepcopy(PARAMS)
    params["pruning"]["wanda"]["per_row_alpha"] = True
    with pytest.raises(ParamsError, match=r"per_row_alpha = True is not allowed with grids\.mini\.nsa_guided"):
        validate_params(params)  # protecting neurons needs per-row counts, which the alpha variant does not keep
    params["grids"]["mini"]["nsa_guided"]["methods"] = []
    validate_params(params)  # the mini grid is unstructured only
    params["grids"]["mini"]["patterns"].append({"structure": "2:4", "sparsity": 0.5})
    with pytest.raises(ParamsError, match=r"pruning\.wanda\.per_row_alpha = True .* grids\.mini prunes wanda with 2:4"):
        validate_params(params)


def test_unknown_key_is_rejected():
    params = copy.deepcopy(PARAMS)
    params["evaluation"]["bach_size"] = 8
    with pytest.raises(ParamsError, match=r"unknown key evaluation\.bach_size: allowed: one of batch_size"):
        validate_params(params)


def test_keys_round_trip():
    assert pattern_key("unstructured", 0.5) == "unstructured-0.5"
    assert pattern_key("2:4", 0.5) == "2of4-0.5"
    assert parse_pattern_key("2of4-0.5") == ("2:4", 0.5)
    assert parse_pattern_key("unstructured-0.25") == ("unstructured", 0.25)
    assert pattern_key("owl", 0.7) == "owl-0.7" and parse_pattern_key("owl-0.7") == ("owl", 0.7)
    for sparsity in (1e-05, 0.123456789, 0.1 + 0.2, 0.99999999, 0.5):  # every allowed value reads back exactly
        assert parse_pattern_key(pattern_key("unstructured", sparsity)) == ("unstructured", sparsity)
    assert pattern_key("unstructured", 1e-05) == "unstructured-0.00001"
    assert pattern_key("unstructured", 0.123456789) != pattern_key("unstructured", 0.1234567891)
    key = calibration_key("gensim_wiki", "raw", 32, 256, 7)
    assert key == "gensim_wiki-raw-n32-l256-s7"
    assert parse_calibration_key(key) == {"source": "gensim_wiki", "format": "raw", "nsamples": 32, "seqlen": 256,
                                          "seed": 7}


def test_grid_variants_give_magnitude_no_calibration_then_the_sweeps():
    grid = copy.deepcopy(PARAMS["grids"]["mini"])
    grid["calibration"].update(sources=["gensim_wiki"], seeds=[0, 1])
    grid["sweeps"] = {"methods": ["magnitude", "wanda"], "sparsities": [0.3, 0.5], "nsamples": [8],
                      "seqlens": [64, 256]}
    grid["owl"] = {"methods": [], "sparsities": []}
    variants = grid_variants(grid, PARAMS["calibration_sources"])
    assert [v.path.removeprefix("smollm2-135m/") for v in variants] == [
        "magnitude/unstructured-0.5/none",
        "wanda/unstructured-0.5/gensim_wiki-raw-n32-l256-s0",
        "wanda/unstructured-0.5/gensim_wiki-raw-n32-l256-s1",
        "magnitude/unstructured-0.3/none",  # the sweep's 0.5 points are main variants already: listed once
        "wanda/unstructured-0.3/gensim_wiki-raw-n32-l256-s0",
        "wanda/unstructured-0.5/gensim_wiki-raw-n8-l256-s0",  # nsamples at the base seqlen, seed 0 only
        "wanda/unstructured-0.5/gensim_wiki-raw-n32-l64-s0",  # seqlen at the base nsamples
    ]
    paper = grid_variants(PARAMS["grids"]["paper"], PARAMS["calibration_sources"])
    # 14 models x (magnitude: 3 patterns + 3 calibrated methods x 3 patterns x 3 seeds), then the first model's
    # sweeps: 4 methods x 7 sparsities + 3 calibrated methods x (5 nsamples + 4 seqlens), then OWL at 0.7 for
    # magnitude, wanda and sparsegpt (their uniform 0.7 variants are the sparsity sweep's already)
    assert len(paper) == 14 * (3 + 3 * 3 * 3) + 4 * 7 + 3 * (5 + 4) + 3


def test_exclude_drops_the_matching_main_variants_and_nsa_runs_on_its_models():
    grid = copy.deepcopy(PARAMS["grids"]["models"])
    grid["exclude"] = [{"model": "qwen2.5-coder-1.5b", "source": "gensim_lee"},
                       {"method": "sparsegpt", "structure": "2:4"}]
    variants = grid_variants(grid, PARAMS["calibration_sources"])
    paths = {v.path for v in variants}
    assert "qwen2.5-coder-1.5b/wanda/unstructured-0.5/gensim_lee-raw-n16-l256-s0" not in paths
    assert "qwen2.5-coder-1.5b/wanda/unstructured-0.5/gensim_wiki-raw-n16-l256-s0" in paths
    assert "qwen2.5-coder-1.5b/magnitude/unstructured-0.5/none" in paths  # `source` never matches no calibration
    assert "gemma3-270m/wanda/2of4-0.5/gensim_lee-raw-n16-l256-s0" in paths
    assert not any(v.method == "sparsegpt" and v.pattern == "2of4-0.5" for v in variants)
    # 3 models x (2 magnitude + 2 calibrated x 2 patterns x 2 sources) = 30, less the 1.5B's 4 Lee variants, less
    # the 2:4 SparseGPT ones left (the 1.5B's Wikipedia one, 2 sources for each other model)
    assert len(variants) == 30 - 4 - 5
    grid["nsa_models"] = ["gemma3-270m"]
    grid["nsa_guided"] = {"categories": ["sentiment"], "methods": ["wanda"]}
    assert {v.model for _, v in guided_variants(grid, PARAMS["calibration_sources"])} == {"gemma3-270m"}


def test_owl_variants_pair_owl_with_uniform_and_give_magnitude_calibration():
    grid = copy.deepcopy(PARAMS["grids"]["mini"])
    grid["owl"] = {"methods": ["magnitude", "wanda"], "sparsities": [0.6]}
    assert [v.path.removeprefix("smollm2-135m/") for v in owl_variants(grid, PARAMS["calibration_sources"])] == [
        "magnitude/unstructured-0.6/none",
        "magnitude/owl-0.6/gensim_wiki-raw-n32-l256-s0",  # OWL's outlier ratios need calibration, magnitude's too
        "wanda/unstructured-0.6/gensim_wiki-raw-n32-l256-s0",
        "wanda/owl-0.6/gensim_wiki-raw-n32-l256-s0",
    ]


def test_nsa_and_guided_pruning_use_the_base_calibration_source():
    grid = PARAMS["grids"]["mini"]
    studied = studied_variants(grid, PARAMS["calibration_sources"])
    assert {v.calib for v in studied} == {"none", "gensim_wiki-raw-n32-l256-s0", "gensim_wiki-raw-n32-l256-s1"}
    guided = guided_variants(grid, PARAMS["calibration_sources"])
    assert [(c, v.method, v.calib) for c, v in guided] == [("sentiment", "wanda", "gensim_wiki-raw-n32-l256-s0"),
                                                          ("sentiment", "wanda", "gensim_wiki-raw-n32-l256-s1")]


def test_calibration_formats_apply_where_the_source_supports_them():
    grid = copy.deepcopy(PARAMS["grids"]["mini"])
    grid["calibration"].update(sources=["gensim_wiki", "strategyqa_train", "movie_reviews_train"],
                               formats=["raw", "icl", "cot"], seeds=[0])
    grid["sweeps"]["methods"] = grid["owl"]["methods"] = []
    calibs = [v.calib for v in grid_variants(grid, PARAMS["calibration_sources"]) if v.method == "wanda"]
    assert calibs == ["gensim_wiki-raw-n32-l256-s0", "strategyqa_train-icl-n32-l256-s0",
                      "strategyqa_train-cot-n32-l256-s0", "movie_reviews_train-icl-n32-l256-s0"]



class _Recording(dict):
    """A params block that records which keys are read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


@pytest.mark.parametrize("matching", ["mediated", "paper"])
def test_nsa_options_read_every_nsa_param_into_its_step(matching):
    """NSA's typed options (nsa.options) are built from the whole `nsa` block: a param no option reads would be a
    knob that does nothing (the paper matching leaves only mediated matching's three). Each value lands in its step's
    option."""
    from prunescope.nsa.options import NsaOptions

    nsa = _Recording({**PARAMS["nsa"], "matching": matching})
    options = NsaOptions.from_params(nsa)
    mediated_only = {"share_floor", "effect_floor", "candidates"}
    assert nsa.read == set(PARAMS["nsa"]) - (mediated_only if matching == "paper" else set())
    assert (options.mediation is None) == (matching == "paper")
    assert (options.words.top_k, options.words.floor, options.words.batch_size) == (
        nsa["top_k_words"], nsa["attribution_floor"], nsa["attribution_batch"])
    assert (options.paper.lam, options.paper.neurons_per_word) == (nsa["lambda"], nsa["neurons_per_word"])
    assert (options.causal.ablate, options.causal.draws) == (nsa["ablate_neurons"], nsa["random_draws"])
    if options.mediation is not None:
        assert (options.mediation.share_floor, options.mediation.candidates) == (nsa["share_floor"], nsa["candidates"])
