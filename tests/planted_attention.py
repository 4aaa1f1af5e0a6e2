"""The planted attention model of the NSA tests, whose word -> neuron -> answer path runs through attention.

The planted 2-layer Llama: a sentiment word sits mid-sentence; in layer 0 one attention head, queried by the final
"verdict" token, attends to whichever token carries a sentiment marker and copies it to the last position (positive
words: dimension 5, negative: dimension 6). In layer 1, neuron POS reads dimension 5 (gated by a threshold, so
the partial copies other positions get leave it off) and writes what the head reads as "positive", neuron NEG
reads dimension 6 and writes "negative". Every other layer-1 neuron is random and writes
only dimensions the head ignores (so it acts, if at all, through the final norm). At the word's own tokens POS and
NEG do nearly nothing: NSA that looks only there (the paper's association) cannot pair them with the words.

Variants (planted_model's arguments, tests/test_nsa_planted.py): an anchor (a massive activation of the verdict token)
that makes the last position's norms fixed gains, a generally important neuron (GENERAL) that every answer leans on,
a neuron (SHARED) that two positive words share, one of them with POS beside it, and a layer-0 neuron (OWN) that
reads "lovely" at its own position, whose output a layer-1 head then moves to the answer.
"""

from __future__ import annotations

import torch
import transformers as tf

from prunescope.models.families import get_family
from prunescope.nsa.prompts import Example, render_with_spans, tokenize_words

POSITIVE = ["great", "superb", "lovely"]
NEGATIVE = ["awful", "bad", "poor"]
FILLER = ["the", "movie", "film", "was", "is", "acting", "plot", "really", "and", "story"]
VOCAB = ["[UNK]", "[PAD]", "positive", "negative", "verdict", *POSITIVE, *NEGATIVE, *FILLER]
POS, NEG, WIDTH, HIDDEN = 5, 6, 32, 64
GENERAL, SHARED = 8, 9  # the variants' further layer-1 neurons
OWN = 10  # the own variant's layer-0 neuron
ANCHOR, MARK, MOVED = 10, 11, 12  # the variants' further dimensions: the verdict's anchor, SHARED's marker and copy
OWN_MARK, OWN_OUT = 13, 14  # ... the own variant's: "lovely"'s marker and what OWN writes at its position
SHARED_WORDS = ["great", "superb"]  # carry MARK; "superb" carries only MARK, not the positive marker
OWN_WORD = "lovely"  # carries only OWN_MARK in the own variant
LAYER_GAIN, FINAL_GAIN = 0.65, 0.1  # with an anchor: the norms' gains (over the verdict's scale)
GENERAL_INPUT = 2.0  # GENERAL's gate and up input at the last position
LLAMA = get_family("llama")
TEMPLATE = "{input} verdict"


def planted_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[PAD]")


