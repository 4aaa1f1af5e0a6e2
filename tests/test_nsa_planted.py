"""Known truth for NSA, the cases tests/test_nsa.py and tests/test_nsa_mediation.py do not plant (docs/methods.md,
the NSA section's planted models): a neuron that matters for every example, two words that share a neuron, a word
carried at its own position beside words carried at the last token, a neutral word that co-occurs with one label,
and NSA-guided pruning protecting what mediated matching found.

Every model is a variant of the planted attention model (tests/planted_attention.py: a head moves the sentiment word
to the last position, where layer-1 neurons POS and NEG read it) with an anchor, a massive activation of the last
token, so that the norms there are near-constant gains: a neuron that reads a constant there stays constant when a
word is occluded, instead of carrying part of the word's effect through the norm's scale. The floors are the
project's (params.yaml: share_floor and effect_floor 0.1).
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from planted_attention import (
    FILLER,
    GENERAL,
    LLAMA,
    NEG,
    NEGATIVE,
    OWN,
    POS,
    POSITIVE,
    SHARED,
    WIDTH,
    examples,
    planted_model,
    planted_tokenizer,
)
from prunescope.nsa.answers import mean_embedding, score_examples
from prunescope.nsa.mediation import MediationSums, mediated_matches, mediation_sums
from prunescope.nsa.neurons import ablated, token_activations
from prunescope.nsa.options import CausalOptions, MediationOptions, NsaOptions
from prunescope.nsa.pairing import control_sets, fold_rankings, pairing_test
from prunescope.nsa.stages import learn_association, protected_neurons, select_words
from prunescope.nsa.words import influential_words

ANCHOR_SIZE = 100.0  # the anchor, far above the rest of the last position's residual (norm ~3)
PUSH = 7.5  # nats: GENERAL's push toward "positive" on every example, more than half of a word neuron's push
WORDS = sorted(POSITIVE + NEGATIVE + FILLER)
GROUPS = ["positive" if w in POSITIVE else "negative" if w in NEGATIVE else "none" for w in WORDS]
LAYERS = [0, 1]
NSA = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text(encoding="utf-8"))["nsa"]
OPTIONS = MediationOptions(NSA["share_floor"], NSA["effect_floor"], candidates=4, batch_size=8)


@pytest.fixture(scope="module")
def tokenizer():
    return planted_tokenizer()


@pytest.fixture(scope="module")
def general_model():
    return planted_model(ANCHOR_SIZE, general=PUSH)


@pytest.fixture(scope="module")
def shared_model():
    return planted_model(ANCHOR_SIZE, shared=True)


def _sums(model, tokenizer) -> MediationSums:
    with _one_thread():
        return mediation_sums(model, LLAMA, examples(tokenizer), WORDS, LAYERS, OPTIONS)


@contextlib.contextmanager
def _one_thread():
    """The module fixtures run before conftest's one_thread fixture: tiny tensors, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def general_sums(general_model, tokenizer):
    return _sums(general_model, tokenizer)


@pytest.fixture(scope="module")
def shared_sums(shared_model, tokenizer):
    return _sums(shared_model, tokenizer)


def _matched(sums: MediationSums, share_floor: float = OPTIONS.share_floor) -> set[tuple[str, int, int]]:
    return {(m["word"], m["layer"], m["neuron"])
            for m in mediated_matches(sums, WORDS, GROUPS, LAYERS, share_floor, OPTIONS.effect_floor)}


def _salience(sums: MediationSums) -> dict[int, torch.Tensor]:
    return {layer: sums.salience[p] / sums.examples for p, layer in enumerate(LAYERS)}


def _pairing(model, tokenizer, sums: MediationSums, ablate: int) -> dict:
    options = CausalOptions(neurons_per_word=3, ablate=ablate, draws=3, seed=0, pairing_occurrences=8)
    return pairing_test(model, LLAMA, examples(tokenizer), LAYERS, sums.patched, GROUPS, _salience(sums), options, 8)


def _last_position(model, embeds: torch.Tensor) -> torch.Tensor:
    """Every layer-1 neuron's activation at the last position."""
    captured = []
    handle = model.model.layers[1].mlp.down_proj.register_forward_pre_hook(
        lambda _m, args: captured.append(args[0][0, -1].clone()))
    try:
        with torch.no_grad():
            model(inputs_embeds=embeds)
    finally:
        handle.remove()
    return captured[0]


# --- a neuron that matters for every example ---------------------------------------------------------------------


