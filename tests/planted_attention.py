"""The planted attention model of the NSA tests, whose word -> neuron -> answer path runs through attention.

The planted 2-layer Llama: a sentiment word sits mid-sentence; in layer 0 one attention head, queried by the final
"verdict" token, attends to whichever token carries a sentiment marker and copies it to the last position (positive
words: dimension 5, negative: dimension 6). In layer 1, neuron POS reads dimension 5 (gated by a threshold, so
the partial copies other positions get leave it off) and writes what the head reads as "positive", neuron NEG
reads dimension 6 and writes "negative". Every other layer-1 neuron is random and writes
only dimensions the head ignores (so it acts, if at all, through the final norm). At the word's own tokens POS and
NEG do nearly nothing: NSA that looks only there (the paper's association) cannot pair them with the words.
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
LLAMA = get_family("llama")
TEMPLATE = "{input} verdict"


def planted_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[PAD]")


def planted_model():
    config = tf.LlamaConfig(hidden_size=HIDDEN, intermediate_size=WIDTH, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=4, vocab_size=len(VOCAB), max_position_embeddings=64,
                            rope_theta=1e6, tie_word_embeddings=False, attn_implementation="eager")
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(config).eval()
    head_dim, slow = HIDDEN // 4, HIDDEN // 4 // 2 - 1  # rotary pair `slow` turns ~1e-5 rad a position: content only
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        embed[:, :10] = 0  # dimensions 0-9 are the mechanism's; 10-63 random, as any token's
        embed[:, 10:] *= 0.3 / embed[:, 10:].std()
        for word in POSITIVE:
            embed[VOCAB.index(word), 0] = 1.0
        for word in NEGATIVE:
            embed[VOCAB.index(word), 3] = 1.0
        embed[VOCAB.index("verdict"), 4] = 1.0
        embed[:, 7] = 1.0  # on for every token: POS and NEG's threshold
        for block in model.model.layers:
            attention = block.self_attn
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
                proj.weight.zero_()
            attention.o_proj.weight.zero_()
            block.mlp.down_proj.weight[:10] = 0  # random neurons write only dimensions the head ignores
        copy = model.model.layers[0].self_attn  # head 0 copies the marked token to the verdict token
        copy.q_proj.weight[slow, 4] = 4.0
        copy.k_proj.weight[slow, 0] = copy.k_proj.weight[slow, 3] = 4.0
        copy.v_proj.weight[0, 0] = copy.v_proj.weight[1, 3] = 1.0
        copy.o_proj.weight[5, 0] = copy.o_proj.weight[6, 1] = 1.0
        assert slow < head_dim
        mlp = model.model.layers[1].mlp
        for proj in (mlp.gate_proj, mlp.up_proj):
            proj.weight[:, :10] = 0
            proj.weight[POS] = proj.weight[NEG] = 0
            proj.weight[POS, 5] = proj.weight[NEG, 6] = 1.5
        mlp.gate_proj.weight[POS, 7] = mlp.gate_proj.weight[NEG, 7] = -2.5  # fire only on a full copy
        mlp.down_proj.weight[:, [POS, NEG]] = 0
        mlp.down_proj.weight[1, POS] = mlp.down_proj.weight[2, NEG] = 0.5
        model.model.layers[0].mlp.down_proj.weight.zero_()
        head = model.lm_head.weight
        head.zero_()
        head[VOCAB.index("positive"), 1] = head[VOCAB.index("negative"), 2] = 2.0
    return model


def texts(count: int = 24) -> list[tuple[str, int]]:
    """(text, label): a sentiment word at position 2 of 5, positive (1) or negative (0)."""
    out = []
    for i in range(count):
        filler = [FILLER[(i + j) % len(FILLER)] for j in range(4)]
        word = (POSITIVE if i % 2 == 0 else NEGATIVE)[i // 2 % 3]
        out.append((" ".join([*filler[:2], word, *filler[2:]]), int(i % 2 == 0)))
    return out


def examples(tokenizer, count: int = 24) -> list[Example]:
    choices = [tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in ("negative", "positive")]
    out = []
    for text, label in texts(count):
        prompt = tokenize_words(tokenizer, *render_with_spans(TEMPLATE, {"input": text}))
        out.append(Example(prompt, choices, label, ["negative", "positive"][label]))
    return out
