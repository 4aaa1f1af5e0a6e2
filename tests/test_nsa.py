"""Neuron Semantic Attribution against a tiny model whose mechanism is planted by hand, so the truth is known.

Layer 0 of the planted model has three neurons (SPREAD) that read a marker dimension of the planted words through
the post-attention RMSNorm and together write the direction the output head reads as "positive": one feature
spread over several neurons. Without them every prompt reads "negative". One planted word takes two tokens
("wonder" + "##ful", the marker on the second), attention is on (random), and two near-silent neurons (SILENT)
fire a thousand times weaker but perfectly in step with the planted words. NSA must find the planted words by
occlusion, match them to SPREAD and never to SILENT, separate SPREAD from random neurons in its causal curve, and
see pruning of SPREAD's weights as their drop. One module (over 400 lines): every test reads this one planted model.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
import transformers as tf

from prunescope.data.prepare import write_manifest
from prunescope.evaluation import build_task
from prunescope.evaluation.harness import evaluate_model
from prunescope.io import write_jsonl
from prunescope.models.families import get_family
from prunescope.nsa.answers import choice_logprobs, gold_margin, mean_embedding, score_examples, variant_margins
from prunescope.nsa.causal import causal_curve, check_supply, k_values, random_neurons, ranked_neurons
from prunescope.nsa.compare import (
    drop_row,
    group_drop_fractions,
    match_scores,
    matched_pairs,
    semantic_retention,
    weighted_drop,
)
from prunescope.nsa.matching import (
    closed_form_association,
    fit_association,
    neuron_scale,
    top_words,
    zsums_from_activations,
    zsums_from_stats,
)
from prunescope.nsa.neurons import (
    LayerStats,
    ablated,
    activation_stats,
    recorded_outputs,
    resumed_at,
    token_activations,
)
from prunescope.nsa.prompts import Example, render_with_spans, tokenize_words
from prunescope.nsa.stages import heatmap_example, protected_neurons
from prunescope.nsa.words import influential_words, occurrence_attributions

PLANTED_WORDS = ["wonderful", "great", "superb"]
OTHER_WORDS = ["dull", "boring", "plain", "long", "slow", "odd"]
FILLER = ["the", "movie", "film", "was", "is", "acting", "plot", "really"]
MARKED = ["##ful", "great", "superb"]  # the token of each planted word that carries the marker
VOCAB = ["[UNK]", "[PAD]", "positive", "negative", "wonder", *MARKED, *OTHER_WORDS, *FILLER]
SPREAD, SILENT, LAYER, WIDTH = [7, 8, 9], [20, 21], 0, 32
LLAMA = get_family("llama")


@pytest.fixture(scope="module")
def word_tokenizer():
    """Whole words as tokens but "wonderful" = "wonder" + "##ful", with character offsets."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                      eos_token="[PAD]")


@pytest.fixture(scope="module")
def planted_model():
    config = tf.LlamaConfig(hidden_size=64, intermediate_size=WIDTH, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=len(VOCAB), max_position_embeddings=64,
                            tie_word_embeddings=False)
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        marked = [VOCAB.index(t) for t in MARKED]
        embed[:, :3] = 0
        embed[marked] = 0  # the marked tokens differ only in dimension 0
        embed[marked, 0] = 1.0
        embed[:, 2] = 0.5  # dimension 2 is on for every token: the default answer "negative" reads it
        mlp = model.model.layers[LAYER].mlp
        for proj in (mlp.gate_proj, mlp.up_proj):
            proj.weight *= 5  # the other neurons fire at a typical scale (std ~0.1-1), as in a trained model
            proj.weight[:, 0] = 0  # only the planted neurons read the marker
            proj.weight[SPREAD + SILENT] = 0
            proj.weight[SPREAD, 0] = 2.0
            proj.weight[SILENT, 0] = 0.03  # activation ~1e4 x weaker, in step with the marker
        mlp.down_proj.weight[:, SPREAD + SILENT] = 0
        # each writes dimension 1, read as "positive"; the sum of the three stays below the final RMSNorm's saturation
        mlp.down_proj.weight[1, SPREAD + SILENT] = 0.0025
        head = model.lm_head.weight
        head.zero_()
        head[VOCAB.index("positive"), 1] = 0.4
        head[VOCAB.index("negative"), 2] = 0.4
    return model


def texts(count: int = 24) -> list[tuple[str, int]]:
    """(text, label): texts ending in a planted word are positive (1), the others negative (0)."""
    out = []
    for i in range(count):
        words = [FILLER[(i + j) % len(FILLER)] for j in range(3)]
        last = PLANTED_WORDS[i % 3] if i % 2 == 0 else OTHER_WORDS[i % len(OTHER_WORDS)]
        out.append((" ".join([*words, last]), int(i % 2 == 0)))
    return out


