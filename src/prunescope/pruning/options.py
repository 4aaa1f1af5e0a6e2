"""What one pruning run does, as one typed object (in the style of llm-compressor's modifiers, e.g.
WandaPruningModifier(sparsity=0.5, mask_structure="2:4")): checked when it is built, so a wrong method, option name or
structure fails before any model is loaded, and passed whole to the driver (prune_model) and the job (prune_variant).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any

from prunescope.config import OWL, parse_pattern_key
from prunescope.pruning import magnitude, ria, sparsegpt, wanda
from prunescope.pruning.masks import LayerPruning, parse_structure
from prunescope.pruning.owl import REQUIREMENTS, OwlOptions

METHODS: dict[str, ModuleType] = {"magnitude": magnitude, "wanda": wanda, "sparsegpt": sparsegpt, "ria": ria}


@dataclass(frozen=True)
class PruneOptions:
    """method at `sparsity` with `structure` ("unstructured" or "N:M" at exactly N/M); method_options are the
    method's own keyword options (sparsegpt's percdamp, blocksize; none: its defaults); owl sets each block's
    sparsity from its outlier ratio (unstructured only, pruning/owl.py); batch_size calibration sequences per block
    forward (the sequential driver's memory/speed trade; 1 feeds them one at a time, as the reference
    implementations do; unused by a data-free run)."""

    method: str
    sparsity: float
    structure: str = "unstructured"
    method_options: Mapping[str, Any] = field(default_factory=dict)
    owl: OwlOptions | None = None
    batch_size: int = 1

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method {self.method!r}; supported: {', '.join(METHODS)}")
        allowed = _option_names(METHODS[self.method])
        unknown = sorted(set(self.method_options) - set(allowed))
        if unknown:
            raise ValueError(f"method {self.method!r} has no option(s) {unknown}; its options are {allowed or 'none'}")
        nm = self.nm  # checks the structure and sparsity
        if self.owl is not None and nm is not None:
            raise ValueError(f"{REQUIREMENTS}; got {self.structure}")
        object.__setattr__(self, "method_options", MappingProxyType(dict(self.method_options)))  # frozen too

    @classmethod
    def from_params(cls, pruning: Mapping[str, Any], method: str, pattern: str) -> PruneOptions:
        """A variant's options under params.yaml's `pruning` section: its method's options and the pattern key
        (config.parse_pattern_key); an owl-<s> key prunes unstructured at mean s with pruning.owl's m and lambda."""
        structure, sparsity = parse_pattern_key(pattern)
        owl = OwlOptions(pruning[OWL]["m"], pruning[OWL]["lambda"]) if structure == OWL else None
        return cls(method, sparsity, "unstructured" if owl else structure, pruning[method], owl,
                   pruning["calibration_batch_size"])

    @property
    def nm(self) -> tuple[int, int] | None:
        """(N, M) of an N:M structure, None for unstructured (masks.parse_structure, which checks the sparsity)."""
        return parse_structure(self.structure, self.sparsity)

    def layer_pruning(self) -> Callable[..., LayerPruning]:
        """The method's prune_layer(weight, stats, sparsity, nm, protected) with method_options bound."""
        prune_layer, options = METHODS[self.method].prune_layer, dict(self.method_options)
        return lambda weight, stats, sparsity, nm, protected: prune_layer(weight, stats, sparsity, nm, **options,
                                                                          protected=protected)


def _option_names(module: ModuleType) -> list[str]:
    """A method's options: its prune_layer's keyword parameters after (weight, stats, sparsity, nm), except the
    driver's own `protected`."""
    parameters = list(inspect.signature(module.prune_layer).parameters)[4:]
    return [name for name in parameters if name != "protected"]
