"""A model read from its safetensors checkpoint one decoder block at a time.

Pruning needs the model's embeddings and, in turn, each block: loading the whole model first (the 140 GB of a 70B
model in fp16) is what bounds host memory. Here every parameter starts on the meta device (accelerate's
init_empty_weights); the modules run before block 0 are read in at once, and each block is read straight onto the
pruning device when the driver reaches it and dropped back to meta when it is done. The pruned weights of a
weight-updating method (SparseGPT) are kept in a scratch folder, block by block, for save_artifact.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from accelerate import init_empty_weights
from accelerate.utils import set_module_tensor_to_device
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from prunescope.models.families import get_family
from prunescope.models.prepare import DTYPES

SINGLE_FILE, INDEX = "model.safetensors", "model.safetensors.index.json"


class CheckpointBlocks:
    """`model`: the skeleton (pre-block modules loaded, everything else on meta); `resident` brings one block in."""

    def __init__(self, model_dir: str | Path, dtype: str, family: str, scratch_dir: str | Path):
        from transformers import AutoConfig, AutoModelForCausalLM

        self.folder, self.scratch = Path(model_dir), Path(scratch_dir)
        self.dtype, self.adapter = DTYPES[dtype], get_family(family)
        self.files = tensor_files(self.folder)
        with init_empty_weights(include_buffers=False):  # buffers (rotary frequencies) are computed for real
            self.model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(self.folder), dtype=self.dtype)
        self.model.eval()
        paths = {module: name for name, module in self.model.named_modules()}
        for module in self.adapter.pre_block_modules(self.model):
            self._load(paths[module], torch.device("cpu"))

    @contextlib.contextmanager
    def resident(self, index: int, block: nn.Module, device: torch.device, keep_pruned: bool) -> Iterator[None]:
        """Block `index` read onto `device` for the duration; then, if keep_pruned, its Linear weights saved to the
        scratch folder (pruned_weight reads them), and the block back on meta."""
        path = f"{self.adapter.blocks_path}.{index}"
        self._load(path, device)
        try:
            yield
            if keep_pruned:
                weights = {f"{path}.{name}.weight": module.weight.detach().cpu()
                           for name, module in block.named_modules() if isinstance(module, nn.Linear)}
                save_file(weights, self.scratch / f"block-{index}.safetensors")
        finally:
            block.to("meta")

    def pruned_weight(self, name: str) -> torch.Tensor:
        """The pruned weight of Linear `name` (a full module path) as resident saved it."""
        index = name.removeprefix(f"{self.adapter.blocks_path}.").split(".")[0]
        with safe_open(self.scratch / f"block-{index}.safetensors", framework="pt") as handle:
            return handle.get_tensor(f"{name}.weight")

    def _load(self, path: str, device: torch.device) -> None:
        """Every parameter (and stored buffer) of module `path` from the checkpoint onto `device`, in the model's
        dtype as from_pretrained would cast it."""
        module = self.model.get_submodule(path)
        names = [name for name, _ in module.named_parameters()] + [
            name for name, _ in module.named_buffers() if f"{path}.{name}" in self.files]
        for name in names:
            key = f"{path}.{name}"
            if key not in self.files:
                raise ValueError(f"{self.folder}: the checkpoint has no tensor {key!r}; rerun the prepare_model rule")
            with safe_open(self.files[key], framework="pt", device=str(device)) as handle:
                tensor = handle.get_tensor(key)
            set_module_tensor_to_device(module, name, device, value=tensor,
                                        dtype=self.dtype if tensor.is_floating_point() else None)


def tensor_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (one file, or the shards of an index)."""
    if (folder / INDEX).is_file():
        index = json.loads((folder / INDEX).read_text())["weight_map"]
        return {key: folder / file for key, file in index.items()}
    if not (folder / SINGLE_FILE).is_file():
        raise ValueError(f"{folder}: no {SINGLE_FILE} or {INDEX}; rerun the prepare_model rule")
    with safe_open(folder / SINGLE_FILE, framework="pt") as handle:
        return dict.fromkeys(handle.keys(), folder / SINGLE_FILE)
