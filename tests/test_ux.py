"""What a person sees: the start-of-run summary, progress lines, caveats, plugin checks, the
CLI's help, version and listing commands."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import llama_eval.tasks as registry
from llama_eval import progress
from llama_eval.cli import build_parser, main
from llama_eval.errors import UserError

from conftest import TINY_TOKENIZER  # noqa: E402
from test_workflow import run_args, write_meta_checkpoint, write_piqa

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_plugins(monkeypatch):
    monkeypatch.setattr(registry, "_plugins", {})


# -- a run announces itself and reports as it goes ---------------------------------------------

def test_run_prints_a_summary_before_loading_and_line_progress_naming_the_task(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)  # a line per result
    model = write_meta_checkpoint(tmp_path / "model", dim=64, layers=2)
    data = write_piqa(tmp_path / "data", 12)
    assert main([*run_args(model, data, tmp_path / "out"), "--limit", "10"]) == 0
    captured = capsys.readouterr()
    err, lines = captured.err, captured.err.splitlines()
    lines = lines[next(i for i, x in enumerate(lines) if x.startswith("model: ")):]  # after the data's own warnings
    assert "PIQA" in captured.out and lines[0].startswith("model: ")
    table_row = next(x for x in captured.out.splitlines() if x.startswith(f"| {model.name} |"))
    assert "\u2020" in table_row and "\u2020 model: piqa 0-shot: n=10 of 12 documents (--limit 10)" in captured.out
    assert "\r" not in err  # stderr is not a terminal: plain lines, no bar redrawn in place
    from llama_eval.model.checkpoint import load_checkpoint

    window = load_checkpoint(str(model), device="cpu").info.args.max_seq_len  # what loading gives
    assert re.fullmatch(rf"model: {re.escape(str(model))} \(meta checkpoint, [\d.]+k parameters\), window {window:,} tokens, "
                        "float32 on cpu", lines[0])
    assert lines[1] == "planning: reading the documents of piqa and building their requests"
    lines = [x for x in lines if not x.startswith(("llama-eval: warning: ", "tokenising: ")) or "--limit" in x]
    assert 1 <= sum(x.startswith("tokenising: ") for x in captured.err.splitlines()) <= 20  # LOG_INTERVAL 0
    assert lines[2].split() == ["task", "shots", "documents", "requests", "tokens", "cut", "lost", "shots"]
    row = lines[3].split()
    assert row[:6] == ["piqa", "0", "10", "of", "12", "20"] and row[-2:] == ["0", "0"]
    assert lines[4].startswith("total: 20 distinct requests, about ")
    assert lines[5] == "differs from the paper's protocol: --limit 10"
    summary_at = 5
    loaded_at = next(i for i, x in enumerate(lines) if x.startswith("weights loaded in"))
    assert summary_at < loaded_at  # announced before the weights are read
    progress_lines = [x for x in lines if x.startswith("scoring: ") and "/20 requests" in x]
    assert len(progress_lines) == 20 and all("piqa 0-shot" in x and "ETA" in x for x in progress_lines)
    assert progress_lines[-1].startswith("scoring: 20/20 requests, 100% of tokens")
    assert any(x.startswith("scoring: done, 20 requests in ") for x in lines)
    # run.json records the caveat, and the end of the run warns about it again.
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["datasets"]["piqa@0"]["documents"] == 10 and run["datasets"]["piqa@0"]["documents_available"] == 12
    assert run["caveats"] == ["piqa 0-shot: n=10 of 12 documents (--limit 10)"]
    assert lines[-1] == "llama-eval: warning: piqa 0-shot: n=10 of 12 documents (--limit 10)"


def test_summary_counts_cut_prompts_and_sampling_cost():
    from llama_eval.evaluator import TaskRun
    from llama_eval.requests import GenerationRequest, LoglikelihoodRequest
    from llama_eval.tasks.data import DataSource
    from llama_eval.tasks.gsm8k import GSM8K
    from llama_eval.model.tokenizer import Tokenizer

    tok = Tokenizer(TINY_TOKENIZER)
    short, long = LoglikelihoodRequest("the cat", " sees"), LoglikelihoodRequest("the cat " * 40, " sees")
    g = [GenerationRequest("a dog", ("\n",), 16, temperature=0.0, n=1),
         GenerationRequest("a dog", ("\n",), 16, temperature=0.6, n=5)]
    source = DataSource("release", "gsm8k/test.jsonl", "test", documents=3)
    runs = [TaskRun(GSM8K(), 8, [{"id": "1"}, {"id": "2"}], [[short, g[0], g[1]], [long]], [8, 7], source)]
    reporter = progress.Reporter(bar=False, stream=io.StringIO())
    work = progress.estimate(runs, tok, window=64, reporter=reporter)
    assert work.cut == {long}  # 40 x "the cat " is well over 64 tokens
    assert work.tokens[long] == 65  # at most the window plus the scored token
    assert work.tokens[g[1]] == 1 + len(tok.encode("a dog")) + 5 * 16
    facts = progress.ModelFacts("random:tiny", "random", 1000, 64, "float32", "cpu", tok)
    assert progress.model_line(facts) == "model: random:tiny (random weights, 1.0k parameters), window 64 tokens, float32 on cpu"
    lines = progress.summarise(runs, work, ["--samples 5"])
    assert lines[1].split()[:5] == ["gsm8k", "8", "2", "of", "3"] and lines[1].split()[-2:] == ["1", "1"]
    assert lines[2] == ("sampling: gsm8k 8-shot draws 5 samples per problem for 2 problems = 5 completions, "
                        "at most 80 new tokens (--samples sets the count)")
    assert "1 will be cut from the left to fit the window" in lines[3]
    assert lines[4] == "differs from the paper's protocol: --samples 5"


def test_bar_on_a_terminal_counts_tokens():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    from llama_eval.requests import LoglikelihoodRequest

    todo = [LoglikelihoodRequest("a", " b"), LoglikelihoodRequest("c", " d")]
    work = progress.Workload({todo[0]: 10, todo[1]: 30}, set(), {todo[0]: "piqa 0-shot", todo[1]: "piqa 0-shot"})
    stream = Terminal()
    seen = list(progress.Reporter(stream=stream).track("scoring", iter([(1, "x"), (0, "y")]), todo, work))
    assert seen == [(1, "x"), (0, "y")]
    text = stream.getvalue()
    assert "\r" in text and "40.0/40.0 tok" in text and "scoring: done, 2 requests" in text


# -- caveats travel with the numbers -------------------------------------------------------------

@pytest.mark.slow
def test_partial_mmlu_run_covers_every_subject_and_marks_its_cells(shared_data, llama_tokenizer_path, tmp_path, capsys):
    out = tmp_path / "mmlu"
    assert main(["run", "--model", "random:tiny", "--tokenizer", str(llama_tokenizer_path), "--tasks", "MMLU",
                 "--data-dir", str(shared_data), "--limit", "1", "--output", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    samples = pd.read_csv(out / "samples_mmlu.csv")
    assert samples["doc_id"].str.split("/").str[0].nunique() == 57 and len(samples) == 57
    row = next(x for x in captured.err.splitlines() if x.startswith("mmlu "))
    assert row.split()[:6] == ["mmlu", "5", "57", "of", "14,042", "228"]
    table9 = captured.out[captured.out.index("Table 9"):]
    ours = next(x for x in table9.splitlines() if x.startswith("| random:tiny"))
    assert ours.count("\u2020") == 5  # every cell: partial
    assert "\u2020 random:tiny: mmlu 5-shot: n=57 of 14,042 documents (--limit 1 per subject)" in table9
    assert "differs from the paper's protocol: --limit 1 (per subject where a task has them)" in captured.err


def test_limit_takes_n_per_group():
    from llama_eval.evaluator import limit_documents

    docs = [{"id": str(i), "subject": s} for i, s in enumerate("aaabbbbc")]
    assert [d["id"] for d in limit_documents(docs, 2, "subject")] == ["0", "1", "3", "4", "7"]
    assert [d["id"] for d in limit_documents(docs, 2, "")] == ["0", "1"]
    with pytest.raises(UserError, match="--limit 0: must be at least 1"):
        limit_documents(docs, 0, "")


# -- generation limits fit the model -------------------------------------------------------------

def test_generation_limits_clamp_to_the_window_or_follow_max_new_tokens():
    from llama_eval.evaluator import fit_generation
    from llama_eval.requests import GenerationRequest, LoglikelihoodRequest

    reqs = [[GenerationRequest("p", ("\n",), 512), LoglikelihoodRequest("a", " b")]]
    with pytest.warns(UserWarning, match=r"math: max new tokens 512 clamped to 256 to fit the model's 512-token window"):
        fitted = fit_generation("math", reqs, None, 512)
    assert fitted[0][0].max_new_tokens == 256 and fitted[0][1] == reqs[0][1]
    assert fit_generation("math", reqs, 100, 512)[0][0].max_new_tokens == 100
    assert fit_generation("math", reqs, None, 2048) == reqs  # fits: unchanged
    with pytest.raises(UserError, match="--max-new-tokens 512: must be at least 1 and below the model's window"):
        fit_generation("math", reqs, 512, 512)


@pytest.mark.slow
def test_math_runs_on_a_512_token_model(tmp_path, capsys):
    from llama_eval.demo import DEMO_DATA

    model = write_meta_checkpoint(tmp_path / "model", dim=64, layers=2)
    params = json.loads((model / "params.json").read_text())
    (model / "params.json").write_text(json.dumps({**params, "max_seq_len": 512}))
    out = tmp_path / "math"
    assert main(["run", "--model", str(model), "--tasks", "math", "--data-dir", str(DEMO_DATA), "--limit", "1",
                 "--samples", "0", "--output", str(out), "--device", "cpu", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: math: max new tokens 512 clamped to 256 to fit the model's 512-token window" in err
    assert pd.read_csv(out / "samples_math.csv").shape[0] == 1


def test_errors_name_the_task_and_refused_samples_name_the_option(tmp_path, capsys):
    from llama_eval.demo import DEMO_DATA

    assert main(["run", "--model", "random:tiny", "--tokenizer", str(TINY_TOKENIZER), "--tasks", "humaneval",
                 "--data-dir", str(DEMO_DATA), "--samples", "2", "--allow-code-execution", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "llama-eval: error: task humaneval: --samples 2: pass@100 needs at least 100 samples" in err
    assert "--option humaneval_k=1" in err


# -- plugins checked at load ---------------------------------------------------------------------

def test_plugin_missing_a_hook_is_one_error_naming_file_and_hook(tmp_path, clean_plugins, capsys):
    plugin = tmp_path / "broken.py"
    plugin.write_text("from llama_eval.tasks.base import MultipleChoiceTask\n\n"
                      "class Broken(MultipleChoiceTask):\n    name = 'broken'\n    paper_name = 'Broken'\n"
                      "    def load(self, data_dir):\n        return [{'id': '1'}]\n"
                      "    def context(self, doc, shots):\n        return 'Q'\n")
    assert main(["run", "--model", "random:tiny", "--tokenizer", str(TINY_TOKENIZER), "--include", str(plugin),
                 "--tasks", "broken", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1] == (f"llama-eval: error: --include {plugin}: task 'broken' (Broken, a MultipleChoiceTask) "
                           "does not define choices, gold; see llama_eval/tasks/base.py for what each hook returns")
    plugin.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UserError, match=r"the file fails to load \(RuntimeError: boom\)"):
        registry.include(plugin)


def test_plugin_declaring_a_bad_option_is_refused_at_load(tmp_path, clean_plugins):
    source = (REPO / "examples" / "capitals.py").read_text()
    plugin = tmp_path / "opts.py"
    plugin.write_text(source + "\nCapitals.options = {'capitals_mode': 'fast'}\n")
    with pytest.raises(UserError, match=r"task 'capitals' declares option 'capitals_mode' as 'fast'.*Option\(default, help"):
        registry.include(plugin)
    plugin.write_text(source + "\nfrom llama_eval.tasks.options import Option\n"
                      "Capitals.options = {'capitals_mode': Option('slow', 'how', choices=('fast',))}\n")
    with pytest.raises(UserError, match=r"the default of option 'capitals_mode' is refused by its rule"):
        registry.include(plugin)


def test_included_task_cannot_shadow_a_builtin_without_override(tmp_path, clean_plugins):
    source = (REPO / "examples" / "capitals.py").read_text().replace('name = "capitals"', 'name = "PIQA"')
    plugin = tmp_path / "shadow.py"
    plugin.write_text(source)
    with pytest.raises(UserError, match="task 'PIQA' has the name of the built-in task 'piqa'.*--include-override"):
        registry.include(plugin)
    assert registry.include(plugin, override=True) == ["PIQA"]
    assert type(registry.get_task("PIQA")).__name__ == "Capitals"


def test_task_names_match_case_insensitively_with_suggestions(clean_plugins):
    assert registry.get_task("PIQA").name == "piqa" and registry.canonical_name("Arc_Easy") == "arc_easy"
    with pytest.raises(UserError, match=r"unknown task 'PIKA'. Did you mean piqa"):
        registry.get_task("PIKA")


# -- compare on a real seed change -----------------------------------------------------------------

@pytest.mark.slow
def test_compare_a_seed_change_shows_the_config_difference_and_changed_predictions(tmp_path, capsys):
    from llama_eval.demo import DEMO_DATA

    def run(seed: int) -> Path:
        out = tmp_path / f"seed{seed}"
        assert main(["run", "--model", "random:tiny", "--tokenizer", str(TINY_TOKENIZER), "--tasks", "nq_open",
                     "--task-shots", "nq_open=1", "--data-dir", str(DEMO_DATA), "--seed", str(seed),
                     "--output", str(out), "--no-progress", "--no-cache"]) == 0
        return out

    a, b = run(1234), run(99)
    capsys.readouterr()
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "config differences:\n  seed: 1234 -> 99" in out
    sa, sb = (pd.read_csv(d / "samples_nq_open.csv", dtype=str, keep_default_na=False) for d in (a, b))
    changed = int((sa["prediction"] != sb["prediction"]).sum())
    assert f"changed predictions: nq_open 1-shot {changed} of {len(sa)}" in out
    assert out.splitlines()[-1].startswith("verdict")


# -- table: csv, tables, pipes ---------------------------------------------------------------------

RUN_7B = REPO / "tests" / "fixtures" / "reporting" / "run_7b"


def test_table_csv_is_one_tidy_frame_and_tables_names_what_exists(capsys):
    assert main(["table", str(RUN_7B), "--format", "csv", "--tables", "3,9", "--paper-model", "LLaMA-13B", "--diff"]) == 0
    tidy = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(tidy.columns) == ["table", "row", "kind", "column", "value", "stderr", "n", "note"]
    assert sorted(set(tidy["table"])) == [3, 9]
    diff = tidy[(tidy["row"] == "diff vs LLaMA-13B") & (tidy["column"] == "BoolQ")]
    assert diff["value"].item() == pytest.approx(75.0 - 78.1)
    assert main(["table", str(RUN_7B), "--tables", "mmlu"]) == 2
    assert "'mmlu': give the paper's table numbers, e.g. 3,9; tables here: 3, 4, 5, 6, 7, 8, 9" in capsys.readouterr().err
    assert main(["table", str(RUN_7B), "--tables", "10"]) == 2
    assert "no paper table 10; tables here: 3, 4, 5, 6, 7, 8, 9" in capsys.readouterr().err


def test_closed_pipe_is_not_a_traceback():
    proc = subprocess.run(f"{sys.executable} -m llama_eval table {RUN_7B} --tables 3,4,5,6,7,8,9 --stderr | head -1",
                          shell=True, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.stdout.startswith("Table 3") and proc.stderr == ""


# -- the CLI's help, version and listings ----------------------------------------------------------

def test_version_help_for_every_flag_and_an_example_per_subcommand(capsys):
    from llama_eval import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"llama-eval {__version__}"
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "run" in a.choices).choices
    for name, sub in subparsers.items():
        assert sub.epilog and sub.epilog.startswith("example:\n  ") and (
            "llama-eval " + name in sub.epilog), name
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"


def test_data_verify_on_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["data", "verify", "--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--data-dir {tmp_path / 'nope'} is not a folder" in err


def test_models_says_which_presets_were_found(tmp_path, capsys, monkeypatch):
    (tmp_path / "7B").mkdir()
    monkeypatch.setenv("LLAMA_EVAL_MODELS", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^7b\s+[\d,]+\s+2048\s+found\s", out, re.M)
    assert re.search(r"^13b\s+[\d,]+\s+2048\s+missing\s", out, re.M)
    assert f"found under $LLAMA_EVAL_MODELS: 7b ({tmp_path / '7B'})" in out


def test_protocol_differences_name_limit_shots_samples_and_changed_options():
    from llama_eval.config import RunConfig
    from llama_eval.evaluator import TaskRun, protocol_differences

    race, mmlu = registry.get_task("race_high"), registry.get_task("mmlu")
    runs = [TaskRun(race, 0, [], [], [], None), TaskRun(mmlu, 0, [], [], [], None)]
    config = RunConfig(model="random:tiny", tasks=("race_high", "mmlu"), limit=3, samples=4,
                       options=("race_scoring=chars", "race_calibration_context=A:"))
    assert protocol_differences(config, runs) == [
        "--limit 3 (per subject where a task has them)", "mmlu at 0 shots (paper: 5)", "--samples 4",
        "--option race_scoring=chars (default calibrated)"]  # an option given at its default is not a difference
