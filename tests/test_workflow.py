"""The researcher's workflow end to end: run, kill, resume, compare, demo, and the CLI's errors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from llama_eval.cli import main
from llama_eval.model.llama import build, init_random
from llama_eval.model.presets import preset

from conftest import TINY_TOKENIZER  # noqa: E402
WORDS = "the cat a dog sees likes finds the red ball a green hat some bread the river".split()


def write_meta_checkpoint(folder: Path, dim: int = 128, layers: int = 4) -> Path:
    """A random model in Meta's layout (params.json, consolidated.00.pth, tokenizer.model)."""
    from llama_eval.model.tokenizer import Tokenizer

    folder.mkdir(parents=True)
    vocab = Tokenizer(TINY_TOKENIZER).vocab_size
    args = replace(preset("tiny"), dim=dim, n_layers=layers, n_heads=4, n_kv_heads=4, vocab_size=vocab)
    torch.save(init_random(build(args, "cpu"), seed=3).state_dict(), folder / "consolidated.00.pth")
    (folder / "params.json").write_text(json.dumps(
        {"dim": dim, "n_layers": layers, "n_heads": 4, "vocab_size": vocab, "multiple_of": 32, "norm_eps": 1e-5}))
    (folder / "tokenizer.model").write_bytes(TINY_TOKENIZER.read_bytes())
    return folder


def write_piqa(data: Path, n: int) -> Path:
    """n made-up PIQA documents in the release layout."""
    (data / "piqa").mkdir(parents=True)
    rows, labels = [], []
    for i in range(n):
        w = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(12)]
        rows.append(json.dumps({"goal": " ".join(w[:6]) + f" {i}?", "sol1": " ".join(w[6:9]), "sol2": " ".join(w[9:])}))
        labels.append(str(i % 2))
    (data / "piqa" / "valid.jsonl").write_text("\n".join(rows) + "\n")
    (data / "piqa" / "valid-labels.lst").write_text("\n".join(labels) + "\n")
    return data


def run_args(model: Path, data: Path, out: Path) -> list[str]:
    return ["run", "--model", str(model), "--tasks", "piqa", "--data-dir", str(data), "--output", str(out),
            "--batch-tokens", "4", "--no-progress", "--device", "cpu"]


