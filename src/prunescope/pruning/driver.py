"""Sequential block driver shared by every method.

Block 0's inputs and the arguments every block receives are captured wholesale from the model's own forward
(each block's forward replaced by a recorder that passes its input through), so rotary embeddings, masks and cache
flags of new transformers versions need no per-family code, and models that hand each block the mask and position
embeddings of its own attention type (Gemma 3's sliding-window and full layers) get them block by block. Each block
is then moved alone to the device, run densely over the calibration batches while hooks accumulate fp32
statistics, pruned, and run again to feed its pruned outputs to the next block.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import resource
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from prunescope.models.families import Family, get_family
from prunescope.pruning.masks import LayerPruning, check_protection, pack_mask, unpack_mask
from prunescope.pruning.options import METHODS, PruneOptions
from prunescope.pruning.owl import REQUIREMENTS, OwlOptions, block_sparsities, outlier_ratio
from prunescope.pruning.stats import InputStats, collect_inputs
from prunescope.pruning.wanda import wanda_scores

logger = logging.getLogger(__name__)


@dataclass
class PruneResult:
    """What one pruning run produced: bit-packed keep-masks (pack_mask; 1 bit per weight is all a run holds in host
    memory beside the model), per-layer records and run figures.

    SparseGPT's kept values are not copied out: they are the pruned model's own weights, which save_artifact reads
    layer by layer (updates_weights says whether they must be saved). error_method says how the layers'
    reconstruction errors were obtained (InputStats.error_method; None for a data-free run); layer_sparsity how each
    block's sparsity was set (uniform, or OWL's parameters and per-block sparsities).
    """

    method: str
    family: str
    sparsity: float
    structure: str
    method_options: dict[str, Any]
    updates_weights: bool
    error_method: str | None = None
    layer_sparsity: dict[str, Any] = field(default_factory=lambda: {"kind": "uniform"})
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def mask(self, name: str) -> torch.Tensor:
        """Layer `name`'s keep-mask, unpacked."""
        shape = next(layer["shape"] for layer in self.layers if layer["name"] == name)
        return unpack_mask(self.masks[name], shape)


Residence = Callable[[int, nn.Module, torch.device], contextlib.AbstractContextManager]


class _StopForward(Exception):
    """Raised by the capture recorder once the last block's arguments are recorded."""


def prune_model(model: nn.Module, family: str, options: PruneOptions, calibration: torch.Tensor | None,
                device: torch.device | str, protected_neurons: Mapping[int, Sequence[int]] | None = None,
                residence: Residence | None = None) -> PruneResult:
    """Prune every Linear of the decoder blocks in place, as `options` say; embeddings and lm_head are never
    touched.

    protected_neurons ({block index: MLP intermediate neurons}, NSA-guided pruning) exempts those neurons' weights
    (protected_weights) from pruning; each Linear still loses as many weights as without protection.
    residence(index, block, device) brings one block onto the device for its turn: by default it moves the block
    of an in-memory model there and back; models.streamed.CheckpointBlocks.resident reads it from the checkpoint.
    options.owl sets each block's sparsity from its outlier ratio (pruning/owl.py), a dense pass over the blocks first.
    """
    method, sparsity, structure, owl = options.method, options.sparsity, options.structure, options.owl
    batch_size, nm, prune_layer = options.batch_size, options.nm, options.layer_pruning()
    adapter = get_family(family)
    device = torch.device(device)
    check_protection(nm, protected_neurons)
    n_blocks = len(adapter.blocks(model))
    if protected_neurons and not all(0 <= index < n_blocks for index in protected_neurons):
        raise ValueError(f"protected_neurons has block indices {sorted(protected_neurons)}; the model has "
                         f"{n_blocks} blocks")
    if calibration is None and METHODS[method].CALIBRATED:
        raise ValueError(f"method {method!r} needs calibration data")
    if owl is not None and calibration is None:
        raise ValueError(f"{REQUIREMENTS}; got {structure} without calibration")
    if any(hasattr(module, "_hf_hook") for module in model.modules()):
        raise ValueError("prune_model needs the model in host memory, not dispatched by accelerate (device_map): "
                         "load it with load_model(..., device='cpu'); the driver moves one block at a time")
    result = PruneResult(method, family, sparsity, structure, dict(options.method_options),
                         METHODS[method].UPDATES_WEIGHTS)
    residence = residence or (lambda index, block, device: _on_device(block, device))
    if device.type == "cuda":
        torch.cuda.init()  # the peak counters of a device exist only once CUDA is initialised
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()

    sparsities = [sparsity] * n_blocks

    def prune_block(index: int, block: nn.Module, stats: dict[str, InputStats] | None) -> None:
        neurons = None if protected_neurons is None else protected_neurons.get(index, ())
        protected = {} if neurons is None else protected_weights(adapter, block, neurons)
        for name, layer in block_linears(block).items():
            stat = stats[name] if stats is not None else None
            mask = protected.get(name)
            pruned = prune_layer(layer.weight.float(), stat, sparsities[index], nm, protected=mask)
            _prune_linear(f"{adapter.blocks_path}.{index}.{name}", layer, pruned, stat, result,
                          None if neurons is None else 0 if mask is None else int(mask.sum()))

    with torch.no_grad(), _fp32_matmul():
        if calibration is None:
            for index, block in enumerate(tqdm(adapter.blocks(model), desc=f"{method} (data-free)")):
                with residence(index, block, device):
                    prune_block(index, block, None)
        else:
            if owl is not None:
                sparsities = _owl_sparsities(model, adapter, calibration, batch_size, device, residence, sparsity, owl)
                result.layer_sparsity = {"kind": "owl", "m": owl.m, "lambda": owl.lam, "blocks": sparsities}
            _sequential(model, adapter, calibration, batch_size, device, f"{method} blocks", METHODS[method].GRAM,
                        residence, prune_block)
    result.seconds = time.perf_counter() - start
    result.peak_memory_bytes, memory_note = _peak_memory(device)
    result.notes.append(memory_note)
    logger.info("%s %s at sparsity %g: %d layers in %.1f s", method, structure, sparsity, len(result.layers),
                result.seconds)
    return result


