"""Shared fixtures: tiny random models and a locally trained tokenizer, so unit tests need no hub."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
import torch

# No model hub in tests: a missing local file must fail fast instead of trying the network.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = [
    "The movie was wonderful and the acting was great.",
    "The film was terrible, boring and far too long.",
    "Is the sky blue on a clear day? Yes, it is.",
    "Premise: a man walks a dog. Hypothesis: a person is outside.",
    "She went home early because she felt tired after work.",
    "What does Tracy need to do before this? Find somewhere to go.",
    "Both are fruit. Both are used to measure. Both tell time.",
    "positive negative entailment non-entailment yes no maybe",
] * 4


def pytest_runtest_setup(item):
    """Tests marked `gpu` are collected everywhere and skipped, with the reason, where torch sees no CUDA device."""
    if item.get_closest_marker("gpu") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device: torch.cuda.is_available() is False")


@contextlib.contextmanager
def input_devices(model: torch.nn.Module) -> Iterator[set[str]]:
    """The device types of every tensor fed to the model's Linear layers while inside: proof that a run used the
    device it was asked for (the driver keeps the model on the CPU and moves one block at a time)."""
    seen: set[str] = set()
    handles = [module.register_forward_pre_hook(lambda _, args: seen.add(args[0].device.type))
               for module in model.modules() if isinstance(module, torch.nn.Linear)]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: thread start-up dominates, and a busy machine makes 2 threads ~100x slower than 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """A byte-level BPE tokenizer trained on a few sentences, saved and reloaded like a real one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    path = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(path)
    return PreTrainedTokenizerFast.from_pretrained(path)


def make_tiny_model(family: str, vocab_size: int, seed: int = 0, layers: int = 2, window: int = 4):
    """A random decoder of the given family (hidden 64, 2 layers by default), in eval mode, fp32.

    gemma3_text as Gemma 3 is built: sliding-window and full-attention layers alternating (a window of `window`
    tokens, by default 4, so tests' sequences exceed it), head_dim 32 != hidden / heads, tied head.
    """
    import transformers as tf

    configs = {
        "llama": lambda: tf.LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512,
        ),
        "mistral": lambda: tf.MistralConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, sliding_window=None,
        ),
        "qwen2": lambda: tf.Qwen2Config(
            hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512,
        ),
        "opt": lambda: tf.OPTConfig(
            hidden_size=64, ffn_dim=128, num_hidden_layers=layers, num_attention_heads=4,
            word_embed_proj_dim=64, max_position_embeddings=512,
        ),
        "gpt_neox": lambda: tf.GPTNeoXConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
            max_position_embeddings=512,
        ),
        "gemma3_text": lambda: tf.Gemma3TextConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=512, sliding_window=window,
            layer_types=[("sliding_attention", "full_attention")[i % 2] for i in range(layers)],
        ),
    }
    config = configs[family]()
    config.vocab_size = vocab_size
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


@pytest.fixture
def tiny_llama(tiny_tokenizer):
    return make_tiny_model("llama", len(tiny_tokenizer))


# pytest-xdist (`make test`: -n 2 --dist loadscope --no-loadscope-reorder) hands out one module or class at a time,
# in this order: XDIST_ORDER 0 first (test_end_to_end's own tests: the first of them builds the shared run, which
# starts at once), then the rest, then XDIST_ORDER 2 (test_end_to_end.TestOnClones), so that the other worker runs
# the unit tests while the run is being built and then that class beside the module's tests. Without xdist the
# order is the files' own.
def pytest_collection_modifyitems(config, items):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def rank(item) -> int:
        for owner in (getattr(item, "cls", None), getattr(item, "module", None)):
            if owner is not None and hasattr(owner, "XDIST_ORDER"):
                return owner.XDIST_ORDER
        return 1

    items.sort(key=rank)  # stable: each module's and class's own order is kept
