"""The numbers that set a stage's memory: a model's shape (its config.json, or models/configs.yaml) and the run's
(params.yaml)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
CONFIGS = Path(__file__).parents[1] / "models" / "configs.yaml"


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a model's config.json that set its memory."""

    name: str
    family: str
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    blocks: int
    tied_embeddings: bool
    dtype: str
    max_positions: int = 2048
    head_size: int | None = None  # config.head_dim where the config sets it (Gemma 3: 256, not hidden / heads)
    attention_types: int = 1  # distinct attention types (Gemma 3: sliding-window and full): one packed mask each

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def head_dim(self) -> int:
        return self.head_size or self.hidden // self.heads

    @property
    def gated_mlp(self) -> bool:
        """LLaMA, Mistral, Qwen2: down(act(gate(x)) * up(x)); OPT: fc2(relu(fc1(x)))."""
        return self.family != "opt"

    def linears(self) -> list[tuple[str, int, int]]:
        """(name, C_out, C_in) of every Linear of one block: what the driver prunes (driver.block_linears)."""
        kv = self.kv_heads * self.head_dim
        attention = [("q", self.heads * self.head_dim, self.hidden), ("k", kv, self.hidden), ("v", kv, self.hidden),
                     ("o", self.hidden, self.heads * self.head_dim)]
        mlp = ([("gate", self.intermediate, self.hidden)] if self.gated_mlp else []) + [
            ("up", self.intermediate, self.hidden), ("down", self.hidden, self.intermediate)]
        return attention + mlp

    def distinct_inputs(self) -> list[int]:
        """C_in of each distinct Linear input (stats.collect_inputs shares q/k/v and gate/up): one InputStats each."""
        return [self.hidden, self.heads * self.head_dim, self.hidden, self.intermediate]

    @classmethod
    def from_config(cls, name: str, config: dict, dtype: str | None = None) -> ModelShape:
        """From a config.json (or a configs.yaml entry, the same keys); dtype: params.yaml's, else the config's.
        Gemma 3 configs without layer_types get them from transformers (always sliding-window and full mixed), and
        tie their head by default, as OPT does."""
        family = config.get("model_type", "llama")
        heads = config["num_attention_heads"]
        layer_types = config.get("layer_types")
        return cls(name=name, family=family, hidden=config["hidden_size"],
                   intermediate=config.get("intermediate_size") or config["ffn_dim"], heads=heads,
                   kv_heads=config.get("num_key_value_heads") or heads, vocab=config["vocab_size"],
                   blocks=config["num_hidden_layers"],
                   tied_embeddings=config.get("tie_word_embeddings", family in ("opt", "gemma3_text")),
                   dtype=dtype or str(config.get("dtype") or config.get("torch_dtype") or "float16"),
                   max_positions=config.get("max_position_embeddings", 2048), head_size=config.get("head_dim"),
                   attention_types=len(set(layer_types)) if layer_types else 2 if family == "gemma3_text" else 1)


@dataclass(frozen=True)
class RunShape:
    """The run's parameters that set memory (params.yaml: calibration, pruning, evaluation, offload)."""

    nsamples: int = 128
    seqlen: int = 2048
    calibration_batch_size: int = 8
    eval_batch_size: int = 16
    eval_context: int = 2048  # tokens of the widest packed evaluation row (a context with its continuations)
    device: str = "cuda"  # "cpu": every device term is host memory
    offload_gpu_gib: float | None = None  # params.yaml offload.max_gpu_memory: weights beyond it wait on the host
    sparsegpt_blocksize: int = 128


@functools.cache
def load_shapes(path: str | Path = CONFIGS) -> dict[str, dict]:
    """configs.yaml: name -> the public config.json numbers (read once)."""
    return yaml.safe_load(Path(path).read_text())["models"]


def model_shape(name: str, dtype: str | None = None, configs: dict[str, dict] | None = None) -> ModelShape:
    """A model's shape by its params.yaml name (configs.yaml), or from a local folder's config.json."""
    folder = Path(name)
    if (folder / "config.json").is_file():
        return ModelShape.from_config(folder.name, json.loads((folder / "config.json").read_text()), dtype)
    configs = load_shapes() if configs is None else configs
    if name not in configs:
        raise ValueError(f"memory plan: no config for model {name!r}: add its config.json numbers to {CONFIGS}, "
                         "or give a folder holding a config.json")
    return ModelShape.from_config(name, configs[name], dtype)


def run_shape(params: dict, grid: str | None = None, device: str = "cuda", eval_context: int = 2048) -> RunShape:
    """The memory-relevant parameters of params.yaml (its selected grid unless `grid`); eval_context: the widest
    evaluation row in tokens (the datasets set it, not params.yaml)."""
    chosen = params["grids"][grid or params["grid"]]
    offload = params.get("offload") or {}
    return RunShape(nsamples=chosen["calibration"]["nsamples"], seqlen=chosen["calibration"]["seqlen"],
                    calibration_batch_size=params["pruning"]["calibration_batch_size"],
                    eval_batch_size=params["evaluation"]["batch_size"], eval_context=eval_context, device=device,
                    offload_gpu_gib=offload.get("max_gpu_memory"),
                    sparsegpt_blocksize=params["pruning"]["sparsegpt"]["blocksize"])
