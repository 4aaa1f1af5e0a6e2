"""Evaluation and NSA of a model larger than the job's device: accelerate's big-model inference (params.yaml offload).

With a memory budget set, a model whose weights exceed it on the job's device is dispatched with accelerate's
hooks: the blocks that fit stay on the device, the next ones are held in host memory (up to offload.max_cpu_memory)
and the rest on disk, and each offloaded block's weights are moved to the device for its own forward only. The
computation is the same, on the same device; what it costs is the transfer of the offloaded weights at every forward.
With no budget set, or when the model fits, the model is loaded whole on the device exactly as without offload.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from prunescope.models.prepare import DTYPES, load_model, load_tokenizer

GIB = 1024 ** 3


def offload_device_map(model_dir: str | os.PathLike, dtype: str, device: torch.device,
                       offload: Mapping | None) -> dict[str, int | str] | None:
    """accelerate's device map of the model within offload's budgets (GiB; null: what the device has free, 90% of
    a GPU's), from its config alone; None when offload is off (None, or no budget set) or the whole model fits on
    `device`.

    On a CPU job max_gpu_memory does not apply: blocks beyond max_cpu_memory go to disk.
    """
    if offload is None or (offload["max_gpu_memory"] is None and offload["max_cpu_memory"] is None):
        return None
    from accelerate import infer_auto_device_map, init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():  # on the meta device: no weight is read or allocated
        empty = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=DTYPES[dtype])
    empty.tie_weights()  # tied embeddings and output head are one weight, placed once
    main = execution_device_key(device)
    budgets = {"cpu": _budget(offload["max_cpu_memory"], "cpu")}
    if main != "cpu":
        budgets[main] = _budget(offload["max_gpu_memory"], main)
    device_map = infer_auto_device_map(empty, max_memory=budgets, dtype=DTYPES[dtype],
                                       no_split_module_classes=list(empty._no_split_modules or ()))
    if main not in device_map.values():
        raise ValueError(f"not even the model's first module fits in the {budgets[main] / GIB:.3g} GiB offload "
                         f"allows on {device} (offload.max_{'cpu' if main == 'cpu' else 'gpu'}_memory in params.yaml; "
                         "when null, what the device has free): raise it or free the device")
    return None if set(device_map.values()) == {main} else device_map


def _budget(gib: float | None, key: int | str) -> int:
    """GiB as bytes; null: what the device has free (90% of a GPU's: the rest is left for activations)."""
    if gib is not None:
        return int(gib * GIB)
    from accelerate.utils import get_max_memory

    free = get_max_memory()[key]
    return free if key == "cpu" else int(0.9 * free)


def execution_device_key(device: torch.device) -> int | str:
    """How accelerate's device maps name `device`: a GPU by its index, else "cpu"."""
    return (device.index or 0) if device.type == "cuda" else "cpu"


@contextlib.contextmanager
def loaded_model(model_dir: str | os.PathLike, dtype: str, device: torch.device, offload: Mapping | None,
                 pruned_dir: str | os.PathLike | None = None) -> Iterator[tuple[torch.nn.Module, object]]:
    """(model, tokenizer): the prepared model, pruned by the artifact at pruned_dir if given, ready to run on
    `device`; dispatched with offload when offload_device_map says so. Disk-offloaded weights live in a fresh folder
    under offload.folder (null: the system's temporary folder), removed when the block exits.

    An offloaded weight sits on the meta device while its values live in accelerate's offload store, so writing
    into it would change nothing: a pruned model is first written, block by block, as a pruned checkpoint into that
    folder (write_pruned_checkpoint: host memory of one block), and then loaded from it exactly as a dense model is,
    dispatched as it loads, its disk-offloaded weights read in place from the safetensors files.
    """
    from prunescope.pruning import apply_artifact, write_pruned_checkpoint

    device_map = offload_device_map(model_dir, dtype, device, offload)
    if device_map is None:
        model, tokenizer = load_model(model_dir, dtype, device)
        if pruned_dir:
            apply_artifact(model, pruned_dir)
        yield model, tokenizer
        return
    from transformers import AutoModelForCausalLM

    if offload["folder"] is not None:
        Path(offload["folder"]).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prunescope-offload-", dir=offload["folder"]) as folder:
        weights = model_dir
        if pruned_dir:
            weights = Path(folder) / "pruned-checkpoint"
            write_pruned_checkpoint(model_dir, dtype, pruned_dir, weights)
        model = AutoModelForCausalLM.from_pretrained(weights, dtype=DTYPES[dtype], device_map=device_map,
                                                     offload_folder=folder)
        yield model.eval(), load_tokenizer(model_dir)


def is_dispatched(model: torch.nn.Module) -> bool:
    """Whether accelerate's hooks place the model's weights (a device map), so it must not be moved as a whole."""
    return getattr(model, "hf_device_map", None) is not None


def input_device(model: torch.nn.Module) -> torch.device:
    """Where the model's inputs go: its input embeddings' device, or on a dispatched model the device its hook runs
    them on (an offloaded weight sits on the meta device)."""
    embeddings = model.get_input_embeddings()
    hook_device = getattr(getattr(embeddings, "_hf_hook", None), "execution_device", None)
    if hook_device is None:
        return embeddings.weight.device
    return torch.device("cuda", hook_device) if isinstance(hook_device, int) else torch.device(hook_device)


@contextlib.contextmanager
def offloaded_weights_reread_in_backward(model: torch.nn.Module) -> Iterator[None]:
    """Autograd keeps each weight a forward multiplied by (and each weight that wants a gradient) until the backward
    pass, so a forward with gradients (NSA's importance, the gradient attributions) would hold every offloaded weight
    on the device at once: the whole model. Inside the block, offloaded weights want no gradient (NSA reads the
    activations' gradients only), and each is saved as a reference to its offload store, read from there again when
    the backward pass needs it. Nothing changes for a model that is not offloaded."""
    offloaded = [module for module in model.modules() if getattr(getattr(module, "_hf_hook", None), "offload", False)
                 and next(module.parameters(recurse=False), None) is not None]
    if not offloaded:
        yield
        return
    running: list[torch.nn.Module] = []  # the offloaded modules whose forward is under way, innermost last

    def pack(tensor: torch.Tensor):  # the weight itself, or a view of it (a Linear saves its transpose)
        for name, parameter in running[-1].named_parameters(recurse=False) if running else ():
            if (tensor.untyped_storage().data_ptr() == parameter.untyped_storage().data_ptr()
                    and tensor.dtype == parameter.dtype and parameter.is_contiguous()):
                offset = tensor.storage_offset() - parameter.storage_offset()
                return running[-1], name, tensor.dtype, tensor.shape, tensor.stride(), offset
        return tensor

    def unpack(packed):
        if isinstance(packed, torch.Tensor):
            return packed
        module, name, dtype, shape, stride, offset = packed
        stored = module._hf_hook.weights_map[name].to(module._hf_hook.execution_device, dtype).contiguous()
        return stored.as_strided(shape, stride, stored.storage_offset() + offset)

    def enter(module: torch.nn.Module, _args) -> None:
        running.append(module)

    def leave(_module, _args, _output) -> None:  # a hook that returns something replaces the output
        running.pop()

    handles = [handle for module in offloaded
               for handle in (module.register_forward_pre_hook(enter), module.register_forward_hook(leave))]
    wanting = [(module, name) for module in offloaded for name, parameter in module.named_parameters(recurse=False)
               if parameter.requires_grad]
    for module, name in wanting:
        getattr(module, name).requires_grad_(False)  # a loaded weight takes its meta placeholder's flag
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield
    finally:
        for handle in handles:
            handle.remove()
        for module, name in wanting:
            getattr(module, name).requires_grad_(True)
