"""The requirements (name==version, this environment's) that bench/gpu_check.sh --fetch-wheels downloads: every
distribution the GPU check imports, less torch and pytest with all they require and the compiled base (numpy,
pillow): a CUDA machine's own torch build brings those, and they must stay as they are there. The rest is installed
beside them with --target, so it shadows older versions (the H200 image had transformers 5.17; we need >= 5.24).
"""

from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
KEPT_FROM_THE_MACHINE = ("torch", "pytest", "numpy", "pillow")


def requirement_names(distribution: str) -> set[str]:
    """The names `distribution` requires (extras and environment-marked ones left out), lower case."""
    names = set()
    for requirement in metadata.requires(distribution) or ():
        if ";" not in requirement:
            names.add(re.split(r"[\s<>=!~\[(]", requirement, maxsplit=1)[0].lower())
    return names


def closure(names: tuple[str, ...]) -> set[str]:
    """`names` and everything they require, transitively (installed distributions only)."""
    found, todo = set(), [name.lower() for name in names]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            with contextlib.suppress(metadata.PackageNotFoundError):
                todo += requirement_names(name)
    return found


def check_requirements() -> list[str]:
    sys.path.insert(0, str(BENCH))
    import gpu  # noqa: F401  - bench/gpu.py's imports, and through it the project's pruning and scoring
    import lm_eval.models.huggingface  # noqa: F401
    import pytest  # noqa: F401
    import sparsegpt_layer  # noqa: F401

    kept = closure(KEPT_FROM_THE_MACHINE)
    tops = {name.split(".")[0] for name in sys.modules} - set(sys.stdlib_module_names)
    distributions = {distribution for top in tops for distribution in metadata.packages_distributions().get(top, ())}
    return sorted(f"{name}=={metadata.version(name)}" for name in distributions
                  if name.lower() not in kept and not name.lower().startswith("nvidia") and name != "prunescope")


if __name__ == "__main__":
    print(*check_requirements())