def planted_examples(tokenizer, count: int = 24) -> list[Example]:
    choices = [tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in ("negative", "positive")]
    return [Example(tokenize_words(tokenizer, text), choices, label, ["negative", "positive"][label])
            for text, label in texts(count)]


def word_ids(examples: list[Example], vocabulary: list[str]) -> list[torch.Tensor]:
    return [torch.tensor([vocabulary.index(e.prompt.words[w]) if w >= 0 and e.prompt.words[w] in vocabulary else -1
                          for w in e.prompt.token_words]) for e in examples]


VOCABULARY = [*PLANTED_WORDS, *OTHER_WORDS]


@pytest.fixture(scope="module")
def dense_stats(planted_model, word_tokenizer):
    examples = planted_examples(word_tokenizer)
    return activation_stats(planted_model, LLAMA, examples, word_ids(examples, VOCABULARY), [LAYER, 1],
                            len(VOCABULARY), importance=True)


def test_tokens_are_merged_into_their_words(tiny_tokenizer, word_tokenizer):
    prompt = tokenize_words(tiny_tokenizer, "The movie was wonderful!")
    assert prompt.words == ["the", "movie", "was", "wonderful"]
    pieces = {}
    for token, word in zip(prompt.input_ids, prompt.token_words, strict=True):
        pieces.setdefault(word, []).append(token)
    assert tiny_tokenizer.decode(pieces[3]).strip() == "wonderful" and len(pieces[3]) > 1  # several sub-words
    assert tiny_tokenizer.decode(pieces[-1]) == "!"
    planted = tokenize_words(word_tokenizer, "the movie wonderful")
    assert planted.token_words == [0, 1, 2, 2] and planted.words[2] == "wonderful"


def test_template_words_are_not_candidates(tiny_tokenizer):
    text, fields = render_with_spans("Review: {input}\nSentiment:", {"input": "The movie was wonderful"})
    assert text == "Review: The movie was wonderful\nSentiment:" and fields == [(8, 31)]
    prompt = tokenize_words(tiny_tokenizer, text, fields)
    assert prompt.words == ["the", "movie", "was", "wonderful"]
    assert prompt.token_words[:2] == [-1, -1] and prompt.token_words[-1] == -1  # "Review" and "Sentiment" tokens


def test_planted_model_solves_its_task_only_through_the_spread_neurons(planted_model, word_tokenizer):
    examples = planted_examples(word_tokenizer)
    labels = [e.label for e in examples]
    margins, correct = score_examples(planted_model, examples)
    assert all(correct) and min(margins) > 0.3
    with ablated(planted_model, LLAMA, {LAYER: SPREAD}):
        assert score_examples(planted_model, examples)[1] == [label == 0 for label in labels]
    with ablated(planted_model, LLAMA, {LAYER: SPREAD[:1]}):  # one of three: the others still carry it
        assert all(score_examples(planted_model, examples)[1])
    with ablated(planted_model, LLAMA, {LAYER: SILENT}):
        assert all(score_examples(planted_model, examples)[1])


def test_choice_scores_and_accuracy_match_lm_eval(planted_model, word_tokenizer, tmp_path):
    """Our margin scorer's accuracy against lm-eval's (the independent oracle), intact and ablated."""
    records = [{"id": str(i), "input": text, "choices": ["negative", "positive"], "label": label}
               for i, (text, label) in enumerate(texts())]
    write_jsonl(tmp_path / "planted.jsonl", records)
    write_manifest(tmp_path / "planted.jsonl", {"dataset": "planted", "part": "evaluation"})
    name = build_task("planted", tmp_path / "planted.jsonl", "{input}", None, 0, tmp_path / "task")
    examples = planted_examples(word_tokenizer)
    for neurons in ({}, {LAYER: SPREAD[:2]}, {LAYER: SPREAD}):
        with ablated(planted_model, LLAMA, neurons):
            ours = sum(score_examples(planted_model, examples)[1]) / len(examples)
            assert ours == evaluate_model(planted_model, word_tokenizer, str(tmp_path / "task"), name, 8, 0,
                                          "cpu")["acc"]


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "opt", "gpt_neox"])
def test_choice_logprobs_sum_each_choices_tokens(family, tiny_tokenizer):
    """By hand from full forwards: multi-token choices continue from the prompts' cache, single-token ones are read
    at the last prompt position of right-padded rows."""
    from conftest import make_tiny_model

    model = make_tiny_model(family, len(tiny_tokenizer))
    encode = lambda text: tiny_tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    same_length = [encode("the film was"), encode("the film was")[::-1]]
    multi = [encode(c) for c in (" terrible", " wonderful and great", " no")]
    assert max(map(len, multi)) > 1
    with torch.no_grad():
        for prompts, choices in ((same_length, multi), ([encode("the film was"), encode("is the sky blue")],
                                                        [[5], [17], [40]])):
            got = choice_logprobs(model, prompts, choices)
            assert got.shape == (2, len(choices))
            for p, prompt in enumerate(prompts):
                for c, choice in enumerate(choices):
                    logits = torch.log_softmax(model(input_ids=torch.tensor([prompt + choice])).logits[0], -1)
                    expected = sum(float(logits[len(prompt) - 1 + i, t]) for i, t in enumerate(choice))
                    assert float(got[p, c]) == pytest.approx(expected, abs=1e-4)


