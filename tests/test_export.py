"""lm-eval interop: `llama-eval export --format lm-eval`, and lm-eval results read as a run."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import pytest

import llama_eval
from llama_eval.cli import main
from llama_eval.errors import UserError
from llama_eval.reporting import load_run

from conftest import SAMPLE_DATA, TINY_TOKENIZER

TASKS = ["piqa", "boolq", "mmlu", "nq_open"]  # plain, calibrated, grouped, generation at two shot counts


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    llama_eval.evaluate("random:tiny", TASKS, tokenizer=str(TINY_TOKENIZER), device="cpu", data_dir=SAMPLE_DATA,
                        output=run_dir, progress=False, task_shots={"nq_open": [0, 1]}, limit=1)
    assert main(["export", str(run_dir), "--format", "lm-eval", "--output", str(run_dir / "out")]) == 0
    folder = run_dir / "out" / "random__tiny"
    results = json.loads(next(folder.glob("results_*.json")).read_text())
    samples = {p.name.split("_", 1)[1].rsplit("_", 1)[0]: [json.loads(line) for line in p.open()]
               for p in folder.glob("samples_*.jsonl")}
    return run_dir, folder, results, samples


def test_results_json_has_lm_eval_shape_and_our_numbers(exported):
    run_dir, _, results, _ = exported
    for key in ("results", "versions", "n-shot", "config", "configs", "higher_is_better", "n-samples"):
        assert key in results
    summary = load_run(run_dir).summary
    whole = summary[summary["group"] == ""]
    assert set(results["results"]) >= {"piqa", "boolq", "mmlu", "nq_open_0shot", "nq_open_1shot"}
    for r in whole.itertuples():
        name = r.task if r.task != "nq_open" else f"nq_open_{r.shots}shot"
        entry = results["results"][name]
        assert entry[f"{r.metric},none"] == pytest.approx(r.value / 100)
        assert entry[f"{r.metric}_stderr,none"] == pytest.approx(r.stderr / 100)
        assert entry["sample_len"] == r.n and results["n-shot"][name] == r.shots
    assert results["n-shot"]["mmlu"] == 5 and "mmlu_stem" in results["group_subtasks"]["mmlu"]
    assert results["config"]["model_sha"] == json.loads((run_dir / "run.json").read_text())["model"]["fingerprint"]


def test_samples_carry_prompts_answers_and_targets(exported):
    run_dir, _, _, samples = exported
    run = load_run(run_dir)
    for task in ("piqa", "boolq"):
        rows = run.samples[task]
        assert len(samples[task]) == len(rows)
        for rec, row in zip(samples[task], rows.itertuples()):
            extra = json.loads(row.extra)
            n = len(extra["logprobs"])
            # The answers read back from the cache are the ones the task scored.
            assert [float(r[0][0]) for r in rec["resps"][:n]] == pytest.approx(extra["logprobs"], abs=1e-5)
            assert rec["target"] == row.gold and rec["acc"] == row.acc and "acc" in rec["metrics"]
            args = rec["arguments"]
            assert set(args) == {f"gen_args_{i}" for i in range(len(rec["resps"]))}
            assert all(a["arg_1"].startswith(" ") for a in args.values())  # continuations
            assert rec["doc_hash"] == hashlib.sha256(json.dumps(rec["doc"], indent=2, ensure_ascii=False).encode()).hexdigest()
            assert rec["prompt_hash"] == hashlib.sha256(args["gen_args_0"]["arg_0"].encode()).hexdigest()
    boolq = samples["boolq"][0]["arguments"]
    assert boolq["gen_args_2"]["arg_0"] == "Answer:"  # the calibration requests are there too
    nq = run.samples["nq_open"]
    one_shot = samples["nq_open_1shot"]
    for rec, row in zip(one_shot, nq[nq["shots"] == 1].itertuples()):
        prompt, kwargs = rec["arguments"]["gen_args_0"]["arg_0"], rec["arguments"]["gen_args_0"]["arg_1"]
        assert prompt.startswith("Answer these questions:") and prompt.count("Q:") == 2  # one shot + the question
        assert kwargs["until"] and kwargs["temperature"] == 0
        assert rec["resps"][0][0] == json.loads(row.extra)["completion"]
        assert rec["filtered_resps"] == [row.prediction]


def test_lm_eval_readers_accept_the_files(exported):
    utils = pytest.importorskip("lm_eval.utils", reason="lm-eval is not installed")
    _, folder, results, _ = exported
    files = [str(p) for p in folder.iterdir()]
    assert [Path(f).name for f in utils.get_results_filenames(files)] == [next(folder.glob("results_*")).name]
    sample_files = utils.get_sample_results_filenames(files)
    assert sorted(utils.get_file_task_name(Path(f).name) for f in sample_files) == sorted(
        ["piqa", "boolq", "mmlu", "nq_open_0shot", "nq_open_1shot"])
    assert utils.get_latest_filename(sample_files) in sample_files
    pytest.importorskip("pytablewriter", reason="lm-eval's table printer needs pytablewriter")
    table = utils.make_table(results)
    piqa_acc = f"{results['results']['piqa']['acc,none']:.4f}"
    assert any(line.startswith("|piqa") and piqa_acc in line for line in table.splitlines())


def test_exported_results_read_back_as_a_run(exported, capsys):
    run_dir, folder, _, _ = exported
    path = next(folder.glob("results_*.json"))
    theirs = load_run(path)
    assert theirs.info["source"] == "lm-eval"
    assert set(theirs.summary["model"]) == {"random:tiny [lm-eval]"}
    assert set(theirs.summary["group"]) == {""}  # headline metrics only
    ours = load_run(run_dir).summary
    for r in theirs.summary.itertuples():
        mine = ours[(ours["task"] == r.task) & (ours["shots"] == r.shots) & (ours["metric"] == r.metric) & (ours["group"] == "")]
        assert len(mine) == 1 and mine["value"].iloc[0] == pytest.approx(r.value)
    assert sorted(set(theirs.summary["metric"])) == ["acc", "exact_match"]
    assert main(["compare", str(run_dir), str(path)]) == 0
    out = capsys.readouterr().out
    assert "piqa" in out and "nq_open" in out


def lm_eval_native_results() -> dict:
    """A results file in lm-eval 0.4's shape (as its evaluator writes it), with numbers made up."""
    return {
        "results": {
            "piqa": {"alias": "piqa", "acc,none": 0.79, "acc_stderr,none": 0.0095, "acc_norm,none": 0.8,
                     "acc_norm_stderr,none": 0.0093},
            "mmlu": {"alias": "mmlu", "acc,none": 0.35, "acc_stderr,none": 0.004},
            "mmlu_stem": {"alias": " - stem", "acc,none": 0.3, "acc_stderr,none": 0.008},
            "mmlu_abstract_algebra": {"alias": "  - abstract_algebra", "acc,none": 0.27, "acc_stderr,none": 0.04},
            "gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.11, "exact_match_stderr,strict-match": 0.0086,
                      "exact_match,flexible-extract": 0.12, "exact_match_stderr,flexible-extract": 0.009},
            "social_iqa": {"alias": "social_iqa", "acc,none": 0.46, "acc_stderr,none": "N/A"},
            "lambada_openai": {"alias": "lambada_openai", "acc,none": 0.7, "acc_stderr,none": 0.006},
        },
        "group_subtasks": {"mmlu": ["mmlu_stem"], "mmlu_stem": ["mmlu_abstract_algebra"], "piqa": [], "gsm8k": []},
        "versions": {"piqa": 1.0, "mmlu": 2, "gsm8k": 3.0, "social_iqa": 0.0},
        "n-shot": {"piqa": 0, "mmlu_abstract_algebra": 5, "gsm8k": 5, "social_iqa": 0},
        "n-samples": {"piqa": {"original": 1838, "effective": 1838}, "gsm8k": {"original": 1319, "effective": 1319}},
        "config": {"model": "hf", "model_args": "pretrained=huggyllama/llama-7b,dtype=float16"},
        "date": 1700000000.0, "lm_eval_version": "0.4.13",
    }


