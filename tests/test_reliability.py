"""Nothing silently wrong and nothing lost: run folders that never mix, a cache shared safely or
refused in one line when damaged, failed runs that say so, and bad input refused at the boundary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llama_eval import evaluator
from llama_eval.cli import main
from llama_eval.config import RunConfig
from llama_eval.model.checkpoint import load_checkpoint

from conftest import SAMPLE_DATA, TINY_TOKENIZER  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def run_argv(out: Path | None, *extra: str, tasks: str = "piqa") -> list[str]:
    argv = ["run", "--model", "random:tiny", "--tokenizer", str(TINY_TOKENIZER), "--tasks", tasks,
            "--data-dir", str(SAMPLE_DATA), "--no-progress", *extra]
    return argv + (["--output", str(out)] if out is not None else [])


def one_error_line(capsys) -> str:
    """The one error line a refused command printed (the run's announcement may precede it)."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("llama-eval: error: ")]
    assert len(errors) == 1 and err.endswith(errors[0]) and "Traceback" not in err, err
    return errors[0]


def test_a_folder_holding_another_config_is_refused_unless_told(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(run_argv(out)) == 0
    assert main(run_argv(out)) == 0  # the same command resumes
    first = json.loads((out / "run.json").read_text())
    assert first["stats"]["cache"]["computed"] == 0
    capsys.readouterr()

    assert main(run_argv(out, "--seed", "7")) == 2
    assert "holds a run of random:tiny (the same weights) with another config" in one_error_line(capsys)
    assert json.loads((out / "run.json").read_text()) == first  # untouched

    assert main(run_argv(out, "--append", tasks="arc_easy")) == 0  # same model and config, another task
    appended = json.loads((out / "run.json").read_text())
    assert {"piqa@0", "arc_easy@0"} <= set(appended["datasets"])
    summary = (out / "summary.csv").read_text()
    assert '"piqa"' in summary and '"arc_easy"' in summary

    assert main(run_argv(out, "--append", "--seed", "7", tasks="arc_easy")) == 2
    assert "--append needs the same weights and settings" in one_error_line(capsys)

    assert main(run_argv(out, "--seed", "7", "--overwrite")) == 0
    replaced = json.loads((out / "run.json").read_text())
    assert replaced["config"]["seed"] == 7 and set(replaced["datasets"]) == {"piqa@0"}
    assert '"arc_easy"' not in (out / "summary.csv").read_text()
    assert not list(out.glob("samples_arc_easy*"))


def test_the_default_folder_is_named_by_the_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(run_argv(None)) == 0
    [folder] = (tmp_path / "runs").iterdir()
    fingerprint = json.loads((folder / "run.json").read_text())["model"]["fingerprint"]
    assert folder.name == f"random:tiny-{fingerprint[:8]}"


def test_a_damaged_cache_is_one_line_and_leaves_run_json_intact(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(run_argv(out)) == 0
    before = (out / "run.json").read_bytes()
    for suffix in ("-wal", "-shm"):
        Path(f"{out / 'cache.sqlite'}{suffix}").unlink(missing_ok=True)
    (out / "cache.sqlite").write_bytes(b"this is not a database" * 100)
    capsys.readouterr()
    assert main(run_argv(out)) == 2
    line = one_error_line(capsys)
    assert f"cache {out / 'cache.sqlite'} is damaged" in line and "delete it or pass --no-cache" in line
    assert (out / "run.json").read_bytes() == before
    assert main(run_argv(out, "--no-cache")) == 0


@pytest.mark.slow
def test_two_runs_sharing_one_cache_both_finish(tmp_path):
    cache = tmp_path / "shared.sqlite"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "llama_eval", *run_argv(tmp_path / f"run{i}", "--cache", str(cache),
                                                                          "--batch-tokens", "8", tasks="piqa,arc_easy,boolq")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    a, b = ((tmp_path / f"run{i}" / "summary.csv").read_text() for i in range(2))
    strip = lambda text: [line.rsplit(",", 4)[0] for line in text.splitlines()]  # noqa: E731 (run id, date differ)
    assert strip(a) == strip(b)


def test_a_failed_run_says_so_in_run_json(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the device fell over")

    monkeypatch.setattr(evaluator, "answer", broken)
    config = RunConfig(model="random:tiny", tasks=("piqa",), tokenizer=str(TINY_TOKENIZER), data_dir=str(SAMPLE_DATA),
                       output=str(tmp_path / "run"), progress=False)
    with pytest.raises(RuntimeError):
        evaluator.evaluate(config)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and info["error"] == "RuntimeError: the device fell over"


def test_a_non_finite_score_stops_the_run_naming_the_request(tmp_path):
    def nan_model(spec, **kw):
        loaded = load_checkpoint(spec, **kw)
        with torch.no_grad():
            loaded.model.norm.weight.fill_(float("nan"))
        return loaded

    config = RunConfig(model="random:tiny", tasks=("piqa",), tokenizer=str(TINY_TOKENIZER), data_dir=str(SAMPLE_DATA),
                       output=str(tmp_path / "run"), progress=False, use_cache=False)
    with pytest.raises(Exception, match=r"the model scored nan for the continuation .* non-finite"):
        evaluator.evaluate(config, load=nan_model)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("extra, message", [
    (["--limit", "-1"], "--limit -1: must be 1 or more"),
    (["--limit", "0"], "--limit 0: must be 1 or more"),
    (["--shots", "-1"], "--shots -1: shot counts must be 0 or more"),
    (["--batch-tokens", "-5"], "--batch-tokens -5: must be between 1 and 16,384"),
    (["--batch-tokens", "100000000"], "--batch-tokens 100000000: must be between 1"),
    (["--temperature", "nan"], "--temperature nan: must be a finite number"),
    (["--dist-timeout", "inf"], "--dist-timeout inf: must be a finite number"),
    (["--option", "qa_separator=blank"], "--option qa_separator: no selected task declares it"),
    (["--overwrite", "--append"], "--overwrite and --append contradict"),
])
def test_bad_run_flags_exit_2_with_one_line(extra, message, tmp_path, capsys):
    assert main(run_argv(tmp_path / "run", *extra)) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize("line, message", [
    ({"prompt": "a", "until": "ea"}, "field 'until' must be a list of non-empty strings"),
    ({"prompt": "a", "max_new_tokens": 2.5}, "field 'max_new_tokens' must be a whole number, 1 or more"),
    ({"prompt": "a", "n": 0}, "field 'n' must be a whole number, 1 or more"),
    ({"prompt": "a", "seed": "1"}, "field 'seed' must be a whole number"),
    ({"prompt": "a", "temperature": -1}, "field 'temperature' must be a finite number 0 or more"),
    ({"prompt": "a", "top_p": 0}, "field 'top_p' must be a finite number in (0, 1]"),
    ({"prompt": 3}, "field 'prompt' is missing or not a string"),
    ({"prompt": "a", "max_tokens": 3}, "field 'max_tokens' is not a request field"),
    (["not", "an", "object"], "expected a JSON object, got list"),
])
def test_generate_requests_are_checked_field_by_field(line, message, tmp_path, capsys):
    requests = tmp_path / "in.jsonl"
    requests.write_text(json.dumps(line) + "\n")
    argv = ["generate", "--model", "random:tiny", "--tokenizer", str(TINY_TOKENIZER), "--requests", str(requests),
            "--output", str(tmp_path / "out.jsonl")]
    assert main(argv) == 2
    assert f"{requests}, line 1:" in (err := one_error_line(capsys)) and message in err


def test_request_files_that_are_not_utf8_or_are_the_output_are_refused(tmp_path, capsys):
    requests = tmp_path / "in.jsonl"
    requests.write_bytes(b'{"context": "caf\xe9", "continuation": " x"}\n')
    argv = ["score", "--model", "random:tiny", "--tokenizer", str(TINY_TOKENIZER), "--requests", str(requests)]
    assert main([*argv, "--output", str(tmp_path / "out.jsonl")]) == 2
    assert "not UTF-8 text" in one_error_line(capsys)
    assert main([*argv, "--output", str(requests)]) == 2
    assert "is the --requests file itself" in one_error_line(capsys)
    assert main([*argv, "--output", str(tmp_path)]) == 2
    assert "is a folder" in one_error_line(capsys)
    assert main([*argv, "--output", str(tmp_path / "missing" / "out.jsonl")]) == 2
    assert "does not exist; create it first" in one_error_line(capsys)