def _tiny_examples(tokenizer, labels=(0, 2, 1)) -> list[Example]:
    """Prompts of different lengths, each with multi-token choices (one batch needs padding and packing)."""
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    choices = [encode(c) for c in (" terrible", " wonderful and great", " no")]
    prompts = ["the film was", "is the sky blue on a clear day", "she went home early because"]
    return [Example(tokenize_words(tokenizer, text), choices, label, "correct")
            for text, label in zip(prompts, labels, strict=True)]


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "opt", "gpt_neox"])
def test_packed_scores_equal_each_prompts_own_forward(family, tiny_tokenizer):
    """score_examples packs prompts of different lengths with all their choices in one batch: the same margins as
    scoring each prompt alone (choice_logprobs, checked by hand above), and the argmax as accuracy."""
    from conftest import make_tiny_model

    model = make_tiny_model(family, len(tiny_tokenizer))
    examples = _tiny_examples(tiny_tokenizer)
    margins, correct = score_examples(model, examples, batch_size=2)
    with torch.no_grad():
        for example, got, right in zip(examples, margins, correct, strict=True):
            logprobs = choice_logprobs(model, [example.prompt.input_ids], example.choices)
            assert got == pytest.approx(float(gold_margin(model, example, torch.tensor([example.prompt.input_ids]))),
                                        abs=1e-4)
            assert right == (int(logprobs[0].argmax()) == example.label)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "opt", "gpt_neox"])
