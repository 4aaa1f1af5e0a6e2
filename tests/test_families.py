"""Gemma 3 (gemma3_text) and Qwen2 through the whole library on tiny random models: every pruning method and
structure, OWL, the artifact round trip, the streamed run, the safetensors export and NSA, each checked against the
model's own computation. The tiny Gemma 3 alternates 4-token sliding-window and full layers (head_dim 32, not
hidden / heads = 16; tied head); every sequence here is longer than its window."""

from __future__ import annotations

import contextlib
import copy
import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import make_tiny_model
from prunescope.models import get_family
from prunescope.models.prepare import load_model
from prunescope.nsa.answers import choice_logprobs, gold_margin, mean_embedding, score_examples, variant_margins
from prunescope.nsa.causal import causal_curve
from prunescope.nsa.neurons import ablated, activation_stats
from prunescope.nsa.prompts import Example, tokenize_words
from prunescope.nsa.words import occurrence_attributions
from prunescope.pruning import (
    PruneOptions,
    apply_artifact,
    model_weights,
    prune_model,
    pruned_layer_names,
    save_artifact,
)
from prunescope.pruning.driver import block_linears
from prunescope.pruning.export import export_variant
from prunescope.pruning.owl import OwlOptions, block_sparsities, outlier_ratio
from prunescope.pruning.stats import collect_inputs
from prunescope.pruning.wanda import wanda_scores
from test_streamed import CALIBRATION as STREAMED_CALIBRATION
from test_streamed import artifact_bytes, saved_model, streamed_run

FAMILIES = ["gemma3_text", "qwen2"]
VOCAB = 300  # the tiny tokenizer's
CPU = torch.device("cpu")
CALIBRATION = torch.randint(0, VOCAB, (4, 12), generator=torch.Generator().manual_seed(0))
OPTIONS = {"sparsegpt": {"blocksize": 32}}


def pruned(family: str, method: str, structure: str = "unstructured", model=None, sparsity: float = 0.5,
           owl: OwlOptions | None = None):
    model = make_tiny_model(family, VOCAB) if model is None else model
    calibration = None if method == "magnitude" else CALIBRATION
    options = PruneOptions(method, sparsity, structure, OPTIONS.get(method, {}), owl, batch_size=2)
    return model, prune_model(model, family, options, calibration, CPU)


