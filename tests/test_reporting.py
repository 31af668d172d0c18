"""Result files, the paper's numbers, paper tables, run comparison and plotting."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from llama_eval.errors import UserError
from llama_eval.reporting import (
    PAPER_FILES, Run, compare, format_compare, load_paper_numbers, load_run, mcnemar_exact,
    paired_bootstrap, paper_table, paper_task, paper_value, read_summary, summary_rows, tables_for,
    write_samples, write_summary,
)
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


def test_mcnemar_equals_brute_force_enumeration():
    # Under no change each discordant document flips either way with probability 1/2: count the
    # splits at least as uneven as the observed one among all 2^n equally likely ones.
    for lost, gained in [(0, 0), (1, 0), (3, 1), (5, 5), (9, 2), (0, 12), (7, 6)]:
        n = lost + gained
        extreme = sum(abs(2 * sum(s) - n) >= abs(lost - gained)
                      for s in itertools.product((0, 1), repeat=n))
        assert mcnemar_exact(lost, gained) == pytest.approx(extreme / 2**n, rel=1e-12)


def test_mcnemar_handles_thousands_of_documents():
    # 2^6100 is beyond float range; reference value: scipy.stats.binomtest(3000, 6100).pvalue
    assert mcnemar_exact(3100, 3000) == pytest.approx(0.2049495446515585, rel=1e-9)


def test_compare_flags_a_planted_drop():
    base = [1.0] * 70 + [0.0] * 30
    worse = [0.0] * 20 + [1.0] * 50 + [0.0] * 30  # 20 right answers turned wrong
    df, code = compare([_run("A", base), _run("B", worse)], fail_below=1.0)
    row = df.set_index("metric").loc["acc"]
    assert (row["a"], row["b"], row["diff"], row["n"]) == (70.0, 50.0, -20.0, 100)
    assert row["test"] == "mcnemar" and row["p_value"] == pytest.approx(2 / 2**20)
    assert row["significant"] and code == 1
    assert compare([_run("A", base), _run("B", worse)], fail_below=25.0)[1] == 0  # drop < 25 points
    assert "drop" in format_compare(df)


def test_compare_passes_identical_runs():
    base = [1.0] * 70 + [0.0] * 30
    df, code = compare([_run("A", base), _run("B", list(base))], fail_below=0.0)
    assert code == 0 and not df["significant"].any()
    assert df.loc[df["metric"] == "acc", "p_value"].item() == 1.0


def test_compare_bootstraps_fractional_metrics():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 400)
    b = np.clip(a - 0.05 + rng.normal(0, 0.2, 400), 0, 1)
    df, _ = compare([_run("A", [1.0] * 400, extra_metric=a), _run("B", [1.0] * 400, extra_metric=b)])
    row = df.set_index("metric").loc["pass@10"]
    assert row["test"] == "bootstrap" and row["significant"]
    d = 100 * (b - a)  # the 95% interval agrees with the normal approximation for n = 400
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert row["ci_low"] == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert row["ci_high"] == pytest.approx(d.mean() + half, abs=0.15 * half)
    assert paired_bootstrap(a, b) == paired_bootstrap(a, b)  # fixed seed


def test_compare_refuses_different_documents():
    a = _run("A", [1.0] * 100)
    b = _run("B", [1.0] * 100, ids=[str(i) for i in range(98)] + ["x", "y"])
    with pytest.raises(UserError, match=r"piqa at 0 shots: 2 ids only in the first, 2 only in the second"):
        compare([a, b])


def test_compare_summaries_only_shows_values_without_a_test():
    df, code = compare([load_run(RUN_7B / "summary.csv"), load_run(RUN_7B / "summary.csv")], fail_below=0)
    assert len(df) == 9 and code == 0  # the 14 summary rows less MMLU's 5 groups
    assert (df["test"] == "").all() and (df["diff"] == 0).all()


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


def test_paper_table_latex_and_csv():
    run = load_run(RUN_7B)
    latex = paper_table(4, [run], "latex").splitlines()
    assert latex[1] == r"\begin{tabular}{lrrrr}"
    assert r"Chinchilla-70B & 16.6 & -- & 31.5 & 35.5 \\" in latex
    assert latex[-4:] == [r"\midrule", r"llama-7b (ours) & 16.2 & -- & 21.5 & -- \\",
                          r"\bottomrule", r"\end{tabular}"]
    from io import StringIO
    table = pd.read_csv(StringIO(paper_table(9, [run], "csv", show_diff=True))).set_index("model")
    assert list(table.columns) == ["kind", "Humanities", "STEM", "Social Sciences", "Other", "Average"]
    assert table.loc["LLaMA-65B", "Average"] == 63.4
    assert table.loc["llama-7b (ours)", "Social Sciences"] == 38.9
    assert table.loc["diff vs LLaMA-7B", "STEM"] == pytest.approx(-0.5)
    table8 = pd.read_csv(StringIO(paper_table(8, [run], "csv"))).set_index("model")
    assert table8.loc["llama-7b (ours)", "HumanEval pass@100"] == 35.0
    assert math.isnan(table8.loc["llama-7b (ours)", "MBPP pass@1"])


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


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from llama_eval.plotting import plot

    out = plot([load_run(RUN_7B)], tmp_path / "vs_paper.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    import sys

    from llama_eval.plotting import plot

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(UserError, match="pip install matplotlib"):
        plot([load_run(RUN_7B)], tmp_path / "x.png")
