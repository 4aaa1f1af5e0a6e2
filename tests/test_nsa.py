"""Neuron Semantic Attribution on a tiny model with one planted neuron that fires on a known word set.

The model is built by hand so the truth is known: layer 0's neuron PLANTED fires on PLANTED_WORDS and writes a
direction that the output head reads as "positive"; without it every prompt reads "negative". NSA must find that
neuron and those words, and ablating it must hurt the planted task more than ablating a random neuron.
"""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from prunescope.data.prepare import write_manifest
from prunescope.evaluation import build_task
from prunescope.io import write_jsonl
from prunescope.models.families import get_family
from prunescope.nsa.causal import ablation_accuracies, random_neurons
from prunescope.nsa.compare import activation_drops, group_drop_fractions, matched_pairs, semantic_retention
from prunescope.nsa.matching import closed_form_association, fit_association, top_neurons, top_words, zscore
from prunescope.nsa.neurons import ablated, mlp_activations
from prunescope.nsa.run import heatmap_example, protected_neurons
from prunescope.nsa.words import influential_words, render_with_spans, token_attributions, tokenize_words

PLANTED_WORDS = ["wonderful", "great", "superb"]
OTHER_WORDS = ["dull", "boring", "plain", "long", "slow", "odd"]
FILLER = ["the", "movie", "film", "was", "is", "acting", "plot", "really"]
WORDS = ["[UNK]", "[PAD]", "positive", "negative", *PLANTED_WORDS, *OTHER_WORDS, *FILLER]
PLANTED, LAYER = 7, 0
LLAMA = get_family("llama")