def block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear inside one decoder block, by name relative to the block."""
    return {name: module for name, module in block.named_modules() if isinstance(module, nn.Linear)}


def protected_weights(adapter: Family, block: nn.Module, neurons: Sequence[int]) -> dict[str, torch.Tensor]:
    """Never-pruned masks (True = protected) for MLP intermediate `neurons`: their input columns of mlp_out and
    their rows of the sibling Linears producing the intermediate (gate/up, fc1, dense_h_to_4h), by block name."""
    out = adapter.mlp_out(block)
    index = torch.as_tensor(list(neurons), dtype=torch.long, device=out.weight.device)
    if index.numel() and not (0 <= int(index.min()) and int(index.max()) < out.in_features):
        raise ValueError(f"protected neurons must be in [0, {out.in_features}), got {sorted(neurons)}")
    parent = adapter.mlp_out_path.rpartition(".")[0]
    masks = {}
    for name, layer in block_linears(block).items():
        mask = torch.zeros_like(layer.weight, dtype=torch.bool)
        if layer is out:
            mask[:, index] = True
        elif name.rpartition(".")[0] == parent and layer.out_features == out.in_features:
            mask[index] = True
        else:
            continue
        masks[name] = mask
    return masks


def pruned_layer_names(model: nn.Module, family: str) -> list[str]:
    """Full module names of the Linears this project prunes in `model`."""
    adapter = get_family(family)
    return [f"{adapter.blocks_path}.{index}.{name}"
            for index, block in enumerate(adapter.blocks(model)) for name in block_linears(block)]


def _prune_linear(name: str, layer: nn.Linear, pruned: LayerPruning, stats: InputStats | None,
                  result: PruneResult, protected: int | None) -> None:
    """Write the pruned weight in place (pruned entries +0.0) and record the packed mask and the error (and the
    protected count, only for a run with protection, so other records stay as they were)."""
    dense = layer.weight.detach().float().clone() if stats is not None else None
    mask = pruned.mask.to(layer.weight.device)
    if pruned.weight is None:
        layer.weight.masked_fill_(~mask, 0.0)
    else:
        layer.weight.copy_(pruned.weight)
    result.masks[name] = pack_mask(mask).cpu()
    error = None
    if stats is not None:
        result.error_method = stats.error_method
        error = stats.reconstruction_error(dense, layer.weight.float())
    result.layers.append({
        "name": name,
        "shape": list(mask.shape),
        "dtype": str(layer.weight.dtype).removeprefix("torch."),
        "sparsity": 1.0 - mask.sum().item() / mask.numel(),
        "reconstruction_error": error,
        **({} if protected is None else {"protected": protected}),
    })
    for note in pruned.notes:
        result.notes.append(f"{name}: {note}")
        logger.warning("%s: %s", name, note)


def _owl_sparsities(model: nn.Module, adapter: Family, calibration: torch.Tensor, batch_size: int,
                    device: torch.device, residence: Residence, sparsity: float, owl: OwlOptions) -> list[float]:
    """Each block's OWL sparsity, from the Wanda scores of the dense model on the calibration data."""
    ratios, sizes = [], []

    def measure(index: int, block: nn.Module, stats: dict[str, InputStats]) -> None:
        linears = block_linears(block)
        scores = [wanda_scores(layer.weight, stats[name].col_norms) for name, layer in linears.items()]
        ratios.append(outlier_ratio(scores, owl.m))
        sizes.append(sum(layer.weight.numel() for layer in linears.values()))

    _sequential(model, adapter, calibration, batch_size, device, "OWL outlier ratios", False, residence, measure)
    logger.info("OWL outlier ratios %s", [round(ratio, 5) for ratio in ratios])
    return block_sparsities(ratios, sizes, sparsity, owl.lam)


