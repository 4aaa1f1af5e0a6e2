"""Turn one registry dataset into an lm-eval task folder: the records to score and a task config.

lm-eval renders doc_to_text with an unsandboxed Jinja environment, so the registry template is never
handed over as Jinja: its placeholders become Jinja variables and every other brace is escaped, which
makes any "{{ ... }}" or "{% ... %}" in the template plain text. The config is written with
yaml.safe_dump, so it can hold no YAML tag (lm-eval would import and run a `!function`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import yaml

from prunescope.data.prepare import read_dataset
from prunescope.data.records import PLACEHOLDER, subsample_records, template_fields, validate_records
from prunescope.io import atomic_path, write_jsonl

logger = logging.getLogger(__name__)

DATA_FILE = "data.jsonl"


def task_name(dataset: str) -> str:
    return f"prunescope_{dataset}"


def to_jinja(template: str) -> str:
    """The template as Jinja: placeholders become variables, all other text renders verbatim."""
    parts = []
    position = 0
    for match in PLACEHOLDER.finditer(template):
        parts.append(_escape_literal(template[position:match.start()]))
        parts.append("{{" + match.group(1) + "}}")
        position = match.end()
    parts.append(_escape_literal(template[position:]))
    return "".join(parts)


def _escape_literal(text: str) -> str:
    """Every Jinja delimiter starts with "{", so printing each brace as a string constant disarms them all."""
    return re.sub(r"[{}]", lambda brace: "{{ '" + brace.group() + "' }}", text)


def task_config(dataset: str, template: str) -> dict:
    """The lm-eval task config; data_files is relative to the task folder (see run.load_task)."""
    return {
        "task": task_name(dataset),
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": DATA_FILE}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "num_fewshot": 0,
        "doc_to_text": to_jinja(template),
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "target_delimiter": " ",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1},
    }


def build_task(dataset: str, records_path: str | os.PathLike, template: str, limit: int | None, seed: int,
               out_dir: str | os.PathLike) -> str:
    """Write the task folder (data.jsonl and <task>.yaml) atomically; return the task name."""
    fields = template_fields(f"datasets.{dataset}.template", template)
    records = read_dataset(records_path)
    selected = subsample_records(records, limit, seed)
    validate_records(selected, dataset, tuple(fields))  # here, naming rows, not as a wrong score inside lm-eval
    config = task_config(dataset, template)
    with atomic_path(out_dir, directory=True) as tmp:
        write_jsonl(tmp / DATA_FILE, selected)
        (tmp / f"{config['task']}.yaml").write_text(
            yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
    logger.info("task %s: %d of %d records in %s", config["task"], len(selected), len(records), Path(out_dir))
    return config["task"]