@pytest.fixture(scope="module")
def word_tokenizer():
    """One token per word, with character offsets: NSA's word merging is then exact and easy to check."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                      eos_token="[PAD]")


@pytest.fixture(scope="module")
def planted_model():
    config = tf.LlamaConfig(hidden_size=64, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=len(WORDS), max_position_embeddings=64,
                            tie_word_embeddings=False)
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        planted = [WORDS.index(w) for w in PLANTED_WORDS]
        embed[:, :3] = 0
        embed[planted] = 0  # the planted words differ only in dimension 0, which marks them
        embed[planted, 0] = 1.0
        embed[:, 2] = 0.5  # dimension 2 is on for every token: the default answer "negative" reads it
        mlp = model.model.layers[LAYER].mlp
        for proj in (mlp.gate_proj, mlp.up_proj):
            proj.weight[:, 0] = 0  # only the planted neuron reads the marker
            proj.weight[PLANTED] = 0
            proj.weight[PLANTED, 0] = 2.0
        mlp.down_proj.weight[:, PLANTED] = 0
        mlp.down_proj.weight[1, PLANTED] = 1.0  # the neuron writes dimension 1, read as "positive"
        head = model.lm_head.weight
        head.zero_()
        head[WORDS.index("positive"), 1] = 0.4  # margins of ~3 nats: saturated logits give no gradient
        head[WORDS.index("negative"), 2] = 0.4
    return model


def examples(count: int = 24) -> list[tuple[str, int]]:
    """(text, label): texts ending in a planted word are positive (1), the others negative (0)."""
    out = []
    for i in range(count):
        words = [FILLER[(i + j) % len(FILLER)] for j in range(3)]
        last = PLANTED_WORDS[i % 3] if i % 2 == 0 else OTHER_WORDS[i % len(OTHER_WORDS)]
        out.append((" ".join([*words, last]), int(i % 2 == 0)))
    return out


def test_tokens_are_merged_into_their_words(tiny_tokenizer):
    prompt = tokenize_words(tiny_tokenizer, "The movie was wonderful!")
    assert prompt.words == ["the", "movie", "was", "wonderful"]
    pieces = {}
    for token, word in zip(prompt.input_ids, prompt.token_words, strict=True):
        pieces.setdefault(word, []).append(token)
    assert tiny_tokenizer.decode(pieces[3]).strip() == "wonderful" and len(pieces[3]) > 1  # several sub-words
    assert tiny_tokenizer.decode(pieces[-1]) == "!"


def test_template_words_are_not_candidates(tiny_tokenizer):
    text, fields = render_with_spans("Review: {input}\nSentiment:", {"input": "The movie was wonderful"})
    assert text == "Review: The movie was wonderful\nSentiment:" and fields == [(8, 31)]
    prompt = tokenize_words(tiny_tokenizer, text, fields)
    assert prompt.words == ["the", "movie", "was", "wonderful"]
    assert prompt.token_words[:2] == [-1, -1] and prompt.token_words[-1] == -1  # "Review" and "Sentiment" tokens


def test_fitted_association_matches_the_closed_form():
    torch.manual_seed(1)
    z = torch.randn(400, 12)
    token_words = torch.randint(-1, 5, (400,))
    z[token_words == 2, 3] += 3.0  # word 2 drives neuron 3
    fitted = fit_association(z, token_words, 5, epochs=3000, lr=0.02, lam=0.002)
    exact = closed_form_association(z, token_words, 5, lam=0.002)
    assert torch.allclose(fitted, exact, atol=2e-3)
    assert (fitted >= 0).all() and (exact == 0).float().mean() > 0.3  # non-negative, and sparse
    assert int(torch.argmax(exact[2])) == 3


def test_layers_fitted_together_get_exactly_their_own_fits():
    torch.manual_seed(2)
    z = torch.randn(3, 200, 12)
    token_words = torch.randint(-1, 5, (200,))
    together = fit_association(z, token_words, 5, epochs=50, lr=0.05, lam=0.01, seed=7)
    for layer in range(3):
        assert torch.equal(together[layer], fit_association(z[layer], token_words, 5, 50, 0.05, 0.01, seed=7))


def test_planted_model_solves_its_task_only_through_the_planted_neuron(planted_model, word_tokenizer):
    positive, negative = WORDS.index("positive"), WORDS.index("negative")

    def predictions():
        out = []
        for text, _ in examples():
            logits = planted_model(input_ids=torch.tensor([word_tokenizer(text)["input_ids"]])).logits[0, -1]
            out.append(int(logits[positive] > logits[negative]))
        return out

    labels = [label for _, label in examples()]
    with torch.no_grad():
        assert predictions() == labels
        with ablated(planted_model, LLAMA, {LAYER: [PLANTED]}):
            assert predictions() == [0] * len(labels)


def test_gradient_x_input_is_the_derivative_along_each_embedding(tiny_llama, tiny_tokenizer):
    """sum_i e_i * d f / d e_i equals d f(alpha * e_j) / d alpha at alpha = 1: checked by central differences."""
    tiny_llama = tiny_llama.double()
    prompt = tiny_tokenizer("the film was terrible", add_special_tokens=False)["input_ids"]
    answer = tiny_tokenizer(" negative", add_special_tokens=False)["input_ids"]
    attributions = token_attributions(tiny_llama, prompt, answer)
    embeddings = tiny_llama.get_input_embeddings()(torch.tensor([prompt + answer])).detach()

    def log_prob(scaled: int, alpha: float) -> float:
        inputs = embeddings.clone()
        inputs[0, scaled] *= alpha
        with torch.no_grad():
            log_probs = torch.log_softmax(tiny_llama(inputs_embeds=inputs).logits[0], dim=-1)
        return sum(float(log_probs[len(prompt) - 1 + i, token]) for i, token in enumerate(answer))

    step = 1e-2  # parts of the forward (rotary tables) stay fp32, so smaller steps only add rounding noise
    for position in range(len(prompt)):
        numeric = (log_prob(position, 1 + step) - log_prob(position, 1 - step)) / (2 * step)
        assert float(attributions[position]) == pytest.approx(numeric, rel=2e-3, abs=1e-6)


def test_influential_words_keep_top_k_pool_by_count_and_group_by_label(word_tokenizer, monkeypatch):
    """Attributions set by hand per word; the pooling, counting and grouping are what is checked."""
    push = {"wonderful": 3.0, "great": 2.0, "the": 0.5, "dull": 4.0, "boring": 1.0, "movie": -1.0}
    fake = lambda model, ids, answer: torch.tensor([push.get(WORDS[i], 0.0) for i in ids])  # noqa: E731
    monkeypatch.setattr("prunescope.nsa.words.token_attributions", fake)
    prompts = [tokenize_words(word_tokenizer, text) for text in
               ["the movie wonderful great", "the great wonderful", "the dull boring", "movie dull", "the boring"]]
    labels = ["positive", "positive", "negative", "negative", "negative"]
    vocabulary = influential_words(None, word_tokenizer, prompts, labels, labels, top_k=2, min_count=2)
    assert vocabulary == {
        "wonderful": {"group": "positive", "count": 2, "mean_attribution": 3.0},
        "great": {"group": "positive", "count": 2, "mean_attribution": 2.0},
        "dull": {"group": "negative", "count": 2, "mean_attribution": 4.0},
        "boring": {"group": "negative", "count": 2, "mean_attribution": 1.0},
    }  # "the" is kept only where it is among the top 2 (once: "the boring"); "movie" pushes away


def test_matching_recovers_the_planted_neuron_and_its_words(planted_model, word_tokenizer):
    vocabulary = [*PLANTED_WORDS, *OTHER_WORDS]
    prompts = [tokenize_words(word_tokenizer, text) for text, _ in examples()]
    activations = mlp_activations(planted_model, LLAMA, [p.input_ids for p in prompts], [LAYER, 1])
    token_words = torch.tensor([vocabulary.index(p.words[i]) if i >= 0 and p.words[i] in vocabulary else -1
                                for p in prompts for i in p.token_words])
    for layer in (LAYER, 1):
        assert activations[layer].shape == (len(token_words), 32)
    z, _, _ = zscore(activations[LAYER])
    association = fit_association(z, token_words, len(vocabulary), epochs=600, lr=0.05, lam=0.01)
    assert {w for w, _ in top_words(association, vocabulary, 3)[PLANTED]} == set(PLANTED_WORDS)
    assert all(neurons[0] == PLANTED for neurons in top_neurons(association, 1)[:3])


def test_ablating_the_matched_neuron_hurts_more_than_a_random_one(planted_model, word_tokenizer, tmp_path):
    records = [{"id": str(i), "input": text, "choices": ["negative", "positive"], "label": label}
               for i, (text, label) in enumerate(examples())]
    write_jsonl(tmp_path / "planted.jsonl", records)
    write_manifest(tmp_path / "planted.jsonl", {"dataset": "planted", "part": "evaluation"})
    name = build_task("planted", tmp_path / "planted.jsonl", "{input}", None, 0, tmp_path / "task")
    result = ablation_accuracies(planted_model, word_tokenizer, LLAMA, str(tmp_path / "task"), name,
                                 {LAYER: [PLANTED]}, width=32, seed=0, batch_size=8, device="cpu")
    assert result["acc"] == 1.0 and result["acc_matched_ablated"] == 0.5
    assert result["matched_change"] < result["random_change"] - 0.4
    assert PLANTED not in result["random"][str(LAYER)]


def test_random_control_has_the_same_count_per_layer_and_avoids_the_matched():
    control = random_neurons({0: [1, 2, 3], 5: [0]}, width=10, seed=3)
    assert [len(control[0]), len(control[5])] == [3, 1]
    assert not set(control[0]) & {1, 2, 3} and control[5] != [0]
    assert control == random_neurons({0: [1, 2, 3], 5: [0]}, width=10, seed=3)


def test_dense_vs_pruned_reports_the_planted_neurons_drop(planted_model, word_tokenizer):
    """'Pruning' that halves the planted neuron's gate and up rows cuts its activation to about a quarter."""
    import copy

    vocabulary = [*PLANTED_WORDS, *OTHER_WORDS]
    groups = ["positive"] * 3 + ["negative"] * len(OTHER_WORDS)
    prompts = [tokenize_words(word_tokenizer, text) for text, _ in examples()]
    sequences = [p.input_ids for p in prompts]
    token_words = torch.tensor([vocabulary.index(p.words[i]) if i >= 0 and p.words[i] in vocabulary else -1
                                for p in prompts for i in p.token_words])
    pruned_model = copy.deepcopy(planted_model)
    with torch.no_grad():
        for proj in (pruned_model.model.layers[LAYER].mlp.gate_proj, pruned_model.model.layers[LAYER].mlp.up_proj):
            proj.weight[PLANTED] *= 0.5
    dense = mlp_activations(planted_model, LLAMA, sequences, [LAYER])[LAYER]
    pruned = mlp_activations(pruned_model, LLAMA, sequences, [LAYER])[LAYER]

    def fit(activations):
        return fit_association(zscore(activations)[0], token_words, len(vocabulary), epochs=600, lr=0.05, lam=0.01)

    dense_association, pruned_association = fit(dense), fit(pruned)
    pairs = [(w, n) for w, n in matched_pairs(dense_association, 1) if w < 3]
    assert [n for _, n in pairs] == [PLANTED] * 3
    drops = activation_drops(dense, pruned, token_words, pairs)
    assert all(0.7 < row["relative_drop"] < 0.8 for row in drops)  # silu(g/2) * (u/2) is ~ a quarter of silu(g) * u
    assert group_drop_fractions(drops, groups, threshold=0.5) == {
        "positive": {"pairs": 3, "mean_relative_drop": pytest.approx(drops[0]["relative_drop"], rel=1e-3),
                     "fraction_dropped": 1.0}}
    # z-scores ignore the scale: the neuron still means the same words
    assert semantic_retention(dense_association, pruned_association)[PLANTED] == pytest.approx(1.0, abs=1e-3)


