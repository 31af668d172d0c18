"""Result files, the paper's numbers, paper tables, run comparison and plotting."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from llama_eval.errors import UserError
from llama_eval.compare import compare, format_compare
from llama_eval.metrics import paired_bootstrap
from llama_eval.reporting import (
    PAPER_FILES, Run, load_paper_numbers, load_run, paper_task, paper_value, read_summary, summary_rows,
    write_samples, write_summary,
)
from llama_eval.tables import paper_table, results_table, tables_for, tidy_tables, with_paper_model
from llama_eval.tasks.base import DocScore, MetricValue

from conftest import FIXTURES, REPO

RUN_7B = FIXTURES / "reporting" / "run_7b"
REFERENCE = REPO.parent / "shared" / "reference"
STAMP = dict(run_id="r1", config_hash="h1", date="2024-01-01T00:00:00+00:00")


# -- result files ---------------------------------------------------------------------------

def _doc(doc_id: str, prediction: str, acc: float, **extra) -> DocScore:
    return DocScore(doc_id, prediction, "gold answer", {"acc": acc, "acc_raw": 1.0 - acc}, extra)


def test_samples_round_trip_keeps_text_as_written(tmp_path):
    # Text a default pandas read would turn into numbers or NaN must come back unchanged.
    tricky = [_doc("0001", "NA", 1.0, logprobs=[-1.25, -3.5]), _doc("2", "", 0.0),
              _doc("3", "None", 1.0), _doc("4", "two\nlines, \"quoted\"", 0.0)]
    write_samples(tmp_path, "nq_open", 5, tricky, "acc")
    write_samples(tmp_path, "nq_open", 0, [_doc("0001", "x", 0.0)], "acc")
    write_samples(tmp_path, "nq_open", 0, [_doc("0001", "y", 1.0)], "acc")  # replaces shots 0

    path = tmp_path / "samples_nq_open.csv"
    plain = pd.read_csv(path)  # "pandas reads them as is"
    assert list(plain.columns) == ["task", "shots", "doc_id", "prediction", "gold", "correct",
                                   "acc", "acc_raw", "extra"]
    assert list(plain["shots"]) == [0, 5, 5, 5, 5]

    s = load_run(tmp_path).samples["nq_open"]
    assert list(s["doc_id"]) == ["0001", "0001", "2", "3", "4"]
    assert list(s["prediction"]) == ["y", "NA", "", "None", "two\nlines, \"quoted\""]
    assert list(s["correct"]) == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert list(s["acc_raw"]) == [0.0, 0.0, 1.0, 0.0, 1.0]
    assert json.loads(s["extra"][1]) == {"logprobs": [-1.25, -3.5]}


def test_write_samples_rejects_a_missing_headline_metric(tmp_path):
    with pytest.raises(ValueError, match="exact_match"):
        write_samples(tmp_path, "piqa", 0, [_doc("1", "0", 1.0)], "exact_match")


def test_summary_rows_put_the_paper_beside_ours():
    values = [MetricValue("acc", 78.26, 0.96, 1838), MetricValue("acc_raw", 77.0, 1.0, 1838)]
    rows = summary_rows("mine", "LLaMA-7B", "piqa", "PIQA", 0, values, **STAMP)
    assert rows[0]["paper_task"] == "PIQA"
    assert rows[0]["paper_value"] == 79.8
    assert rows[0]["diff"] == pytest.approx(78.26 - 79.8)
    assert math.isnan(rows[1]["paper_value"]) and math.isnan(rows[1]["diff"])  # not in the paper
    groups = [MetricValue("acc", 30.0, 1.0, 3018, "STEM"), MetricValue("acc", 40.0, 5.0, 135, "anatomy")]
    stem, anatomy = summary_rows("mine", "LLaMA-65B", "mmlu", "MMLU", 5, groups, **STAMP)
    assert (stem["paper_task"], stem["paper_value"]) == ("MMLU-STEM", 51.7)
    assert (anatomy["paper_task"], anatomy["paper_value"]) == ("MMLU:anatomy", 57.8)
    unknown = summary_rows("tiny", None, "piqa", "PIQA", 0, values[:1], **STAMP)[0]
    assert unknown["paper_model"] == "" and math.isnan(unknown["paper_value"])


def test_summary_merges_by_key_and_ignores_write_order(tmp_path):
    piqa = summary_rows("m", "LLaMA-7B", "piqa", "PIQA", 0, [MetricValue("acc", 70.0, 1.0, 10)], **STAMP)
    boolq = summary_rows("m", "LLaMA-7B", "boolq", "BoolQ", 0, [MetricValue("acc", 60.0, 1.0, 10)], **STAMP)
    piqa_again = summary_rows("m", "LLaMA-7B", "piqa", "PIQA", 0, [MetricValue("acc", 71.5, 1.0, 10)], **STAMP)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for rows in (piqa, boolq, piqa_again):
        write_summary(tmp_path / "a", rows)
    for rows in (boolq, piqa_again):
        write_summary(tmp_path / "b", rows)
    a = (tmp_path / "a" / "summary.csv").read_bytes()
    assert a == (tmp_path / "b" / "summary.csv").read_bytes()
    summary = read_summary(tmp_path / "a" / "summary.csv")
    assert list(summary["task"]) == ["boolq", "piqa"]
    assert summary.loc[summary["task"] == "piqa", "value"].item() == 71.5
    assert summary["group"].tolist() == ["", ""]


def test_load_run_from_folder_and_from_single_files():
    run = load_run(RUN_7B)
    assert run.models() == ["llama-7b (ours)"]
    assert run.info["config"]["seed"] == 1234
    assert len(run.summary) == 14 and list(run.samples) == ["piqa"]
    only_summary = load_run(RUN_7B / "summary.csv")
    assert only_summary.samples == {} and len(only_summary.summary) == 14
    only_samples = load_run(RUN_7B / "samples_piqa.csv")
    assert only_samples.summary.empty and len(only_samples.samples["piqa"]) == 6


def test_load_run_names_what_is_wrong(tmp_path):
    rows = (RUN_7B / "samples_piqa.csv").read_text().splitlines()
    (tmp_path / "samples_piqa.csv").write_text("\n".join([*rows, rows[1]]) + "\n")
    with pytest.raises(UserError, match="document '0' appears twice at 0 shots"):
        load_run(tmp_path)
    (tmp_path / "samples_piqa.csv").unlink()
    with pytest.raises(UserError, match="no summary.csv"):
        load_run(tmp_path)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="neither a samples file"):
        load_run(tmp_path / "other.csv")
    with pytest.raises(UserError, match="no such run folder"):
        load_run(tmp_path / "absent")


# -- the paper's numbers ----------------------------------------------------------------------

def test_paper_value_lookups():
    numbers = load_paper_numbers()
    assert paper_value("PIQA", "acc", 0, "LLaMA-7B", numbers) == 79.8
    assert paper_value("MMLU-Average", "acc", 5, "LLaMA-65B", numbers) == 63.4
    assert paper_value("MMLU-Average", "acc", 5, "Chinchilla-70B", numbers) == 67.5  # Table 9, not 16's 67.6
    assert paper_value("MMLU:anatomy", "acc", 5, "LLaMA-65B", numbers) == 57.8  # Table 16
    assert paper_value("GSM8K", "maj1@100", 8, "LLaMA-33B", numbers) == 53.1
    assert paper_value("CSQA", "acc", 7, "LLaMA-7B", numbers) == 33.6  # only in the Llama 2 paper
    assert paper_value("SIQA", "acc", 0, "GPT-3-175B", numbers) is None  # printed as "-"
    with pytest.raises(UserError, match="LLaMA-33B"):
        paper_value("PIQA", "acc", 0, "LLaMA-30B", numbers)


def test_paper_task_names():
    numbers = load_paper_numbers()
    assert paper_task("PIQA", "", numbers) == "PIQA"
    assert paper_task("MMLU", "", numbers) == "MMLU-Average"
    assert paper_task("MMLU", "Social Sciences", numbers) == "MMLU-Social-Sciences"
    assert paper_task("MMLU", "high_school_biology", numbers) == "MMLU:high_school_biology"


def test_paper_task_agrees_with_the_mmlu_task():
    """Every group the MMLU task aggregates into (its categories, "" for the average, its
    subjects) names a row of the paper's tables."""
    from llama_eval.tasks.mmlu import CATEGORIES, MMLU, subjects

    numbers = load_paper_numbers()
    for group in ("", *CATEGORIES, *subjects()):
        assert (numbers["task"] == paper_task(MMLU.paper_name, group, numbers)).any(), group


