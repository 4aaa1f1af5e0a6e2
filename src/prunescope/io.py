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


# Result JSONs carry their own checksum: a digest of their content and the path they were written to, so an
# edit that keeps the JSON valid, a truncation and a file swapped in from another grid point are all caught.
CHECKSUM_KEY = "content_sha256"
WRITTEN_AS_KEY = "written_as"


def write_result(path: str | os.PathLike, obj: dict, inline_int_lists: bool = False,
                 written_as: str | os.PathLike | None = None) -> None:
    """write_json of `obj` plus the path it was written to and a sha256 of both (checked by read_result).

    written_as is the path the file ends up at when `path` is inside a folder written atomically."""
    content = {**obj, WRITTEN_AS_KEY: os.path.normpath(written_as or path)}
    write_json(path, {**content, CHECKSUM_KEY: _content_sha256(content)}, inline_int_lists)


def read_result(path: str | os.PathLike, rule: str) -> dict:
    """A result JSON written by write_result, verified; any damage is one ChecksumError naming the file and the
    rule that rebuilds it. The returned dict holds what was written, without the checksum bookkeeping."""
    fix = f"delete it and rerun snakemake, whose {rule} rule rebuilds it"
    try:
        content = read_json(path)
    except (ValueError, UnicodeDecodeError) as err:  # cut short by a full disk or a killed copy, or hand-broken
        raise ChecksumError(f"{path} is not readable JSON ({err}): {fix}") from err
    recorded = content.pop(CHECKSUM_KEY, None) if isinstance(content, dict) else None
    if recorded is None or recorded != _content_sha256(content):
        raise ChecksumError(f"{path} does not match its own checksum ({CHECKSUM_KEY}): it was edited or written by "
                            f"an older prunescope; {fix}")
    written_as = content.pop(WRITTEN_AS_KEY)
    if not _same_file(path, written_as):
        raise ChecksumError(f"{path} was written as {written_as}: it was swapped in from another grid point; {fix}")
    return content


def _content_sha256(obj: dict) -> str:
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _same_file(path: str | os.PathLike, written_as: str) -> bool:
    """Whether `path` is where the file was written: the same absolute path, or one ending in the relative path
    it was written to (a workdir can be moved or cloned)."""
    resolved = Path(path).resolve()
    if os.path.isabs(written_as):
        return resolved == Path(written_as).resolve()
    return resolved.as_posix().endswith("/" + Path(written_as).as_posix())
