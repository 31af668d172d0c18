"""Result files, the paper's numbers, the paper's tables, and comparing runs.

A run folder holds (pandas reads each CSV as is):

  samples_<task>.csv  one row per (shots, document): task, shots, doc_id, prediction, gold,
                      correct (the task's headline metric for this document), one column per
                      per-document metric (acc, acc_raw, exact_match, pass@1, ...), then
                      extra (the task's extra data as JSON, e.g. per-choice log-probs).
  summary.csv         one row per model/task/metric/shots/group, columns SUMMARY_COLUMNS.
  run.json            written by the evaluator; read here only to be handed back in Run.info.

The paper's numbers ship inside the package, in llama_eval/data/paper/ (copies of
../shared/reference; results/paper/README.md points there): llama1_paper.csv (Tables 3-9),
llama1_paper_mmlu_subjects.csv (Table 16, MMLU per subject and its aggregates) and
llama2_paper.csv (LLaMA-1 as re-reported by the Llama 2 paper, whose table numbers differ).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import __version__
from .errors import UserError
from .model import presets
from .tasks.base import DocScore, MetricValue

SAMPLE_COLUMNS = ("task", "shots", "doc_id", "prediction", "gold", "correct")  # metrics, extra follow
SUMMARY_COLUMNS = (
    "model", "task", "paper_task", "metric", "shots", "group", "value", "stderr", "n",
    "paper_model", "paper_value", "diff", "run_id", "config_hash", "version", "date",
)
_SAMPLE_TEXT = ("task", "doc_id", "prediction", "gold", "extra")
_SUMMARY_TEXT = ("model", "task", "paper_task", "metric", "group", "paper_model", "run_id",
                 "config_hash", "version", "date")
_SUMMARY_KEY = ["model", "task", "shots", "group", "metric"]

# Earlier files win when they print the same number: Tables 3-9 before Table 16 (they disagree
# on GPT-3's and Chinchilla's MMLU categories; the paper's Table 9 is the one kept).
PAPER_FILES = ("llama1_paper.csv", "llama1_paper_mmlu_subjects.csv", "llama2_paper.csv")

# The paper's name for the models of our presets: the preset record's (model/presets.py).
PAPER_MODELS = presets.PAPER_MODELS

# The paper prints a task's overall number under another name in one case.
_OVERALL_NAME = {"MMLU": "MMLU-Average"}

MISSING = "\u2013"  # en dash, the paper's mark for an empty cell


# -- writing and reading result files ---------------------------------------------------------

def write_samples(run_dir: str | Path, task: str, shots: int, scores: Sequence[DocScore],
                  headline_metric: str) -> Path:
    """Write one task's per-document rows at one shot count to run_dir/samples_<task>.csv.

    Rows of other shot counts already in the file are kept and rows of this one replaced, so a
    task run at 0, 1, 5 and 64 shots ends in one file, ordered by shots and then as given. The
    file is written beside and renamed into place, so a crash never leaves half a file.
    """
    path = Path(run_dir) / f"samples_{task}.csv"
    new = pd.DataFrame([_sample_row(task, shots, s, headline_metric) for s in scores],
                       columns=None if scores else [*SAMPLE_COLUMNS, "extra"])
    if path.exists():
        old = read_samples(path)
        new = pd.concat([old[old["shots"] != shots], new], ignore_index=True)
    new = new.sort_values("shots", kind="stable")
    metrics = [c for c in new.columns if c not in SAMPLE_COLUMNS and c != "extra"]
    _write_atomic(new[[*SAMPLE_COLUMNS, *metrics, "extra"]], path)
    return path


def _sample_row(task: str, shots: int, score: DocScore, headline_metric: str) -> dict[str, Any]:
    if headline_metric not in score.metrics:
        raise ValueError(f"{task}: headline metric {headline_metric!r} is not among the metrics "
                         f"{sorted(score.metrics)} of document {score.doc_id!r}")
    clash = set(score.metrics) & {*SAMPLE_COLUMNS, "extra"}
    if clash:
        raise ValueError(f"{task}: metric names {sorted(clash)} collide with samples columns")
    return {"task": task, "shots": shots, "doc_id": score.doc_id, "prediction": score.prediction,
            "gold": score.gold, "correct": score.metrics[headline_metric], **score.metrics,
            "extra": json.dumps(score.extra, sort_keys=True, separators=(",", ":"))}


def summary_rows(model: str, paper_model: str | None, task: str, paper_name: str, shots: int,
                 values: Sequence[MetricValue], *, run_id: str, config_hash: str, date: str,
                 version: str = __version__, numbers: pd.DataFrame | None = None) -> list[dict]:
    """summary.csv rows for one task at one shot count, with the paper's number beside ours.

    model: our label for the model (the row label in tables); paper_model: the paper's name of
    the same model (PAPER_MODELS), or None for a model the paper has not evaluated; paper_name:
    the task's name in the paper (Task.paper_name). `date` is the run's start time, passed in
    so that a resumed run writes the same file. A number the paper lacks is NaN.
    """
    numbers = load_paper_numbers() if numbers is None else numbers
    rows = []
    for v in values:
        ptask = paper_task(paper_name, v.group, numbers)
        ref = paper_value(ptask, v.metric, shots, paper_model, numbers) if paper_model else None
        rows.append({
            "model": model, "task": task, "paper_task": ptask, "metric": v.metric, "shots": shots,
            "group": v.group, "value": round(v.value, 4), "stderr": round(v.stderr, 4), "n": v.n,
            "paper_model": paper_model or "", "paper_value": np.nan if ref is None else ref,
            "diff": np.nan if ref is None else round(v.value - ref, 4),
            "run_id": run_id, "config_hash": config_hash, "version": version, "date": date,
        })
    return rows


def write_summary(run_dir: str | Path, rows: Sequence[dict]) -> Path:
    """Merge rows into run_dir/summary.csv and write it atomically.

    A row replaces the one with the same (model, task, shots, group, metric); the file is kept
    sorted by that key, so its content does not depend on the order tasks finished in.
    """
    path = Path(run_dir) / "summary.csv"
    new = pd.DataFrame(list(rows), columns=list(SUMMARY_COLUMNS))
    if path.exists():
        new = pd.concat([read_summary(path), new], ignore_index=True)
    new = new.drop_duplicates(_SUMMARY_KEY, keep="last").sort_values(_SUMMARY_KEY, kind="stable")
    _write_atomic(new, path)
    return path


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    # Quote every text cell: model output can hold a bare carriage return, which CSV readers
    # take for a line end unless it is inside quotes.
    df.to_csv(tmp, index=False, quoting=csv.QUOTE_NONNUMERIC)
    os.replace(tmp, path)


def read_samples(path: str | Path) -> pd.DataFrame:
    """A samples CSV with its text columns kept as written (an answer "NA" stays "NA")."""
    df = _read_csv(Path(path), (*SAMPLE_COLUMNS, "extra"), _SAMPLE_TEXT)
    dup = df[df.duplicated(["task", "shots", "doc_id"])]
    if len(dup):
        raise UserError(f"{path}: document {dup['doc_id'].iloc[0]!r} appears twice at "
                        f"{dup['shots'].iloc[0]} shots; the file is corrupt, re-run the task")
    return df


def read_summary(path: str | Path) -> pd.DataFrame:
    return _read_csv(Path(path), SUMMARY_COLUMNS, _SUMMARY_TEXT)


def _read_csv(path: Path, required: Sequence[str], text: Sequence[str]) -> pd.DataFrame:
    """Read every cell as text, then convert the columns that are not text to numbers."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UserError(f"{path}: cannot read it as CSV ({e}); give a file written by llama-eval") from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing columns {missing}; give a file written by llama-eval")
    for col in df.columns:
        if col not in text:
            try:
                df[col] = pd.to_numeric(df[col].replace("", np.nan))
            except ValueError as e:
                raise UserError(f"{path}: column {col!r} holds a value that is not a number ({e})") from e
    return df