def test_packaged_paper_numbers_equal_the_reference():
    if not REFERENCE.is_dir():
        pytest.skip("../shared/reference is absent")
    packaged = REPO / "llama_eval" / "data" / "paper"
    for name in PAPER_FILES:
        assert (packaged / name).read_bytes() == (REFERENCE / name).read_bytes(), name


# -- comparing runs -----------------------------------------------------------------------------

def _run(name: str, correct: list[float], ids: list[str] | None = None, extra_metric=None) -> Run:
    ids = ids or [str(i) for i in range(len(correct))]
    df = pd.DataFrame({"task": "piqa", "shots": 0, "doc_id": ids, "prediction": "0", "gold": "0",
                       "correct": correct, "acc": correct, "extra": "{}"})
    if extra_metric is not None:
        df["pass@10"] = extra_metric
    return Run(name, pd.DataFrame(columns=["model", "task", "shots", "group", "metric", "value"]),
               {"piqa": df})


def test_compare_flags_a_planted_drop():
    base = [1.0] * 70 + [0.0] * 30
    worse = [0.0] * 20 + [1.0] * 50 + [0.0] * 30  # 20 right answers turned wrong
    result = compare([_run("A", base), _run("B", worse)], fail_below=1.0)
    row = result.table.set_index("metric").loc["acc"]
    assert (row["a"], row["b"], row["diff"], row["n"]) == (70.0, 50.0, -20.0, 100)
    assert row["test"] == "mcnemar" and row["p_value"] == pytest.approx(2 / 2**20)
    assert row["significant"] and row["headline"] and result.exit_code == 1
    assert result.tripped == ["piqa 0-shot acc 70.00 -> 50.00 (-20.00 points, p=1.91e-06)"]
    assert compare([_run("A", base), _run("B", worse)], fail_below=25.0).exit_code == 0  # drop < 25 points
    text = format_compare(result)
    assert "drop" in text
    assert text.splitlines()[-2] == "verdict (headline metrics): 1 significant drop: piqa 0-shot acc -20.00 (p=1.91e-06)"
    assert text.splitlines()[-1].startswith("--fail-below 1: FAILED by piqa 0-shot acc")