def assert_bit_equal(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    for (name, want), got in zip(expected.state_dict().items(), actual.state_dict().values(), strict=True):
        assert torch.equal(want.view(torch.uint8), got.view(torch.uint8)), name  # +0.0 vs -0.0 too


@pytest.mark.parametrize("structure", ["unstructured", "2:4"])
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "ria"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_method_prunes_every_block_linear_and_the_artifact_gives_the_model_back(tmp_path, family, method,
                                                                                       structure):
    dense = make_tiny_model(family, VOCAB)
    model, result = pruned(family, method, structure, copy.deepcopy(dense))
    names = pruned_layer_names(model, family)
    assert sorted(result.masks) == sorted(names) and len(names) == 2 * 7  # q k v o gate up down per block
    for name in names:
        mask, weight = result.mask(name), model.get_submodule(name).weight
        assert (weight[~mask] == 0).all()
        if structure == "2:4":
            assert ((~mask).reshape(mask.shape[0], -1, 4).sum(-1) == 2).all(), name
        else:
            assert (~mask).sum() == mask.numel() // 2, name
    untouched = {key for key in dense.state_dict() if key.removesuffix(".weight") not in names}
    assert any("embed_tokens" in key for key in untouched)
    assert all(torch.equal(dense.state_dict()[key], model.state_dict()[key]) for key in untouched)

    save_artifact(result, model_weights(model), tmp_path / "artifact", {"model": f"tiny-{family}"})
    apply_artifact(dense, tmp_path / "artifact")
    assert_bit_equal(model, dense)
    assert (dense.get_output_embeddings().weight is dense.get_input_embeddings().weight) == (family == "gemma3_text")


@pytest.mark.parametrize("family", FAMILIES)
def test_owl_block_sparsities_come_from_the_models_own_activations(family):
    """OWL's outlier ratios recomputed from Wanda scores whose input norms are taken in the model's own forward
    (hooks on every Linear), not the driver's block-by-block replay: the same block sparsities."""
    model = make_tiny_model(family, VOCAB, layers=4)
    blocks = get_family(family).blocks(model)
    with torch.no_grad(), contextlib.ExitStack() as stack:
        stats = [stack.enter_context(collect_inputs(block_linears(block), gram=False)) for block in blocks]
        for batch in CALIBRATION.split(2):
            model(input_ids=batch, use_cache=False)
    ratios = [outlier_ratio([wanda_scores(layer.weight, stats[index][name].col_norms)
                             for name, layer in block_linears(block).items()], 5.0)
              for index, block in enumerate(blocks)]
    sizes = [sum(layer.weight.numel() for layer in block_linears(block).values()) for block in blocks]
    _, result = pruned(family, "wanda", model=model, sparsity=0.7, owl=OwlOptions(m=5.0, lam=0.08))
    assert len(set(ratios)) > 1
    assert result.layer_sparsity["blocks"] == pytest.approx(block_sparsities(ratios, sizes, 0.7, 0.08), abs=1e-9)


@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_pruning_writes_the_in_memory_artifact(tmp_path, family):
    """Blocks read from the checkpoint one at a time (on the meta device during the capture) give the artifact of
    the model pruned in memory, byte for byte."""
    folder = saved_model(family, tmp_path / "model")
    streamed_run(folder, family, "sparsegpt", "float32", tmp_path, tmp_path / "streamed")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    result = prune_model(model, family, PruneOptions("sparsegpt", 0.5, batch_size=2), STREAMED_CALIBRATION, CPU)
    save_artifact(result, model_weights(model), tmp_path / "in_memory", {"model": "tiny"})
    assert artifact_bytes(tmp_path / "streamed") == artifact_bytes(tmp_path / "in_memory")


@pytest.mark.parametrize("family", FAMILIES)
def test_safetensors_export_loads_with_from_pretrained_and_computes_the_pruned_model(tmp_path, tiny_tokenizer,
                                                                                     family):
    folder = tmp_path / "model"
    make_tiny_model(family, VOCAB).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    model, _ = load_model(folder, "float32", CPU)
    _, result = pruned(family, "sparsegpt", model=model)
    save_artifact(result, model_weights(model), tmp_path / "artifact", {"model": f"tiny-{family}"})
    export_variant(folder, "float32", tmp_path / "artifact", tmp_path / "export", "safetensors")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "export", dtype=torch.float32).eval()
    assert_bit_equal(model, loaded)
    ids = CALIBRATION[:2]
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


PROMPTS = ["the movie was wonderful and the acting was great", "is the sky blue on a clear day",
           "she went home early because she felt tired after work"]


def examples(tokenizer) -> list[Example]:
    """Prompts of 7 to 11 tokens (past the 4-token window) with multi-token choices."""
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    choices = [encode(c) for c in (" terrible", " wonderful and great", " no")]
    return [Example(tokenize_words(tokenizer, text), choices, label, "correct")
            for text, label in zip(PROMPTS, (0, 2, 1), strict=True)]


