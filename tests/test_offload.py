"""Big-model inference (params.yaml offload): a model dispatched by accelerate with block 0 in memory and block 1,
the final norm and the output head on disk computes exactly what the model loaded whole computes, through every
path evaluation and NSA take (the packed scorer, lm-eval's HFLM, NSA's hooks, ablations and resumed blocks), dense
and pruned. On the CPU the offloaded weights run on the CPU, so equal means equal to the bit."""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import weakref

import pytest
import torch
from lm_eval.models.huggingface import HFLM
from transformers import AutoModelForCausalLM

from conftest import make_tiny_model
from prunescope.calibration.sample import save_calibration
from prunescope.config import ParamsError, validate_params
from prunescope.evaluation import EvaluationOptions, PerplexityOptions, VariantModel, evaluate_variant
from prunescope.evaluation.perplexity import perplexity_variant
from prunescope.evaluation.scoring import SharedContextLM
from prunescope.evaluation.tasks import build_task
from prunescope.models.families import get_family
from prunescope.models.offload import (
    GIB,
    input_device,
    loaded_model,
    offload_device_map,
    offloaded_weights_reread_in_backward,
)
from prunescope.models.prepare import load_model
from prunescope.nsa.answers import mean_embedding, score_examples
from prunescope.nsa.causal import causal_curve
from prunescope.nsa.neurons import ablated, activation_stats
from prunescope.nsa.words import ATTRIBUTIONS, occurrence_attributions
from prunescope.pruning import (
    PruneOptions,
    apply_artifact,
    model_weights,
    prune_model,
    save_artifact,
    write_pruned_checkpoint,
)
from test_config import PARAMS
from test_evaluation import TEMPLATE, make_records, write_dataset
from test_nsa import _tiny_examples
from test_scoring import multiple_choice_requests

CPU = torch.device("cpu")
# 400 kB of weights in memory: the embeddings (77 kB) and block 0 (148 kB) fit, with room kept to load the
# largest disk-offloaded module (block 1: 148 kB); block 1, the norm and the head go to disk
BUDGET = 400_000 / GIB
TIED_BUDGET = 300_000 / GIB  # 75 kB less (no separate head): the embeddings in memory, both blocks on disk


def offload(tmp_path, max_cpu_memory: float | None = BUDGET) -> dict:
    return {"max_gpu_memory": None, "max_cpu_memory": max_cpu_memory, "folder": str(tmp_path / "offload")}


def saved_model(folder, tokenizer, tied: bool):
    """A tiny llama saved as the prepare rule saves models; tied: one weight for the input embeddings and the
    output head (as SmolLM2, the embedded default, and the small Qwen2.5 models)."""
    config = make_tiny_model("llama", len(tokenizer)).config
    config.tie_word_embeddings = tied
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def magnitude_artifact(model_dir, folder):
    """Magnitude pruning at 50% of the saved model: a real artifact, as the prune rule writes it."""
    model, _ = load_model(model_dir, "float32", CPU)
    result = prune_model(model, "llama", PruneOptions("magnitude", 0.5), None, CPU)
    save_artifact(result, model_weights(model), folder, {"base_model": "tiny-llama"})
    return folder


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, tiny_tokenizer) -> dict:
    """Per tied (False, True): a saved tiny llama and its magnitude artifact."""
    made = {}
    for tied in (False, True):
        folder = saved_model(tmp_path_factory.mktemp("tiny-llama"), tiny_tokenizer, tied)
        made[tied] = folder, magnitude_artifact(folder, tmp_path_factory.mktemp("artifact") / "magnitude")
    return made


@pytest.fixture(scope="module")
def model_dir(saved_models):
    return saved_models[False][0]


@pytest.fixture(scope="module")
def artifact_dir(saved_models):
    return saved_models[False][1]


