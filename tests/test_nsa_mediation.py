"""Mediated matching against the planted attention model (tests/planted_attention.py), whose word -> neuron ->
answer path runs through attention: a head copies the sentiment word to the last position, where layer-1 neurons
POS and NEG read it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from planted_attention import (
    FILLER,
    LLAMA,
    NEG,
    NEGATIVE,
    POS,
    POSITIVE,
    WIDTH,
    examples,
    planted_model,
    planted_tokenizer,
)
from prunescope.nsa.answers import choice_logprobs, margin, mean_embedding, score_examples
from prunescope.nsa.compare import paired_effects
from prunescope.nsa.mediation import (
    MediationOptions,
    MediationSums,
    Occurrence,
    example_mediation,
    mediated_matches,
    mediation_sums,
    word_occurrences,
)
from prunescope.nsa.neurons import ablated, activation_stats
from prunescope.nsa.options import CausalOptions
from prunescope.nsa.pairing import fold_rankings, halves, pairing_test
from prunescope.nsa.patching import forward_groups
from prunescope.nsa.prompts import Example


@pytest.fixture(scope="module")
def tokenizer():
    return planted_tokenizer()


@pytest.fixture(scope="module")
def model():
    return planted_model()


WORDS = sorted(POSITIVE + NEGATIVE + FILLER)
GROUPS = ["positive" if w in POSITIVE else "negative" if w in NEGATIVE else "none" for w in WORDS]


def test_planted_model_answers_through_the_two_neurons_at_the_last_position(model, tokenizer):
    batch = examples(tokenizer)
    margins, correct = score_examples(model, batch)
    assert all(correct) and min(margins) > 1.0
    positive = torch.tensor([e.label == 1 for e in batch])
    for neuron, loses in ((POS, positive), (NEG, ~positive)):
        with ablated(model, LLAMA, {1: [neuron]}):  # that label's reviews lose their only path, the others keep it
            after = torch.tensor(score_examples(model, batch)[0])
        assert after[loses].abs().max() < 0.01 and torch.allclose(after[~loses], torch.tensor(margins)[~loses])
    with ablated(model, LLAMA, {1: [0, 1, 2, 3]}):  # random neurons: nearly nothing (the final norm only)
        assert torch.allclose(torch.tensor(score_examples(model, batch)[0]), torch.tensor(margins), rtol=0.05)
    # at the word's own position the two neurons are nearly silent: the head copies only to the verdict token
    words = [torch.tensor([0 if w >= 0 and e.prompt.words[w] in POSITIVE + NEGATIVE else -1
                           for w in e.prompt.token_words]) for e in batch]
    stats = activation_stats(model, LLAMA, batch, words, [1], 1)
    last = torch.stack([stats_of_last(model, e) for e in batch])
    assert float(stats[1].word_means()[0, [POS, NEG]].abs().max()) < 0.05 * float(last.max())


def stats_of_last(model, example: Example) -> torch.Tensor:
    """POS's and NEG's activation at the last (verdict) position."""
    captured = []
    handle = model.model.layers[1].mlp.down_proj.register_forward_pre_hook(
        lambda _m, args: captured.append(args[0][0, -1, [POS, NEG]]))
    with torch.no_grad():
        model(torch.tensor([example.prompt.input_ids]))
    handle.remove()
    return captured[0]


def test_mean_embedding_baseline_is_label_neutral(model, tokenizer):
    """Occluding the sentiment word with the mean embedding leaves no label favoured; the pad token would not be
    neutral if it carried a marker, the mean over a balanced vocabulary is by construction."""
    baseline = mean_embedding(model)
    assert torch.allclose(baseline, model.model.embed_tokens.weight.mean(0), atol=1e-6)
    example = examples(tokenizer)[0]
    position = example.prompt.token_words.index(example.prompt.words.index(POSITIVE[0]))
    embeds = model.get_input_embeddings()(torch.tensor([example.prompt.input_ids])).detach()
    embeds[0, position] = baseline
    with torch.no_grad():
        occluded = float(margin(choice_logprobs(model, [example.prompt.input_ids], example.choices, embeds), 1)[0])
        intact = float(margin(choice_logprobs(model, [example.prompt.input_ids], example.choices), 1)[0])
    assert intact > 1.0 and abs(occluded) < 0.02 * intact


def test_word_occurrences_group_a_words_tokens(tokenizer):
    example = examples(tokenizer)[0]  # "the movie great film was verdict"
    found = word_occurrences(example, {w: i for i, w in enumerate(WORDS)})
    assert [WORDS[w] for w, _ in found] == ["the", "movie", "great", "film", "was"]
    assert [positions for _, positions in found] == [[0], [1], [2], [3], [4]]  # "verdict" is the template's


def test_mediated_matching_pairs_each_word_with_the_neuron_that_carries_it(model, tokenizer):
    sums = mediation_sums(model, LLAMA, examples(tokenizer), WORDS, [0, 1], options=MediationOptions(0.2, 0.05, 4, 4))
    matches = mediated_matches(sums, WORDS, GROUPS, [0, 1], share_floor=0.2, effect_floor=0.05)
    pairs = {(m["word"], m["layer"], m["neuron"]) for m in matches}
    assert pairs == {(w, 1, POS) for w in POSITIVE} | {(w, 1, NEG) for w in NEGATIVE}
    for match in matches:
        assert match["share"] > 0.9 and match["patched"] == match["occurrences"] == 4
        # POS and NEG read the head's copy at the last token: patched there alone, they carry the whole effect
        assert match["exact_last_token"] == pytest.approx(match["exact"], rel=0.02)
        # first order saturates (the final norm flattens the margin where the planted neuron is large): it ranks
        # the planted neuron first, which is all it is used for, but estimates a small share of its effect
        assert 0 < match["first_order"] < 0.2 * match["exact"]
    # filler words move the margin by ~1e-5 nats, almost all of it through POS or NEG: the effect floor keeps
    # them out, however large their share
    filler = [WORDS.index(w) for w in FILLER]
    assert float((sums.effect[filler] / sums.occurrences[filler]).max()) < 1e-3
    assert {m["word"] for m in mediated_matches(sums, WORDS, GROUPS, [0, 1], 0.2, effect_floor=1.0)} == set(
        POSITIVE + NEGATIVE)
    # the push: positive words push "positive" (choice 1) away when occluded, negative words "negative"
    for w, word in enumerate(WORDS):
        if word in POSITIVE:
            assert sums.push[w, 1] > 0 > sums.push[w, 0]
        if word in NEGATIVE:
            assert sums.push[w, 0] > 0 > sums.push[w, 1]


def test_the_words_own_position_misses_the_planted_neurons(model, tokenizer):
    """The finding that motivated mediated matching: activation x gradient at the word's own tokens (what the
    paper-like association and importance see) is ~0 for the planted neurons, while their mediated share is ~1."""
    batch = examples(tokenizer)
    vocabulary = POSITIVE + NEGATIVE
    ids = [torch.tensor([vocabulary.index(e.prompt.words[w]) if w >= 0 and e.prompt.words[w] in vocabulary else -1
                         for w in e.prompt.token_words]) for e in batch]
    stats = activation_stats(model, LLAMA, batch, ids, [1], len(vocabulary), importance=True)
    at_word = stats[1].word_importance / stats[1].word_counts.clamp_min(1)[:, None]
    sums = mediation_sums(model, LLAMA, batch, vocabulary, [1], options=MediationOptions(0.2, 0.05, 2, 8))
    share = sums.share()[0]
    for w, word in enumerate(vocabulary):
        neuron = POS if word in POSITIVE else NEG
        assert abs(float(at_word[w, neuron])) < 0.01 * float(sums.effect[w] / sums.occurrences[w])
        assert float(share[w, neuron]) > 0.5


def test_sums_do_not_depend_on_the_batch_size(model, tokenizer):
    batch = examples(tokenizer, 4)
    one = mediation_sums(model, LLAMA, batch, WORDS, [1], options=MediationOptions(0.2, 0.05, 3, 1))
    many = mediation_sums(model, LLAMA, batch, WORDS, [1], options=MediationOptions(0.2, 0.05, 3, 16))
    for field in ("occurrences", "effect", "first_order", "exact", "exact_count", "patched_effect", "push"):
        torch.testing.assert_close(getattr(one, field), getattr(many, field), rtol=1e-5, atol=1e-6)


def test_forward_groups_share_a_forward_only_where_it_saves_work():
    """Hand-computed with FORWARD_OVERHEAD = 16, 30 blocks, 31 positions: rows a block and a position apart share a
    forward (25 x (16 + 2 x 21) = 1450 < 925 + 900); a row of block 0 from position 0 and one of the last block at
    the last position do not (30 x (16 + 2 x 31) = 2340 > 1410 + 17); equal rows fill forwards of batch_size. A
    multi-token choice's continuation (tail: tokens each row runs after the prompt) weighs the blocks a joined row
    would run below its own: rows of blocks 5 and 10 share a forward (25 x (16 + 2 x 20) = 1400 < 900 + 720) until
    each row carries 50 tokens more (25 x (16 + 2 x 70) = 3900 > 2150 + 1720)."""
    assert forward_groups([(5, 11), (10, 11)], 31, 30, 8) == [[0, 1]]
    assert forward_groups([(5, 11), (10, 11)], 31, 30, 8, tail=50) == [[0], [1]]
    assert forward_groups([(5, 11), (5, 10)], 31, 30, 8) == [[1, 0]]
    assert forward_groups([(29, 30), (0, 0)], 31, 30, 8) == [[1], [0]]
    assert forward_groups([(3, 4)] * 5, 31, 30, 2) == [[0, 1], [2, 3], [4]]
    keys = [(block, position) for block in (0, 7, 29) for position in (0, 12, 30)] * 3
    groups = forward_groups(keys, 31, 30, 4)
    assert sorted(row for group in groups for row in group) == list(range(len(keys)))
    assert max(map(len, groups)) <= 4


def test_the_intact_passes_give_the_paper_associations_sums(model, tokenizer):
    """mediation_sums(layer_stats=True) keeps what the paper's association fits on (LayerStats, importance
    included) from its intact passes: equal to activation_stats' own pass with gradients, examples without a
    vocabulary word (the negative reviews here) included."""
    batch, vocabulary = examples(tokenizer, 6), sorted(POSITIVE)
    sums = mediation_sums(model, LLAMA, batch, vocabulary, [0, 1], MediationOptions(0.2, 0.05, 2, 8), layer_stats=True)
    ids = [torch.tensor([vocabulary.index(e.prompt.words[w]) if w >= 0 and e.prompt.words[w] in vocabulary else -1
                         for w in e.prompt.token_words]) for e in batch]
    separate = activation_stats(model, LLAMA, batch, ids, [0, 1], len(vocabulary), importance=True)
    assert sums.examples == 3  # the positive reviews: salience counts only examples with a vocabulary word
    for layer in (0, 1):
        fused, alone = sums.stats[layer], separate[layer]
        assert fused.tokens == alone.tokens == sum(len(e.prompt.input_ids) for e in batch)
        for name in ("sums", "squares", "word_sums", "word_counts", "word_importance", "neuron_importance"):
            torch.testing.assert_close(getattr(fused, name), getattr(alone, name), rtol=1e-5, atol=1e-7)
    assert float(sums.stats[1].neuron_importance.abs().max()) > 0.1  # the comparison can fail


def test_an_example_without_vocabulary_words_adds_nothing(model, tokenizer):
    sums = MediationSums.empty(1, 1, WIDTH, 2)
    example = examples(tokenizer, 1)[0]
    example_mediation(model, LLAMA, example, {"absent": 0}, [1], mean_embedding(model), MediationOptions(0.2, 0, 2, 4),
                      sums)
    assert float(sums.occurrences.sum()) == 0 and float(sums.first_order.abs().sum()) == 0


def _paired(model, sums, matches, batch, layers):
    pairs = {}
    for match in matches:
        for example in match["examples"]:
            pairs.setdefault((example, WORDS.index(match["word"])), []).append(
                (layers.index(match["layer"]), match["neuron"]))
    return paired_effects(model, LLAMA, batch, layers, sums.patched, pairs, batch_size=4)


def test_paired_effects_on_the_dense_model_repeat_the_dense_numbers(model, tokenizer):
    """Step 3 patches the dense model's patched occurrences again, each matched pair on the examples it was patched
    on: run on the dense model itself, every pair's effect per example and its mean equal step 2's, and every
    occurrence's (oriented) effect is its |effect|."""
    batch = examples(tokenizer)
    dense = mediation_sums(model, LLAMA, batch, WORDS, [0, 1], options=MediationOptions(0.2, 0.05, 4, 4))
    matches = mediated_matches(dense, WORDS, GROUPS, [0, 1], share_floor=0.2, effect_floor=0.05)
    words, pairs = _paired(model, dense, matches, batch, [0, 1])
    assert len(pairs) == sum(len(m["examples"]) for m in matches) > 0
    for match in matches:
        w = WORDS.index(match["word"])
        again = [pairs[e, w, 1, match["neuron"]] for e in match["examples"]]
        assert sum(again) / len(again) == pytest.approx(match["exact"], rel=1e-4)
    for occurrence in dense.patched:
        assert words[occurrence.example, occurrence.word] == pytest.approx(abs(occurrence.effect), rel=1e-4)