def test_the_general_neuron_matters_for_every_example_and_ignores_the_words(general_model, tokenizer, general_sums):
    """Planted: GENERAL reads the anchor, there at the last position of every prompt whatever its words, and pushes
    every answer toward "positive" by PUSH nats. Ablating it moves every margin by ~PUSH (down for positive reviews,
    up for negative ones), it is the most salient neuron of both layers (the pairing test's "important" control),
    and occluding the sentiment word leaves it within 0.5% while POS or NEG drops from ~30 to ~0. Catches a model
    whose "generally important" neuron secretly reads the words (through the norm's scale, as a constant neuron
    without the anchor does): then the tests below would not be testing what they say."""
    batch = examples(tokenizer)
    margins, correct = score_examples(general_model, batch)
    assert all(correct) and min(margins) > 1.0
    with ablated(general_model, LLAMA, {1: [GENERAL]}):
        moved = torch.tensor(score_examples(general_model, batch)[0]) - torch.tensor(margins)
    positive = torch.tensor([e.label == 1 for e in batch])
    assert (moved[positive] < -0.8 * PUSH).all() and (moved[~positive] > 0.8 * PUSH).all()
    salience = _salience(general_sums)
    assert int(salience[1].argmax()) == GENERAL and float(salience[1][GENERAL]) > float(salience[0].max())
    baseline = mean_embedding(general_model)
    for example in batch[:4]:
        embeds = general_model.get_input_embeddings()(torch.tensor([example.prompt.input_ids])).detach()
        intact = _last_position(general_model, embeds)
        embeds[0, example.prompt.token_words.index(2)] = baseline  # the sentiment word (word 2 of the record)
        occluded = _last_position(general_model, embeds)
        reader = POS if example.label == 1 else NEG
        assert abs(float(occluded[GENERAL] / intact[GENERAL]) - 1) < 5e-3
        assert float(intact[reader]) > 20 and abs(float(occluded[reader])) < 0.1


def test_mediated_matching_does_not_pair_the_general_neuron(general_sums):
    """GENERAL's activation does not change when a word is occluded, so it carries none of the word's effect:
    patched for every sentiment word (it is among the strongest first-order candidates), its exact share stays below
    1% (measured ~7e-4), and the matches are exactly the planted pairs, in layer 1, even at a floor ten times below
    the project's. Catches a matching that credits a neuron for mattering rather than for carrying the word."""
    share = general_sums.share()[1]
    for word in POSITIVE + NEGATIVE:
        w = WORDS.index(word)
        assert general_sums.exact_count[1, w, GENERAL] > 0
        assert abs(float(share[w, GENERAL])) < 0.01
        assert float(share[w, POS if word in POSITIVE else NEG]) > 0.95
    planted = {(w, 1, POS) for w in POSITIVE} | {(w, 1, NEG) for w in NEGATIVE}
    assert _matched(general_sums) == planted
    assert _matched(general_sums, share_floor=OPTIONS.share_floor / 10) == planted


def test_the_important_control_picks_the_general_neuron_which_carries_nothing(general_model, tokenizer,
                                                                             general_sums):
    """The pairing test's "important" control, the most salient neurons not ranked for the group, is GENERAL for the
    positive words (whose occlusion raises GENERAL a hair, toward "positive": a negative mediated effect, so GENERAL is
    not ranked for them); patched to its occluded values it removes ~0 of their effect while POS removes all of it.
    (For the negative words GENERAL's hair is a +7e-4 share: ranked second for them, so their "important" control
    is the next salient neuron, POS.) Catches a control that does not reach the generally important neuron, or a
    pairing test where mattering in general passes for carrying the words."""
    ranked = fold_rankings(general_sums.patched, GROUPS, LAYERS, held_out=0)
    sets = control_sets(ranked, "positive", 1, _salience(general_sums), WIDTH, 1, random.Random(0))
    assert sets["matched"] == [(1, POS)] and sets["important"] == [(1, GENERAL)]
    assert ranked["negative"][0] == (1, NEG)
    result = _pairing(general_model, tokenizer, general_sums, ablate=1)
    for group, neuron in (("positive", POS), ("negative", NEG)):
        (point,) = result[group]["curve"]
        assert point["neurons"]["matched"] == [[[1, neuron]], [[1, neuron]]]
        assert point["matched"] > 0.95 and abs(point["important"]) < 0.01
        assert abs(point["other_group"]) < 0.01 and point["random"]["high"] < 0.01


# --- two words sharing a neuron ----------------------------------------------------------------------------------