def cached_rows(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_killed_run_resumes_and_ends_with_the_same_files(tmp_path):
    model = write_meta_checkpoint(tmp_path / "model")
    data = write_piqa(tmp_path / "data", 300)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "llama_eval", *run_args(model, data, killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while cached_rows(killed / "cache.sqlite") == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed; make the workload larger"
    done_before = cached_rows(killed / "cache.sqlite")
    assert 0 < done_before < 600
    assert not (killed / "summary.csv").exists()

    assert main(run_args(model, data, killed)) == 0  # the same command again resumes
    stats = json.loads((killed / "run.json").read_text())["stats"]["cache"]
    assert stats["reused"] == done_before and stats["reused"] + stats["computed"] == 600

    clean = tmp_path / "clean"
    assert main(run_args(model, data, clean)) == 0
    # The same files, up to float noise in the log-probs: the requests left after the kill were
    # packed into other forwards than in the clean run (the engine's contract: equal within
    # float tolerance, accuracy identical).
    a, b = (pd.read_csv(d / "samples_piqa.csv") for d in (killed, clean))
    pd.testing.assert_frame_equal(a.drop(columns="extra"), b.drop(columns="extra"))
    for x, y in zip(a["extra"], b["extra"]):
        assert json.loads(x)["logprobs"] == pytest.approx(json.loads(y)["logprobs"], abs=1e-4)
    a, b = (pd.read_csv(d / "summary.csv").drop(columns=["date"]) for d in (killed, clean))
    pd.testing.assert_frame_equal(a, b)

    # A different model never reads this cache: the copy with other weights recomputes everything.
    other = write_meta_checkpoint(tmp_path / "other", layers=3)
    assert main([*run_args(other, data, tmp_path / "other_run"), "--cache", str(killed / "cache.sqlite")]) == 0
    stats = json.loads((tmp_path / "other_run" / "run.json").read_text())["stats"]["cache"]
    assert stats == {"reused": 0, "computed": 600}


@pytest.mark.slow
def test_compare_flags_a_planted_difference(tmp_path, capsys):
    model = write_meta_checkpoint(tmp_path / "model", dim=64, layers=2)
    data = write_piqa(tmp_path / "data", 60)
    assert main(run_args(model, data, tmp_path / "a")) == 0
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--fail-below", "1"]) == 0
    assert "config: identical" in capsys.readouterr().out
    # Plant exactly 20 flips: the first 20 documents right in A and wrong in B, nothing else.
    samples = pd.read_csv(tmp_path / "a" / "samples_piqa.csv")
    base, worse = samples.copy(), samples.copy()
    first = samples.index[:20]
    base.loc[first, ["correct", "acc"]] = 1.0
    worse.loc[first, ["correct", "acc"]] = 0.0
    worse.loc[first, "prediction"] = 1 - worse.loc[first, "prediction"]
    for name, df in (("base", base), ("worse", worse)):
        (tmp_path / name).mkdir()
        df.to_csv(tmp_path / name / "samples_piqa.csv", index=False)
    a_pct = 100 * base["acc"].mean()
    capsys.readouterr()
    code = main(["compare", str(tmp_path / "base" / "samples_piqa.csv"), str(tmp_path / "worse" / "samples_piqa.csv"),
                 "--fail-below", "1"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "changed predictions: piqa 0-shot 20 of 60" in out
    # lost 20, gained 0: exact McNemar p = 2 / 2^20; the accuracy falls by 20 of 60 documents
    assert out.splitlines()[-2] == "verdict (headline metrics): 1 significant drop: piqa 0-shot acc -33.33 (p=1.91e-06)"
    assert out.splitlines()[-1] == (f"--fail-below 1: FAILED by piqa 0-shot acc {a_pct:.2f} -> {a_pct - 100 * 20 / 60:.2f} "
                                    "(-33.33 points, p=1.91e-06)")
    # One flip either way is no significant change, and the gate passes.
    both = base.copy()
    both.loc[[0, 30], "acc"] = [0.0, 1.0 - both.loc[30, "acc"]]
    both["correct"] = both["acc"]
    (tmp_path / "one").mkdir()
    both.to_csv(tmp_path / "one" / "samples_piqa.csv", index=False)
    assert main(["compare", str(tmp_path / "base" / "samples_piqa.csv"), str(tmp_path / "one" / "samples_piqa.csv"),
                 "--fail-below", "0"]) == 0
    assert "verdict: no significant change in 1 headline metrics" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_runs_every_task_offline(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path / "demo"), "--allow-code-execution"]) == 0
    out = capsys.readouterr().out
    for table in ("Table 3", "Table 4", "Table 5", "Table 6", "Table 7", "Table 8", "Table 9"):
        assert table in out
    assert "chance level" in out
    from llama_eval.tasks import TASKS

    written = {p.name for p in (tmp_path / "demo").glob("samples_*.csv")}
    assert written == {f"samples_{t}.csv" for t in TASKS}


@pytest.mark.parametrize("argv, message", [
    (["run", "--model", "random:tiny", "--tasks", "pika"], "unknown task 'pika'. Did you mean piqa"),
    (["run", "--model", "8b", "--tasks", "piqa"], "model '8b' is neither a file or folder nor a preset"),
    (["run", "--model", "7b", "--tasks", "piqa"], "LLAMA_EVAL_MODELS"),
    (["run", "--model", "random:tiny", "--tasks", "piqa"], "--data-dir"),
    (["run", "--model", "random:tiny", "--tasks", "humaneval"], "--allow-code-execution"),
    (["run", "--model", "random:tiny", "--tasks", "piqa", "--shots", "x"], "not a comma-separated list of integers"),
    (["run", "--model", "random:tiny", "--tasks", "piqa", "--data-dir", "/nonexistent"], "--data-dir /nonexistent"),
    (["run", "--model", "random:tiny", "--tasks", "piqa", "--task-shots", "mmlu=1"], "--task-shots names mmlu"),
    (["execute", "--samples", "x.jsonl", "--output", "y.jsonl"], "--allow-code-execution"),
    (["frobnicate"], "invalid choice"),
])
def test_user_errors_exit_2_with_one_clear_line(argv, message, capsys, monkeypatch):
    monkeypatch.setenv("LLAMA_EVAL_TOKENIZER", str(TINY_TOKENIZER))
    monkeypatch.delenv("LLAMA_EVAL_MODELS", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    # One error line; what a run announced before reading data (the model, "planning: ...") may precede it.
    lines = err.splitlines()
    assert lines[-1].startswith("llama-eval: error: ") and message in lines[-1]
    assert "Traceback" not in err and sum("error" in x for x in lines) == 1


def test_listing_commands(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "mmlu" in out and "MMLU" in out and "0,1,5,64" in out
    assert main(["models"]) == 0
    assert "LLAMA_EVAL_MODELS" in capsys.readouterr().out


def test_plugin_task_from_include_runs_end_to_end(tmp_path, capsys):
    plugin = Path(__file__).resolve().parents[1] / "examples" / "capitals.py"
    out = tmp_path / "run"
    assert main(["run", "--model", "random:tiny", "--tokenizer", str(TINY_TOKENIZER), "--include", str(plugin),
                 "--tasks", "capitals", "--output", str(out), "--no-progress"]) == 0
    samples = pd.read_csv(out / "samples_capitals.csv")
    assert list(samples["doc_id"]) == ["France", "Japan", "Canada", "Australia", "Italy"]
    assert set(samples["correct"]) <= {0.0, 1.0}
    summary = pd.read_csv(out / "summary.csv")
    acc = summary[(summary["task"] == "capitals") & (summary["metric"] == "acc")]
    assert len(acc) == 1 and acc["value"].iloc[0] == pytest.approx(100 * samples["correct"].mean())
    # A task outside the paper's tables still prints its numbers: a plain results table.
    printed = capsys.readouterr().out
    row = acc.iloc[0]
    assert "Results outside the paper's tables (%)" in printed
    assert f"| random:tiny | capitals | 0 | acc | {row['value']:.1f} | {row['stderr']:.1f} | 5 |  |" in printed


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("tp", [1, 2])
def test_torchrun_two_processes_give_the_single_process_results(tmp_path, tp):
    """`llama-eval run` under torchrun (gloo on CPU): 2 data-parallel ranks (tp=1) or one model
    split over 2 tensor-parallel ranks (tp=2) write what one process writes."""
    model = write_meta_checkpoint(tmp_path / "model", dim=64, layers=2)
    data = write_piqa(tmp_path / "data", 40)
    assert main(run_args(model, data, tmp_path / "single")) == 0
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "llama_eval",
           *run_args(model, data, tmp_path / "multi"), "--tp", str(tp), "--dist-timeout", "60"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = (pd.read_csv(tmp_path / d / "samples_piqa.csv") for d in ("single", "multi"))
    pd.testing.assert_frame_equal(a.drop(columns="extra"), b.drop(columns="extra"))
    for x, y in zip(a["extra"], b["extra"]):
        assert json.loads(x)["logprobs"] == pytest.approx(json.loads(y)["logprobs"], abs=1e-4)
    stats = [json.loads((tmp_path / d / "run.json").read_text())["stats"] for d in ("single", "multi")]
    assert stats[1]["processes"] == 2
    # Every request is scored once across the ranks (data parallel) or by the one model copy (tp 2).
    assert stats[1]["scoring"]["requests"] == stats[0]["scoring"]["requests"]


@pytest.mark.slow
def test_every_task_end_to_end_on_the_real_release_files(shared_data, llama_tokenizer_path, tmp_path):
    """Every registered task, the paper's shot counts, the real files, two documents each."""
    from llama_eval.tasks import TASKS

    out = tmp_path / "real"
    argv = ["run", "--model", "random:tiny", "--tokenizer", str(llama_tokenizer_path), "--tasks", ",".join(TASKS),
            "--data-dir", str(shared_data), "--limit", "2", "--samples", "2", "--option", "humaneval_k=1", "--option", "mbpp_k=1",
            "--allow-code-execution", "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    summary = pd.read_csv(out / "summary.csv")
    headline = summary[summary["group"].isna()]
    for task in TASKS:
        assert (headline["task"] == task).any(), task
    shots = {t: sorted(set(headline[headline["task"] == t]["shots"])) for t in ("nq_open", "triviaqa", "mmlu", "gsm8k")}
    assert shots == {"nq_open": [0, 1, 5, 64], "triviaqa": [0, 1, 5, 64], "mmlu": [5], "gsm8k": [8]}
    run = json.loads((out / "run.json").read_text())
    assert run["stats"]["scoring"]["truncated"] == 0 and run["stats"]["generation"]["truncated"] == 0
    assert run["datasets"]["triviaqa@0"]["source"]["variant"] == "unfiltered"


def test_score_and_generate_commands_on_your_own_requests(tmp_path, capsys):
    from llama_eval.engine.scoring import Scorer
    from llama_eval.model.checkpoint import load_checkpoint
    from llama_eval.requests import LoglikelihoodRequest

    model_dir = write_meta_checkpoint(tmp_path / "model", dim=64, layers=2)
    lines = [{"id": "a", "context": "The cat", "continuation": " sees the red ball"},
             {"id": 7, "context": "A dog likes", "continuation": " bread"},
             {"id": "c", "context": "The cat", "continuation": " finds a green hat"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["score", "--model", str(model_dir), "--requests", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl"), "--device", "cpu"]) == 0
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["id"] for o in out] == ["a", 7, "c"] and set(out[0]) == {"id", "logprob", "is_greedy", "n_tokens"}
    loaded = load_checkpoint(str(model_dir), device="cpu")
    direct = Scorer(loaded.model, loaded.tokenizer).loglikelihood(
        [LoglikelihoodRequest(x["context"], x["continuation"]) for x in lines])
    assert [o["logprob"] for o in out] == pytest.approx([d.logprob for d in direct], abs=1e-5)
    assert "3 requests" in capsys.readouterr().out

    gen = [{"id": "g1", "prompt": "The cat", "max_new_tokens": 5},
           {"id": "g2", "prompt": "A dog", "until": ["."], "max_new_tokens": 8, "temperature": 0.8, "n": 3, "seed": 1}]
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps(x) + "\n" for x in gen))
    assert main(["generate", "--model", str(model_dir), "--requests", str(tmp_path / "gen.jsonl"),
                 "--output", str(tmp_path / "gen_out.jsonl"), "--device", "cpu"]) == 0
    out = [json.loads(x) for x in (tmp_path / "gen_out.jsonl").read_text().splitlines()]
    assert [o["id"] for o in out] == ["g1", "g2"] and [len(o["completions"]) for o in out] == [1, 3]
    assert all("." not in c for c in out[1]["completions"])

    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": 1, "context": "x"}) + "\n")
    assert main(["score", "--model", str(model_dir), "--requests", str(tmp_path / "bad.jsonl"),
                 "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "line 1: field 'continuation' is missing" in capsys.readouterr().err


def test_tasks_from_another_package_register_by_entry_point(tmp_path, monkeypatch):
    """A task shipped by another package is found through the "llama_eval.tasks" entry points."""
    from importlib.metadata import EntryPoint

    import llama_eval.tasks as registry

    (tmp_path / "capitals_plugin.py").write_text((Path(__file__).resolve().parents[1] / "examples" / "capitals.py").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [EntryPoint(name="capitals", value="capitals_plugin:Capitals", group="llama_eval.tasks")]
    monkeypatch.setattr(registry, "entry_points", lambda group: points if group == "llama_eval.tasks" else [])
    assert "capitals" in registry.names()
    task = registry.get_task("capitals")
    assert task.name == "capitals" and len(task.load(None)) == 5


def test_data_verify_command(shared_data, capsys):
    assert main(["data", "verify", "--data-dir", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "0 problem(s)" in out and "ok        mmlu/test/anatomy_test.csv" in out


@pytest.mark.slow
def test_all_tasks_leave_out_code_tasks_without_permission(tmp_path, capsys):
    from llama_eval.demo import DEMO_DATA

    out = tmp_path / "all"
    assert main(["run", "--model", "random:tiny", "--tokenizer", str(TINY_TOKENIZER), "--tasks", "all",
                 "--data-dir", str(DEMO_DATA), "--limit", "1", "--samples", "0", "--task-shots", "nq_open=0",
                 "--task-shots", "triviaqa=0", "--output", str(out), "--no-progress"]) == 0
    assert "--tasks all leaves out humaneval, mbpp" in capsys.readouterr().err
    written = {p.name for p in out.glob("samples_*.csv")}
    assert "samples_piqa.csv" in written and "samples_math.csv" in written
    assert not {"samples_humaneval.csv", "samples_mbpp.csv"} & written


def test_execute_and_table_commands(tmp_path, capsys):
    """`execute` grades completions made elsewhere; `table` prints and plots a run's tables."""
    import gzip

    from llama_eval.demo import DEMO_DATA

    problems = [json.loads(x) for x in gzip.open(DEMO_DATA / "humaneval" / "HumanEval.jsonl.gz", "rt")]
    first = problems[0]
    samples = [{"task_id": first["task_id"], "completion": first["canonical_solution"]},
               {"task_id": first["task_id"], "completion": "    return None\n"}]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(x) + "\n" for x in samples))
    assert main(["execute", "--samples", str(tmp_path / "s.jsonl"), "--output", str(tmp_path / "o.jsonl"),
                 "--data-dir", str(DEMO_DATA), "--k", "1", "--allow-code-execution"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [x["status"] for x in lines] == ["passed", "failed"]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"pass@1": 50.0}

    run = tmp_path / "run"
    assert main(["run", "--model", "random:tiny", "--tokenizer", str(TINY_TOKENIZER), "--tasks", "piqa,mmlu",
                 "--data-dir", str(DEMO_DATA), "--output", str(run), "--paper-model", "LLaMA-7B", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["table", str(run), "--format", "latex", "--tables", "3,9", "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "\\begin{tabular}" in out and "random:tiny" in out and (tmp_path / "p.png").stat().st_size > 1000