def test_pruning_the_path_shows_as_the_pairs_lost_mediated_effect(model, tokenizer):
    """Step 3 on a pruned model: the dense model's matched pairs patched on the same occluded occurrences. Zeroing
    POS's output weights (what pruning them would do) takes all of the positive words' mediated effect and none of
    the negative words'."""
    import copy

    batch = examples(tokenizer)
    dense = mediation_sums(model, LLAMA, batch, WORDS, [0, 1], options=MediationOptions(0.2, 0.05, 4, 4))
    matches = mediated_matches(dense, WORDS, GROUPS, [0, 1], share_floor=0.2, effect_floor=0.05)
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        pruned.model.layers[1].mlp.down_proj.weight[:, POS] = 0
    _, pairs = _paired(pruned, dense, matches, batch, [0, 1])
    for match in matches:
        w = WORDS.index(match["word"])
        kept = sum(pairs[e, w, 1, match["neuron"]] for e in match["examples"]) / len(match["examples"])
        if match["word"] in POSITIVE:
            assert abs(kept) < 1e-3 * match["exact"]
        else:
            assert kept == pytest.approx(match["exact"], rel=1e-4)


def _pairing(model, tokenizer, swap: bool = False, draws: int = 3):
    """The pairing test on the planted model; with `swap`, step 2's records credit POS's effects to NEG and NEG's
    to POS (a mis-assigned pairing)."""
    batch = examples(tokenizer)
    dense = mediation_sums(model, LLAMA, batch, WORDS, [0, 1], options=MediationOptions(0.2, 0.05, 4, 4))
    occurrences = dense.patched
    if swap:
        other = {(1, POS): NEG, (1, NEG): POS}
        occurrences = [replace(o, exact=tuple((p, other.get((p, n), n), v) for p, n, v in o.exact))
                       for o in occurrences]
    salience = {layer: dense.salience[p] / dense.examples for p, layer in enumerate([0, 1])}
    options = CausalOptions(neurons_per_word=3, ablate=1, draws=draws, seed=0, pairing_occurrences=6)
    return pairing_test(model, LLAMA, batch, [0, 1], occurrences, GROUPS, salience, options, 8)