@pytest.mark.parametrize("family", FAMILIES)
def test_nsa_scores_are_each_prompts_own_forward(tiny_tokenizer, family):
    """NSA's packed scorers against full forwards: choice_logprobs by hand from the logits, score_examples (prompts
    packed with their choices) and variant_margins (occlusion's tree of shared prefixes) against gold_margin."""
    model = make_tiny_model(family, VOCAB)
    found = examples(tiny_tokenizer)
    assert min(len(e.prompt.input_ids) for e in found) > 4  # gemma3_text's window
    margins, _ = score_examples(model, found, batch_size=2)
    with torch.no_grad():
        example = found[0]
        prompt = example.prompt.input_ids
        got = choice_logprobs(model, [prompt], example.choices)[0]
        for choice, value in zip(example.choices, got, strict=True):
            logits = torch.log_softmax(model(input_ids=torch.tensor([prompt + choice])).logits[0], -1)
            assert float(value) == pytest.approx(sum(float(logits[len(prompt) - 1 + i, t])
                                                     for i, t in enumerate(choice)), abs=1e-4)
        for example, margin in zip(found, margins, strict=True):
            assert margin == pytest.approx(float(gold_margin(model, example, torch.tensor([example.prompt.input_ids]))),
                                           abs=1e-4)
        pad = tiny_tokenizer.pad_token_id
        variants = [list(prompt)] + [[pad if i in changed else t for i, t in enumerate(prompt)]
                                     for changed in ([0], [len(prompt) // 2], [1, len(prompt) - 1])]
        got = variant_margins(model, found[0], torch.tensor(variants))
        for row, variant in enumerate(variants):
            assert float(got[row]) == pytest.approx(float(gold_margin(model, found[0], torch.tensor([variant]))[0]),
                                                    abs=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_nsa_steps_run_and_agree_with_direct_measurement(tiny_tokenizer, family):
    """Occlusion is the margin's fall with a word's tokens replaced; activation statistics see every prompt token
    of the MLP's intermediate; the causal curve's matched point is the margin change of plain ablation."""
    model = make_tiny_model(family, VOCAB)
    adapter = get_family(family)
    found = examples(tiny_tokenizer)
    baseline = mean_embedding(model)
    example = found[0]
    ids = torch.tensor([example.prompt.input_ids])
    scores = occurrence_attributions(model, example, "occlusion", baseline, batch_size=4, steps=1)
    with torch.no_grad():
        intact = float(gold_margin(model, example, ids)[0])
        for word, score in scores.items():
            embeds = model.get_input_embeddings()(ids)
            embeds[0, torch.tensor(example.prompt.token_words) == word] = baseline
            assert score == pytest.approx(intact - float(gold_margin(model, example, ids, embeds)[0]), abs=1e-4)
    words = [torch.tensor([0 if w >= 0 else -1 for w in e.prompt.token_words]) for e in found]
    stats = activation_stats(model, adapter, found, words, [0, 1], 1, importance=True)
    width = adapter.mlp_out(adapter.blocks(model)[0]).in_features
    assert stats[1].tokens == sum(len(e.prompt.input_ids) for e in found) and stats[1].sums.shape == (width,)
    assert stats[1].neuron_importance.abs().sum() > 0

    match = {0: torch.zeros(1, width), 1: torch.zeros(1, width)}
    match[1][0, [3, 9]] = torch.tensor([2.0, 1.0])
    match[0][0, 5] = 0.5
    matched = {0: [5], 1: [3, 9]}
    curve = causal_curve(model, adapter, found, match, matched, {0: stats[0].mean, 1: stats[1].mean}, width,
                         limit=2, draws=2, seed=0, batch_size=2)
    base = sum(score_examples(model, found)[0]) / len(found)
    for point in (p for p in curve["curve"] if p["ablation"] == "zero"):
        with ablated(model, adapter, {int(layer): n for layer, n in point["matched"].items()}):
            margins, _ = score_examples(model, found)
        assert point["matched_margin_change"] == pytest.approx(sum(margins) / len(margins) - base, abs=1e-5)


@pytest.mark.parametrize("family", ["llama", "opt", *FAMILIES])
def test_mediated_effects_equal_a_direct_patch(tiny_tokenizer, family):
    """Mediated matching's exact effect of a neuron on one word occurrence, recomputed by hand: the word's input
    embeddings replaced by the vocabulary's mean embedding (occluded), that neuron's activations recorded there and
    written into the intact forward; the margin's fall is the exact effect. Every family (OPT's 2-D activations,
    Gemma's scaled embeddings and sliding windows, multi-token choices), chosen and patched again alike."""
    from prunescope.nsa.answers import margin
    from prunescope.nsa.compare import paired_effects
    from prunescope.nsa.mediation import MediationOptions, mediation_sums, word_occurrences

    model = make_tiny_model(family, VOCAB)
    adapter = get_family(family)
    example = examples(tiny_tokenizer)[1]
    vocabulary = sorted({example.prompt.words[w] for w in example.prompt.token_words if w >= 0})
    word, positions = word_occurrences(example, {w: i for i, w in enumerate(vocabulary)})[0]
    sums = mediation_sums(model, adapter, [example], vocabulary, [0, 1], options=MediationOptions(0.1, 0.0, 3, 2))
    layer, neuron = (int(i) for i in torch.nonzero(sums.exact_count[:, word])[0])
    ids = torch.tensor([example.prompt.input_ids])
    embeds = model.get_input_embeddings()(ids).detach()
    occluded = embeds.clone()
    occluded[0, positions] = mean_embedding(model)
    module = adapter.mlp_out(adapter.blocks(model)[layer])
    length, recorded = ids.shape[1], []

    def record(_module, args):
        if not recorded:  # the prompt's pass
            recorded.append(args[0].reshape(1, -1, args[0].shape[-1])[0, :length, neuron].clone())

    def patch(_module, args):
        if recorded and len(recorded) == 1:
            recorded.append(None)
            activation = args[0].reshape(1, -1, args[0].shape[-1]).clone()
            activation[0, :length, neuron] = recorded[0]
            return (activation.reshape(args[0].shape), *args[1:])
        return None

    with torch.no_grad():
        intact = margin(choice_logprobs(model, [example.prompt.input_ids], example.choices, embeds), example.label)
        handle = module.register_forward_pre_hook(record)
        occluded_margin = margin(choice_logprobs(model, [example.prompt.input_ids], example.choices, occluded),
                                 example.label)
        handle.remove()
        handle = module.register_forward_pre_hook(patch)
        patched = margin(choice_logprobs(model, [example.prompt.input_ids], example.choices, embeds), example.label)
        handle.remove()
    effect = float(intact - occluded_margin)
    sign = 1.0 if effect >= 0 else -1.0
    assert float(sums.effect[word]) == pytest.approx(abs(effect), abs=1e-5)
    assert float(sums.exact[layer, word, neuron]) == pytest.approx(sign * float(intact - patched), abs=1e-5)
    occurrence = next(o for o in sums.patched if o.word == word)
    _, paired = paired_effects(model, adapter, [example], [0, 1], [occurrence], {(0, word): [(layer, neuron)]}, 2)
    assert paired == {(0, word, layer, neuron): pytest.approx(float(sums.exact[layer, word, neuron]), abs=1e-5)}


def _nnsight_effects(model, adapter, example: Example, layers, patches) -> list[float]:
    """The oracle of patched_effects, by nnsight's activation patching on the plain model: per row, margin(intact) -
    margin(the listed neurons' MLP intermediate activations set to their values at the prompt's positions), each
    choice scored from the logits of one full forward of prompt + choice (no cache, no skipped blocks or
    positions, no batching)."""
    from nnsight import NNsight

    from prunescope.nsa.answers import margin

    wrapped, names = NNsight(model), {module: name for name, module in model.named_modules()}
    length = len(example.prompt.input_ids)

    def envoy(module):
        found = wrapped
        for part in names[module].split("."):
            found = found[int(part)] if part.isdigit() else getattr(found, part)
        return found

    def gold_margin_with(listed) -> float:
        logprobs = []
        for choice in example.choices:
            with wrapped.trace(torch.tensor([[*example.prompt.input_ids, *choice]])):
                for p in sorted({p for p, _, _ in listed}):  # nnsight intervenes in the order the model runs
                    activation = envoy(adapter.mlp_out(adapter.blocks(model)[layers[p]])).input
                    for neuron, values in ((n, v) for q, n, v in listed if q == p):
                        activation[..., :length, neuron] = values
                logits = wrapped.output.logits.save()
            scores = torch.log_softmax(logits[0, length - 1:-1].float(), dim=-1)
            logprobs.append(float(scores.gather(1, torch.tensor(choice)[:, None]).sum()))
        return float(margin(torch.tensor([logprobs]), example.label)[0])

    intact = gold_margin_with([])
    return [intact - gold_margin_with(listed) for listed in patches]


def _intact(model, adapter, example, resume: bool):
    """The example's IntactPrompt (nsa.patching.intact_prompt), with the intact pass's block outputs or without (no
    resuming)."""
    from prunescope.nsa.patching import intact_prompt

    intact = intact_prompt(model, adapter, example, [0, 1])
    return intact if resume else dataclasses.replace(intact, below={})


@pytest.mark.parametrize("choices", ["single-token", "multi-token"])
@pytest.mark.parametrize("family", ["llama", "opt", *FAMILIES, "gemma3_text-wide-window"])
def test_patched_forwards_resume_at_their_lowest_patched_layer(tiny_tokenizer, family, choices):
    """patched_effects from the intact pass's block outputs (resume_points): rows patching layer 0 and layer 1 in
    one batch give the full forwards' numbers, and rows patching layer 1 only really skip block 0 (wrecking its
    weights after the intact pass changes nothing). With multi-token choices too: the skipped block's key/value
    states come from the whole prompt's cache and the choices' continuation resumes from the intact one's block
    output; on Gemma 3 with 4-token windows (the prompt's early states evicted from that cache) nothing resumes."""
    from prunescope.nsa.patching import patched_effects

    wide = family.endswith("-wide-window")
    family = family.removesuffix("-wide-window")
    model, adapter = make_tiny_model(family, VOCAB, window=64 if wide else 4), get_family(family)
    multi = examples(tiny_tokenizer)[1]
    example = multi if choices == "multi-token" else Example(multi.prompt, [[5], [17], [40]], 1, "correct")
    length = len(example.prompt.input_ids)
    values = torch.linspace(-2.0, 2.0, length)
    patches = [[(1, 3, values)], [(0, 7, values)], [(1, 9, -values), (0, 2, values)], [(1, 60, values)]]
    with torch.no_grad():
        plain = patched_effects(_intact(model, adapter, example, resume=False), patches, 2)
        intact = _intact(model, adapter, example, resume=True)
        assert patched_effects(intact, patches, 2) == pytest.approx(plain, abs=1e-5)
        assert max(map(abs, plain)) > 1e-3  # the patches move the margin: the comparison can fail
        evicted = family == "gemma3_text" and not wide and choices == "multi-token"
        assert intact.resumable() == (not evicted)
        if evicted:
            return
        for parameter in adapter.blocks(model)[0].parameters():
            parameter.mul_(-3.0)
        assert patched_effects(intact, [patches[0], patches[3]], 2) == pytest.approx([plain[0], plain[3]], abs=1e-5)


@pytest.mark.parametrize("choices", ["single-token", "multi-token"])
@pytest.mark.parametrize("family", ["llama", "opt", *FAMILIES, "gemma3_text-wide-window"])
def test_patched_forwards_start_at_the_first_changed_position(tiny_tokenizer, family, choices):
    """patched_effects given each row's first changed position (`starts`) runs the prompt from its batch's earliest
    start, after the intact prefix's key/value cache: the full forwards' numbers for rows of different starts in one
    batch, resumed at a layer or not, with single- and multi-token choices, and nnsight's activation patching of
    the plain model agrees (an independent oracle). Gemma 3 twice: 4-token windows (the prompt's early states
    evicted: a prefix forward per start) and a 64-token window (the whole prompt's cache cropped, sliding layers
    included; answers.PrefixCaches)."""
    from prunescope.nsa.neurons import token_activations
    from prunescope.nsa.patching import patched_effects

    wide = family.endswith("-wide-window")
    family = family.removesuffix("-wide-window")
    model, adapter = make_tiny_model(family, VOCAB, window=64 if wide else 4), get_family(family)
    multi = examples(tiny_tokenizer)[1]
    example = multi if choices == "multi-token" else Example(multi.prompt, [[5], [17], [40]], 1, "correct")
    ids = example.prompt.input_ids
    length = len(ids)
    assert length > 6

    def changed(layer: int, neuron: int, start: int) -> torch.Tensor:
        values = torch.tensor(token_activations(model, adapter, ids, layer, neuron))
        values[start:] += torch.linspace(1.0, 3.0, length - start)
        return values

    starts = [2, 5, 3, 1, length - 1]
    patches = [[(1, 3, changed(1, 3, 2))], [(0, 7, changed(0, 7, 5))],
               [(1, 9, changed(1, 9, 3)), (0, 2, changed(0, 2, 6))], [(1, 60, changed(1, 60, 1))],
               [(1, 11, changed(1, 11, length - 1))]]
    with torch.no_grad():
        whole = _intact(model, adapter, example, resume=False)
        plain = patched_effects(whole, patches, 2)
        assert max(map(abs, plain)) > 1e-3  # the patches move the margin: the comparison can fail
        assert patched_effects(whole, patches, 2, starts) == pytest.approx(plain, abs=1e-5)
        resumed = patched_effects(_intact(model, adapter, example, resume=True), patches, 3, starts)
        assert resumed == pytest.approx(plain, abs=1e-5)
        assert resumed == pytest.approx(_nnsight_effects(model, adapter, example, [0, 1], patches), abs=1e-4)