def planted_model(anchor: float = 0.0, general: float = 0.0, shared: bool = False, own: bool = False):
    """The planted model (module docstring); its variants, each needing an anchor:

    anchor > 0: the verdict token carries `anchor` in dimension ANCHOR, far above the rest of the residual, so at the
    last position both norms (layer 1's MLP input and the final one) divide by a near-constant scale, about
    anchor / sqrt(HIDDEN). With anchor=100, occluding the word moves layer 1's by 5e-4 (by a quarter without an
    anchor) and the final one by 1-3% (by 80%): a neuron reading a constant at the last position stays constant,
    and the answer is about linear in the layer-1 neurons' outputs (the final norm no longer flattens it). The
    query and the two norms' gains are scaled up so that the copy, POS and NEG keep their sizes.
    general > 0: layer-1 neuron GENERAL reads the anchor, there at the last position of every prompt whatever its
    words, and pushes every answer toward "positive" by about `general` nats (NEG's words must outweigh it).
    shared: "great" and "superb" also carry marker MARK (and "superb" loses the positive marker), which the head
    moves to dimension MOVED at the last position, where layer-1 neuron SHARED reads it (gated as POS is) and
    writes "positive": "great" is read by POS and SHARED, "superb" by SHARED only, "lovely" by POS only.
    own: "lovely" carries marker OWN_MARK instead of the positive one; layer-0 neuron OWN reads it at the word's own
    position and writes OWN_OUT there, and a layer-1 head, queried by the verdict token, moves OWN_OUT to the last
    position as "positive". OWN carries the word at the word's position and is silent at the last one.
    """
    if (general or shared or own) and not anchor:
        raise ValueError("the general, shared and own variants need an anchor")
    config = tf.LlamaConfig(hidden_size=HIDDEN, intermediate_size=WIDTH, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=4, vocab_size=len(VOCAB), max_position_embeddings=64,
                            rope_theta=1e6, tie_word_embeddings=False, attn_implementation="eager")
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(config).eval()
    head_dim, slow = HIDDEN // 4, HIDDEN // 4 // 2 - 1  # rotary pair `slow` turns ~1e-5 rad a position: content only
    mechanism = 16 if anchor else 10
    readers = {POS: (5, 1), NEG: (6, 2)} | ({SHARED: (MOVED, 1)} if shared else {})  # neuron: (reads, writes)
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed[:, :mechanism] = 0  # dimensions 0-9 (0-15 in a variant) are the mechanism's; the others random
        embed[:, mechanism:] *= 0.3 / embed[:, mechanism:].std()
        for word in POSITIVE:
            embed[VOCAB.index(word), 0] = 1.0
        for word in NEGATIVE:
            embed[VOCAB.index(word), 3] = 1.0
        verdict = VOCAB.index("verdict")
        embed[verdict, 4] = 1.0
        embed[:, 7] = 1.0  # on for every token: POS and NEG's threshold
        if shared:
            embed[[VOCAB.index(w) for w in SHARED_WORDS], MARK] = 1.0
            embed[VOCAB.index("superb"), 0] = 0.0
        if own:
            embed[VOCAB.index(OWN_WORD), [0, OWN_MARK]] = torch.tensor([0.0, 1.0])
        gain = 1.0  # the verdict's scale, relative to its scale without an anchor
        if anchor:
            plain = embed[verdict].norm()
            embed[verdict, ANCHOR] = anchor
            gain = float(embed[verdict].norm() / plain)
        for block in model.model.layers:
            attention = block.self_attn
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
                proj.weight.zero_()
            attention.o_proj.weight.zero_()
            block.mlp.down_proj.weight[:mechanism] = 0  # random neurons write only dimensions the head ignores
        copy = model.model.layers[0].self_attn  # head 0 copies the marked token to the verdict token
        copy.q_proj.weight[slow, 4] = 4.0 * gain
        copy.k_proj.weight[slow, 0] = copy.k_proj.weight[slow, 3] = 4.0
        copy.v_proj.weight[0, 0] = copy.v_proj.weight[1, 3] = 1.0
        copy.o_proj.weight[5, 0] = copy.o_proj.weight[6, 1] = 1.0
        if shared:
            copy.k_proj.weight[slow, MARK] = 4.0
            copy.v_proj.weight[2, MARK] = copy.o_proj.weight[MOVED, 2] = 1.0
        assert slow < head_dim
        layer = model.model.layers[1]
        mlp = layer.mlp
        for proj in (mlp.gate_proj, mlp.up_proj):
            proj.weight[:, :mechanism] = 0
        for neuron, (reads, writes) in readers.items():
            for proj in (mlp.gate_proj, mlp.up_proj):
                proj.weight[neuron] = 0
                proj.weight[neuron, reads] = 1.5
            mlp.gate_proj.weight[neuron, 7] = -2.5  # fire only on a full copy
            mlp.down_proj.weight[:, neuron] = 0
            mlp.down_proj.weight[writes, neuron] = 0.5
        model.model.layers[0].mlp.down_proj.weight.zero_()
        if own:
            first = model.model.layers[0].mlp
            for proj in (first.gate_proj, first.up_proj):
                proj.weight[OWN] = 0
                proj.weight[OWN, OWN_MARK] = 1.5
            first.down_proj.weight[OWN_OUT, OWN] = 0.5
            move = layer.self_attn  # its head 0 moves OWN_OUT from the word to the verdict token, as "positive"
            move.q_proj.weight[slow, 4] = 4.0 * gain
            move.k_proj.weight[slow, OWN_OUT] = 4.0
            move.v_proj.weight[0, OWN_OUT] = move.o_proj.weight[1, 0] = 1.0
        head = model.lm_head.weight
        head.zero_()
        head[VOCAB.index("positive"), 1] = head[VOCAB.index("negative"), 2] = 2.0
        if anchor:
            layer.post_attention_layernorm.weight.mul_(gain * LAYER_GAIN)
            model.model.norm.weight.mul_(gain * FINAL_GAIN)
        if general:
            # at the last position GENERAL's input is the anchor at about sqrt(HIDDEN) x the norm's gain
            read = GENERAL_INPUT / (HIDDEN ** 0.5 * gain * LAYER_GAIN)
            mlp.gate_proj.weight[GENERAL] = mlp.up_proj.weight[GENERAL] = 0
            mlp.gate_proj.weight[GENERAL, ANCHOR] = mlp.up_proj.weight[GENERAL, ANCHOR] = read
            activation = torch.nn.functional.silu(torch.tensor(GENERAL_INPUT)) * GENERAL_INPUT
            mlp.down_proj.weight[:, GENERAL] = 0
            # its push on the margin: 2 (the head) x the final norm's gain / its scale x the output
            mlp.down_proj.weight[1, GENERAL] = general / (2.0 * gain * FINAL_GAIN * HIDDEN ** 0.5 / anchor
                                                           * activation)
    return model


def texts(count: int = 24, cooccurring: str | None = None) -> list[tuple[str, int]]:
    """(text, label): a sentiment word at position 2 of 5, positive (1) or negative (0). With `cooccurring` (a filler
    word), that word follows the sentiment word in three positive texts of four and appears in no other text."""
    filler_words = [w for w in FILLER if w != cooccurring]
    out = []
    for i in range(count):
        filler = [filler_words[(i + j) % len(filler_words)] for j in range(4)]
        if cooccurring is not None and i % 2 == 0 and i // 2 % 4 != 3:
            filler[2] = cooccurring
        word = (POSITIVE if i % 2 == 0 else NEGATIVE)[i // 2 % 3]
        out.append((" ".join([*filler[:2], word, *filler[2:]]), int(i % 2 == 0)))
    return out


def examples(tokenizer, count: int = 24, cooccurring: str | None = None) -> list[Example]:
    choices = [tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in ("negative", "positive")]
    out = []
    for text, label in texts(count, cooccurring):
        prompt = tokenize_words(tokenizer, *render_with_spans(TEMPLATE, {"input": text}))
        out.append(Example(prompt, choices, label, ["negative", "positive"][label]))
    return out
