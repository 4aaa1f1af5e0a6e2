"""Evaluation: generated lm-eval task folders, template safety, and scores checked against a direct computation."""

from __future__ import annotations

import pytest
import torch
import yaml

from prunescope.data.prepare import write_manifest
from prunescope.evaluation import build_task, environment_info, evaluate_model
from prunescope.evaluation.harness import extract_per_example, load_task_config
from prunescope.evaluation.tasks import to_jinja
from prunescope.io import read_jsonl, write_jsonl

TEMPLATE = "Review: {input}\nSentiment:"
SENTENCES = [
    "The movie was wonderful and the acting was great.",
    "The film was terrible, boring and far too long.",
    "She went home early because she felt tired after work.",
    "Both are fruit. Both are used to measure. Both tell time.",
]
CHOICES = ["no", "négatif", "positive answer"]
# Choices whose token, character and byte counts differ, so summed, per-character and per-byte
# log-probs pick different answers (with a near-uniform random model, cost grows with token count).
CHOICE_SETS = [["xq", "éé"], ["positive", "négatif", "no"], ["éé", "negative", "kv"], ["zqx", "yes", "éèà"]]
MALICIOUS = [
    "{{ cycler.__init__.__globals__.os.popen('echo pwned').read() }} {input}",
    "{% for x in range(3) %}{input}{% endfor %}",
    "{# hidden #}{input}{%raw%}{{ 7*7 }}{%endraw%}",
    "!function os.system {input}",
    "{{input}} }}{{ {",
]


def make_records(n: int) -> list[dict]:
    return [
        {"id": f"r{i}", "input": SENTENCES[i % len(SENTENCES)] + f" ({i})", "choices": CHOICES, "label": i % 3}
        for i in range(n)
    ]


def write_dataset(path, records):
    """A prepared dataset file: records plus the checksummed manifest build_task verifies."""
    write_jsonl(path, records)
    write_manifest(path, {"dataset": "demo", "part": "evaluation"})


@pytest.fixture
def records_path(tmp_path):
    path = tmp_path / "demo.jsonl"
    write_dataset(path, make_records(30))
    return path


def load_tasks(task_dir, name):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False).load([load_task_config(task_dir, name)])["tasks"][name]


def choice_logprobs(model, tokenizer, prompt: str, choices: list[str]) -> list[float]:
    """Sum of the log-probs of " "+choice after the prompt, one unpadded sequence at a time."""
    context = tokenizer(prompt).input_ids
    scores = []
    for choice in choices:
        continuation = tokenizer(" " + choice).input_ids
        with torch.no_grad():
            logits = model(torch.tensor([context + continuation])).logits[0]
        logprobs = torch.log_softmax(logits[len(context) - 1:-1].double(), dim=-1)
        scores.append(logprobs[torch.arange(len(continuation)), continuation].sum().item())
    return scores


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def test_build_task_writes_a_config_lm_eval_loads(records_path, tmp_path, monkeypatch):
    from lm_eval.tasks import TaskManager

    out = tmp_path / "tasks" / "demo"
    name = build_task("demo", records_path, TEMPLATE, None, 0, out)
    assert name == "prunescope_demo"
    assert sorted(p.name for p in out.iterdir()) == ["data.jsonl", "prunescope_demo.yaml"]
    assert [p.name for p in out.parent.iterdir()] == ["demo"]  # no temporary folder left behind
    config = yaml.safe_load((out / "prunescope_demo.yaml").read_text())
    assert config["doc_to_text"] == "Review: {{input}}\nSentiment:"
    assert config["dataset_kwargs"] == {"data_files": {"test": "data.jsonl"}}
    # The file itself is a plain lm-eval task folder (its data path is relative to the folder).
    monkeypatch.chdir(out)
    task = TaskManager(include_path=out, include_defaults=False).load([name])["tasks"][name]
    docs = list(task.test_docs())
    assert len(docs) == 30
    assert task.doc_to_text(docs[0]) == TEMPLATE.format(input=docs[0]["input"])
    assert task.doc_to_choice(docs[0]) == CHOICES and task.doc_to_target(docs[1]) == 1


def test_subsample_is_seeded_ordered_and_repeatable(records_path, tmp_path):
    def ids(limit, seed, folder):
        build_task("demo", records_path, TEMPLATE, limit, seed, tmp_path / folder)
        return [r["id"] for r in read_jsonl(tmp_path / folder / "data.jsonl")]

    first = ids(8, 0, "a")
    assert len(first) == 8 and first == ids(8, 0, "b")
    assert (tmp_path / "a" / "data.jsonl").read_bytes() == (tmp_path / "b" / "data.jsonl").read_bytes()
    order = [r["id"] for r in make_records(30)]
    assert first == sorted(first, key=order.index)
    assert first != ids(8, 1, "c")
    assert ids(None, 0, "d") == ids(100, 0, "e") == order


