"""One registry entry -> one normalised JSONL file, whatever the source kind."""

from __future__ import annotations

import os

from prunescope.data.hub import download_hub_dataset, load_local_dataset
from prunescope.data.records import subsample_records
from prunescope.data.standins import extract_bigbench, extract_vader
from prunescope.io import read_jsonl, write_jsonl


def prepare_dataset(name: str, spec: dict, source_path: str | None, seed: int, out_path: str | os.PathLike) -> int:
    """Route a registry entry to its reader; `source_path` is the fetched archive of a stand-in. Returns the count."""
    source, subsample, choices = spec["source"], spec["subsample"], spec["choices"]
    kind = source["kind"]
    if kind == "hub":
        return download_hub_dataset(source["hub_id"], source["config"], source["split"], source["fields"],
                                    source.get("label_map"), source.get("label_threshold"), choices, out_path,
                                    subsample, seed)
    if kind == "local":
        return load_local_dataset(source["path"], source["fields"], source.get("label_map"),
                                  source.get("label_threshold"), choices, out_path, subsample, seed,
                                  source["how_to_obtain"])
    if kind == "vader":
        extract_vader(source_path, source["subset"], choices, out_path)
    elif kind == "bigbench":
        extract_bigbench(source_path, source["task"], out_path)
    else:
        raise ValueError(f"datasets.{name}.source.kind = {kind!r}: one of hub, local, vader, bigbench")
    records = subsample_records(read_jsonl(out_path), subsample, seed)
    write_jsonl(out_path, records)
    return len(records)
