"""`llama-eval execute`: HumanEval-format samples in, per-sample results and pass@k out (the
sandbox itself: test_execution.py)."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pytest

from llama_eval import execution
from llama_eval.errors import UserError
from llama_eval.execution import Check, Limits
from llama_eval.tasks import humaneval

from test_execution import no_sandbox_folder_left  # noqa: F401  (autouse: no sandbox folder is left behind)

TOY_PROBLEMS = [
    {
        "task_id": "Toy/0",
        "prompt": "def add(a, b):\n",
        "entry_point": "add",
        "canonical_solution": "    return a + b\n",
        "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    },
    {
        "task_id": "Toy/1",
        "prompt": "def negate(x):\n",
        "entry_point": "negate",
        "canonical_solution": "    return -x\n",
        "test": "def check(candidate):\n    assert candidate(4) == -4\n",
    },
]
TOY_SAMPLES = [
    ("Toy/0", "    return a + b\n", "passed"),
    ("Toy/1", "    return x\n", "failed"),
    ("Toy/0", "    return a - b\n", "failed"),
    ("Toy/1", "    import sys\n    sys.exit(0)\n", "failed"),
    ("Toy/0", "    return b + a\n", "passed"),
    ("Toy/1", "    return -x\n", "passed"),
    ("Toy/1", "    return 0 - x\n", "passed"),
]


def write_jsonl(path: Path, rows: list[dict], compress: bool = False) -> Path:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if compress:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def brute_force_pass_at_k(outcomes: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(subset) for subset in subsets) / len(subsets)


def test_execute_samples_writes_results_and_pass_at_k(tmp_path):
    problems = humaneval.load_problems(write_jsonl(tmp_path / "problems.jsonl.gz", TOY_PROBLEMS, compress=True))
    samples = write_jsonl(tmp_path / "samples.jsonl", [{"task_id": t, "completion": c} for t, c, _ in TOY_SAMPLES])
    output = tmp_path / "out" / "results.jsonl"
    scores = humaneval.execute_samples(samples, problems, output, ks=(1, 2, 3, 4), timeout=5, workers=2)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["task_id"], r["completion"], r["status"]) for r in rows] == TOY_SAMPLES
    assert all(set(r) == {"task_id", "completion", "status", "detail"} for r in rows)
    per_task = {"Toy/0": [True, False, True], "Toy/1": [False, False, True, True]}
    assert set(scores) == {"pass@1", "pass@2", "pass@3"}  # Toy/0 has only 3 samples
    for k in (1, 2, 3):
        expected = 100 * sum(brute_force_pass_at_k(o, k) for o in per_task.values()) / len(per_task)
        assert scores[f"pass@{k}"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"samples.jsonl, line 2: not valid JSON"),
        ('["Toy/0"]', r"samples.jsonl, line 2: expected a JSON object"),
        ('{"task_id": "Toy/0"}', r"samples.jsonl, line 2: field 'completion' is missing"),
        ('{"completion": "x"}', r"samples.jsonl, line 2: field 'task_id' is missing"),
        ('{"task_id": "Toy/0", "completion": 3}', r"samples.jsonl, line 2: field 'completion' should be str"),
        ('{"task_id": "Toy/9", "completion": "x"}', r"samples.jsonl, line 2: field 'task_id' should be a known problem"),
    ],
)
def test_bad_sample_lines_name_file_line_and_field(tmp_path, line, message):
    problems = {p["task_id"]: p for p in TOY_PROBLEMS}
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "Toy/0", "completion": "    return a + b\n"}) + "\n" + line + "\n")
    with pytest.raises(UserError, match=message):
        humaneval.execute_samples(samples, problems, tmp_path / "out.jsonl")


def test_bad_inputs_to_execute_are_user_errors(tmp_path):
    problems = {p["task_id"]: p for p in TOY_PROBLEMS}
    with pytest.raises(UserError, match="does not exist"):
        humaneval.execute_samples(tmp_path / "missing.jsonl", problems, tmp_path / "out.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="holds no samples"):
        humaneval.execute_samples(tmp_path / "empty.jsonl", problems, tmp_path / "out.jsonl")
    with pytest.raises(UserError, match="positive integer k"):
        humaneval.execute_samples(tmp_path / "empty.jsonl", problems, tmp_path / "out.jsonl", ks=(0,))
    broken = write_jsonl(tmp_path / "problems.jsonl", [{"task_id": "Toy/0", "prompt": "def f():\n"}])
    with pytest.raises(UserError, match="problems.jsonl, line 1: field 'entry_point' is missing"):
        humaneval.load_problems(broken)


def test_execute_prints_the_isolation_and_refuses_without_any(tmp_path, capsys, monkeypatch):
    from llama_eval.cli import main

    problems = write_jsonl(tmp_path / "problems.jsonl", TOY_PROBLEMS)
    samples = write_jsonl(tmp_path / "samples.jsonl", [{"task_id": "Toy/0", "completion": "    return a + b\n"}])
    command = ["execute", "--samples", str(samples), "--output", str(tmp_path / "out.jsonl"), "--problems", str(problems),
               "--k", "1", "--allow-code-execution"]
    assert main(command) == 0
    err = capsys.readouterr().err
    assert err.startswith("sandbox: ") and len(err.splitlines()) == 1
    _, nothing = execution.run_sandboxed(Check("pass\n"), 5, Limits(), allow_unsandboxed=True, modes=())
    monkeypatch.setattr(execution.harness, "probe_isolation", lambda **kwargs: nothing)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--allow-unsandboxed" in err
    assert main(command + ["--allow-unsandboxed"]) == 0
    assert capsys.readouterr().err.startswith("sandbox: NO kernel isolation")
