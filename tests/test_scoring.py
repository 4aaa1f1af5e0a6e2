"""SharedContextLM gives lm-eval's own answers: the same (log-prob, is-greedy) per request as HFLM's plain loop."""

from __future__ import annotations

import random

import pytest
import torch
from lm_eval.models.huggingface import HFLM

from conftest import input_devices, make_tiny_model
from prunescope.evaluation.scoring import SharedContextLM


def multiple_choice_requests(model, vocab_size: int, seed: int = 0) -> list:
    """Contexts of 1 to 40 tokens with 1 to 4 continuations of 1 to 6 tokens each; one continuation per
    context is the model's own greedy one, so is_greedy is True somewhere (random ones are almost never greedy)."""
    rng = random.Random(seed)
    requests = []
    for _ in range(13):
        context = [rng.randrange(2, vocab_size) for _ in range(rng.randint(1, 40))]
        continuations = [[rng.randrange(2, vocab_size) for _ in range(rng.randint(1, 6))]
                         for _ in range(rng.randint(1, 4))]
        continuations.append(greedy_continuation(model, context, rng.randint(1, 4)))
        requests += [(("ctx", "cont"), context, continuation) for continuation in continuations]
    rng.shuffle(requests)
    return requests


@torch.no_grad()
def greedy_continuation(model, context: list[int], length: int) -> list[int]:
    ids = list(context)
    for _ in range(length):
        ids.append(int(model(torch.tensor([ids], device=model.device)).logits[0, -1].argmax()))
    return ids[len(context):]


# Per dtype: (abs, rel) tolerance on each summed log-prob, and how many is-greedy flags may differ. fp32: the same
# arithmetic summed in another order, ~1e-6 per token. Half precision (CUDA): packed and one-per-request inputs have
# other shapes, so cuBLAS and SDPA pick other kernels and summation orders; a logit of size ~1-10 then moves by a few
# units in the last place of the dtype (2^-11 relative in fp16, 2^-8 in bf16), summed over up to 6 tokens, and a
# token whose two best logits are that close may change its argmax.
TOLERANCES = {torch.float32: (1e-4, 1e-5, 0), torch.float16: (2e-2, 5e-3, 2), torch.bfloat16: (1e-1, 2e-2, 3)}
DEVICE_DTYPES = [("cpu", torch.float32),
                 *(pytest.param("cuda", dtype, marks=pytest.mark.gpu) for dtype in TOLERANCES)]


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "opt", "gpt_neox", "gemma3_text"])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_shared_context_scores_equal_lm_eval(tiny_tokenizer, family, batch_size, device, dtype):
    """gemma3_text alternates full and sliding-window layers, its window (4 tokens) far shorter than the contexts."""
    model = make_tiny_model(family, len(tiny_tokenizer)).to(device, dtype)
    assert_scores_equal_lm_eval(model, tiny_tokenizer, batch_size, device, dtype)


def test_a_sliding_window_on_every_layer_scores_as_lm_eval(tiny_tokenizer):
    """Mistral with a 4-token window (one attention type, so one windowed mask), contexts of up to 40 tokens."""
    model = make_tiny_model("mistral", len(tiny_tokenizer))
    model.config.sliding_window = 4
    assert_scores_equal_lm_eval(model, tiny_tokenizer, 3, "cpu", torch.float32)


def assert_scores_equal_lm_eval(model, tokenizer, batch_size: int, device: str, dtype: torch.dtype) -> None:
    requests = multiple_choice_requests(model, len(tokenizer))
    ours = SharedContextLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    theirs = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4)
    with input_devices(model) as seen:
        our_answers = ours._loglikelihood_tokens(requests, disable_tqdm=True)
        their_answers = theirs._loglikelihood_tokens(requests, disable_tqdm=True)
    assert seen == {device}
    absolute, relative, flips = TOLERANCES[dtype]
    assert sum(ours_[1] != theirs_[1] for ours_, theirs_ in zip(our_answers, their_answers, strict=True)) <= flips
    assert any(greedy for _, greedy in their_answers) and not all(greedy for _, greedy in their_answers)
    assert [logprob for logprob, _ in our_answers] == pytest.approx([logprob for logprob, _ in their_answers],
                                                                    abs=absolute, rel=relative)


def test_only_the_over_long_requests_are_scored_by_lm_eval_itself(tiny_tokenizer, tiny_llama, caplog):
    """lm-eval truncates inputs longer than the model's window from the left, which no shared context survives:
    those requests alone go through its own loop (the same answers bit for bit), the others stay packed."""
    requests = multiple_choice_requests(tiny_llama, len(tiny_tokenizer))
    ours = SharedContextLM(pretrained=tiny_llama, tokenizer=tiny_tokenizer, batch_size=4, max_length=24)
    theirs = HFLM(pretrained=tiny_llama, tokenizer=tiny_tokenizer, batch_size=4, max_length=24)
    too_long = [len(context) + len(continuation) > 24 for _, context, continuation in requests]
    assert 0 < sum(too_long) < len(requests)
    with caplog.at_level("INFO", logger="prunescope.evaluation.scoring"):
        our_answers = ours._loglikelihood_tokens(requests, disable_tqdm=True)
    assert f"{sum(too_long)} of {len(requests)} requests exceed max_length 24" in caplog.text
    their_answers = theirs._loglikelihood_tokens(requests, disable_tqdm=True)
    for long, ours_, theirs_ in zip(too_long, our_answers, their_answers, strict=True):
        if long:
            assert ours_ == theirs_
        else:
            assert ours_[1] == theirs_[1] and ours_[0] == pytest.approx(theirs_[0], abs=1e-4, rel=1e-5)


def test_an_attention_without_4d_masks_falls_back_to_lm_eval_with_one_warning(tiny_tokenizer, tiny_llama, caplog,
                                                                             monkeypatch):
    requests = multiple_choice_requests(tiny_llama, len(tiny_tokenizer))
    ours = SharedContextLM(pretrained=tiny_llama, tokenizer=tiny_tokenizer, batch_size=4)
    handed = []
    monkeypatch.setattr(HFLM, "_loglikelihood_tokens", lambda self, reqs, *args: handed.append(reqs) or
                        [(0.0, False)] * len(reqs))
    monkeypatch.setattr(tiny_llama.config, "_attn_implementation", "flash_attention_2")
    with caplog.at_level("WARNING", logger="prunescope.evaluation.scoring"):
        assert ours._loglikelihood_tokens(requests, disable_tqdm=True) == [(0.0, False)] * len(requests)
    assert handed == [requests]
    assert "'flash_attention_2' takes no packed 4-D mask" in caplog.text
