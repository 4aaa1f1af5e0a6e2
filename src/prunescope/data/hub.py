"""Model-hub and user-supplied datasets, mapped onto the normalised record by the registry's `fields`.

The hub code path is real (it runs wherever the hub is reachable); without the hub it fails within seconds
with one message that says what is missing, instead of retrying for minutes.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prunescope.data.records import TEXT_FIELDS, DatasetError, subsample_records, validate_records
from prunescope.io import write_jsonl

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 10.0
LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


class HubAccessError(ConnectionError):
    """The model hub cannot be reached (or offline mode is on) and the data is not in the local cache."""


def load_hub_split(hub_id: str, config: str | None, split: str, data_files: str | None = None):
    """datasets.load_dataset, but an unreachable hub is one clear error instead of minutes of retries. data_files, a
    file of the repository, is read as the asked split (datasets would name a lone data file's split "train")."""
    import datasets

    where = f"{_hub_name(hub_id, config)}, split {split}"
    if not datasets.config.HF_HUB_OFFLINE:
        _check_hub_reachable(where)
    try:
        files = {split: data_files} if data_files else None
        return datasets.load_dataset(hub_id, config, split=split, data_files=files)
    except ConnectionError as err:
        raise HubAccessError(_hub_message(where, err)) from err


def _check_hub_reachable(where: str) -> None:
    """One short request to the hub endpoint; any HTTP answer means it is reachable."""
    request = urllib.request.Request(_endpoint(), method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return
    except OSError as err:
        raise HubAccessError(_hub_message(where, err)) from err


def _hub_message(where: str, err: Exception) -> str:
    return (f"cannot load dataset {where}: it needs model hub access, which failed here "
            f"({err.__class__.__name__}: {err}). Run where {_endpoint()} is reachable with HF_HUB_OFFLINE=0 and "
            "HF_DATASETS_OFFLINE=0 (and `hf auth login` for gated datasets), set HF_HUB_OFFLINE=1 to use a copy "
            "already in the datasets cache, or use the offline sources of the `mini` grid (vader / bigbench datasets, "
            "gensim calibration text)")


def _hub_name(hub_id: str, config: str | None) -> str:
    return hub_id + (f" ({config})" if config else "")


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def download_hub_dataset(hub_id: str, config: str | None, split: str, fields: dict, label_map: dict | None,
                         label_threshold: float | None, choices: list[str] | None, out_path: str | os.PathLike,
                         subsample: int | None, seed: int) -> int:
    """One labelled hub split -> normalised JSONL records (optionally a fixed seeded subsample)."""
    name = _hub_name(hub_id, config)
    rows = load_hub_split(hub_id, config, split)
    records = normalise_rows(rows, fields, label_map, label_threshold, choices, name=name)
    return _write_records(records, name, out_path, subsample, seed)


def load_local_dataset(path: str | os.PathLike | None, fields: dict, label_map: dict | None,
                       label_threshold: float | None, choices: list[str] | None, out_path: str | os.PathLike,
                       subsample: int | None, seed: int, how_to_obtain: str) -> int:
    """A file the user obtained (e.g. credentialed data) -> normalised JSONL records, same mapping as the hub."""
    if path is None or not Path(path).is_file():
        raise DatasetError(f"local dataset file {path} not found: {how_to_obtain}")
    rows = _read_local_rows(Path(path))
    records = normalise_rows(rows, fields, label_map, label_threshold, choices, name=str(path))
    return _write_records(records, str(path), out_path, subsample, seed)


def _read_local_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".parquet":
        import pyarrow.parquet

        return pyarrow.parquet.read_table(path).to_pylist()
    raise DatasetError(f"local dataset file {path}: unsupported type {suffix!r}, "
                       f"use one of {', '.join(LOCAL_SUFFIXES)}")


def _write_records(records: list[dict], name: str, out_path: str | os.PathLike, subsample: int | None,
                   seed: int) -> int:
    validate_records(records, name)
    records = subsample_records(records, subsample, seed)
    write_jsonl(out_path, records)
    return len(records)


def normalise_rows(rows: Iterable[dict], fields: dict, label_map: dict | None, label_threshold: float | None,
                   choices: list[str] | None, *, name: str = "dataset") -> list[dict]:
    """Map source rows onto {id, input, premise?, hypothesis?, choices, label} as the registry's `fields` say.

    A field value is a column, a dotted path into nested columns (choices.text), or a list of columns; `label`
    may be a constant index. The raw label becomes an index through choice_keys (answer letters), label_map,
    label_threshold (a score binarised at >= threshold) or, with none of these, int(). Rows whose raw label is
    not in label_map (e.g. Sentiment140's neutral class) are dropped and counted. `id` is the row's position.
    """
    if "label" not in fields:
        raise DatasetError(f"dataset {name}: fields has no `label` (a column, a path or a constant index)")
    if ("choices" in fields) == (choices is not None):
        raise DatasetError(f"dataset {name}: give the choices either per example (fields.choices) or as label "
                           "words (choices), exactly one of the two")
    records, unmapped = [], {}
    for index, row in enumerate(rows):
        try:
            record = _normalise_row(row, fields, choices)
            raw = fields["label"] if isinstance(fields["label"], int) else _resolve(row, fields["label"])
            label = _label(raw, row, fields, label_map, label_threshold)
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"dataset {name}: row {index}: cannot map it with fields {fields}: {err}") from err
        if label is None:
            unmapped[str(raw)] = unmapped.get(str(raw), 0) + 1
            continue
        records.append({"id": str(index), **record, "label": label})
    if unmapped:
        logger.warning("dataset %s: dropped rows whose label is not in label_map: %s", name, unmapped)
    return records


def _normalise_row(row: dict, fields: dict, choices: list[str] | None) -> dict:
    record = {field: _text(_resolve(row, fields[field])) for field in TEXT_FIELDS if field in fields}
    if "input" not in record:
        record["input"] = "\n".join(record[f] for f in ("premise", "hypothesis") if record.get(f))
    if "rationale" in fields:
        record["rationale"] = _text(_resolve(row, fields["rationale"]))
    if choices is None:
        values = _resolve(row, fields["choices"])
        if not isinstance(values, list):
            raise TypeError(f"choices {fields['choices']!r} is {values!r}, not a list")
        choices = [_text(value) for value in values]
    record["choices"] = list(choices)
    return record


def _label(raw: Any, row: dict, fields: dict, label_map: dict | None, label_threshold: float | None) -> int | None:
    if "choice_keys" in fields:
        keys = fields["choice_keys"]
        keys = keys if isinstance(keys, list) else _resolve(row, keys)
        return [str(key) for key in keys].index(str(raw))
    if label_map:
        return label_map.get(str(raw))
    if label_threshold is not None:
        return int(float(raw) >= label_threshold)
    return int(raw)


def _resolve(row: dict, ref: str | list) -> Any:
    """A column, a dotted path into nested columns, or a list of either (one value each)."""
    if isinstance(ref, list):
        return [_resolve(row, part) for part in ref]
    if ref in row:
        return row[ref]
    value = row
    for part in ref.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"no column {ref!r} (columns: {', '.join(map(str, row))})")
        value = value[part]
    return value


def _text(value: Any) -> str:
    """List-valued text (several passages, or several columns) is joined with a space."""
    if isinstance(value, list):
        return " ".join(part for part in (_text(v) for v in value) if part)
    return "" if value is None else str(value).strip()
