"""The Python API: the README's example runs, options are checked, in-memory models are
fingerprinted by their weights so the request cache never mixes two of them."""

from __future__ import annotations

import re

import pytest
import torch

import llama_eval
from llama_eval.api import weights_fingerprint
from llama_eval.errors import UserError
from llama_eval.reporting import SUMMARY_COLUMNS, read_summary

from conftest import REPO, SAMPLE_DATA, TINY_TOKENIZER


def readme_python_api_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README's Python API section has no python example"
    return blocks[0]


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_python_api_example(), "README.md:Python API", "exec"), namespace)
    result = namespace["result"]
    assert result.run_dir.resolve() == (tmp_path / "runs" / "api-example").resolve()
    # .summary is this run's part of summary.csv, column for column.
    on_disk = read_summary(result.run_dir / "summary.csv")
    assert list(result.summary.columns) == list(SUMMARY_COLUMNS)
    assert sorted(result.summary["task"].unique()) == ["arc_easy", "piqa"]
    key = ["task", "shots", "group", "metric"]
    mine = result.summary.sort_values(key).reset_index(drop=True)
    assert mine[[*key, "value", "n"]].equals(on_disk.sort_values(key).reset_index(drop=True)[[*key, "value", "n"]])
    samples = result.samples("piqa")
    assert len(samples) == 3 and set(samples["task"]) == {"piqa"}  # the 3 bundled PIQA documents
    out = capsys.readouterr().out
    assert "piqa" in out and "api-example" in out


def test_in_memory_model_scores_like_the_same_model_loaded_by_name(tmp_path, tiny_pair):
    by_name = llama_eval.evaluate("random:tiny", "piqa,arc_easy", tokenizer=str(TINY_TOKENIZER), device="cpu",
                                  dtype="float32", data_dir=SAMPLE_DATA, output=tmp_path / "a", progress=False)
    in_memory = llama_eval.evaluate(tiny_pair, ["piqa", "arc_easy"], data_dir=SAMPLE_DATA, output=tmp_path / "b",
                                    progress=False)
    cols = ["task", "shots", "metric", "value", "n"]
    a = by_name.summary[cols].sort_values(cols[:3]).reset_index(drop=True)
    b = in_memory.summary[cols].sort_values(cols[:3]).reset_index(drop=True)
    assert a.equals(b)
    assert in_memory.summary["model"].iloc[0].startswith("memory-")


@pytest.fixture
def tiny_pair():
    return llama_eval.load_model("random:tiny", tokenizer=TINY_TOKENIZER, device="cpu", dtype="float32")


def test_fingerprint_follows_every_weight(tiny_pair):
    model, tok = tiny_pair
    before = weights_fingerprint(model, tok)
    assert weights_fingerprint(model, tok) == before
    with torch.no_grad():
        model.layers[1].feed_forward.w2.weight[3, 5] += 1e-6  # one value, deep inside
    assert weights_fingerprint(model, tok) != before


def test_cache_is_never_shared_between_in_memory_models(tmp_path, tiny_pair):
    model, tok = tiny_pair
    model.train()  # as a training loop would hold it
    run = dict(data_dir=SAMPLE_DATA, output=tmp_path / "run", progress=False, limit=2)
    first = llama_eval.evaluate((model, tok), ["piqa"], **run)
    assert model.training, "the model's training mode is restored"
    assert first.stats["cache"]["reused"] == 0 and first.stats["cache"]["computed"] > 0
    again = llama_eval.evaluate((model, tok), ["piqa"], **run)
    assert again.stats["cache"]["reused"] == first.stats["cache"]["computed"]
    with torch.no_grad():
        model.output.weight.mul_(3.0)  # a "training step"
    with pytest.raises(UserError, match="holds a run of memory-.* \\(other weights\\)"):  # folders never mix
        llama_eval.evaluate((model, tok), ["piqa"], **run)
    changed = llama_eval.evaluate((model, tok), ["piqa"], **run, overwrite=True)  # the cache file stays
    assert changed.stats["cache"]["reused"] == 0
    assert changed.summary["model"].iloc[0] != first.summary["model"].iloc[0]


def test_options_are_checked(tiny_pair):
    with pytest.raises(UserError, match=r"unknown option 'data_dri'; did you mean data_dir"):
        llama_eval.evaluate(tiny_pair, ["piqa"], data_dri=SAMPLE_DATA)
    with pytest.raises(UserError, match="option 'device' applies only when llama-eval loads the model"):
        llama_eval.evaluate(tiny_pair, ["piqa"], device="cpu")
    with pytest.raises(UserError, match="spec string or a \\(Transformer, Tokenizer\\) pair"):
        llama_eval.evaluate(object(), ["piqa"])
    with pytest.raises(UserError, match="at least one task"):
        llama_eval.evaluate(tiny_pair, "")


def test_options_are_normalised_to_run_config():
    from llama_eval.api import run_config

    cfg = run_config("random:tiny", "piqa, mmlu", {"shots": 5, "task_shots": {"mmlu": [0, 5]},
                                                   "options": "qa_separator=blank"})
    assert cfg.tasks == ("piqa", "mmlu") and cfg.shots == (5,)
    assert cfg.task_shots == (("mmlu", (0, 5)),) and cfg.options == ("qa_separator=blank",)


def test_samples_of_a_task_not_in_the_run(tmp_path, tiny_pair):
    result = llama_eval.evaluate(tiny_pair, ["piqa"], data_dir=SAMPLE_DATA, output=tmp_path, progress=False, limit=1)
    with pytest.raises(UserError, match="no task 'piq'.*Did you mean piqa"):
        result.samples("piq")