def _with_secondary(name: str, acc: list[float], raw: list[float]) -> Run:
    run = _run(name, acc)
    run.samples["piqa"]["acc_raw"] = raw
    return run


def test_compare_gate_ignores_a_secondary_drop_and_names_a_headline_one():
    acc_a, acc_b = [1.0] * 50 + [0.0] * 50, [1.0] * 55 + [0.0] * 45  # the headline rose by 5
    raw_a, raw_b = [1.0] * 80 + [0.0] * 20, [0.0] * 30 + [1.0] * 50 + [0.0] * 20  # acc_raw lost 30
    result = compare([_with_secondary("A", acc_a, raw_a), _with_secondary("B", acc_b, raw_b)], fail_below=1.0)
    raw = result.table.set_index("metric").loc["acc_raw"]
    assert raw["significant"] and not raw["headline"] and raw["diff"] == -30.0
    assert result.exit_code == 0 and result.tripped == []
    text = format_compare(result)
    assert "acc_raw" not in text.split("McNemar")[0]  # not shown by default
    assert "1 secondary metric row(s) not shown or gated (--all-metrics shows them)" in text
    assert text.endswith("--fail-below 1: passed")
    # --all-metrics gates it, and names it
    every = compare([_with_secondary("A", acc_a, raw_a), _with_secondary("B", acc_b, raw_b)], fail_below=1.0,
                    all_metrics=True)
    assert every.exit_code == 1 and len(every.tripped) == 1 and every.tripped[0].startswith("piqa 0-shot acc_raw 80.00 -> 50.00")


