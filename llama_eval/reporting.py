"""Result files, loading runs, and the paper's numbers (tables.py prints the paper's tables,
compare.py compares runs).

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
import json
import math
import os
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from . import __version__
from .errors import UserError
from .tasks.base import DocScore, MetricValue

if TYPE_CHECKING:
    # Each function that builds or reads a table imports pandas when called: its import takes
    # about 0.5 s, and `llama-eval run` needs it only once results are written.
    import pandas as pd

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


# The paper prints a task's overall number under another name in one case.
_OVERALL_NAME = {"MMLU": "MMLU-Average"}


# -- writing and reading result files ---------------------------------------------------------

def write_samples(run_dir: str | Path, task: str, shots: int, scores: Sequence[DocScore],
                  headline_metric: str) -> Path:
    """Write one task's per-document rows at one shot count to run_dir/samples_<task>.csv.

    Rows of other shot counts already in the file are kept and rows of this one replaced, so a
    task run at 0, 1, 5 and 64 shots ends in one file, ordered by shots and then as given. The
    file is written beside and renamed into place, so a crash never leaves half a file.
    """
    import pandas as pd

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
    the same model (model/presets.py's paper_model), or None for a model the paper has not evaluated; paper_name:
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
            "paper_model": paper_model or "", "paper_value": math.nan if ref is None else ref,
            "diff": math.nan if ref is None else round(v.value - ref, 4),
            "run_id": run_id, "config_hash": config_hash, "version": version, "date": date,
        })
    return rows


def write_summary(run_dir: str | Path, rows: Sequence[dict]) -> Path:
    """Merge rows into run_dir/summary.csv and write it atomically.

    A row replaces the one with the same (model, task, shots, group, metric); the file is kept
    sorted by that key, so its content does not depend on the order tasks finished in.
    """
    import pandas as pd

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
    import pandas as pd

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
                df[col] = pd.to_numeric(df[col].replace("", math.nan))
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
        import pandas as pd

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
    import pandas as pd

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
    import pandas as pd

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
