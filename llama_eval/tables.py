"""The paper's tables filled from runs, a plain results table for everything else, and the
caveats (partial runs, cut prompts, dropped shots) that travel with every printed number.

A run's cell is marked when run.json says the number is not the paper's protocol in full:
  †  computed on part of the task's documents (--limit), footnote "n=20 of 14,042; --limit 20"
  ‡  some prompts were cut from the left to fit the window or lost few-shot examples
Each mark has a footnote under the table. Standard errors are printed with show_stderr.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from .errors import UserError
from .reporting import PAPER_FILES, Run, load_paper_numbers, paper_value

if TYPE_CHECKING:
    import pandas as pd  # imported where used: `llama-eval run` needs only caveats() before its results

MISSING = "\u2013"  # en dash, the paper's mark for an empty cell
PARTIAL, CUT = "\u2020", "\u2021"  # dagger, double dagger

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


@dataclass
class Row:
    """One printed row: the paper's, one of a run's, or a run's difference to the paper."""

    label: str
    kind: str  # "paper" | "run" | "diff"
    values: list[float | None]
    stderrs: list[float | None]
    ns: list[int | None]
    marks: list[str]  # PARTIAL and/or CUT per cell, "" when the cell is the full protocol


def paper_table(table: int, runs: Sequence[Run], fmt: str = "md", show_diff: bool = False,
                numbers: pd.DataFrame | None = None, show_stderr: bool = False) -> str:
    """The paper's Table 3, 4, 5, 6, 7, 8 or 9: its rows, then one row per model of each run.

    A cell a run lacks is "–" (empty in csv). With show_diff, each run row is followed by its
    difference to the paper's row for the same model (the summary's paper_model, see
    `with_paper_model`), where known. With show_stderr, run cells read "value ± stderr".
    Marked cells (module docstring) get footnotes. fmt: "md" (Markdown), "latex" (a booktabs
    tabular) or "csv" (tidy: one row per cell, see `tidy_rows`).
    """
    rows, caption, headers, notes = _table_rows(table, runs, fmt, show_diff, numbers)
    if fmt == "csv":
        return _csv(_tidy(table, headers, rows))
    render = _markdown if fmt == "md" else _latex
    return render(f"Table {table}: {caption}", headers, rows, show_stderr, notes)


def _table_rows(table: int, runs: Sequence[Run], fmt: str, show_diff: bool, numbers: pd.DataFrame | None):
    if table not in PAPER_TABLES:
        raise UserError(f"no paper table {table}; choose one of {', '.join(map(str, PAPER_TABLES))}")
    if fmt not in ("md", "latex", "csv"):
        raise UserError(f"unknown table format {fmt!r}; choose one of md, latex, csv")
    numbers = load_paper_numbers() if numbers is None else numbers
    caption, columns = PAPER_TABLES[table]
    printed = numbers[(numbers["file"] == PAPER_FILES[0]) & (numbers["table"] == table)]
    rows = [_plain_row(model, "paper", _values(printed, model, columns))
            for model in dict.fromkeys(printed["model"])]
    notes: list[str] = []
    labels = [(run, model) for run in runs for model in run.models()]
    for run, model in labels:
        label = model if sum(m == model for _, m in labels) == 1 else f"{model} ({run.name})"
        if table == 5 and _on_unfiltered_triviaqa(run):
            label += " [unfiltered dev set]"
        mine = run.summary[run.summary["model"] == model]
        row = _run_row(label, run, mine, columns, notes)
        rows.append(row)
        paper_models = [m for m in dict.fromkeys(mine["paper_model"]) if m]
        if show_diff and len(paper_models) == 1:
            ref = _values(numbers, paper_models[0], columns)
            rows.append(_plain_row(f"diff vs {paper_models[0]}", "diff",
                                   [None if v is None or r is None else v - r for v, r in zip(row.values, ref)]))
    return rows, caption, [c[0] for c in columns], notes


def _plain_row(label: str, kind: str, values: list[float | None]) -> Row:
    none = [None] * len(values)
    return Row(label, kind, values, none, list(none), [""] * len(values))