def test_compare_counts_changed_predictions_and_shows_config_differences():
    a, b = _run("A", [1.0] * 10), _run("B", [1.0] * 10)
    b.samples["piqa"].loc[:2, "prediction"] = "1"  # 3 of 10 predictions differ, scores equal
    a.info = {"config": {"seed": 1234, "shots": None, "output": "x"}, "model": {"fingerprint": "f1", "dtype": "float32"},
              "version": "0.1.0"}
    b.info = {"config": {"seed": 99, "shots": None, "output": "y"}, "model": {"fingerprint": "f1", "dtype": "bfloat16"},
              "version": "0.1.0"}
    result = compare([a, b])
    assert result.changed[["task", "shots", "changed", "n"]].values.tolist() == [["piqa", 0, 3, 10]]
    assert result.config_diffs[("A", "B")] == ["dtype: float32 -> bfloat16", "seed: 1234 -> 99"]
    text = format_compare(result)
    assert "config differences:\n  dtype: float32 -> bfloat16\n  seed: 1234 -> 99" in text
    assert "changed predictions: piqa 0-shot 3 of 10" in text
    assert text.splitlines()[-1] == "verdict: no significant change in 1 headline metrics"


def test_compare_passes_identical_runs():
    base = [1.0] * 70 + [0.0] * 30
    result = compare([_run("A", base), _run("B", list(base))], fail_below=0.0)
    assert result.exit_code == 0 and not result.table["significant"].any()
    assert result.table.loc[result.table["metric"] == "acc", "p_value"].item() == 1.0


def test_compare_bootstraps_fractional_metrics():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 400)
    b = np.clip(a - 0.05 + rng.normal(0, 0.2, 400), 0, 1)
    df = compare([_run("A", [1.0] * 400, extra_metric=a), _run("B", [1.0] * 400, extra_metric=b)]).table
    row = df.set_index("metric").loc["pass@10"]
    assert row["test"] == "bootstrap" and row["significant"]
    d = 100 * (b - a)  # the 95% interval agrees with the normal approximation for n = 400
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert row["ci_low"] == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert row["ci_high"] == pytest.approx(d.mean() + half, abs=0.15 * half)
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)  # fixed seed


def test_compare_refuses_different_documents_unless_intersect():
    a = _run("A", [1.0] * 100)
    b = _run("B", [1.0] * 100, ids=[str(i) for i in range(98)] + ["x", "y"])
    with pytest.raises(UserError, match=r"(?s)piqa at 0 shots: 2 ids only in the first, 2 only in the second.*--intersect"):
        compare([a, b])
    result = compare([a, b], intersect=True)
    assert result.table.set_index("metric").loc["acc", "n"] == 98
    assert result.notes == ["piqa 0-shot: compared on the 98 documents both runs share (100 in A, 100 in B)"]


def test_compare_summaries_only_shows_values_without_a_test():
    result = compare([load_run(RUN_7B / "summary.csv"), load_run(RUN_7B / "summary.csv")], fail_below=0)
    df = result.table
    assert len(df) == 9 and result.exit_code == 0  # the 14 summary rows less MMLU's 5 groups
    assert (df["test"] == "").all() and (df["diff"] == 0).all()
    assert "verdict: no paired test possible" in format_compare(result)


# -- tables and plot ----------------------------------------------------------------------------

def test_paper_table_markdown():
    text = paper_table(3, [load_run(RUN_7B)], "md", show_diff=True)
    lines = text.splitlines()
    assert lines[0].startswith("Table 3:")
    assert lines[2] == "| Model | BoolQ | PIQA | SIQA | HellaSwag | WinoGrande | ARC-e | ARC-c | OBQA |"
    assert "| GPT-3-175B | 60.5 | 81.0 | – | 78.9 | 70.2 | 68.8 | 51.4 | 57.6 |" in lines
    assert "| LLaMA-65B | 85.3 | 82.8 | 52.3 | 84.2 | 77.0 | 78.9 | 56.0 | 60.2 |" in lines
    assert lines[-2] == "| llama-7b (ours) | 75.0 | 78.3 | – | – | – | – | – | – |"
    assert lines[-1] == "| diff vs LLaMA-7B | -1.5 | -1.5 | – | – | – | – | – | – |"
    assert len(lines) == 4 + 7 + 2  # caption, blank, header, rule; 7 paper rows; run and diff


