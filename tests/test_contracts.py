"""Contracts the code enforces: declared options, typed data sources, the engine version in the
cache key, and the config hash derived from the fields declared to change results."""

from __future__ import annotations

import dataclasses
import json

import pytest

from llama_eval import evaluator
from llama_eval import tasks as registry
from llama_eval.cli import main
from llama_eval.config import RunConfig, results_fields
from llama_eval.errors import UserError
from llama_eval.reporting import Run
from llama_eval.tables import paper_table
from llama_eval.tasks.options import Option, check_given, number_in

from conftest import SAMPLE_DATA, TINY_TOKENIZER, make_settings  # noqa: E402


def test_an_undeclared_option_is_refused_with_the_tasks_and_a_suggestion(capsys):
    argv = ["run", "--model", "random:tiny", "--tokenizer", str(TINY_TOKENIZER), "--tasks", "nq_open,piqa",
            "--data-dir", str(SAMPLE_DATA), "--option", "qa_seperator=blank", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "--option qa_seperator" in err and "tasks: nq_open, piqa" in err and "Did you mean qa_separator?" in err


def test_an_option_of_a_task_not_selected_is_refused():
    with pytest.raises(UserError, match=r"race_scoring: no selected task declares it \(tasks: piqa\)"):
        check_given({"race_scoring": "calibrated"}, [registry.get_task("piqa")])


@pytest.mark.parametrize("name, value, message", [
    ("qa_separator", "blnk", "must be one of none, blank"),
    ("qa_cut", "first", "must be one of final, clause"),
    ("humaneval_k", "10,100", "give positive whole numbers separated by commas, including 1"),
    ("humaneval_top_p", "1.5", r"must be a number in \(0, 1\]"),
    ("race_scoring", "raw", "must be one of calibrated, chars"),
])
def test_bad_option_values_are_refused_before_anything_runs(name, value, message):
    tasks = [registry.get_task(n) for n in ("nq_open", "humaneval", "race_high")]
    with pytest.raises(UserError, match=rf"--option {name}={value}: {message}"):
        check_given({name: value}, tasks)


def test_options_parse_to_values_and_keep_text_verbatim():
    humaneval, obqa = registry.get_task("humaneval"), registry.get_task("openbookqa")
    settings = make_settings(options=(("humaneval_k", "10,1"), ("openbookqa_calibration_context", "A: ")))
    assert humaneval.option(settings, "humaneval_k") == (1, 10)
    assert humaneval.option(settings, "humaneval_top_p") == 0.95  # the declared default, parsed
    assert obqa.option(settings, "openbookqa_calibration_context") == "A: "  # the trailing space is kept


def test_every_registered_task_declares_well_formed_options():
    """Each default passes its own rule, and tasks sharing a name share one Option object."""
    seen: dict[str, Option] = {}
    for name in registry.names():
        for option_name, option in registry.get_task(name).options.items():
            assert option.help and option_name == option_name.lower()
            option.value(option_name, None)  # the default is valid
            assert seen.setdefault(option_name, option) is option


def test_number_in_excludes_the_low_end():
    parse = number_in(0.0, 1.0)
    assert parse("1") == 1.0
    with pytest.raises(ValueError):
        parse("0")


def test_data_sources_are_typed_records():
    triviaqa = registry.get_task("triviaqa")
    release, hub = triviaqa.source(SAMPLE_DATA), triviaqa.source(None)
    assert (release.kind, release.location, release.split, release.variant) == (
        "release", "triviaqa/topics.dpr.trivia.test.txt", "dev", "unfiltered")
    assert len(release.sha256) == 64
    assert (hub.kind, hub.location, hub.split, hub.variant) == ("hub", "mandarjoshi/trivia_qa/rc.nocontext", "validation",
                                                                  "filtered")
    # Loading does not change the task: tasks are stateless.
    before = dict(vars(triviaqa))
    triviaqa.load(SAMPLE_DATA)
    assert dict(vars(triviaqa)) == before


def test_table_5_marks_the_unfiltered_variant_from_the_typed_field():
    summary = [{"model": "m", "task": "triviaqa", "paper_task": "TriviaQA", "metric": "exact_match", "shots": 0,
                "group": "", "value": 10.0, "stderr": 1.0, "n": 5, "paper_model": "LLaMA-7B"}]
    import pandas as pd

    def run(variant: str, prose: str) -> Run:
        source = {"kind": "release", "location": "x", "split": "dev", "variant": variant, "description": prose}
        return Run("r", pd.DataFrame(summary), {}, {"datasets": {"triviaqa@0": {"source": source}}})

    assert "[unfiltered dev set]" in paper_table(5, [run("unfiltered", "")])
    # Prose that merely mentions the word does not mark the table.
    assert "[unfiltered dev set]" not in paper_table(5, [run("filtered", "not the UNFILTERED set")])


def test_a_cache_written_by_another_engine_version_gives_no_hits(tmp_path, monkeypatch):
    out = tmp_path / "run"
    argv = ["run", "--model", "random:tiny", "--tokenizer", str(TINY_TOKENIZER), "--tasks", "piqa",
            "--data-dir", str(SAMPLE_DATA), "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    assert main(argv) == 0
    assert json.loads((out / "run.json").read_text())["stats"]["cache"]["computed"] == 0  # all reused
    monkeypatch.setattr(evaluator, "ENGINE_VERSION", evaluator.ENGINE_VERSION + 1)
    assert main([*argv, "--overwrite"]) == 0  # the config hash names the engine version too
    stats = json.loads((out / "run.json").read_text())["stats"]["cache"]
    assert stats["reused"] == 0 and stats["computed"] > 0


def test_every_config_field_declares_whether_it_changes_results():
    for f in dataclasses.fields(RunConfig):
        assert isinstance(f.metadata.get("changes_results"), bool), f.name


def test_the_config_hash_follows_the_declared_fields(monkeypatch):
    base = RunConfig(model="random:tiny", tasks=("piqa",))
    h = evaluator.config_hash(base, "fp")
    for name in ("seed", "limit", "options", "dtype"):
        assert name in results_fields()
    assert evaluator.config_hash(dataclasses.replace(base, seed=7), "fp") != h
    assert evaluator.config_hash(dataclasses.replace(base, options=("qa_separator=blank",)), "fp") != h
    assert evaluator.config_hash(dataclasses.replace(base, max_batch=3, output="x", progress=False), "fp") == h
    assert evaluator.config_hash(base, "other weights") != h
    monkeypatch.setattr(evaluator, "ENGINE_VERSION", evaluator.ENGINE_VERSION + 1)
    assert evaluator.config_hash(base, "fp") != h


def test_run_json_records_typed_sources_and_the_engine_version(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--model", "random:tiny", "--tokenizer", str(TINY_TOKENIZER), "--tasks", "piqa",
            "--data-dir", str(SAMPLE_DATA), "--output", str(out), "--no-progress", "--limit", "2"]
    assert main(argv) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["engine_version"] == evaluator.ENGINE_VERSION
    source = info["datasets"]["piqa@0"]["source"]
    assert source["kind"] == "release" and source["location"] == "piqa/valid.jsonl ... (2 files)"
    assert source["split"] == "validation" and len(source["sha256"]) == 64
    assert source["documents"] == 3 and info["datasets"]["piqa@0"]["documents"] == 2  # loaded, then --limit


def test_tasks_command_describes_a_task_and_its_options(capsys):
    assert main(["tasks", "race_middle"]) == 0
    out = capsys.readouterr().out
    assert "RACE-middle" in out and "--option race_scoring='calibrated' (calibrated | chars)" in out
    assert "race_calibration_context" in out


def test_a_task_declaring_no_files_is_its_own_source():
    registry.include(SAMPLE_DATA.parents[2] / "examples" / "capitals.py")
    capitals = registry.get_task("capitals")
    for data_dir in (SAMPLE_DATA, None):
        source = capitals.source(data_dir)
        assert (source.kind, source.sha256) == ("task", None) and "capitals" in source.describe()