def _run_row(label: str, run: Run, mine: pd.DataFrame, columns, notes: list[str]) -> Row:
    import pandas as pd

    row = _plain_row(label, "run", [])
    for _, task, metric, shots in columns:
        hit = mine[(mine["paper_task"] == task) & (mine["metric"] == metric) & (mine["shots"] == shots)]
        if not len(hit):
            row.values.append(None), row.stderrs.append(None), row.ns.append(None), row.marks.append("")
            continue
        r = hit.iloc[-1]
        row.values.append(float(r["value"]))
        row.stderrs.append(None if pd.isna(r["stderr"]) else float(r["stderr"]))
        row.ns.append(None if pd.isna(r["n"]) else int(r["n"]))
        mark = ""
        for symbol, note in zip((PARTIAL, CUT), cell_caveats(run, r["task"], int(shots))):
            if note:
                mark += symbol
                text = f"{symbol} {label}: {note}"
                if text not in notes:
                    notes.append(text)
        row.marks.append(mark)
    return row


def cell_caveats(run: Run, task: str, shots: int) -> tuple[str, str]:
    """(partial note, cut note) for a task at a shot count, from run.json; "" where none."""
    d = run.info.get("datasets", {}).get(f"{task}@{shots}", {})
    return partial_note(task, shots, d), cut_note(task, shots, d)


def partial_note(task: str, shots: int, d: dict[str, Any]) -> str:
    """"mmlu 5-shot: n=570 of 14,042 documents (--limit 10 per subject)" for a partial run."""
    n, total = d.get("documents"), d.get("documents_available")
    if n is None or total is None or n >= total:
        return ""
    how = f"--limit {d['limit']}" + (f" per {d['limit_group']}" if d.get("limit_group") else "") if d.get("limit") else "part"
    return f"{task} {shots}-shot: n={n:,} of {total:,} documents ({how})"


def cut_note(task: str, shots: int, d: dict[str, Any]) -> str:
    """What the window did to a task's prompts: requests cut from the left, documents that lost shots."""
    said = []
    if d.get("truncated_requests"):
        said.append(f"{d['truncated_requests']:,} of {d.get('requests', 0):,} requests cut from the left to fit the window")
    if d.get("shots_dropped_documents"):
        said.append(f"{d['shots_dropped_documents']:,} documents lost few-shot examples to fit the window")
    return f"{task} {shots}-shot: " + "; ".join(said) if said else ""


def caveats(info: dict[str, Any]) -> list[str]:
    """Every partial-run, cut-prompt and dropped-shot note of a run's run.json datasets."""
    out = []
    for key, d in info.get("datasets", {}).items():
        task, _, shots = key.partition("@")
        out += [note for note in (partial_note(task, int(shots), d), cut_note(task, int(shots), d)) if note]
    return out


def with_paper_model(run: Run, paper_model: str, numbers: pd.DataFrame | None = None) -> Run:
    """The run with its summary's paper columns recomputed for `paper_model` (a paper model
    name, e.g. "LLaMA-7B"), so that diffs and plots work for a model the paper lacks."""
    numbers = load_paper_numbers() if numbers is None else numbers
    s = run.summary.copy()
    refs = [paper_value(t, m, int(k), paper_model, numbers) for t, m, k in zip(s["paper_task"], s["metric"], s["shots"])]
    s["paper_model"] = paper_model
    s["paper_value"] = [math.nan if r is None else r for r in refs]
    s["diff"] = (s["value"].astype(float) - s["paper_value"]).round(4)
    return Run(run.name, s, run.samples, run.info)


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


def results_table(runs: Sequence[Run], fmt: str = "md") -> str:
    """A plain table (model, task, shots, metric, value, stderr, n) of every task and shot count
    that fills no cell of the paper's tables: plugin tasks, other shot counts. "" when none."""
    import pandas as pd

    cells = {(t, m, k) for _, columns in PAPER_TABLES.values() for _, t, m, k in columns}
    lines = []
    for run in runs:
        s = run.summary[run.summary["group"] == ""]
        in_paper = {(r.task, r.shots) for r in s.itertuples() if (r.paper_task, r.metric, r.shots) in cells}
        for r in s.itertuples():
            if (r.task, r.shots) in in_paper:
                continue
            partial, cut = cell_caveats(run, r.task, int(r.shots))
            lines.append([r.model, r.task, str(int(r.shots)), r.metric, f"{r.value:.1f}",
                          "" if pd.isna(r.stderr) else f"{r.stderr:.1f}", "" if pd.isna(r.n) else f"{int(r.n):,}",
                          "; ".join(x.split(": ", 1)[1] for x in (partial, cut) if x)])
    if not lines:
        return ""
    headers = ["model", "task", "shots", "metric", "value", "stderr", "n", "note"]
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([headers, *lines])
        return out.getvalue()
    body = ["| " + " | ".join(headers) + " |", "|---|---|---:|---|---:|---:|---:|---|"]
    body += ["| " + " | ".join(x) + " |" for x in lines]
    return "Results outside the paper's tables (%)\n\n" + "\n".join(body) + "\n"


