"""The library code a workflow script runs, and its digest.

Snakemake reruns a job when its rule's script changes (mtime), not when the prunescope modules that script imports
change. Each rule therefore passes `code_digest(script)` as a param: Snakemake's params trigger then reruns exactly
the jobs whose library code changed. The modules are found by following the script's `prunescope` imports (at any
depth, in functions too) through the package's own files, so the digest needs no hand-kept list; the DVC stages'
deps in dvc.yaml are checked against the same closure (tests/test_workflow.py).
"""

import ast
import hashlib
from functools import cache
from pathlib import Path

import prunescope

PACKAGE = "prunescope"


def package_dir() -> Path:
    """The prunescope folder whose code the jobs import (the one Python finds, as the jobs' interpreter does)."""
    return Path(prunescope.__file__).resolve().parent


def _module_file(module: str, root: Path) -> Path | None:
    """The file of a dotted prunescope module name (a module or a package's __init__.py); None if there is none."""
    parts = module.split(".")[1:]
    candidates = [root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")] if parts else [
        root / "__init__.py"]
    return next((path for path in candidates if path.is_file()), None)


def _with_parents(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imported_modules(path: Path, root: Path) -> frozenset[str]:
    """Every prunescope module one file imports, named in full (`from prunescope.pruning import wanda` names the
    submodule prunescope.pruning.wanda as well as the package)."""
    inside = root in path.parents  # a library file (relative imports resolve), not a workflow script
    own_package = ".".join(path.relative_to(root.parent).parts[:-1]) if inside else None
    return _imports_in(path.read_text(encoding="utf-8"), own_package)


@cache  # keyed on the text: an edited file is parsed again
def _imports_in(source: str, own_package: str | None) -> frozenset[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's own package
                if own_package is None:
                    continue
                base = own_package.split(".")[: len(own_package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return frozenset(name for name in names if name == PACKAGE or name.startswith(PACKAGE + "."))


def library_modules(script: str | Path, root: Path | None = None) -> list[Path]:
    """The prunescope source files a script runs when imported: its imports' files, their parents' __init__.py
    and so on transitively, sorted."""
    root = (root or package_dir()).resolve()
    found: set[Path] = set()
    pending = [Path(script).resolve()]
    while pending:
        for module in _imported_modules(pending.pop(), root):
            for name in _with_parents(module):
                path = _module_file(name, root)
                if path is not None and path not in found:
                    found.add(path)
                    pending.append(path)
    return sorted(found)


def code_digest(script: str | Path, root: Path | None = None) -> str:
    """sha256 over the script and every library file it runs (their paths inside the package and their bytes):
    changes with any edit to that code, comments included, and with nothing else."""
    root = (root or package_dir()).resolve()
    digest = hashlib.sha256()
    digest.update(Path(script).read_bytes())
    for path in library_modules(script, root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