@pytest.mark.parametrize("template", MALICIOUS)
def test_template_text_is_never_code(records_path, tmp_path, template):
    name = build_task("demo", records_path, template, 4, 0, tmp_path / "task")
    text = (tmp_path / "task" / f"{name}.yaml").read_text()
    assert "!function" not in text.replace("'!function", "")  # only ever inside a quoted string
    task = load_tasks(tmp_path / "task", name)
    for doc in task.test_docs():
        assert task.doc_to_text(doc) == template.replace("{input}", doc["input"])


def test_record_text_is_never_code(tmp_path):
    from lm_eval.utils import apply_template

    doc = {"input": "{{ 7*7 }} {% if true %}x{% endif %}", "premise": "{# #}", "hypothesis": "}}"}
    rendered = apply_template(to_jinja("{premise}|{input}|{hypothesis}"), doc)
    assert rendered == "{# #}|{{ 7*7 }} {% if true %}x{% endif %}|}}"


def test_unknown_placeholder_is_a_clear_error(records_path, tmp_path):
    with pytest.raises(ValueError, match=r"datasets\.demo\.template.*\{foo\}.*allowed: \{input\}, \{premise\}"):
        build_task("demo", records_path, "Q: {foo} {input}", None, 0, tmp_path / "task")
    assert not (tmp_path / "task").exists()