def test_blocks_beyond_the_budget_go_to_disk_and_the_folder_is_removed_after(model_dir, tmp_path):
    settings = offload(tmp_path)
    assert offload_device_map(model_dir, "float32", CPU, settings) == {
        "model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "disk",
        "model.rotary_emb": "disk", "lm_head": "disk"}
    with loaded_model(model_dir, "float32", CPU, settings) as (model, _):
        blocks = get_family("llama").blocks(model)
        assert blocks[0].mlp.down_proj.weight.device == CPU
        assert blocks[1].mlp.down_proj.weight.device.type == "meta"  # its values wait on disk
        assert input_device(model) == CPU
        assert len(list((tmp_path / "offload").iterdir())) == 1
    assert list((tmp_path / "offload").iterdir()) == []


def test_a_gpu_job_keeps_what_fits_on_the_gpu_and_offloads_the_rest_to_host_memory(model_dir):
    """Planned from the config alone, so a GPU job's map is checked here without a GPU."""
    settings = {"max_gpu_memory": BUDGET, "max_cpu_memory": 1.0, "folder": None}
    assert offload_device_map(model_dir, "float32", torch.device("cuda", 0), settings) == {
        "model.embed_tokens": 0, "model.layers.0": 0, "model.layers.1": "cpu", "model.norm": "cpu",
        "model.rotary_emb": "cpu", "lm_head": "cpu"}
    settings["max_gpu_memory"] = 1.0
    assert offload_device_map(model_dir, "float32", torch.device("cuda", 0), settings) is None


@pytest.mark.parametrize(("device", "setting"), [("cuda", "max_gpu_memory"), ("cpu", "max_cpu_memory")])
def test_a_budget_too_small_for_the_first_module_is_one_clear_error(model_dir, device, setting):
    settings = {"max_gpu_memory": 1.0, "max_cpu_memory": 1.0, "folder": None, setting: 50_000 / GIB}
    with pytest.raises(ValueError, match=rf"^not even the model's first module fits in the 4\.66e-05 GiB offload "
                                         rf"allows on {device}\S* \(offload\.{setting} in params\.yaml; when null, "
                                         r"what the device has free\): raise it or free the device$"):
        offload_device_map(model_dir, "float32", torch.device(device, 0) if device == "cuda" else CPU, settings)


def test_inputs_go_where_the_offloaded_embeddings_run(tiny_tokenizer, tmp_path):
    """With the embeddings themselves offloaded (as host-memory offload leaves them on a GPU job: on the meta
    device), inputs go to their hook's execution device, and the packed scorer runs."""
    from accelerate import dispatch_model

    model = make_tiny_model("llama", len(tiny_tokenizer))
    whole = SharedContextLM(pretrained=copy.deepcopy(model), tokenizer=tiny_tokenizer, batch_size=4)
    requests = multiple_choice_requests(model, len(tiny_tokenizer))
    expected = whole._loglikelihood_tokens(requests, disable_tqdm=True)
    device_map = {"model.embed_tokens": "disk", "model.layers": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu",
                  "lm_head": "cpu"}
    dispatched = dispatch_model(model, device_map, main_device="cpu", offload_dir=tmp_path)
    assert dispatched.get_input_embeddings().weight.device.type == "meta" and input_device(dispatched) == CPU
    lm = SharedContextLM(pretrained=dispatched, tokenizer=tiny_tokenizer, batch_size=4)
    assert lm._loglikelihood_tokens(requests, disable_tqdm=True) == expected


def test_no_budget_or_a_model_that_fits_loads_it_whole(model_dir, tmp_path):
    for settings in (None, offload(tmp_path, None), offload(tmp_path, 1.0)):
        assert offload_device_map(model_dir, "float32", CPU, settings) is None
        with loaded_model(model_dir, "float32", CPU, settings) as (model, _):
            assert getattr(model, "hf_device_map", None) is None
            assert all(p.device == CPU for p in model.parameters())
    assert not (tmp_path / "offload").exists()


