"""Atomic, deterministic file output shared by every stage.

Every artifact is written to a temporary name in the destination folder and renamed into
place, so a killed job never leaves a half-written file that looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it onto `path` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    target = tmp if directory else tmp / final.name
    try:
        yield target
        if directory:
            target.chmod(0o777 & ~_umask())
        if directory and final.exists():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_json(path: str | os.PathLike, obj: Any, inline_int_lists: bool = False) -> None:
    """Write JSON with sorted keys and a trailing newline, atomically (byte-stable output).

    inline_int_lists puts every list of integers on one line (per-example scores: one line, not one per example).
    """
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
    if inline_int_lists:
        text = _INT_LIST.sub(lambda match: "[" + ", ".join(re.findall(r"-?\d+", match.group())) + "]", text)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


# An indented list of integers; a real newline never occurs inside a JSON string, so this matches no string.
_INT_LIST = re.compile(r"\[\n\s*-?\d+(?:,\n\s*-?\d+)*\n\s*\]")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Write one JSON object per line, atomically, keys sorted."""
    with atomic_path(path) as tmp:
        with tmp.open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class ChecksumError(ValueError):
    """A file that does not match the sha256 its manifest recorded: swapped, edited or truncated."""


def verify_sha256(path: str | os.PathLike, expected: str, rebuild: str) -> None:
    """Raise ChecksumError naming the file and how to rebuild it unless its sha256 is `expected`."""
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"{path} does not match its manifest (sha256 expected {expected}, got {actual}): it was "
                            f"swapped, edited or truncated; delete it and rerun the workflow: {rebuild}")