def test_paper_table_latex_and_tidy_csv():
    run = load_run(RUN_7B)
    latex = paper_table(4, [run], "latex").splitlines()
    assert latex[1] == r"\begin{tabular}{lrrrr}"
    assert r"Chinchilla-70B & 16.6 & -- & 31.5 & 35.5 \\" in latex
    assert latex[-4:] == [r"\midrule", r"llama-7b (ours) & 16.2 & -- & 21.5 & -- \\",
                          r"\bottomrule", r"\end{tabular}"]
    from io import StringIO
    tidy = pd.read_csv(StringIO(tidy_tables([8, 9], [run], show_diff=True)))
    assert list(tidy.columns) == ["table", "row", "kind", "column", "value", "stderr", "n", "note"]
    # every cell of both tables once: (paper rows + our row + diff row) x columns
    assert len(tidy) == (5 + 2) * 4 + (7 + 2) * 5  # Table 8 prints 5 models, Table 9 seven
    cell = tidy.set_index(["table", "row", "column"])
    assert cell.loc[(9, "LLaMA-65B", "Average"), "value"] == 63.4
    assert cell.loc[(9, "llama-7b (ours)", "Social Sciences"), "value"] == 38.9
    assert cell.loc[(9, "diff vs LLaMA-7B", "STEM"), "value"] == pytest.approx(-0.5)
    assert cell.loc[(8, "llama-7b (ours)", "HumanEval pass@100"), "value"] == 35.0
    assert math.isnan(cell.loc[(8, "llama-7b (ours)", "MBPP pass@1"), "value"])
    summary = run.summary.set_index(["paper_task", "metric"])
    assert cell.loc[(9, "llama-7b (ours)", "STEM"), "stderr"] == summary.loc[("MMLU-STEM", "acc"), "stderr"]
    assert cell.loc[(9, "llama-7b (ours)", "STEM"), "n"] == summary.loc[("MMLU-STEM", "acc"), "n"]


def _partial_mmlu_run() -> Run:
    """RUN_7B as if MMLU had been run with --limit 10 (per subject) and some prompts were cut."""
    run = load_run(RUN_7B)
    info = {"datasets": {"mmlu@5": {"documents": 570, "documents_available": 14042, "limit": 10, "limit_group": "subject",
                                    "requests": 2280, "truncated_requests": 12, "shots_dropped_documents": 0},
                         "boolq@0": {"documents": 3270, "documents_available": 3270}}}
    return Run(run.name, run.summary, run.samples, info)


def test_partial_and_cut_cells_are_marked_with_footnotes():
    run = _partial_mmlu_run()
    lines = paper_table(9, [run], "md", show_stderr=True).splitlines()
    ours = next(x for x in lines if x.startswith("| llama-7b (ours)"))
    assert ours.count("\u2020\u2021") == 5 and " \u00b1 " in ours  # every MMLU cell: partial and cut
    assert "\u2020 llama-7b (ours): mmlu 5-shot: n=570 of 14,042 documents (--limit 10 per subject)" in lines
    assert "\u2021 llama-7b (ours): mmlu 5-shot: 12 of 2,280 requests cut from the left to fit the window" in lines
    table3 = paper_table(3, [run], "md")
    assert "\u2020" not in table3 and "\u2021" not in table3  # BoolQ was run in full
    latex = paper_table(9, [run], "latex")
    assert r"$^\dagger$$^\ddagger$" in latex and "% \\textdagger" not in latex
    from io import StringIO
    tidy = pd.read_csv(StringIO(tidy_tables([9], [run])))
    assert set(tidy[tidy["kind"] == "run"]["note"]) == {"partial;cut"}


def test_plain_results_table_for_tasks_outside_the_paper():
    summary = pd.DataFrame([
        {"model": "m", "task": "capitals", "paper_task": "Capitals", "metric": "acc", "shots": 0, "group": "",
         "value": 60.0, "stderr": 24.49, "n": 5, "paper_model": "", "paper_value": np.nan},
        {"model": "m", "task": "piqa", "paper_task": "PIQA", "metric": "acc", "shots": 0, "group": "",
         "value": 50.0, "stderr": 1.0, "n": 1838, "paper_model": "", "paper_value": np.nan},
    ])
    text = results_table([Run("r", summary)])
    assert text.splitlines()[2:] == ["| model | task | shots | metric | value | stderr | n | note |",
                                     "|---|---|---:|---|---:|---:|---:|---|",
                                     "| m | capitals | 0 | acc | 60.0 | 24.5 | 5 |  |"]  # piqa is in Table 3
    assert results_table([load_run(RUN_7B)]) == ""