@pytest.mark.parametrize("pruned", [False, True])
@pytest.mark.parametrize("tied", [False, True])
def test_packed_scorer_and_hflm_give_the_whole_models_log_likelihoods(saved_models, tmp_path, pruned, tied):
    """Dense (dispatched as it loads, disk weights read from its safetensors) and pruned (pruned on the CPU, then
    dispatched, the pruned weights written to the offload folder), with and without tied embeddings: every
    request's (log-prob, is-greedy) equal."""
    model_dir, artifact_dir = saved_models[tied]
    pruned_dir = artifact_dir if pruned else None
    with loaded_model(model_dir, "float32", CPU, None, pruned_dir) as (whole, tokenizer):
        requests = multiple_choice_requests(whole, len(tokenizer))
        expected = {lm: lm(pretrained=whole, tokenizer=tokenizer, batch_size=4)._loglikelihood_tokens(
            requests, disable_tqdm=True) for lm in (SharedContextLM, HFLM)}
    settings = offload(tmp_path, TIED_BUDGET if tied else BUDGET)
    with loaded_model(model_dir, "float32", CPU, settings, pruned_dir) as (dispatched, tokenizer):
        assert set(dispatched.hf_device_map.values()) == {"cpu", "disk"}
        assert dispatched.hf_device_map["model.layers.1" if not tied else "model.layers"] == "disk"
        for lm, answers in expected.items():
            assert lm(pretrained=dispatched, tokenizer=tokenizer, batch_size=4)._loglikelihood_tokens(
                requests, disable_tqdm=True) == answers, lm.__name__
    kept = float((get_family("llama").blocks(whole)[1].mlp.down_proj.weight != 0).float().mean())
    assert kept == (0.5 if pruned else 1.0)


def test_nsa_recording_ablation_and_resumed_causal_curve_are_unchanged(model_dir, tmp_path):
    """Activation statistics with activation x gradient (backward through the disk block), a mean ablation in the
    disk block, the causal curve, whose settings in layer 1 resume from block 0's recorded output, and every word
    attribution (the gradient ones backward through the disk block)."""
    family = get_family("llama")
    scores = {0: torch.zeros(2, 128), 1: torch.zeros(2, 128)}
    scores[1][0, [10, 20]] = torch.tensor([2.0, 1.0])
    scores[0][1, 30] = 0.5
    matched = {0: [30], 1: [10, 20]}
    means = {layer: torch.rand(128, generator=torch.Generator().manual_seed(layer)) for layer in (0, 1)}

    def measured(model, tokenizer) -> tuple:
        examples = _tiny_examples(tokenizer) * 2
        word_ids = [torch.tensor(e.prompt.token_words) for e in examples]
        n_words = max(max(e.prompt.token_words) for e in examples) + 1
        stats = activation_stats(model, family, examples, word_ids, [0, 1], n_words, importance=True)
        with ablated(model, family, {1: [3, 5, 60]}, means):
            ablation = score_examples(model, examples, batch_size=3)
        curve = causal_curve(model, family, examples, scores, matched, means, 128, limit=3, draws=2, seed=0,
                             batch_size=4)
        words = [occurrence_attributions(model, examples[0], method, mean_embedding(model), 4, 4)
                 for method in ATTRIBUTIONS]
        return {layer: vars(s) for layer, s in stats.items()}, ablation, curve, words

    with loaded_model(model_dir, "float32", CPU, None) as (model, tokenizer):
        expected = measured(model, tokenizer)
    with loaded_model(model_dir, "float32", CPU, offload(tmp_path)) as (model, tokenizer):
        assert model.hf_device_map["model.layers.1"] == "disk"
        got = measured(model, tokenizer)
    for layer in (0, 1):
        for name, value in expected[0][layer].items():
            assert (value == got[0][layer][name]) if isinstance(value, int) else torch.equal(value, got[0][layer][name])
    assert got[1:] == expected[1:]
    assert any(point["matched_margin_change"] != 0 for point in expected[2]["curve"])


