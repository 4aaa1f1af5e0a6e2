"""SharedContextLM gives lm-eval's own answers: the same (log-prob, is-greedy) per request as HFLM's plain loop."""

from __future__ import annotations

import random

import pytest
import torch
from lm_eval.models.huggingface import HFLM

from conftest import make_tiny_model
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
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(context):]


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "opt", "gpt_neox"])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_shared_context_scores_equal_lm_eval(tiny_tokenizer, family, batch_size):
    model = make_tiny_model(family, len(tiny_tokenizer))
    requests = multiple_choice_requests(model, len(tiny_tokenizer))
    ours = SharedContextLM(pretrained=model, tokenizer=tiny_tokenizer, batch_size=batch_size)
    theirs = HFLM(pretrained=model, tokenizer=tiny_tokenizer, batch_size=4)
    our_answers = ours._loglikelihood_tokens(requests, disable_tqdm=True)
    their_answers = theirs._loglikelihood_tokens(requests, disable_tqdm=True)
    assert [greedy for _, greedy in our_answers] == [greedy for _, greedy in their_answers]
    assert any(greedy for _, greedy in their_answers) and not all(greedy for _, greedy in their_answers)
    assert [logprob for logprob, _ in our_answers] == pytest.approx([logprob for logprob, _ in their_answers],
                                                                    abs=1e-4, rel=1e-5)


def test_an_over_long_request_is_scored_by_lm_eval_itself(tiny_tokenizer, tiny_llama):
    """lm-eval truncates inputs longer than the model's window from the left; that path is left to it."""
    requests = multiple_choice_requests(tiny_llama, len(tiny_tokenizer))
    ours = SharedContextLM(pretrained=tiny_llama, tokenizer=tiny_tokenizer, batch_size=4, max_length=24)
    theirs = HFLM(pretrained=tiny_llama, tokenizer=tiny_tokenizer, batch_size=4, max_length=24)
    assert ours._loglikelihood_tokens(requests, disable_tqdm=True) == theirs._loglikelihood_tokens(
        requests, disable_tqdm=True)