def test_two_words_that_share_a_neuron_are_both_paired_with_it(shared_model, tokenizer, shared_sums):
    """Planted: the head moves "great"'s and "superb"'s shared marker to the last position, where SHARED reads it;
    "great" also carries the positive marker that POS reads there ("lovely" only that one). Mediated matching pairs
    both words with SHARED, "great" also with POS (about half each: the path is linear in their outputs), and nothing
    else: not "superb" with POS, not "lovely" with SHARED. SHARED carries them at the last position, not at the
    words' own. Catches a matching that gives a neuron to one word only (the first or strongest), that misses a
    word's second neuron, or that spreads a shared neuron to the words that only co-occur with its group."""
    assert _matched(shared_sums) == {("great", 1, POS), ("great", 1, SHARED), ("superb", 1, SHARED),
                                     ("lovely", 1, POS)} | {(w, 1, NEG) for w in NEGATIVE}
    share = shared_sums.share()[1]
    great, superb, lovely = (WORDS.index(w) for w in ("great", "superb", "lovely"))
    assert 0.35 < float(share[great, POS]) < 0.65 and 0.35 < float(share[great, SHARED]) < 0.65
    assert float(share[great, POS] + share[great, SHARED]) > 0.9
    assert float(share[superb, SHARED]) > 0.95 and float(share[lovely, POS]) > 0.95
    assert abs(float(share[superb, POS])) < 0.01 and abs(float(share[lovely, SHARED])) < 0.01
    for example in examples(tokenizer)[:6:2]:  # the positive ones: "great", "superb", "lovely"
        activations = token_activations(shared_model, LLAMA, example.prompt.input_ids, 1, SHARED)
        own = example.prompt.token_words.index(2)
        if example.prompt.words[2] == "lovely":
            assert max(map(abs, activations)) < 0.1
        else:
            assert activations[-1] > 20 and abs(activations[own]) < 0.1


def test_the_pairing_test_credits_the_group_with_its_shared_neuron(shared_model, tokenizer, shared_sums):
    """The positive group's words run through POS and SHARED: its best neuron alone (K=1) removes part of their
    effect (the words it does not read keep theirs), both (K=2) remove all of it, and no control removes any.
    Catches a pairing test that cannot credit a group whose words spread over several neurons."""
    result = _pairing(shared_model, tokenizer, shared_sums, ablate=2)
    one, two = result["positive"]["curve"]
    assert 0.2 < one["matched"] < 0.8 and two["matched"] > 0.95
    assert all(set(map(tuple, half)) == {(1, POS), (1, SHARED)} for half in two["neurons"]["matched"])
    for point in (one, two):
        assert abs(point["important"]) < 0.01 and point["random"]["high"] < 0.01
        assert point["other_group"] is None or abs(point["other_group"]) < 0.01
    (negative,) = result["negative"]["curve"]
    assert negative["matched"] > 0.95


# --- where a neuron carries the word: at the last token, or at the word's own ------------------------------------


def test_the_position_split_tells_a_neuron_reading_the_word_where_it_stands_from_one_reading_the_moved_copy(
        tokenizer):
    """Planted (the own variant): layer-0 neuron OWN reads "lovely" at the word's own position and a layer-1 head
    moves what it writes to the answer; POS and NEG read the other sentiment words' copy at the last token. Mediated
    matching pairs "lovely" with OWN, and patching each matched neuron at the last prompt token alone gives POS's and
    NEG's whole exact effect and none of OWN's: the by-position split names where each pair carries its word.
    Catches a split that patches the wrong token, that reports the whole effect as the last token's, or that misses
    a word carried before the answer's token."""
    model = planted_model(ANCHOR_SIZE, own=True)
    batch = examples(tokenizer)
    assert all(score_examples(model, batch)[1])
    with _one_thread():
        sums = mediation_sums(model, LLAMA, batch, WORDS, LAYERS, OPTIONS)
    matches = mediated_matches(sums, WORDS, GROUPS, LAYERS, OPTIONS.share_floor, OPTIONS.effect_floor)
    assert {(m["word"], m["layer"], m["neuron"]) for m in matches} == {("lovely", 0, OWN)} | {
        (w, 1, POS) for w in POSITIVE if w != "lovely"} | {(w, 1, NEG) for w in NEGATIVE}
    for match in matches:
        assert match["share"] > 0.95 and match["exact"] > 1.0
        expected = 0.0 if match["neuron"] == OWN and match["layer"] == 0 else match["exact"]
        assert match["exact_last_token"] == pytest.approx(expected, abs=0.02 * match["exact"])
    lovely = [o for o in sums.patched if WORDS[o.word] == "lovely"]
    assert lovely and all(len(o.last) == len(o.exact) == OPTIONS.candidates for o in lovely)


# --- a neutral word that co-occurs with one label ----------------------------------------------------------------