def test_paper_model_override_fills_diffs_for_any_model():
    run = load_run(RUN_7B)
    unnamed = Run(run.name, run.summary.assign(paper_model="", paper_value=np.nan, diff=np.nan))
    assert "diff vs" not in paper_table(3, [unnamed], "md", show_diff=True)
    named = with_paper_model(unnamed, "LLaMA-13B")
    assert paper_table(3, [named], "md", show_diff=True).splitlines()[-1] == \
        "| diff vs LLaMA-13B | -3.1 | -1.8 | – | – | – | – | – | – |"
    with pytest.raises(UserError, match="unknown paper model 'LLaMA-8B'"):
        with_paper_model(unnamed, "LLaMA-8B")


def test_paper_table_labels_two_runs_of_one_model_apart():
    run = load_run(RUN_7B)
    other = Run("elsewhere", run.summary.assign(value=run.summary["value"] + 1))
    lines = paper_table(3, [run, other], "md").splitlines()
    assert lines[-1] == "| llama-7b (ours) (elsewhere) | 76.0 | 79.3 | – | – | – | – | – | – |"


def test_tables_for_lists_the_tables_a_run_fills():
    assert tables_for([load_run(RUN_7B)]) == [3, 4, 7, 8, 9]
    assert tables_for([load_run(RUN_7B / "samples_piqa.csv")]) == []


def test_paper_table_rejects_unknown_table_and_format():
    with pytest.raises(UserError, match="no paper table 10"):
        paper_table(10, [])
    with pytest.raises(UserError, match="unknown table format 'html'"):
        paper_table(3, [], "html")


def test_plot_draws_the_summary_values_intervals_and_paper_values(tmp_path):
    pytest.importorskip("matplotlib")
    from llama_eval.plotting import Z95, figure, plot

    run = load_run(RUN_7B)
    fig, pts = figure([run])
    ax = fig.axes[0]
    summary = run.summary
    expected = []  # the summary rows that are cells of the paper's tables, in table order
    from llama_eval.tables import PAPER_TABLES
    for _, columns in PAPER_TABLES.values():
        for _, task, metric, shots in columns:
            hit = summary[(summary["paper_task"] == task) & (summary["metric"] == metric) & (summary["shots"] == shots)]
            expected += [hit.iloc[0]] if len(hit) else []
    (bars,) = ax.containers  # one errorbar series: one run
    x = bars.lines[0].get_xdata()
    assert list(x) == [r["value"] for r in expected]
    segments = bars.lines[2][0].get_segments()
    for seg, r in zip(segments, expected, strict=True):
        assert seg[0][0] == pytest.approx(r["value"] - Z95 * r["stderr"])
        assert seg[1][0] == pytest.approx(r["value"] + Z95 * r["stderr"])
    paper = [c for c in ax.collections if c.get_label().startswith("paper")][0]
    assert [p[0] for p in paper.get_offsets()] == [r["paper_value"] for r in expected]
    chance = [c for c in ax.collections if c.get_label() == "chance"][0]
    assert sorted({p[0] for p in chance.get_offsets()}) == [25.0, 50.0]  # BoolQ/PIQA 50, MMLU 25
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert "BoolQ  (n=3,270)" in labels and len(labels) == len(expected)
    assert plot([run], tmp_path / "p.png").stat().st_size > 10_000


def test_plot_of_a_model_the_paper_lacks_needs_paper_model_only_for_diamonds(tmp_path):
    pytest.importorskip("matplotlib")
    from llama_eval.plotting import figure

    run = load_run(RUN_7B)
    unnamed = Run(run.name, run.summary.assign(paper_model="", paper_value=np.nan))
    _, pts = figure([unnamed])  # our points are drawn anyway
    assert pts["paper_value"].isna().all() and len(pts) > 0
    _, pts = figure([with_paper_model(unnamed, "LLaMA-7B")])
    assert pts.set_index("cell").loc["BoolQ", "paper_value"] == 76.5


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    import sys

    from llama_eval.plotting import plot

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(UserError, match="pip install matplotlib"):
        plot([load_run(RUN_7B)], tmp_path / "x.png")