@pytest.mark.parametrize("reread", [False, True])
def test_backward_rereads_offloaded_weights_instead_of_holding_them(tiny_tokenizer, tmp_path, reread):
    """Without the block, autograd holds the disk block's loaded weight from the forward to the backward pass (so a
    gradient pass would hold the whole model on the device); with it the weight is freed after its forward and read
    again from the store, and the gradients are the same."""
    from accelerate import dispatch_model

    def gradients(model, dispatched: bool) -> tuple[torch.Tensor, bool]:
        loaded = []
        if dispatched:
            hook = model.model.layers[1].mlp.down_proj._hf_hook
            load = hook.pre_forward

            def recording(module, *args, **kwargs):
                placed = load(module, *args, **kwargs)
                loaded.append(weakref.ref(module.weight))
                return placed
            hook.pre_forward = recording
        ids = torch.tensor([tiny_tokenizer("the film was wonderful and great")["input_ids"]])
        with offloaded_weights_reread_in_backward(model) if reread else contextlib.nullcontext():
            total = model(ids).logits.log_softmax(-1)[0, :, 7].sum()
            gc.collect()
            held = bool(loaded) and loaded[0]() is not None
            total.backward()
        return model.get_input_embeddings().weight.grad, held

    model = make_tiny_model("llama", len(tiny_tokenizer))
    expected, _ = gradients(copy.deepcopy(model), dispatched=False)
    dispatched = dispatch_model(model, {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                                       "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"},
                                main_device="cpu", offload_dir=tmp_path)
    got, held = gradients(dispatched, dispatched=True)
    assert held != reread
    assert torch.equal(got, expected)
    assert all(parameter.requires_grad for parameter in dispatched.parameters())  # restored after the block


def test_evaluate_variant_writes_the_same_bytes_offloaded(model_dir, artifact_dir, tmp_path):
    """The evaluate job itself, dense and pruned: results byte-identical with and without offload."""
    write_dataset(tmp_path / "demo.jsonl", make_records(12))
    build_task("demo", tmp_path / "demo.jsonl", TEMPLATE, None, 0, tmp_path / "task")
    written = {}
    for pruned_dir in (None, artifact_dir):
        for settings in (None, offload(tmp_path)):
            out = tmp_path / "demo.json"  # one path: the result records where it was written
            evaluate_variant(VariantModel(str(model_dir), "float32", pruned_dir, settings),
                             EvaluationOptions(batch_size=4, bootstrap_iters=0, params={}), datasets=["demo"],
                             categories=["sentiment"], task_dirs=[tmp_path / "task"], out_paths=[out], device=CPU,
                             labels={"model": "tiny"})
            written[pruned_dir, settings is None] = out.read_bytes()
        assert written[pruned_dir, True] == written[pruned_dir, False]
    assert json.loads(written[artifact_dir, True])["metrics"]["n"] == 12
    assert json.loads(written[artifact_dir, True])["pruning"] == {"method_options": {},  # from the artifact
                                                                  "layer_sparsity": {"kind": "uniform"}}
    assert "pruning" not in json.loads(written[None, True])


