"""Every prompt visible: the run folder's prompts_<task>_<k>shot.jsonl.gz files and
`llama-eval run --show-prompts N` (issue 11, item 11)."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
from conftest import SAMPLE_DATA, TINY_TOKENIZER, make_settings

from llama_eval.cli import main
from llama_eval.tasks import get_task

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def read_prompts(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_prompts_files_hold_every_request_and_answer(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--model", "random:tiny", "--tokenizer", str(TINY_TOKENIZER), "--tasks", "race_middle,gsm8k",
            "--data-dir", str(SAMPLE_DATA), "--limit", "2", "--samples", "2", "--output", str(out),
            "--no-progress", "--device", "cpu", "--option", "gsm8k_prompt=train"]
    assert main(argv) == 0
    samples = pd.read_csv(out / "samples_race_middle.csv")
    race = read_prompts(out / "prompts_race_middle_0shot.jsonl.gz")
    task, settings = get_task("race_middle"), make_settings()
    docs = task.load(SAMPLE_DATA)[:2]
    assert [r["doc_id"] for r in race] == [d["id"] for d in docs] == list(samples["doc_id"])
    for rec, doc in zip(race, docs):
        expected = task.requests(doc, [], settings)
        sent = [(q["context"], c) for q in rec["requests"] for c in q["continuations"]]
        assert sent == [(r.context, r.continuation) for r in expected]  # the exact text, calibration included
        assert rec["choices"] == [" " + o for o in doc["options"]]
        assert rec["gold_text"] == " " + doc["options"][doc["gold"]]
        assert rec["predicted_text"] in rec["choices"] and len(rec["requests"][0]["logprobs"]) == 4
    gsm = read_prompts(out / "prompts_gsm8k_8shot.jsonl.gz")
    assert [len(r["requests"]) for r in gsm] == [2, 2]
    greedy, sampled = gsm[0]["requests"]
    assert greedy["prompt"].startswith("Question: ") and greedy["prompt"].endswith("\nAnswer:")
    assert len(greedy["completions"]) == 1 and len(sampled["completions"]) == 2 and sampled["temperature"] == 0.6
    run = json.loads((out / "run.json").read_text())
    assert run["datasets"]["gsm8k@8"]["shots_dropped_documents"] == 0


def test_show_prompts_prints_and_stops_before_loading_the_model(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--model", str(tmp_path / "no_such_model"), "--tasks", "gsm8k,mmlu", "--data-dir", str(SAMPLE_DATA),
            "--show-prompts", "1", "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    task = get_task("gsm8k")
    doc, pool = task.load(SAMPLE_DATA)[0], task.load_shots(SAMPLE_DATA)
    prompt = task.requests(doc, task.select_shots(doc, pool, 8, make_settings()), make_settings())[0].prompt
    assert prompt in text and "Q: There are 15 trees in the grove." in text
    assert "The following are multiple choice questions (with answers) about abstract algebra." in text
    assert text.count("===== gsm8k") == 1 and text.count("===== mmlu") == 1
    assert not out.exists()  # nothing ran, nothing written
