"""One registry entry -> one normalised JSONL file, whatever the source kind.

Each dataset has two parts: the labelled split that is evaluated and, where the registry gives a `train`
entry, a calibration pool for task-derived calibration. The two never share an example.
"""

from __future__ import annotations

import os
from pathlib import Path

from prunescope.data.hub import download_hub_dataset, load_local_dataset
from prunescope.data.records import DatasetError, split_holdout, subsample_records
from prunescope.data.standins import read_bigbench, read_vader
from prunescope.io import read_jsonl, read_result, sha256_file, verify_sha256, write_jsonl, write_result

EVALUATION, TRAIN = "evaluation", "train"
RULES = {EVALUATION: "prepare_dataset", TRAIN: "prepare_train_pool"}  # the rule that rebuilds each part


def prepare_dataset(name: str, spec: dict, source_path: str | None, seed: int, out_path: str | os.PathLike,
                    part: str = EVALUATION) -> int:
    """One part of a dataset as JSONL plus a manifest beside it (<name>.json: source, count, sha256).

    part = "train" writes the calibration pool: another split of a hub dataset, or the seeded holdout of a stand-in
    (which the evaluation part then leaves out). Returns the number of records.
    """
    count = _write_part(name, spec, source_path, seed, out_path, part)
    write_manifest(out_path, {"dataset": name, "part": part, "source": spec["source"], "subsample": spec["subsample"],
                              "train": spec["train"], "seed": seed, "n": count})
    return count


def write_manifest(path: str | os.PathLike, fields: dict) -> None:
    """<path stem>.json beside a written dataset file: `fields` plus the file's sha256, both checked on every read."""
    write_result(manifest_path(path), {**fields, "sha256": sha256_file(path)})


def manifest_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def read_dataset(path: str | os.PathLike) -> list[dict]:
    """The records of a prepared dataset file, after checking its manifest and the file against its sha256."""
    try:
        manifest = read_result(manifest_path(path), " / ".join(RULES.values()))
    except OSError as err:
        raise DatasetError(f"dataset file {path} has no readable manifest {manifest_path(path)} ({err}): delete "
                           "both and rerun the workflow (rules prepare_dataset / prepare_train_pool)") from err
    verify_sha256(path, manifest["sha256"], f"the {RULES[manifest['part']]} rule rebuilds it")
    return read_jsonl(path)


def _write_part(name: str, spec: dict, source_path: str | None, seed: int, out_path: str | os.PathLike,
                part: str) -> int:
    source, choices, train = spec["source"], spec["choices"], spec["train"]
    if part == TRAIN and train is None:
        raise DatasetError(f"dataset {name} has no calibration pool (datasets.{name}.train is null): give it a train "
                           "entry, or calibrate from another source")
    kind = source["kind"]
    if kind == "hub":
        split, subsample = (train["split"], train["subsample"]) if part == TRAIN else (source["split"],
                                                                                         spec["subsample"])
        return download_hub_dataset(source["hub_id"], source["config"], split, source["fields"],
                                    source.get("label_map"), source.get("label_threshold"), choices, out_path,
                                    subsample, seed)
    if kind == "local":
        return load_local_dataset(source["path"], source["fields"], source.get("label_map"),
                                  source.get("label_threshold"), choices, out_path, spec["subsample"], seed,
                                  source["how_to_obtain"])
    if kind == "vader":
        records = read_vader(source_path, source["subset"], choices)
    elif kind == "bigbench":
        records = read_bigbench(source_path, source["task"])
    else:
        raise ValueError(f"datasets.{name}.source.kind = {kind!r}: one of hub, local, vader, bigbench")
    if train is not None:
        evaluated, held_out = split_holdout(records, train["holdout"], seed, name)
        records = held_out if part == TRAIN else evaluated
    if part == EVALUATION:
        records = subsample_records(records, spec["subsample"], seed)
    write_jsonl(out_path, records)
    return len(records)
