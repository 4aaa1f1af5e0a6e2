"""Offline stand-in datasets read straight out of PyPI source archives (vaderSentiment, bigbench).

Both archives are read by streaming the tar to the one member needed, so the 358 MB bigbench archive is never
unpacked to disk.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from prunescope.data.records import DatasetError, validate_records

logger = logging.getLogger(__name__)

VADER_INNER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
POSITIVE_AT = 1.0  # mean human rating in [-4, 4]: >= 1 positive, <= -1 negative, in between dropped
NEGATIVE_AT = -1.0


def read_vader(archive_path: str | os.PathLike, subset: str, choices: list[str]) -> list[dict]:
    """Binarised sentiment records from one vaderSentiment ground-truth file (`id<TAB>mean rating<TAB>text`)."""
    if len(choices) != 2:
        raise DatasetError(f"vader {subset}: needs exactly 2 label words [negative, positive], got {choices}")
    member = f"{subset}_GroundTruth.txt"
    with tarfile.open(archive_path, "r|gz") as outer:
        inner = _stream_member(outer, lambda name: name.endswith(VADER_INNER_ARCHIVE), archive_path,
                               VADER_INNER_ARCHIVE)
        with tarfile.open(fileobj=inner, mode="r|gz") as ground_truth:
            lines = _stream_member(ground_truth, lambda name: Path(name).name == member,
                                   f"{archive_path}:{VADER_INNER_ARCHIVE}", member).read().decode("utf-8")
    records = _vader_records(lines.splitlines(), subset, choices)
    validate_records(records, f"vader {subset}")
    return records


def _vader_records(lines: list[str], subset: str, choices: list[str]) -> list[dict]:
    records, neutral = [], 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            record_id, rating, text = parts[0].strip(), float(parts[1]), parts[2].strip()
        except (IndexError, ValueError) as err:
            raise DatasetError(f"vader {subset}: line {number} is not `id<TAB>rating<TAB>text`: {line[:80]!r}") from err
        if NEGATIVE_AT < rating < POSITIVE_AT:
            neutral += 1
            continue
        records.append({"id": record_id, "input": text, "choices": list(choices), "label": int(rating >= POSITIVE_AT)})
    logger.info("vader %s: %d records, %d near-neutral lines dropped (-1 < rating < 1)", subset, len(records), neutral)
    return records


def read_bigbench(archive_path: str | os.PathLike, task: str) -> list[dict]:
    """Multiple-choice records from bigbench/benchmark_tasks/<task>/task.json inside the bigbench sdist."""
    wanted = ("bigbench", "benchmark_tasks", task, "task.json")
    with tarfile.open(archive_path, "r|gz") as archive:
        task_file = _stream_member(archive, lambda name: tuple(Path(name).parts[1:]) == wanted, archive_path,
                                   "/".join(wanted))
        examples = json.load(task_file)["examples"]
    records = _bigbench_records(examples, task)
    validate_records(records, f"bigbench {task}")
    return records


def _bigbench_records(examples: list[dict], task: str) -> list[dict]:
    """Keep examples with target_scores and exactly one best-scored choice; label = that choice's index.

    Examples with only a free-form `target` have no choice list to score, so they are skipped (and counted).
    """
    records, free_form, ambiguous = [], 0, 0
    for index, example in enumerate(examples):
        scores = example.get("target_scores")
        if not scores:
            free_form += 1
            continue
        choices, values = [choice.strip() for choice in scores], list(scores.values())
        best = max(values)
        if len(choices) < 2 or values.count(best) != 1:
            ambiguous += 1
            continue
        label = values.index(best)
        record = {"id": str(index), "input": example["input"].strip(), "choices": choices, "label": label}
        rationale = _rationale(example.get("target"), choices[label])
        if rationale:
            record["rationale"] = rationale
        records.append(record)
    if free_form or ambiguous:
        logger.warning("bigbench %s: skipped %d free-form examples (no target_scores) and %d without exactly one "
                       "correct choice", task, free_form, ambiguous)
    logger.info("bigbench %s: %d records from %d examples", task, len(records), len(examples))
    return records


def _rationale(target: object, answer: str) -> str | None:
    """The explanation in a free-text target that restates the answer first ("Yes. Because ..."), else None."""
    if not isinstance(target, str) or not target.startswith(answer):
        return None
    return target[len(answer):].lstrip(" .:,").strip() or None


def _stream_member(archive: tarfile.TarFile, matches: Callable[[str], bool], where: object, what: str) -> IO[bytes]:
    """The first regular file whose name matches, read in archive order (stream mode cannot seek back)."""
    for member in archive:
        if member.isfile() and matches(member.name):
            return archive.extractfile(member)
    raise DatasetError(f"{where} has no member {what}: is it the archive named in params.yaml `archives`?")
