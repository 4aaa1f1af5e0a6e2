"""Result JSONs verify themselves: content and the path they were written to are under their own checksum."""

import json
import os
import shutil

import pytest

from prunescope.io import ChecksumError, read_result, write_result


def test_a_result_reads_back_as_written_wherever_the_workdir_moves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = {"acc": 0.25, "per_example": [1, 0, 0, 0], "name": "é"}
    write_result("results/eval/m/dense/movies.json", result, inline_int_lists=True)
    assert read_result("results/eval/m/dense/movies.json", "evaluate") == result
    shutil.copytree(tmp_path / "results", tmp_path / "clone" / "results")  # a moved or cloned workdir
    assert read_result(tmp_path / "clone/results/eval/m/dense/movies.json", "evaluate") == result


@pytest.mark.parametrize("damage", ["edit a number", "drop a key", "strip the checksum", "truncate", "not an object"])
def test_every_kind_of_damage_is_one_error_naming_the_file_and_rule(tmp_path, damage):
    path = tmp_path / "r.json"
    write_result(path, {"acc": 0.25, "n": 4})
    content = json.loads(path.read_text())
    if damage == "edit a number":
        text = path.read_text().replace('"acc": 0.25', '"acc": 0.75')
    elif damage == "drop a key":
        text = json.dumps({key: value for key, value in content.items() if key != "n"})
    elif damage == "strip the checksum":
        text = json.dumps({key: value for key, value in content.items() if key != "content_sha256"})
    elif damage == "truncate":
        text = path.read_text()[:20]
    else:
        text = "[1, 2]"
    path.write_text(text)
    with pytest.raises(ChecksumError, match=rf"{path}.*delete it and rerun snakemake, whose nsa_causal rule"):
        read_result(path, "nsa_causal")


def test_a_result_under_another_name_is_refused(tmp_path):
    write_result(tmp_path / "a.json", {"acc": 0.5})
    os.replace(tmp_path / "a.json", tmp_path / "b.json")
    with pytest.raises(ChecksumError, match=r"b\.json was written as .*a\.json"):
        read_result(tmp_path / "b.json", "evaluate")