# -- loading runs -------------------------------------------------------------------------------

@dataclass
class Run:
    """One run's results; either part may be empty when a single CSV file was loaded."""

    name: str  # the path it was loaded from, to tell runs apart
    summary: pd.DataFrame  # SUMMARY_COLUMNS
    samples: dict[str, pd.DataFrame] = field(default_factory=dict)  # task -> its samples rows
    info: dict[str, Any] = field(default_factory=dict)  # run.json, {} when absent

    def models(self) -> list[str]:
        """The model labels in the summary, in order of appearance (the run's name if none)."""
        labels = list(dict.fromkeys(self.summary["model"]))
        return labels or [self.name]


def load_run(path: str | Path) -> Run:
    """A run from its folder (summary.csv, samples_*.csv, run.json), or from one CSV file.

    A CSV file is recognised by its columns: a samples file has doc_id, a summary file has
    metric and value. Nothing beside a file is read: pass the folder to get both.
    """
    path = Path(path)
    if path.is_dir():
        summary_path, info_path = path / "summary.csv", path / "run.json"
        summary = read_summary(summary_path) if summary_path.exists() else _empty_summary()
        samples: dict[str, pd.DataFrame] = {}
        for p in sorted(path.glob("samples_*.csv")):
            samples.update(_by_task(read_samples(p)))
        if summary.empty and not samples:
            raise UserError(f"{path}: no summary.csv or samples_*.csv in it; give a run folder "
                            "written by `llama-eval run`")
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        return Run(str(path), summary, samples, info)
    if path.is_file() and path.suffix == ".json":  # an lm-eval results file (export.py reads it)
        from .export import load_lm_eval_run

        return load_lm_eval_run(path)
    if path.is_file() and path.suffix == ".csv":
        header = set(pd.read_csv(path, nrows=0).columns)
        if "doc_id" in header:
            return Run(str(path), _empty_summary(), _by_task(read_samples(path)))
        if {"metric", "value"} <= header:
            return Run(str(path), read_summary(path))
        raise UserError(f"{path}: neither a samples file (no doc_id column) nor a summary file "
                        "(no metric and value columns)")
    raise UserError(f"{path}: no such run folder or .csv file; give a folder written by "
                    "`llama-eval run` or one of its CSV files")