def test_heatmap_example_shows_the_planted_neuron_on_a_planted_word(planted_model, word_tokenizer):
    vocabulary = PLANTED_WORDS  # (a neuron that happens to fire on one rare other word could outscore it)
    prompts = [tokenize_words(word_tokenizer, text) for text, _ in examples()]
    token_words = torch.tensor([vocabulary.index(p.words[i]) if i >= 0 and p.words[i] in vocabulary else -1
                                for p in prompts for i in p.token_words])
    dense = mlp_activations(planted_model, LLAMA, [p.input_ids for p in prompts], [LAYER, 1])
    associations = {layer: fit_association(zscore(acts)[0], token_words, len(vocabulary), 300, 0.05, 0.01)
                    for layer, acts in dense.items()}
    pruned = {layer: acts * 0.5 for layer, acts in dense.items()}
    example = heatmap_example(word_tokenizer, prompts, token_words, vocabulary, associations, dense, pruned)
    assert (example["layer"], example["neuron"]) == (LAYER, PLANTED) and example["word"] in PLANTED_WORDS
    text = examples()[example["example"]][0]
    assert example["tokens"] == text.split() and example["key_tokens"] == [text.split().index(example["word"])]
    assert example["pruned"] == pytest.approx([v * 0.5 for v in example["dense"]], abs=1e-4)
    assert max(example["dense"]) == example["dense"][example["key_tokens"][0]]


def test_protected_neurons_pool_each_words_matched_neurons(tmp_path):
    from safetensors.torch import save_file

    from prunescope.io import sha256_file, write_result

    paths = []
    for name, association in (("a", torch.tensor([[0.0, 2.0, 1.0], [0.5, 0.0, 0.0]])),
                              ("b", torch.tensor([[0.0, 0.0, 3.0]]))):
        path = tmp_path / f"{name}.safetensors"
        save_file({"layer4": association}, path)
        write_result(path.with_suffix(".json"), {"sha256": sha256_file(path)})
        paths.append(str(path))
    assert protected_neurons(paths, k=1) == {4: [0, 1, 2]}
    assert protected_neurons(paths[:1], k=2) == {4: [0, 1, 2]}
    assert protected_neurons(paths[1:], k=2) == {4: [2]}  # zero associations are never matched