def test_perplexity_variant_writes_the_same_bytes_offloaded(model_dir, artifact_dir, tiny_tokenizer, tmp_path):
    """The perplexity job, dense and pruned: results byte-identical with and without offload (disk-offloaded
    blocks read in place, a pruned model through its pruned checkpoint)."""
    windows = torch.randint(0, len(tiny_tokenizer), (3, 16), generator=torch.Generator().manual_seed(0))
    save_calibration(windows, tmp_path / "windows.safetensors", {"source": "demo"})
    written = {}
    for pruned_dir in (None, artifact_dir):
        for settings in (None, offload(tmp_path)):
            out = tmp_path / "demo.json"
            perplexity_variant(VariantModel(str(model_dir), "float32", pruned_dir, settings),
                               PerplexityOptions(batch_size=2, params={}), sources=["demo"],
                               window_paths=[str(tmp_path / "windows.safetensors")], out_paths=[str(out)], device=CPU,
                               labels={"model": "tiny"})
            written[pruned_dir, settings is None] = out.read_bytes()
        assert written[pruned_dir, True] == written[pruned_dir, False]
    dense, pruned = (json.loads(written[key, True])["metrics"]["perplexity"] for key in (None, artifact_dir))
    assert dense != pruned and "pruning" in json.loads(written[artifact_dir, True])


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("max_gpu_memory", -8, "offload.max_gpu_memory = -8 is not allowed: null (what the device has free) or a number "
                           "of GiB > 0"),
    ("max_cpu_memory", 0, "offload.max_cpu_memory = 0 is not allowed: null (what the device has free) or a number "
                          "of GiB > 0"),
    ("max_cpu_memory", "64GB", "offload.max_cpu_memory = '64GB' is not allowed: null (what the device has free) or "
                               "a number of GiB > 0"),
    ("max_gpu_mem", 40, "unknown key offload.max_gpu_mem: allowed: one of folder, max_cpu_memory, max_gpu_memory"),
])
def test_a_bad_offload_setting_is_one_clear_error(setting, value, message):
    params = copy.deepcopy(PARAMS)
    params["offload"][setting] = value
    with pytest.raises(ParamsError) as caught:
        validate_params(params)
    assert str(caught.value) == f"params.yaml: {message}"


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("method", ["magnitude", "sparsegpt"])
def test_a_pruned_checkpoint_is_the_pruned_model_written_one_block_at_a_time(saved_models, tmp_path, monkeypatch,
                                                                              method, tied):
    """write_pruned_checkpoint (how a pruned model reaches disk offload): from_pretrained of it equals the base
    model with the artifact applied in memory, bit for bit, and each shard it writes holds one block's tensors or
    the non-block ones (embeddings, final norm, head): never more than one block in memory."""
    from prunescope.pruning import artifact as artifact_module

    model_dir, artifact = saved_models[tied]
    if method == "sparsegpt":  # kept values too, not only masks
        model, _ = load_model(model_dir, "float32", CPU)
        calibration = torch.randint(0, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
        options = PruneOptions("sparsegpt", 0.5, method_options={"blocksize": 16}, batch_size=2)
        result = prune_model(model, "llama", options, calibration, CPU)
        artifact = tmp_path / "sparsegpt"
        save_artifact(result, model_weights(model), artifact, {"base_model": "tiny-llama"})
    written = []
    save_file = artifact_module.save_file
    monkeypatch.setattr(artifact_module, "save_file",
                        lambda tensors, path, **kwargs: written.append(sorted(tensors)) or save_file(tensors, path,
                                                                                                     **kwargs))
    write_pruned_checkpoint(model_dir, "float32", artifact, tmp_path / "checkpoint")
    expected, _ = load_model(model_dir, "float32", CPU)
    apply_artifact(expected, artifact)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint", dtype=torch.float32)
    for (name, want), got in zip(expected.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(want.view(torch.uint8), got.view(torch.uint8)), name
    blocks = [sorted({key.split(".")[2] for key in keys if key.startswith("model.layers.")}) for keys in written]
    assert sorted(map(tuple, blocks)) == [(), ("0",), ("1",)]


def test_a_damaged_artifact_writes_no_pruned_checkpoint(model_dir, tmp_path):
    damaged = magnitude_artifact(model_dir, tmp_path / "artifact")
    (damaged / "masks.safetensors").write_bytes((damaged / "masks.safetensors").read_bytes()[:-8])
    with pytest.raises(ValueError, match="masks.safetensors: sha256 differs"):
        write_pruned_checkpoint(model_dir, "float32", damaged, tmp_path / "checkpoint")
    assert not (tmp_path / "checkpoint").exists()