def _sequential(model: nn.Module, adapter: Family, calibration: torch.Tensor, batch_size: int,
                device: torch.device, description: str, gram: bool, residence: Residence, visit: Callable) -> None:
    """Per block: dense pass with hooks (collecting the Gram sums only if `gram`), visit(index, block, stats) (which
    prunes it, or only measures), then a pass whose outputs feed the next block."""
    hidden, arguments = _capture_block_inputs(model, adapter, calibration, batch_size, device)
    for index, block in enumerate(tqdm(adapter.blocks(model), desc=description)):
        calls, arguments[index] = arguments[index], None  # tensors shared with later blocks stay referenced there
        with residence(index, block, device):
            with collect_inputs(block_linears(block), gram) as stats:
                for states, (args, kwargs) in zip(hidden, calls, strict=True):
                    block(states, *args, **kwargs)
            visit(index, block, stats)
            del stats
            hidden = [_hidden_states(block(states, *args, **kwargs))
                      for states, (args, kwargs) in zip(hidden, calls, strict=True)]
        logger.debug("%s: block %d done", description, index)


def _capture_block_inputs(model: nn.Module, adapter: Family, calibration: torch.Tensor, batch_size: int,
                          device: torch.device) -> tuple[list[torch.Tensor], list[list[tuple[tuple, dict]]]]:
    """Run the model's own forward once per batch with every block's forward replaced by a recorder that stores its
    arguments and passes its input through: block 0's hidden states per batch, and arguments[block][batch] =
    (args after the hidden states, kwargs), on `device`.

    No block is computed (blocks may sit on the meta device; only the pre-block modules are moved to `device`), and
    what blocks share (one mask or rotary pair per attention type) is the same tensor object, held once. Captured
    per batch so batch-shaped arguments always match their hidden states.
    """
    blocks = adapter.blocks(model)
    hidden: list[torch.Tensor] = []
    arguments: list[list[tuple[tuple, dict]]] = [[] for _ in blocks]

    def recorder(index: int) -> Callable:
        def record(*args: Any, **kwargs: Any) -> torch.Tensor:
            states = args[0] if args else kwargs.pop("hidden_states")
            if index == 0:
                hidden.append(states)
            arguments[index].append((args[1:], kwargs))
            if index == len(blocks) - 1:
                raise _StopForward
            return states
        return record

    saved = [block.__dict__.get("forward") for block in blocks]  # an instance forward (a hook's) is put back
    for index, block in enumerate(blocks):
        block.forward = recorder(index)
    try:
        with contextlib.ExitStack() as stack:
            for module in adapter.pre_block_modules(model):
                stack.enter_context(_on_device(module, device))
            for batch in calibration.split(batch_size):
                with contextlib.suppress(_StopForward):
                    model(input_ids=batch.to(device), use_cache=False)
    finally:
        for block, forward in zip(blocks, saved, strict=True):
            if forward is None:
                del block.forward
            else:
                block.forward = forward
    return hidden, arguments


def _hidden_states(output: torch.Tensor | tuple) -> torch.Tensor:
    """Decoder layers return a tensor in transformers 5 and a tuple before."""
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def _on_device(module: nn.Module, device: torch.device) -> Iterator[None]:
    """Move one module to `device` for the duration, then back where it was (only it sits on the device)."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    home = None if first is None else first.device  # read now: module.to moves `first` itself
    module.to(device)
    try:
        yield
    finally:
        if home is not None:
            module.to(home)


@contextlib.contextmanager
def _fp32_matmul() -> Iterator[None]:
    """TF32 off, so statistics and SparseGPT's factorisation are true fp32 on Ampere+ GPUs."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "peak_memory_bytes: CUDA max_memory_allocated during the run"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_memory_bytes: process peak RSS (CPU)"