def _empty_summary() -> pd.DataFrame:
    return pd.DataFrame(columns=list(SUMMARY_COLUMNS))


def _by_task(samples: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split samples rows by task, keeping only the metric columns each task has."""
    return {task: rows.dropna(axis=1, how="all").reset_index(drop=True)
            for task, rows in samples.groupby("task", sort=False)}


# -- the paper's numbers ----------------------------------------------------------------------

def load_paper_numbers() -> pd.DataFrame:
    """Every published number: columns table, task, metric, shots, model, value, file.

    One row per (task, metric, shots, model), from the first of PAPER_FILES that prints it.
    """
    root = files("llama_eval").joinpath("data", "paper")
    frames = []
    for name in PAPER_FILES:
        with root.joinpath(name).open("r", encoding="utf-8") as f:
            df = pd.read_csv(f, usecols=["table", "task", "metric", "shots", "model", "value"])
        frames.append(df.assign(file=name))
    numbers = pd.concat(frames, ignore_index=True)
    return numbers.drop_duplicates(["task", "metric", "shots", "model"], keep="first")


def paper_task(paper_name: str, group: str = "", numbers: pd.DataFrame | None = None) -> str:
    """The paper's name for a task's number: the task itself, or one of its groups.

    Group "" is the task itself (MMLU's overall number is "MMLU-Average"). A group the paper
    prints as a category is "<paper_name>-<group>" with spaces as hyphens ("Social Sciences"
    -> "MMLU-Social-Sciences"); any other group is a subject, "<paper_name>:<group>"
    ("MMLU:anatomy").
    """
    if not group:
        return _OVERALL_NAME.get(paper_name, paper_name)
    numbers = load_paper_numbers() if numbers is None else numbers
    category = f"{paper_name}-{group.replace(' ', '-')}"
    return category if (numbers["task"] == category).any() else f"{paper_name}:{group}"


def paper_value(paper_task: str, metric: str, shots: int, paper_model: str,
                numbers: pd.DataFrame | None = None) -> float | None:
    """The paper's number for a model, or None when the paper does not print it.

    paper_model is the paper's model name exactly ("LLaMA-7B", "Chinchilla-70B"); an unknown
    one is a UserError, since it would silently leave every comparison empty.
    """
    numbers = load_paper_numbers() if numbers is None else numbers
    if not (numbers["model"] == paper_model).any():
        known = ", ".join(dict.fromkeys(numbers["model"]))
        raise UserError(f"unknown paper model {paper_model!r}; the paper's models are: {known}")
    hit = numbers[(numbers["task"] == paper_task) & (numbers["metric"] == metric)
                  & (numbers["shots"] == shots) & (numbers["model"] == paper_model)]
    return float(hit["value"].iloc[0]) if len(hit) else None


# -- comparing runs -----------------------------------------------------------------------------

def compare(runs: Sequence[Run], fail_below: float | None = None, *, seed: int = 0,
            resamples: int = 10_000) -> tuple[pd.DataFrame, int]:
    """Each run after the first against the first: values, difference and a paired test.

    Per (task, shots, metric) where both runs have per-document rows, joined on doc_id: the
    exact McNemar test (a two-sided binomial test on the discordant documents) for 0/1
    metrics, significant when p < 0.05; otherwise a paired bootstrap of the mean difference
    (`resamples` resamples, fixed `seed`), significant when its 95% interval excludes 0.
    Where only summaries exist the values are shown without a test. Values are in percent,
    diff = run - baseline. The exit code is 1 when some metric drops significantly by more
    than fail_below points (higher is better for every metric of the paper), else 0.
    Runs over different documents are refused with a UserError naming what differs.
    """
    if len(runs) < 2:
        raise UserError("compare needs at least two runs (folders or CSV files)")
    df = pd.concat([_compare_pair(runs[0], run, seed, resamples) for run in runs[1:]],
                   ignore_index=True)
    if fail_below is None:
        return df, 0
    dropped = df["significant"] & (df["diff"] < -fail_below)
    return df, int(bool(dropped.any()))


def _common_slices(a: Run, b: Run):
    """(task, shots, a's rows, b's rows) for each task and shot count both runs have samples of."""
    for task in [t for t in a.samples if t in b.samples]:
        sa, sb = a.samples[task], b.samples[task]
        for shots in sorted(set(sa["shots"]) & set(sb["shots"])):
            yield task, shots, sa[sa["shots"] == shots], sb[sb["shots"] == shots]


def _compare_pair(a: Run, b: Run, seed: int, resamples: int) -> pd.DataFrame:
    _check_same_documents(a, b)
    rows = []
    for task, shots, sa, sb in _common_slices(a, b):
        joined = sa.merge(sb, on="doc_id")
        for metric in [c for c in sa.columns if c in sb.columns and c not in (*SAMPLE_COLUMNS, "extra")]:
            pair = joined[[f"{metric}_x", f"{metric}_y"]].dropna().to_numpy(dtype=float)
            if len(pair):
                x, y = pair[:, 0], pair[:, 1]
                rows.append({"task": task, "shots": shots, "metric": metric, "a": 100 * x.mean(),
                             "b": 100 * y.mean(), "n": len(x), **paired_test(x, y, seed, resamples)})
    tested = {(r["task"], r["shots"], r["metric"]) for r in rows}
    ka, kb = _summary_values(a), _summary_values(b)
    for key in [k for k in ka if k in kb and k not in tested]:
        rows.append({"task": key[0], "shots": key[1], "metric": key[2], "a": ka[key], "b": kb[key],
                     "n": np.nan, "test": "", "p_value": np.nan, "ci_low": np.nan,
                     "ci_high": np.nan, "significant": False})
    df = pd.DataFrame(rows, columns=["task", "shots", "metric", "a", "b", "n", "test", "p_value",
                                     "ci_low", "ci_high", "significant"])
    df.insert(5, "diff", df["b"] - df["a"])
    df.insert(0, "run_b", b.name)
    df.insert(0, "run_a", a.name)
    return df.astype({"significant": bool})


def _summary_values(run: Run) -> dict[tuple[str, int, str], float]:
    whole = run.summary[run.summary["group"] == ""]
    return {(r.task, int(r.shots), r.metric): float(r.value) for r in whole.itertuples()}


def _check_same_documents(a: Run, b: Run) -> None:
    problems = []
    for task, shots, sa, sb in _common_slices(a, b):
        ia, ib = set(sa["doc_id"]), set(sb["doc_id"])
        if ia != ib:
            only_a, only_b = sorted(ia - ib), sorted(ib - ia)
            problems.append(f"{task} at {shots} shots: {len(only_a)} ids only in the first, "
                            f"{len(only_b)} only in the second (e.g. {(only_a or only_b)[0]!r})")
    if problems:
        raise UserError(f"{a.name} and {b.name} were scored on different documents, so they cannot "
                        "be compared document by document:\n  " + "\n  ".join(problems)
                        + "\nRe-run them with the same data, --limit and --shots.")


def paired_test(x: np.ndarray, y: np.ndarray, seed: int = 0, resamples: int = 10_000) -> dict:
    """Test whether y differs from x, document by document (keys test, p_value, ci_*, significant).

    0/1 values: the exact McNemar test. Otherwise: a paired bootstrap of mean(y - x), with a
    95% percentile interval in percent points and a two-sided bootstrap p-value.
    """
    if len(x) == 0:
        return {"test": "", "p_value": np.nan, "ci_low": np.nan, "ci_high": np.nan, "significant": False}
    if np.isin(x, (0.0, 1.0)).all() and np.isin(y, (0.0, 1.0)).all():
        lost, gained = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
        p = mcnemar_exact(lost, gained)
        return {"test": "mcnemar", "p_value": p, "ci_low": np.nan, "ci_high": np.nan,
                "significant": p < 0.05}
    low, high, p = paired_bootstrap(x, y, seed, resamples)
    return {"test": "bootstrap", "p_value": p, "ci_low": 100 * low, "ci_high": 100 * high,
            "significant": bool(low > 0 or high < 0)}


def mcnemar_exact(lost: int, gained: int) -> float:
    """Two-sided exact McNemar p-value: P(a split of the discordant pairs at least this uneven).

    Under no change each of the n = lost + gained discordant documents goes either way with
    probability 1/2, so p = 2 * P(Binomial(n, 1/2) <= min(lost, gained)), capped at 1.
    Computed with exact integers: n can be in the thousands (MMLU has 14,042 questions).
    """
    n, k = lost + gained, min(lost, gained)
    tail, term = 0, 1  # term = C(n, i)
    for i in range(k + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, 2 * tail / 2**n)


def paired_bootstrap(x: np.ndarray, y: np.ndarray, seed: int = 0,
                     resamples: int = 10_000) -> tuple[float, float, float]:
    """(low, high) of the 95% percentile interval of mean(y - x), and a two-sided p-value."""
    d = np.asarray(y, dtype=float) - np.asarray(x, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // len(d))  # bounds memory at a few million indices per step
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = d[rng.integers(0, len(d), size=(stop - start, len(d)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    p = min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean()))
    return float(low), float(high), float(p)


def format_compare(df: pd.DataFrame) -> str:
    """The comparison as a plain-text table, significant changes marked "drop" or "gain"."""
    if df.empty:
        return "No task, shot count and metric is common to these runs."
    shown = pd.DataFrame({
        "task": df["task"], "shots": df["shots"], "metric": df["metric"],
        "A": df["a"].map("{:.2f}".format), "B": df["b"].map("{:.2f}".format),
        "B-A": df["diff"].map("{:+.2f}".format),
        "n": df["n"].map(lambda n: "" if pd.isna(n) else str(int(n))),
        "test": df["test"], "p": df["p_value"].map(lambda p: "" if pd.isna(p) else f"{p:.3g}" if p > 0 else "~0"),
        "95% CI": [("" if pd.isna(lo) else f"[{lo:+.2f}, {hi:+.2f}]")
                   for lo, hi in zip(df["ci_low"], df["ci_high"])],
        "": [("drop" if d < 0 else "gain") if s else "" for d, s in zip(df["diff"], df["significant"])],
    })
    parts = []
    for (run_a, run_b), idx in df.groupby(["run_a", "run_b"], sort=False).groups.items():
        parts.append(f"A = {run_a}\nB = {run_b}\n" + shown.loc[idx].to_string(index=False))
    parts.append("McNemar exact test for 0/1 metrics, paired bootstrap 95% interval otherwise; "
                 "marked when p < 0.05 or the interval excludes 0.")
    return "\n\n".join(parts)


# -- the paper's tables -------------------------------------------------------------------------

# table -> (caption, columns as (header, paper task, metric, shots)), in the paper's order.
PAPER_TABLES: dict[int, tuple[str, list[tuple[str, str, str, int]]]] = {
    3: ("Zero-shot performance on common sense reasoning tasks (accuracy, %)",
        [(t, t, "acc", 0) for t in
         ("BoolQ", "PIQA", "SIQA", "HellaSwag", "WinoGrande", "ARC-e", "ARC-c", "OBQA")]),
    4: ("NaturalQuestions, exact match (%)",
        [(f"{k}-shot", "NaturalQuestions", "exact_match", k) for k in (0, 1, 5, 64)]),
    5: ("TriviaQA, filtered dev set, exact match (%)",
        [(f"{k}-shot", "TriviaQA", "exact_match", k) for k in (0, 1, 5, 64)]),
    6: ("Reading comprehension, zero-shot accuracy (%)",
        [("RACE-middle", "RACE-middle", "acc", 0), ("RACE-high", "RACE-high", "acc", 0)]),
    7: ("Quantitative reasoning (%)",
        [("MATH", "MATH", "acc", 4), ("MATH maj1@256", "MATH", "maj1@256", 4),
         ("GSM8k", "GSM8K", "acc", 8), ("GSM8k maj1@100", "GSM8K", "maj1@100", 8)]),
    8: ("Code generation (%)",
        [("HumanEval pass@1", "HumanEval", "pass@1", 0), ("MBPP pass@1", "MBPP", "pass@1", 3),
         ("HumanEval pass@100", "HumanEval", "pass@100", 0), ("MBPP pass@80", "MBPP", "pass@80", 3)]),
    9: ("Massive Multitask Language Understanding, five-shot accuracy (%)",
        [("Humanities", "MMLU-Humanities", "acc", 5), ("STEM", "MMLU-STEM", "acc", 5),
         ("Social Sciences", "MMLU-Social-Sciences", "acc", 5), ("Other", "MMLU-Other", "acc", 5),
         ("Average", "MMLU-Average", "acc", 5)]),
}

Row = tuple[str, str, list[float | None]]  # (label, kind: "paper" | "run" | "diff", cells)


def paper_table(table: int, runs: Sequence[Run], fmt: str = "md", show_diff: bool = False,
                numbers: pd.DataFrame | None = None) -> str:
    """The paper's Table 3, 4, 5, 6, 7, 8 or 9: its rows, then one row per model of each run.

    A cell a run lacks is "–" (empty in csv). With show_diff, each run row is followed by its
    difference to the paper's row for the same model (the summary's paper_model), where known.
    fmt: "md" (Markdown), "latex" (a booktabs tabular) or "csv" (columns model, kind, ...).
    """
    if table not in PAPER_TABLES:
        raise UserError(f"no paper table {table}; choose one of {', '.join(map(str, PAPER_TABLES))}")
    renderers = {"md": _markdown, "latex": _latex, "csv": _csv}
    if fmt not in renderers:
        raise UserError(f"unknown table format {fmt!r}; choose one of {', '.join(renderers)}")
    numbers = load_paper_numbers() if numbers is None else numbers
    caption, columns = PAPER_TABLES[table]
    printed = numbers[(numbers["file"] == PAPER_FILES[0]) & (numbers["table"] == table)]
    rows: list[Row] = [(model, "paper", _cells(printed, model, columns))
                       for model in dict.fromkeys(printed["model"])]
    labels = [(run, model) for run in runs for model in run.models()]
    for run, model in labels:
        label = model if sum(m == model for _, m in labels) == 1 else f"{model} ({run.name})"
        if table == 5 and _on_unfiltered_triviaqa(run):
            label += " [unfiltered dev set]"
        mine = run.summary[run.summary["model"] == model]
        cells = _cells(mine, model, columns, task_column="paper_task")
        rows.append((label, "run", cells))
        paper_models = [m for m in dict.fromkeys(mine["paper_model"]) if m]
        if show_diff and len(paper_models) == 1:
            ref = _cells(numbers, paper_models[0], columns)
            rows.append((f"diff vs {paper_models[0]}", "diff",
                         [None if v is None or r is None else v - r for v, r in zip(cells, ref)]))
    return renderers[fmt](f"Table {table}: {caption}", [c[0] for c in columns], rows)


def _on_unfiltered_triviaqa(run: Run) -> bool:
    """Whether the run read TriviaQA from the DPR release file, the unfiltered dev set, and not
    the filtered one the paper's Table 5 reports (run.json records each task's source)."""
    sources = [d.get("source") for key, d in run.info.get("datasets", {}).items() if key.startswith("triviaqa@")]
    return any(isinstance(s, dict) and s.get("variant") == "unfiltered" for s in sources)


def tables_for(runs: Sequence[Run]) -> list[int]:
    """The paper tables for which at least one run has a number, in order."""
    keys = {k for run in runs
            for k in zip(run.summary["paper_task"], run.summary["metric"], run.summary["shots"])}
    return [t for t, (_, columns) in PAPER_TABLES.items()
            if any((task, metric, shots) in keys for _, task, metric, shots in columns)]


def _cells(df: pd.DataFrame, model: str, columns: list[tuple[str, str, str, int]],
           task_column: str = "task") -> list[float | None]:
    """The value of each column for `model` in df (columns model, metric, shots, value and the
    paper's task name in `task_column`)."""
    out: list[float | None] = []
    for _, task, metric, shots in columns:
        hit = df[(df["model"] == model) & (df[task_column] == task) & (df["metric"] == metric)
                 & (df["shots"] == shots)]
        out.append(float(hit["value"].iloc[-1]) if len(hit) else None)
    return out


def _number(v: float | None, kind: str, missing: str) -> str:
    if v is None:
        return missing
    return f"{v:+.1f}" if kind == "diff" else f"{v:.1f}"


def _markdown(caption: str, headers: list[str], rows: list[Row]) -> str:
    lines = [caption, "", "| Model | " + " | ".join(headers) + " |",
             "|---|" + "---:|" * len(headers)]
    for label, kind, cells in rows:
        lines.append(f"| {label} | " + " | ".join(_number(v, kind, MISSING) for v in cells) + " |")
    return "\n".join(lines) + "\n"


def _latex(caption: str, headers: list[str], rows: list[Row]) -> str:
    lines = [f"% {caption}", r"\begin{tabular}{l" + "r" * len(headers) + "}", r"\toprule",
             " & ".join(["Model", *map(_tex, headers)]) + r" \\", r"\midrule"]
    for i, (label, kind, cells) in enumerate(rows):
        if kind == "run" and rows[i - 1][1] == "paper":
            lines.append(r"\midrule")  # our rows below the paper's, as the paper sets its own
        lines.append(" & ".join([_tex(label), *(_number(v, kind, "--") for v in cells)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", **{c: "\\" + c for c in "&%$#_{}"}}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(c, c) for c in text)


def _csv(caption: str, headers: list[str], rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["model", "kind", *headers])
    for label, kind, cells in rows:
        writer.writerow([label, kind, *("" if v is None else round(v, 4) for v in cells)])
    return out.getvalue()
