"""Nothing a user could swap is unpickled or YAML-constructed: a static check over the code that runs in the
workflow (torch.load only with weights_only=True, yaml.safe_load / safe_dump only, no pickle or marshal)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "workflow").rglob("*.py"), *(ROOT / "workflow").rglob("*.smk"),
               ROOT / "Snakefile", *(ROOT / "bench").rglob("*.py")])
UNSAFE = {
    "torch.load without weights_only=True": re.compile(r"torch\.load\((?![^)]*weights_only=True)"),
    "yaml.load / unsafe_load / full_load": re.compile(r"yaml\.(load|unsafe_load|full_load|load_all)\("),
    "pickle or marshal": re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|marshal)\b", re.M),
    "eval or exec": re.compile(r"(?<![\w.])(eval|exec)\("),
}


def test_no_unsafe_loader_in_the_workflow_code():
    assert len(CODE) > 40
    found = [f"{path.relative_to(ROOT)}: {what}" for path in CODE for what, pattern in UNSAFE.items()
             if pattern.search(path.read_text())]
    assert found == []


# JSON written without its own checksum: the final report metrics, which no rule reads. Everything a later rule
# reads (results and the manifests of datasets, calibration samples and artifacts) goes through io.write_result /
# io.read_result.
UNCHECKED_JSON_WRITERS = {"src/prunescope/io.py", "workflow/scripts/aggregate.py", "workflow/scripts/nsa_report.py",
                          "src/prunescope/reporting/claims/report.py"}


def test_every_result_json_is_written_with_its_own_checksum():
    writers = {str(path.relative_to(ROOT)) for path in CODE if "bench" not in path.parts
               and re.search(r"(?<![\w.])write_json\(|json\.dump\(", path.read_text())}
    assert writers == UNCHECKED_JSON_WRITERS
