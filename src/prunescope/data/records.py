"""The normalised record every evaluation dataset is turned into, and its checks.

One schema for all 4 categories means the evaluation code never needs to know where a dataset came from:
{"id": str, "input": str, "choices": [str, ...], "label": int} plus "premise"/"hypothesis" for pair tasks and
"rationale" (the explanation behind the label) where the source has one, for chain-of-thought calibration.
"""

from __future__ import annotations

import logging
import random
import re

logger = logging.getLogger(__name__)

TEXT_FIELDS = ("input", "premise", "hypothesis")  # the fields a prompt template may use
PLACEHOLDER = re.compile(r"\{(\w+)\}")  # a text field's name in single braces; any other brace is literal text
SHOWN_ROWS = 5


class DatasetError(ValueError):
    """A dataset that cannot be turned into valid records; the message names the dataset, field and rows."""


def validate_records(records: list[dict], name: str, text_fields: tuple[str, ...] = ()) -> None:
    """Reject a dataset with any unusable record, so a bad mapping fails here and not inside an evaluation.

    text_fields: the fields a prompt template reads, which must then be non-empty text in every record.
    """
    if not records:
        raise DatasetError(f"dataset {name}: no records (check its source and field mapping in params.yaml)")
    problems: dict[str, list[int]] = {}
    seen: set[str] = set()
    for row, record in enumerate(records, start=1):
        for problem in _record_problems(record, text_fields):
            problems.setdefault(problem, []).append(row)
        record_id = record.get("id")
        if isinstance(record_id, str):
            if record_id in seen:
                problems.setdefault("id: duplicate id", []).append(row)
            seen.add(record_id)
    if problems:
        raise DatasetError(f"dataset {name}: {sum(len(r) for r in problems.values())} invalid fields in "
                           f"{len(records)} records: " + "; ".join(_describe(p, rows) for p, rows in problems.items()))


def _record_problems(record: dict, text_fields: tuple[str, ...]) -> list[str]:
    """Each problem is 'field: what is wrong', so rows with the same fault are reported together."""
    problems = [f"{field}: missing or empty text (the prompt template uses it)" for field in text_fields
                if field != "input" and not (isinstance(record.get(field), str) and record[field].strip())]
    if not isinstance(record.get("id"), str) or not record["id"]:
        problems.append("id: missing or not a non-empty string")
    if not isinstance(record.get("input"), str) or not record["input"].strip():
        problems.append("input: missing or empty text")
    for field in ("premise", "hypothesis", "rationale"):
        if field in record and not isinstance(record[field], str):
            problems.append(f"{field}: not a string")
    choices = record.get("choices")
    valid_choices = isinstance(choices, list) and all(isinstance(c, str) and c.strip() for c in choices)
    if not valid_choices or len(set(choices)) < 2:
        problems.append("choices: fewer than 2 distinct non-empty strings")
    label = record.get("label")
    if not isinstance(label, int) or isinstance(label, bool):
        problems.append("label: missing or not an integer")
    elif valid_choices and not 0 <= label < len(choices):
        problems.append("label: outside 0 .. number of choices - 1")
    return problems


def _describe(problem: str, rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:SHOWN_ROWS])
    more = f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else ""
    return f"{problem} (rows {shown}{more}; 1-based)"


def template_fields(key: str, template: str, allowed: tuple[str, ...] = TEXT_FIELDS) -> list[str]:
    """The record fields a template uses; an unknown placeholder is a config error, caught before any job runs."""
    names = PLACEHOLDER.findall(template)
    unknown = sorted({name for name in names if name not in allowed})
    if unknown:
        raise ValueError(f"{key} uses unknown placeholder(s) {', '.join('{' + name + '}' for name in unknown)}; "
                         f"allowed: {', '.join('{' + name + '}' for name in allowed)}")
    return sorted(set(names))


def render_template(template: str, record: dict) -> str:
    """The prompt lm-eval shows for a record: each placeholder filled from the record, all other text verbatim."""
    return PLACEHOLDER.sub(lambda match: record[match.group(1)], template)


def subsample_records(records: list[dict], size: int | None, seed: int) -> list[dict]:
    """A fixed seeded subsample kept in file order, so every model and pruned variant sees the same examples."""
    if size is None or size >= len(records):
        return records
    indices = sorted(random.Random(seed).sample(range(len(records)), size))
    logger.info("subsampled %d of %d records (seed %d)", size, len(records), seed)
    return [records[i] for i in indices]


def split_holdout(records: list[dict], size: int, seed: int, name: str) -> tuple[list[dict], list[dict]]:
    """(evaluation part, held-out part): a seeded set of `size` records kept out of evaluation, both in file order.

    Stand-ins have one labelled split, so a task-derived calibration pool must be carved out of it; evaluation
    and calibration then never share an example.
    """
    if size >= len(records):
        raise DatasetError(f"dataset {name}: train.holdout = {size} leaves no records to evaluate (it has "
                           f"{len(records)}); set datasets.{name}.train.holdout below {len(records)}")
    held = set(random.Random(seed).sample(range(len(records)), size))
    kept = [record for i, record in enumerate(records) if i not in held]
    return kept, [record for i, record in enumerate(records) if i in held]