def test_lm_eval_native_results_read_as_headline_metrics(tmp_path):
    path = tmp_path / "results_2024-01-01T00-00-00.json"
    path.write_text(json.dumps(lm_eval_native_results()))
    df = load_run(path).summary.set_index("task")
    assert set(df.index) == {"piqa", "mmlu", "gsm8k", "siqa"}  # lambada is not a llama-eval task; parts are skipped
    assert set(df["model"]) == {"huggyllama/llama-7b [lm-eval]"}
    assert df.loc["piqa", "value"] == pytest.approx(80.0)  # length-normalised accuracy, as the paper
    assert df.loc["piqa", "n"] == 1838 and df.loc["piqa", "paper_task"] == "PIQA"
    assert df.loc["mmlu", "value"] == pytest.approx(35.0) and df.loc["mmlu", "shots"] == 5
    assert df.loc["gsm8k", "value"] == pytest.approx(11.0)  # the strict-match filter
    assert math.isnan(df.loc["siqa", "stderr"])


def test_bad_inputs_are_user_errors(tmp_path, exported):
    run_dir = exported[0]
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="no 'results' object"):
        load_run(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"results": {"lambada_openai": {"acc,none": 0.5}}}))
    with pytest.raises(UserError, match="none of its tasks"):
        load_run(tmp_path / "y.json")
    info = json.loads((run_dir / "run.json").read_text())
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "summary.csv").write_text((run_dir / "summary.csv").read_text())
    (partial / "run.json").write_text(json.dumps({**info, "status": "running"}))
    assert main(["export", str(partial), "--format", "lm-eval"]) == 2


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
