"""Conductance (nsa.conductance, Captum's LayerConductance) against known truth: completeness on a model whose MLP
layers are cuts, equality with exact patching and first order where the margin is linear in one neuron, and the
planted attention model's word -> neuron -> answer path (tests/planted_attention.py) where first order saturates."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from planted_attention import LLAMA, NEG, NEGATIVE, POS, POSITIVE, examples, planted_model, planted_tokenizer
from prunescope.models.families import get_family
from prunescope.nsa.answers import mean_embedding
from prunescope.nsa.conductance import word_conductance
from prunescope.nsa.mediation import MediationOptions, MediationSums, example_mediation
from prunescope.nsa.prompts import Example, TokenizedPrompt

CARRIER = 2  # the cut model's only layer-1 neuron that writes what the head reads


@pytest.fixture(scope="module")
def cut_model():
    """A 2-layer Llama without attention or norms (nn.Identity) in which each MLP layer is a cut: the embeddings
    live in dimensions 0-3, read by layer 0's MLP only, which writes 4-7, read by layer 1's only, which writes 8 by
    neuron CARRIER alone; the head reads dimension 8. So the margin is exactly linear in CARRIER's activation and
    a nonlinear function (layer 1's SiLU x up) of layer 0's activations: all of the last token's effect flows
    through every layer's MLP, at the last position."""
    config = tf.LlamaConfig(hidden_size=12, intermediate_size=4, num_hidden_layers=2, num_attention_heads=1,
                            num_key_value_heads=1, vocab_size=6, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(config).eval()
    model.model.norm = torch.nn.Identity()
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed[:, :4] /= embed[:, :4].std()
        embed[:, 4:] = 0
        for layer, block in enumerate(model.model.layers):
            block.input_layernorm = block.post_attention_layernorm = torch.nn.Identity()
            block.self_attn.o_proj.weight.zero_()
            reads, writes = range(4 * layer, 4 * layer + 4), range(4 * layer + 4, 4 * layer + 8)
            for proj in (block.mlp.gate_proj, block.mlp.up_proj):
                kept = proj.weight[:, reads].clone()
                proj.weight.zero_()
                proj.weight[:, reads] = kept / kept.std()  # activations of order 1: SiLU's curved part
            kept = block.mlp.down_proj.weight[writes].clone()
            block.mlp.down_proj.weight.zero_()
            block.mlp.down_proj.weight[writes] = 0.5 * kept / kept.std()
        model.model.layers[1].mlp.down_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight[8, CARRIER] = 1.5
        model.lm_head.weight.zero_()
        model.lm_head.weight[1, 8] = 1.0
    return model


def cut_example() -> Example:
    """Three tokens, choices token 0 and token 1 (gold); the word is the last token, read where it stands."""
    return Example(TokenizedPrompt([3, 4, 5], [0, 1, 2], ["x", "y", "z"]), [[0], [1]], 1, "z")


@pytest.fixture(scope="module")
def planted():
    return planted_model(), planted_tokenizer()


def mediated(model, example: Example, word: str, layers: list[int]
             ) -> tuple[torch.Tensor, dict[tuple[int, int], float], float]:
    """The project's own first-order ((layer position, width)) and exact ({(layer position, neuron): nats}, for
    the 8 strongest first-order candidates) mediated effects of the word's occurrence, and its effect; the first
    two oriented by the effect's sign (nsa.mediation)."""
    sums = MediationSums.empty(1, len(layers), model.config.intermediate_size, len(example.choices))
    example_mediation(model, LLAMA, example, {word: 0}, layers, mean_embedding(model), MediationOptions(0, 0, 8, 8),
                      sums)
    (occurrence,) = sums.patched
    return sums.first_order[:, 0], {(p, n): value for p, n, value in occurrence.exact}, occurrence.effect


def test_conductance_is_complete_through_a_cut_up_to_the_integration_error(cut_model):
    """Through a cut the layer's neurons carry the whole effect. Layer 1: the margin is linear in its activations,
    so the trapezoid grid's telescoping sum is exact at any n_steps (a delta here would catch a wrong grid, e.g.
    Gauss-Legendre's interior nodes, which miss the path's ends, or a misread activation). Layer 0: a nonlinear
    layer follows, so the delta is integration error only, and it must shrink with the steps (a delta that stays
    would catch a leak: a path around the layer, or positions or neurons left out). Measured: 3% of the effect at
    16 steps, 0.2% at 256."""
    baseline = mean_embedding(cut_model)
    example = cut_example()
    deltas = {}
    for steps in (16, 256):
        found = word_conductance(cut_model, LLAMA, example, [2], [0, 1], baseline, n_steps=steps)
        assert abs(found.effect) > 0.5
        torch.testing.assert_close(found.neurons().sum(1) - found.effect, found.delta, rtol=0, atol=1e-5)
        assert abs(float(found.delta[1])) < 1e-5 * abs(found.effect)
        deltas[steps] = abs(float(found.delta[0]))
    assert deltas[256] < 5e-3 * abs(found.effect) and deltas[256] < deltas[16] / 8  # O(1/n): 16x the steps


def test_where_the_margin_is_linear_in_a_neuron_conductance_is_exact_patching_and_first_order(cut_model):
    """CARRIER alone writes what the head reads, linearly: its conductance, exact patching effect and first-order
    estimate are one number, c x (activation change), and every other layer-1 neuron gets 0 from all three. A
    mismatch would catch a wrong sign or orientation, a wrong position range, or a different baseline between
    conductance and the project's mediation code."""
    example = cut_example()
    found = word_conductance(cut_model, LLAMA, example, [2], [0, 1], mean_embedding(cut_model), n_steps=4)
    first_order, exact, effect = mediated(cut_model, example, "z", [0, 1])
    conductance = found.neurons()[1] * (1.0 if effect >= 0 else -1.0)
    assert effect == pytest.approx(found.effect, rel=1e-5)
    assert float(conductance[CARRIER]) == pytest.approx(exact[1, CARRIER], rel=1e-4)
    assert float(first_order[1, CARRIER]) == pytest.approx(exact[1, CARRIER], rel=1e-4)
    assert float(conductance[CARRIER]) == pytest.approx(abs(effect), rel=1e-4)  # all of it (oriented): the only path
    others = [n for n in range(4) if n != CARRIER]
    assert float(conductance[others].abs().max()) == 0 and float(first_order[1, others].abs().max()) == 0


def test_conductance_names_the_planted_neurons_where_first_order_saturates(planted):
    """The planted words' effect reaches the answer through POS (positive words) or NEG (negative ones) at the last
    position, through the final norm. Conductance must rank that (layer, position, neuron) first (it would catch
    a method blind to attention-moved information, or one reading the word's own position), and its value must be
    closer to the exact patching effect than the saturated first order is (it would catch the saturation that
    motivated exact patching). With 256 steps it is within 10% of exact."""
    model, tokenizer = planted
    baseline = mean_embedding(model)
    for example in examples(tokenizer, 4):
        word = next(w for w in example.prompt.words if w in POSITIVE + NEGATIVE)
        position = example.prompt.token_words.index(example.prompt.words.index(word))
        neuron = POS if word in POSITIVE else NEG
        found = word_conductance(model, LLAMA, example, [position], [0, 1], baseline, n_steps=256)
        top = torch.unravel_index(found.per_position.abs().argmax(), found.per_position.shape)
        assert tuple(map(int, top)) == (1, len(example.prompt.input_ids) - 1, neuron)  # layer 1, the verdict token
        first_order, exact, effect = mediated(model, example, word, [0, 1])
        conductance = float(found.neurons()[1, neuron]) * (1.0 if effect >= 0 else -1.0)
        assert 0 < first_order[1, neuron] < 0.2 * exact[1, neuron]  # saturated: ~0.8 nats of ~17
        assert abs(conductance - exact[1, neuron]) < min(0.1 * exact[1, neuron],
                                                         abs(first_order[1, neuron] - exact[1, neuron]))
        # Captum's delta is not integration error in a residual network: layer 0's MLP writes nothing (its
        # conductance is 0), so its "delta" is minus the whole effect, which flows around it
        assert float(found.neurons()[0].abs().max()) == 0 and float(found.delta[0]) == pytest.approx(-found.effect)


def test_what_captum_cannot_step_through_is_refused(cut_model):
    """Captum keeps the hooked module's last call: with multi-token choices that is the continuation's pass, so
    the numbers would be silently wrong; and OPT's fc2 reads its activation flattened, which Captum cannot step
    (a cryptic reshape error without the check)."""
    example = Example(TokenizedPrompt([3, 4, 5], [0, 1, 2], ["x", "y", "z"]), [[0, 1], [1]], 1, "z")
    with pytest.raises(ValueError, match="single-token"):
        word_conductance(cut_model, LLAMA, example, [2], [0], mean_embedding(cut_model))
    opt = tf.OPTForCausalLM(tf.OPTConfig(hidden_size=8, ffn_dim=8, num_hidden_layers=1, num_attention_heads=2,
                                         vocab_size=6, word_embed_proj_dim=8)).eval()
    with pytest.raises(ValueError, match="flattened"):
        word_conductance(opt, get_family("opt"), cut_example(), [2], [0], mean_embedding(opt))


def test_the_bench_patches_the_pairs_it_names_and_scores_conductance_nearer_exact(planted):
    """bench/nsa_conductance.py on the planted model: the exact effect it patches for (layer 1, POS) is the
    project's own (a wrong column in its occluded activations would catch here), and over the patched pairs
    conductance is nearer exact than the saturated first order."""
    from test_bench import bench_module

    bench = bench_module("nsa_conductance")
    model, tokenizer = planted
    example = examples(tokenizer, 1)[0]
    word = next(w for w in example.prompt.words if w in POSITIVE)
    position = example.prompt.token_words.index(example.prompt.words.index(word))
    found = bench.measure(model, LLAMA, example, word, [position], [0, 1], mean_embedding(model), 2, [256], 8)
    _, exact, _ = mediated(model, example, word, [0, 1])
    assert (1, POS) in found.pairs
    assert float(found.values["exact"][found.pairs.index((1, POS))]) == pytest.approx(exact[1, POS], rel=1e-5)
    first, conductance = bench.summary([found], ["first_order", "conductance@256"])
    assert conductance["mean_abs_diff"] < first["mean_abs_diff"] and conductance["top1"] == 1.0