def tidy_tables(tables: Sequence[int], runs: Sequence[Run], show_diff: bool = False,
                numbers: pd.DataFrame | None = None) -> str:
    """Several paper tables as one tidy CSV: columns TIDY_COLUMNS, one row per cell."""
    rows = []
    for t in tables:
        table_rows, _, headers, _ = _table_rows(t, runs, "csv", show_diff, numbers)
        rows += _tidy(t, headers, table_rows)
    return _csv(rows)


TIDY_COLUMNS = ["table", "row", "kind", "column", "value", "stderr", "n", "note"]


def _tidy(table: int, headers: list[str], rows: list[Row]) -> list[list[Any]]:
    out = []
    for row in rows:
        for i, header in enumerate(headers):
            v, se, n = row.values[i], row.stderrs[i], row.ns[i]
            out.append([table, row.label, row.kind, header, "" if v is None else round(v, 4),
                        "" if se is None else round(se, 4), "" if n is None else n,
                        {PARTIAL: "partial", CUT: "cut", PARTIAL + CUT: "partial;cut"}.get(row.marks[i], "")])
    return out


def _csv(rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TIDY_COLUMNS)
    writer.writerows(rows)
    return out.getvalue()


def _cell(row: Row, i: int, missing: str, show_stderr: bool, pm: str, marks=lambda m: m) -> str:
    v = row.values[i]
    if v is None:
        return missing
    text = f"{v:+.1f}" if row.kind == "diff" else f"{v:.1f}"
    if show_stderr and row.stderrs[i] is not None:
        text += f"{pm}{row.stderrs[i]:.1f}"
    return text + marks(row.marks[i])


def _values(df: pd.DataFrame, model: str, columns: list[tuple[str, str, str, int]]) -> list[float | None]:
    """The paper's value of each column for `model` in the paper's numbers."""
    out: list[float | None] = []
    for _, task, metric, shots in columns:
        hit = df[(df["model"] == model) & (df["task"] == task) & (df["metric"] == metric) & (df["shots"] == shots)]
        out.append(float(hit["value"].iloc[-1]) if len(hit) else None)
    return out


def _markdown(caption: str, headers: list[str], rows: list[Row], show_stderr: bool, notes: list[str]) -> str:
    lines = [caption, "", "| Model | " + " | ".join(headers) + " |",
             "|---|" + "---:|" * len(headers)]
    for row in rows:
        lines.append(f"| {row.label} | " + " | ".join(_cell(row, i, MISSING, show_stderr, " \u00b1 ")
                                                      for i in range(len(headers))) + " |")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _latex(caption: str, headers: list[str], rows: list[Row], show_stderr: bool, notes: list[str]) -> str:
    lines = [f"% {caption}", r"\begin{tabular}{l" + "r" * len(headers) + "}", r"\toprule",
             " & ".join(["Model", *map(_tex, headers)]) + r" \\", r"\midrule"]
    for i, row in enumerate(rows):
        if row.kind == "run" and rows[i - 1].kind == "paper":
            lines.append(r"\midrule")  # our rows below the paper's, as the paper sets its own
        cells = [_cell(row, j, "--", show_stderr, r" $\pm$ ", _tex) for j in range(len(headers))]
        lines.append(" & ".join([_tex(row.label), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", *(f"% {_tex(n)}" for n in notes)]
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", **{c: "\\" + c for c in "&%$#_{}"}}
_TEX_MARKS = {PARTIAL: r"$^\dagger$", CUT: r"$^\ddagger$"}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(c, _TEX_MARKS.get(c, c)) for c in text)