def test_bad_records_are_rejected(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_dataset(path, [{"id": "x", "input": "text", "choices": ["a", "b"], "label": 2}])
    with pytest.raises(ValueError, match=r"dataset demo: .*label: outside 0 \.\. number of choices - 1 \(rows 1;"):
        build_task("demo", path, TEMPLATE, None, 0, tmp_path / "task")
    write_dataset(path, [{"id": str(i), "input": "text", "choices": ["a", "b"], "label": 1, **premise}
                         for i, premise in enumerate([{"premise": "p"}, {"premise": " "}, {}])])
    with pytest.raises(ValueError, match=r"premise: missing or empty text \(the prompt template uses it\) \(rows 2, 3"):
        build_task("demo", path, "{premise} {input}", None, 0, tmp_path / "task")


def test_evaluate_matches_a_direct_computation(tiny_llama, tiny_tokenizer, tmp_path):
    """Each record's label is the choice our direct computation ranks first by log-prob per character
    (lm-eval's acc_norm; its acc_bytes divides by bytes), so acc_norm must be exactly 1 and acc must
    equal how often the raw argmax agrees; the choice sets make the three rules disagree somewhere."""
    records = make_records(24)
    by_raw, by_chars, by_bytes = [], [], []
    for i, record in enumerate(records):
        record["choices"] = CHOICE_SETS[i % len(CHOICE_SETS)]
        scores = choice_logprobs(tiny_llama, tiny_tokenizer, TEMPLATE.format(input=record["input"]), record["choices"])
        by_raw.append(argmax(scores))
        by_chars.append(argmax([s / len(c) for s, c in zip(scores, record["choices"], strict=True)]))
        by_bytes.append(argmax([s / len(c.encode()) for s, c in zip(scores, record["choices"], strict=True)]))
        record["label"] = by_chars[-1]
    assert by_raw != by_chars and by_bytes != by_chars  # otherwise this test could not tell the rules apart
    write_dataset(tmp_path / "demo.jsonl", records)
    name = build_task("demo", tmp_path / "demo.jsonl", TEMPLATE, None, 0, tmp_path / "task")

    metrics = evaluate_model(tiny_llama, tiny_tokenizer, tmp_path / "task", name, 4, 0, "cpu")
    assert set(metrics) == {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n", "per_example"}
    assert metrics["n"] == 24 and metrics["acc_stderr"] is None and metrics["acc_norm_stderr"] is None
    assert metrics["acc_norm"] == 1.0
    assert metrics["acc"] == pytest.approx(sum(r == c for r, c in zip(by_raw, by_chars, strict=True)) / 24)
    # per example, in the records' order: acc is whether the raw argmax is the label, acc_norm always right; choice
    # is the raw argmax itself, gold the label
    assert metrics["per_example"] == {"acc": [int(r == c) for r, c in zip(by_raw, by_chars, strict=True)],
                                      "acc_norm": [1] * 24, "choice": by_raw, "gold": by_chars,
                                      "n_choices": [len(r["choices"]) for r in records]}
    assert evaluate_model(tiny_llama, tiny_tokenizer, tmp_path / "task", name, 4, 0, "cpu") == metrics
    assert evaluate_model(tiny_llama, tiny_tokenizer, tmp_path / "task", name, 1, 0, "cpu") == metrics


def test_evaluate_reports_stderr_when_asked(tiny_llama, tiny_tokenizer, records_path, tmp_path):
    name = build_task("demo", records_path, TEMPLATE, 10, 0, tmp_path / "task")
    metrics = evaluate_model(tiny_llama, tiny_tokenizer, tmp_path / "task", name, 8, 10, "cpu")
    assert metrics["n"] == 10
    acc = metrics["acc"]
    assert metrics["acc_stderr"] == pytest.approx((acc * (1 - acc) / (10 - 1)) ** 0.5)  # sample stderr of a mean
    assert isinstance(metrics["acc_norm_stderr"], float)


def test_per_example_scores_average_to_the_accuracy(tiny_llama, tiny_tokenizer, records_path, tmp_path):
    name = build_task("demo", records_path, TEMPLATE, 12, 0, tmp_path / "task")
    metrics = evaluate_model(tiny_llama, tiny_tokenizer, tmp_path / "task", name, 4, 0, "cpu")
    for metric in ("acc", "acc_norm"):
        scores = metrics["per_example"][metric]
        assert len(scores) == metrics["n"] == 12 and set(scores) <= {0, 1}
        assert all(type(score) is int for score in scores)
        assert sum(scores) / len(scores) == pytest.approx(metrics[metric], abs=1e-12)


def logged(samples: list[tuple[list[float], object]]) -> dict:
    """lm-eval's results with logged samples: per doc its choices' (log-likelihood, is_greedy) pairs and target."""
    return {"n-samples": {"t": {"effective": len(samples)}}, "samples": {"t": [
        {"doc_id": i, "filter": "none", "target": target, "filtered_resps": [(ll, False) for ll in lls],
         "acc": float(lls.index(max(lls)) == target), "acc_norm": 0.0}
        for i, (lls, target) in reversed(list(enumerate(samples)))]}}  # out of order: sorted by doc_id


def test_per_example_answers_are_the_argmax_choice_the_gold_index_and_the_choice_count():
    results = logged([([-3.0, -1.0], 1), ([-0.5, -2.0, -0.7], 2), ([-1.0, -1.0], 0)])  # a tie: the first
    assert extract_per_example(results, "t") == {"acc": [1, 0, 1], "acc_norm": [0, 0, 0], "choice": [1, 0, 0],
                                                  "gold": [1, 2, 0], "n_choices": [2, 3, 2]}
    with pytest.raises(ValueError, match=r"t, doc 0: expected one gold choice index among 2 scored choices, got "
                                         r"target \[0, 1\]"):
        extract_per_example(logged([([-1.0, -2.0], [0, 1])]), "t")


def test_result_json_keeps_per_example_lists_on_one_line(tmp_path):
    from prunescope.io import read_json, write_json

    result = {"metrics": {"acc": 0.5, "per_example": {"acc": [1, 0], "acc_norm": [0, 1]}}, "text": "[1,\n2]",
              "shape": [[2, 3], [4]], "floats": [0.5]}
    write_json(tmp_path / "r.json", result, inline_int_lists=True)
    text = (tmp_path / "r.json").read_text()
    assert '"acc": [1, 0],' in text and '"acc_norm": [0, 1]' in text and '"text": "[1,\\n2]"' in text
    assert read_json(tmp_path / "r.json") == result


def test_environment_info_names_versions_and_device():
    info = environment_info("cpu")
    assert info["device"] == "cpu"
    assert {"python", "torch", "transformers", "lm_eval", "datasets", "torch_threads"} <= set(info)


def test_scores_equal_a_plain_lm_eval_cli_run(tiny_llama, tiny_tokenizer, records_path, tmp_path):
    """Our in-memory scoring is lm-eval's own: the CLI on the same task folder and saved model agrees exactly."""
    import json
    import subprocess
    import sys

    tiny_llama.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    name = build_task("demo", records_path, TEMPLATE, None, 0, tmp_path / "task")
    ours = evaluate_model(tiny_llama, tiny_tokenizer, tmp_path / "task", name, 4, 0, "cpu")
    cli = subprocess.run(
        [sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
         f"pretrained={tmp_path / 'model'},dtype=float32", "--tasks", name, "--include_path", str(tmp_path / "task"),
         "--device", "cpu", "--batch_size", "4", "--output_path", str(tmp_path / "out")],
        cwd=tmp_path / "task", capture_output=True, text=True, timeout=300)  # data.jsonl resolves against cwd
    assert cli.returncode == 0, cli.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    theirs = json.loads(results_file.read_text())["results"][name]
    assert (ours["acc"], ours["acc_norm"]) == (theirs["acc,none"], theirs["acc_norm,none"])