def test_a_word_that_only_cooccurs_with_a_label_is_not_influential(tokenizer):
    """Planted: "film" follows the sentiment word in 9 of the 12 positive reviews and in no negative one, and no
    neuron or head that matters reads it (the plain planted model). Occlusion is causal, not correlational: with
    the project's attribution floors the vocabulary is exactly the six sentiment words. Without the floors "film"
    does enter (its occlusion lowers the margin by ~2e-5 nats: the baseline at its position takes a sliver of the
    head's attention from the sentiment word), but mediated matching's effect floor still pairs it with nothing.
    Catches a vocabulary or a matching that follows co-occurrence with a label rather than effect on the answer."""
    model, batch = planted_model(), examples(tokenizer, cooccurring="film")
    assert sum("film" in e.prompt.words for e in batch if e.label == 1) == 9
    assert not any("film" in e.prompt.words for e in batch if e.label == 0)
    baseline = mean_embedding(model)
    floored = influential_words(model, batch, NSA["top_k_words"], NSA["min_count"], "occlusion", baseline, 32, 1,
                                NSA["attribution_floor"], NSA["attribution_share"])
    assert set(floored) == set(POSITIVE + NEGATIVE)
    assert min(entry["mean_attribution"] for entry in floored.values()) > 10
    unfloored = influential_words(model, batch, NSA["top_k_words"], NSA["min_count"], "occlusion", baseline, 32, 1)
    assert "film" in unfloored and abs(unfloored["film"]["mean_attribution"]) < 1e-3
    vocabulary = sorted(unfloored)
    sums = mediation_sums(model, LLAMA, batch, vocabulary, LAYERS, OPTIONS)
    film = vocabulary.index("film")
    assert float(sums.occurrences[film]) == 9 and float(sums.effect[film] / sums.occurrences[film]) < 1e-3
    matches = mediated_matches(sums, vocabulary, ["none"] * len(vocabulary), LAYERS, OPTIONS.share_floor,
                               OPTIONS.effect_floor)
    assert {m["word"] for m in matches} == set(POSITIVE + NEGATIVE)


# --- NSA-guided pruning protects the mediated matches --------------------------------------------------------------


@dataclass(frozen=True)
class PlantedModel:
    """What the NSA stages load (nsa.options.NsaModel's loaded() and family), the planted model in place of a
    prepared model directory."""

    model: object
    tokenizer: object
    family: str = "llama"

    @contextlib.contextmanager
    def loaded(self):
        yield self.model, self.tokenizer


@dataclass(frozen=True)
class PlantedData:
    """What the NSA stages read of nsa.options.NsaData: the dataset file (hashed) and the examples."""

    dataset_path: str

    def examples(self, tokenizer):
        return examples(tokenizer)


def test_nsa_guided_pruning_protects_the_mediated_matches_not_the_general_neuron(tmp_path, tokenizer):
    """The stages on the planted model with both variants, with the project's NSA options: select_words finds the
    six sentiment words, learn_association matches them to POS, NEG and SHARED in layer 1 (its heatmap shows the
    matched neuron firing at the last position; the paper's matching, recorded beside, makes none of those pairs),
    and protected_neurons exempts exactly those three from pruning,
    not GENERAL, the most salient neuron, which carries none of the words. Catches guided pruning that protects
    important neurons rather than the words' paths, or that drops a word's second neuron."""
    model = PlantedModel(planted_model(ANCHOR_SIZE, general=PUSH, shared=True), tokenizer)
    dataset = tmp_path / "records.jsonl"
    dataset.write_text("planted\n", encoding="utf-8")
    data, options = PlantedData(str(dataset)), NsaOptions.from_params(NSA)
    words, association = tmp_path / "words.json", tmp_path / "association.safetensors"
    assert set(select_words(model, data, options, words)["words"]) == set(POSITIVE + NEGATIVE)
    learn_association(model, data, options, words, association)
    info = json.loads(association.with_suffix(".json").read_text(encoding="utf-8"))
    assert {(m["word"], m["layer"], m["neuron"]) for m in info["matches"]} == {
        ("great", 1, POS), ("great", 1, SHARED), ("superb", 1, SHARED), ("lovely", 1, POS)} | {
        (w, 1, NEG) for w in NEGATIVE}
    # the paper's matching on the same examples, recorded beside: blind to the path (at the words' own tokens no
    # neuron here moves the answer), it makes none of the planted pairs (none at all: it matches only a positive
    # activation x gradient)
    assert info["paper_matches"] is not None
    assert not {tuple(pair) for pair in info["paper_matches"]} & {(m["word"], m["layer"], m["neuron"])
                                                                   for m in info["matches"]}
    heatmap = info["example"]
    assert heatmap["layer"] == 1 and heatmap["neuron"] in {POS, NEG, SHARED}
    assert max(range(len(heatmap["dense"])), key=heatmap["dense"].__getitem__) == len(heatmap["dense"]) - 1
    assert protected_neurons([str(association)], options.paper.neurons_per_word) == {1: sorted([POS, NEG, SHARED])}
    from safetensors.torch import load_file

    assert int(load_file(association)["salience1"].argmax()) == GENERAL