@pytest.mark.parametrize("multi_token", [False, True])
def test_variant_margins_equal_a_full_forward_per_variant(family, multi_token, tiny_tokenizer):
    """Occlusion's shared-prefix scorer against gold_margin on each variant alone: an unchanged row, rows changed at
    the first, a middle and the last token, and one changed in two places."""
    from conftest import make_tiny_model

    model = make_tiny_model(family, len(tiny_tokenizer))
    (example, *_) = _tiny_examples(tiny_tokenizer, labels=(1, 0, 0))
    if not multi_token:
        example = Example(example.prompt, [[5], [17], [40]], 1, "correct")
    prompt = example.prompt.input_ids
    pad = tiny_tokenizer.pad_token_id
    variants = [list(prompt)]
    for changed in ([0], [len(prompt) // 2], [len(prompt) - 1], [1, len(prompt) - 1]):
        variants.append([pad if i in changed else t for i, t in enumerate(prompt)])
    with torch.no_grad():
        got = variant_margins(model, example, torch.tensor(variants))
        for row, variant in enumerate(variants):
            expected = float(gold_margin(model, example, torch.tensor([variant]))[0])
            assert float(got[row]) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("family", ["llama", "opt", "gpt_neox"])
def test_resumed_forward_skips_the_blocks_below_and_changes_nothing(family, tiny_tokenizer):
    """With block 0's output recorded on the intact pass, an ablation in block 1 resumed there gives the full
    forward's scores, and block 0 really is skipped (wrecking its weights changes nothing)."""
    from conftest import make_tiny_model

    model = make_tiny_model(family, len(tiny_tokenizer))
    adapter = get_family(family)
    examples = _tiny_examples(tiny_tokenizer)
    neurons = {1: [3, 5, 60]}
    with torch.no_grad():
        with ablated(model, adapter, neurons):
            expected = score_examples(model, examples, batch_size=3)
        with recorded_outputs(model, adapter, [0]) as below:
            intact = score_examples(model, examples, batch_size=3)
        assert expected != intact
        for parameter in adapter.blocks(model)[0].parameters():
            parameter.mul_(-3.0)
        with resumed_at(model, adapter, 1, below[0]), ablated(model, adapter, neurons):
            resumed = score_examples(model, examples, batch_size=3)
        assert resumed[1] == expected[1]
        assert resumed[0] == pytest.approx(expected[0], abs=1e-5)
        assert score_examples(model, examples, batch_size=3) != intact  # block 0 runs again outside the block


def test_causal_curve_resumed_above_layer_0_equals_plain_ablation(tiny_tokenizer):
    """The curve's numbers for neurons of layer 1 (resumed from the recorded block 0) against scoring the model
    with the same neurons ablated from scratch."""
    from conftest import make_tiny_model

    model = make_tiny_model("llama", len(tiny_tokenizer))
    examples = _tiny_examples(tiny_tokenizer) * 3
    scores = {0: torch.zeros(2, 128), 1: torch.zeros(2, 128)}
    scores[1][0, [10, 20]] = torch.tensor([2.0, 1.0])
    scores[0][1, 30] = 0.5
    matched = {0: [30], 1: [10, 20]}
    means = {layer: torch.rand(128) for layer in (0, 1)}
    result = causal_curve(model, get_family("llama"), examples, scores, matched, means, 128, limit=3, draws=2,
                          seed=0, batch_size=4)
    margin0, acc0 = (float(torch.tensor(v, dtype=torch.float64).mean()) for v in score_examples(model, examples))
    for point in result["curve"]:
        neurons = {int(layer): found for layer, found in point["matched"].items()}
        with ablated(model, get_family("llama"), neurons, None if point["ablation"] == "zero" else means):
            margins, correct = score_examples(model, examples)
        assert point["matched_margin_change"] == pytest.approx(sum(margins) / len(margins) - margin0, abs=1e-5)
        assert point["matched_acc_change"] == pytest.approx(sum(correct) / len(correct) - acc0, abs=1e-9)
    assert [p["matched"] for p in result["curve"] if p["k"] == 3][0] == {"0": [30], "1": [10, 20]}


def test_occlusion_is_the_margins_fall_when_a_words_tokens_are_replaced(planted_model, word_tokenizer):
    example = planted_examples(word_tokenizer)[0]  # "the movie film wonderful": "wonderful" is two tokens
    baseline = mean_embedding(planted_model)
    scores = occurrence_attributions(planted_model, example, "occlusion", baseline, batch_size=3, steps=1)
    ids = torch.tensor([example.prompt.input_ids])
    with torch.no_grad():
        intact = float(gold_margin(planted_model, example, ids)[0])
        for word in range(len(example.prompt.words)):
            embeds = planted_model.get_input_embeddings()(ids)
            embeds[0, torch.tensor(example.prompt.token_words) == word] = baseline
            fallen = intact - float(gold_margin(planted_model, example, ids, embeds)[0])
            assert scores[word] == pytest.approx(fallen, abs=1e-5)
    assert max(scores, key=scores.get) == 3 and scores[3] > 1.0  # the planted word decides the answer


def test_integrated_gradients_are_complete(planted_model, word_tokenizer):
    """IG's attributions sum to f(input) - f(baseline) (here every word is replaced, the template is empty)."""
    example = planted_examples(word_tokenizer)[0]
    baseline = mean_embedding(planted_model.double())
    scores = occurrence_attributions(planted_model, example, "integrated_gradients", baseline, 16, steps=128)
    planted_model.float()
    ids = torch.tensor([example.prompt.input_ids])
    with torch.no_grad():
        start = baseline.float().expand(1, ids.shape[1], -1)
        total = float(gold_margin(planted_model, example, ids)[0] - gold_margin(planted_model, example, ids, start)[0])
    assert sum(scores.values()) == pytest.approx(total, rel=2e-2)
    assert max(scores, key=scores.get) == 3


def test_gradient_x_input_misses_a_word_read_through_a_norm_and_occlusion_does_not(planted_model, word_tokenizer):
    """The planted words act only through RMSNorm-ed inputs, where e . grad f(e) cancels: gradient x input gives
    them a small or wrong-signed share of the effect that occluding them has."""
    baseline = mean_embedding(planted_model)
    for example in planted_examples(word_tokenizer)[:6:2]:
        occlusion = occurrence_attributions(planted_model, example, "occlusion", baseline, 8, 1)[3]
        gradient = occurrence_attributions(planted_model, example, "gradient_x_input", baseline, 8, 1)[3]
        assert occlusion > 1.0 and gradient < 0.1 * occlusion  # near zero or of the wrong sign


def test_occlusion_finds_the_planted_words_and_their_group(planted_model, word_tokenizer):
    examples, baseline = planted_examples(word_tokenizer), mean_embedding(planted_model)
    vocabulary = influential_words(planted_model, examples, top_k=1, min_count=2, method="occlusion",
                                   baseline=baseline, batch_size=8, steps=1)
    assert set(PLANTED_WORDS) <= set(vocabulary)  # (a negative example's top word is noise)
    assert {vocabulary[w]["group"] for w in PLANTED_WORDS} == {"positive"}
    noise = max(entry["mean_attribution"] for word, entry in vocabulary.items() if word not in PLANTED_WORDS)
    assert min(vocabulary[w]["mean_attribution"] for w in PLANTED_WORDS) > 3 * noise
    # a negative example's last word moves the margin by < 1 nat against the mean embedding (which carries a
    # little of the marker: 3 marked tokens of 21); the attribution floor keeps those out
    assert set(influential_words(planted_model, examples, 1, 2, "occlusion", baseline, 8, 1, floor=1.0)) == set(
        PLANTED_WORDS)


def test_influential_words_keep_top_k_pool_by_count_and_group_by_label(word_tokenizer, monkeypatch):
    """Attributions set by hand per word; the pooling, counting and grouping are what is checked."""
    push = {"wonderful": 3.0, "great": 2.0, "the": 0.5, "dull": 4.0, "boring": 1.0, "movie": -1.0}
    fake = lambda model, example, *args: {i: push.get(w, 0.0) for i, w in enumerate(example.prompt.words)}  # noqa
    monkeypatch.setattr("prunescope.nsa.words.occurrence_attributions", fake)
    labels = ["positive", "positive", "negative", "negative", "negative"]
    examples = [Example(tokenize_words(word_tokenizer, text), [], 0, label) for text, label in
                zip(["the movie wonderful great", "the great wonderful", "the dull boring", "movie dull", "the boring"],
                    labels, strict=True)]
    vocabulary = influential_words(None, examples, top_k=2, min_count=2, method="occlusion", baseline=None,
                                   batch_size=1, steps=1)
    assert vocabulary == {
        "wonderful": {"group": "positive", "count": 2, "mean_attribution": 3.0},
        "great": {"group": "positive", "count": 2, "mean_attribution": 2.0},
        "dull": {"group": "negative", "count": 2, "mean_attribution": 4.0},
        "boring": {"group": "negative", "count": 2, "mean_attribution": 1.0},
    }  # "the" is kept only where it is among the top 2 (once: "the boring"); "movie" pushes away
    # a share floor of 0.4 of the example's total |attribution| keeps great (2.0 of 5.5 or 6.5) nowhere and boring
    # (1.0 of 1.5) once; an absolute floor of 2.5 nats keeps neither anywhere
    shared = influential_words(None, examples, 2, 2, "occlusion", None, 1, 1, share=0.4)
    assert {word: entry["count"] for word, entry in shared.items()} == {"wonderful": 2, "dull": 2}
    assert set(influential_words(None, examples, 2, 2, "occlusion", None, 1, 1, floor=2.5)) == {"wonderful", "dull"}


def test_streamed_statistics_equal_the_in_memory_ones():
    torch.manual_seed(3)
    activations = torch.randn(300, 12) * torch.linspace(0.01, 5, 12)
    words = torch.randint(-1, 4, (300,))
    stats = LayerStats.empty(4, 12, importance=False)
    for part in range(0, 300, 70):  # uneven "examples"
        stats.add(activations[part:part + 70], words[part:part + 70], None)
    assert torch.allclose(stats.mean, activations.double().mean(0))
    assert torch.allclose(stats.std, activations.double().std(0, unbiased=False))
    z = (activations.double() - activations.double().mean(0)) / neuron_scale(stats.std, 1.0)
    streamed = zsums_from_stats([stats], floor=1.0)
    for w in range(4):
        assert torch.allclose(streamed.word_sums[0, w], z[words == w].sum(0))
    assert float(streamed.squares[0]) == pytest.approx(float((z ** 2).sum()))


def test_the_std_floor_is_the_layers_median_scale():
    std = torch.tensor([0.001, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    assert neuron_scale(std, 1.0).tolist() == [1.0, 1.0, 1.0, 2.0, 4.0]
    assert neuron_scale(std, 0.0).tolist()[1:] == std.tolist()[1:]


def test_fitted_association_matches_the_closed_form():
    torch.manual_seed(1)
    z = torch.randn(400, 12)
    token_words = torch.randint(-1, 5, (400,))
    z[token_words == 2, 3] += 3.0  # word 2 drives neuron 3
    sums = zsums_from_activations(z, token_words, 5)
    fitted = fit_association(sums, epochs=3000, lr=0.02, lam=0.002)[0]
    exact = closed_form_association(sums, lam=0.002)[0]
    assert torch.allclose(fitted, exact, atol=2e-3)
    assert (fitted >= 0).all() and (exact == 0).float().mean() > 0.3  # non-negative, and sparse
    assert int(torch.argmax(exact[2])) == 3


def test_layers_fitted_together_get_exactly_their_own_fits():
    torch.manual_seed(2)
    token_words = torch.randint(-1, 5, (200,))
    layers = [LayerStats.empty(5, 12, importance=False) for _ in range(3)]
    for layer in layers:
        layer.add(torch.randn(200, 12), token_words, None)
    together = fit_association(zsums_from_stats(layers, 1.0), epochs=50, lr=0.05, lam=0.01, seed=7)
    for index, layer in enumerate(layers):
        alone = fit_association(zsums_from_stats([layer], 1.0), epochs=50, lr=0.05, lam=0.01, seed=7)[0]
        assert torch.equal(together[index], alone)


def test_matching_names_the_spread_neurons_and_never_a_silent_one(dense_stats):
    layer = dense_stats[LAYER]
    association = fit_association(zsums_from_stats([layer], 1.0), epochs=600, lr=0.05, lam=0.01)[0]
    importance = layer.word_importance / layer.word_counts.clamp_min(1)[:, None]
    pairs = matched_pairs(match_scores(association, importance), k=3)
    for word in range(3):
        assert {n for w, n in pairs if w == word} == set(SPREAD)
    assert not {n for _, n in pairs} & set(SILENT)
    for neuron in SPREAD:
        assert {w for w, _ in top_words(association, VOCABULARY, 3)[neuron]} == set(PLANTED_WORDS)
    # what the floor prevents: a plain z-score gives the silent neurons the planted neurons' association
    plain = fit_association(zsums_from_stats([layer], 0.0), epochs=600, lr=0.05, lam=0.01)[0]
    assert (plain[:3, SILENT].min(1).values > 0.5 * plain[:3, SPREAD].max(1).values).all()
    assert (association[:3, SILENT].max(1).values < 0.1 * association[:3, SPREAD].min(1).values).all()
    assert importance[:3, SPREAD].min() > 10 * importance[:3, SILENT].max() > 0


def test_importance_is_the_first_order_ablation_effect(planted_model, word_tokenizer, dense_stats):
    """Zeroing a spread neuron lowers the mean margin by about its recorded importance (activation x gradient)."""
    examples = planted_examples(word_tokenizer)
    intact = sum(score_examples(planted_model, examples)[0]) / len(examples)
    with ablated(planted_model, LLAMA, {LAYER: SPREAD[:1]}):
        fall = intact - sum(score_examples(planted_model, examples)[0]) / len(examples)
    recorded = float(dense_stats[LAYER].neuron_importance[SPREAD[0]])
    assert fall > 0.1 and recorded == pytest.approx(fall, rel=0.35)


def test_causal_curve_separates_the_spread_neurons_from_random(planted_model, word_tokenizer, dense_stats):
    examples = planted_examples(word_tokenizer)
    scores = {LAYER: torch.zeros(3, WIDTH)}
    scores[LAYER][:, SPREAD] = torch.tensor([3.0, 2.0, 1.0])
    matched = {LAYER: SPREAD}
    result = causal_curve(planted_model, LLAMA, examples, scores, matched, {LAYER: dense_stats[LAYER].mean.float()},
                          WIDTH, limit=3, draws=6, seed=0)
    assert result["acc"] == 1.0 and [p["k"] for p in result["curve"]] == [1, 1, 2, 2, 3, 3]
    for point in result["curve"]:
        assert point["matched_margin_change"] < 0 and point["random_margin_change"]["low"] <= \
            point["random_margin_change"]["mean"] <= point["random_margin_change"]["high"]
        assert set(point["matched"]) == {str(LAYER)} and set(point["matched"][str(LAYER)]) <= set(SPREAD)
        matched, random = point["per_example"].values()  # the means above, example by example (claims' paired test)
        assert len(matched) == len(examples) and len(random) == 6 and {len(draw) for draw in random} == {len(examples)}
        assert sum(matched) / len(matched) == pytest.approx(point["matched_margin_change"])
        assert sum(map(sum, random)) / (6 * len(examples)) == pytest.approx(point["random_margin_change"]["mean"])
    last = [p for p in result["curve"] if p["k"] == 3]
    for point in last:  # zero and mean ablation of the whole feature
        assert point["matched_acc_change"] == -0.5
        assert point["matched_margin_change"] < point["random_margin_change"]["low"] - 1.0


def test_k_values_and_random_draws():
    assert k_values(1) == [1] and k_values(8) == [1, 2, 4, 8] and k_values(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    import random

    rng = random.Random(3)
    control = random_neurons({0: 3, 5: 1}, {0: [1, 2, 3], 5: [0]}, width=10, rng=rng)
    assert [len(control[0]), len(control[5])] == [3, 1]
    assert not set(control[0]) & {1, 2, 3} and control[5] != [0]
    assert control == random_neurons({0: 3, 5: 1}, {0: [1, 2, 3], 5: [0]}, 10, random.Random(3))


def test_ablating_more_neurons_than_the_layers_supply_is_one_clear_error():
    scores = {0: torch.tensor([[3.0, 2.0, 1.0, 0.0]])}
    ranked = ranked_neurons(scores, {0: [0, 1, 2]})
    assert ranked == [(0, 0), (0, 1), (0, 2)]
    with pytest.raises(ValueError, match="nsa.ablate_neurons is 4, but only 3 neurons are matched"):
        check_supply(ranked, {0: [0, 1, 2]}, width=8, limit=4)
    with pytest.raises(ValueError, match="3 random neurons in layer 0, which has only 1 unmatched of 4"):
        check_supply(ranked, {0: [0, 1, 2]}, width=4, limit=3)
    check_supply(ranked, {0: [0, 1, 2]}, width=6, limit=3)


def test_pruning_the_spread_neurons_weights_shows_as_their_drop(planted_model, word_tokenizer, dense_stats):
    """Zeroing half of each spread neuron's gate and up weights (its marker read) cuts it to zero; the silent and
    random neurons keep their activations."""
    examples = planted_examples(word_tokenizer)
    pruned_model = copy.deepcopy(planted_model)
    with torch.no_grad():
        for proj in (pruned_model.model.layers[LAYER].mlp.gate_proj, pruned_model.model.layers[LAYER].mlp.up_proj):
            proj.weight[SPREAD, 0] = 0.0
    pruned = activation_stats(pruned_model, LLAMA, examples, word_ids(examples, VOCABULARY), [LAYER],
                              len(VOCABULARY))[LAYER]
    dense = dense_stats[LAYER]
    importance = dense.word_importance / dense.word_counts.clamp_min(1)[:, None]
    pairs = [(w, n) for w in range(3) for n in SPREAD] + [(0, 3)]
    before, after = dense.word_means(), pruned.word_means()
    drops = [drop_row(w, n, float(before[w, n]), float(after[w, n]), float(importance[w, n])) for w, n in pairs]
    assert all(row["relative_drop"] == pytest.approx(1.0, abs=1e-3) for row in drops[:-1])
    assert drops[-1]["relative_drop"] == pytest.approx(0.0, abs=1e-4)  # an unplanted neuron keeps its activation
    assert weighted_drop(drops) > 0.99  # the untouched neuron carries no importance
    groups = ["positive"] * 3 + ["negative"] * 6
    by_group = group_drop_fractions(drops, groups, threshold=0.5)
    assert by_group["positive"]["pairs"] == 10 and by_group["positive"]["fraction_dropped"] == 0.9
    assert by_group["positive"]["weighted_fraction_dropped"] > 0.99
    refitted = fit_association(zsums_from_stats([pruned], 1.0), 600, 0.05, 0.01)[0]
    original = fit_association(zsums_from_stats([dense], 1.0), 600, 0.05, 0.01)[0]
    retention = semantic_retention(original, refitted)
    assert all(retention.get(n, 0.0) < 0.5 for n in SPREAD)  # the spread neurons no longer mean the planted words


def test_heatmap_example_shows_the_best_matched_neuron_on_its_word(planted_model, word_tokenizer):
    examples = planted_examples(word_tokenizer)
    matches = [{"layer": LAYER, "neuron": 8, "word": "superb", "score": 2.0},
               {"layer": LAYER, "neuron": 7, "word": "wonderful", "score": 1.0}]
    example = heatmap_example(planted_model, LLAMA, word_tokenizer, examples, VOCABULARY, matches)
    assert (example["layer"], example["neuron"], example["word"]) == (LAYER, 8, "superb")
    text = texts()[example["example"]][0]
    assert text.endswith("superb") and example["tokens"] == text.split()
    assert example["key_tokens"] == [3] and max(example["dense"]) == example["dense"][3]
    assert example["dense"] == pytest.approx(token_activations(planted_model, LLAMA, examples[example["example"]]
                                                               .prompt.input_ids, LAYER, 8), abs=1e-4)


def test_protected_neurons_pool_each_words_matched_neurons(tmp_path):
    from safetensors.torch import save_file

    from prunescope.io import sha256_file, write_result

    paths = []
    for name, association, importance in (
            ("a", torch.tensor([[0.0, 2.0, 1.0], [0.5, 0.0, 0.0]]), torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])),
            ("b", torch.tensor([[0.0, 1.0, 3.0]]), torch.tensor([[0.0, -1.0, 1.0]]))):
        path = tmp_path / f"{name}.safetensors"
        save_file({"association4": association, "importance4": importance, "mean4": torch.zeros(3)}, path)
        write_result(path.with_suffix(".json"), {"sha256": sha256_file(path)})
        paths.append(str(path))
    assert protected_neurons(paths, k=1) == {4: [0, 1, 2]}
    assert protected_neurons(paths[:1], k=2) == {4: [0, 1, 2]}
    assert protected_neurons(paths[1:], k=2) == {4: [2]}  # no importance or no association: never matched


MEMORY_PROBE = """
import json, resource, sys, torch, transformers as tf
from prunescope.models.families import get_family
from prunescope.nsa.neurons import activation_stats
from prunescope.nsa.prompts import Example, TokenizedPrompt
torch.manual_seed(0)
torch.set_num_threads(1)
config = tf.LlamaConfig(hidden_size=64, intermediate_size=8192, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=100)
model = tf.LlamaForCausalLM(config).eval()
examples = [Example(TokenizedPrompt(list(range(i % 7, i % 7 + 32)), [t % 50 for t in range(32)], []), [[1]], 0, "g")
            for i in range(250)]
words = [torch.tensor(e.prompt.token_words) for e in examples]
growth = {}
for count in (2, 8, 250):  # the first run only warms up the allocator
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    activation_stats(model, get_family("llama"), examples[:count], words[:count], [0, 1], 50)
    growth[count] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(growth))
"""


def test_activation_statistics_memory_is_flat_in_the_number_of_examples():
    """250 examples x 32 tokens x 2 layers x 8,192 neurons would be 500 MiB held as activations; streamed, the peak
    stays within a few MiB of 8 examples' (measured in a fresh process)."""
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, check=True,
                         timeout=300)
    growth = json.loads(out.stdout.strip().splitlines()[-1])
    assert growth["250"] < 40, growth  # the high-water mark set by 8 examples moves by less than 40 MiB


def test_both_matchings_find_a_word_read_through_a_norm_at_its_own_token(planted_model, word_tokenizer):
    """The spread neurons read the planted words at the words' own tokens (through the norm), here the last token:
    mediated matching pairs every planted word with all three, and so does the paper's matching (recorded beside it,
    stages._paper_matching), which sees neurons only at the word's tokens; patched at the last prompt token alone
    they carry the whole exact effect, since that is where the word is. The positive case of the comparison the
    planted attention model fails (tests/test_nsa_planted.py: there the paper's matching makes none of the pairs)."""
    from prunescope.nsa.mediation import MediationOptions, mediated_matches, mediation_sums
    from prunescope.nsa.options import PaperOptions
    from prunescope.nsa.stages import _paper_matching

    examples = planted_examples(word_tokenizer, 12)
    groups = ["positive"] * len(PLANTED_WORDS) + ["negative"] * len(OTHER_WORDS)
    sums = mediation_sums(planted_model, LLAMA, examples, VOCABULARY, [LAYER, 1], MediationOptions(0.1, 0.1, 8, 8))
    matches = mediated_matches(sums, VOCABULARY, groups, [LAYER, 1], 0.1, 0.1)
    stats = activation_stats(planted_model, LLAMA, examples, word_ids(examples, VOCABULARY), [LAYER, 1],
                             len(VOCABULARY), importance=True)
    paper = {(m["word"], m["layer"], m["neuron"]) for m in _paper_matching(
        stats, VOCABULARY, groups, PaperOptions(1.0, 600, 0.05, 0.01, 3, 0))[2]}
    planted = {(word, LAYER, neuron) for word in PLANTED_WORDS for neuron in SPREAD}
    assert planted <= {(m["word"], m["layer"], m["neuron"]) for m in matches} and planted <= paper
    for match in matches:
        if (match["word"], match["layer"], match["neuron"]) in planted:
            assert match["exact_last_token"] == pytest.approx(match["exact"], rel=0.01)