def test_the_pairing_test_credits_each_group_to_its_own_neuron(model, tokenizer):
    """The planted pairing is right and specific: patching POS (ranked first for the positive words on the other
    half of the examples) takes nearly all of their effect on their occurrences, while random neurons, the other
    group's neuron (NEG) and the next most salient neurons take almost none; and the other way round for the
    negative words."""
    result = _pairing(model, tokenizer)
    assert set(result) == {"positive", "negative"}
    for group, neuron in (("positive", POS), ("negative", NEG)):
        (point,) = result[group]["curve"]
        assert result[group]["occurrences"] == 6 and point["neurons"]["matched"] == [[[1, neuron]], [[1, neuron]]]
        assert point["matched"] > 0.9
        assert point["random"]["high"] < 0.05 and abs(point["other_group"]) < 0.05 and abs(point["important"]) < 0.05
        assert len(point["per_occurrence"]["random"]) == 3 and len(point["per_occurrence"]["matched"]) == 6


def test_the_pairing_test_exposes_swapped_neurons(model, tokenizer):
    """A mis-assigned pairing (each group's words credited to the other group's neuron) fails the test: the
    neurons it names carry none of their words' effect and the 'other group' control carries it all."""
    result = _pairing(model, tokenizer, swap=True, draws=2)
    for group in ("positive", "negative"):
        (point,) = result[group]["curve"]
        assert abs(point["matched"]) < 0.05 and point["other_group"] > 0.9


def test_the_pairing_test_never_ranks_a_neuron_on_the_occurrences_it_tests():
    """Cross-fitting: each group's examples alternate between the halves, and each half's ranking comes from the
    other half's records only."""
    occurrences = [Occurrence(0, 0, (1,), 1.0, ((0, 5, 9.0),)), Occurrence(2, 0, (1,), 1.0, ((0, 7, 1.0),)),
                   Occurrence(2, 1, (1,), -1.0, ((0, 3, 2.0), (0, 4, -1.0))), Occurrence(5, 0, (3,), 0.5, ())]
    groups = ["positive", "negative"]
    assert halves(occurrences, groups) == {("positive", 0): 0, ("positive", 2): 1, ("positive", 5): 0,
                                           ("negative", 2): 0}
    assert fold_rankings(occurrences, groups, [4], held_out=0) == {"positive": [(4, 7)]}
    assert fold_rankings(occurrences, groups, [4], held_out=1) == {"positive": [(4, 5)], "negative": [(4, 3)]}
