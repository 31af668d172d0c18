"""`llama-eval table --plot`: each number of the paper's tables, ours against the paper's.

One row per table cell (BoolQ, MMLU STEM, NQ 5-shot, ...): our value with its 95% interval
(value ± 1.96 standard errors), the paper's value for the run's paper model (the summary's
paper_model; `table --paper-model` sets it for any run) and the chance level of
multiple-choice tasks. n is printed in each row's label. Rows read left to right, so long
labels never overlap points.

matplotlib is an optional dependency (the `plot` extra), imported only when a plot is asked
for. The figure is built with matplotlib's object interface, not pyplot, so that plotting
changes no global backend or figure state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import UserError
from .reporting import Run
from .tables import PAPER_TABLES

Z95 = 1.959964  # two-sided 95% normal quantile

# Chance accuracy of the multiple-choice tasks (1 / number of choices; SIQA has 3, the
# two-choice tasks 2, the rest 4), by the paper's task name or its prefix (MMLU's groups).
CHANCE = {"BoolQ": 50.0, "PIQA": 50.0, "WinoGrande": 50.0, "SIQA": 100 / 3, "HellaSwag": 25.0, "ARC-e": 25.0,
          "ARC-c": 25.0, "OBQA": 25.0, "RACE-middle": 25.0, "RACE-high": 25.0, "MMLU": 25.0}

# Tables whose column headers do not name the task ("5-shot", "STEM").
_PREFIX = {4: "NQ ", 5: "TriviaQA ", 9: "MMLU "}


def plot(runs: Sequence[Run], out_png: str | Path) -> Path:
    """Write the figure (module docstring) to out_png. A UserError when matplotlib is missing
    or no run has a number of the paper's tables."""
    fig, _ = figure(runs)
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=150, bbox_inches="tight")
    return out_png


def figure(runs: Sequence[Run]):
    """(matplotlib Figure, the points it draws as a DataFrame; see `points`)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UserError("plotting needs matplotlib: `pip install matplotlib` "
                        "(or `pip install llama-eval[plot]`)") from e
    pts = points(runs)
    if pts.empty:
        raise UserError("nothing to plot: no run has a number that the paper's tables print "
                        "(Tables 3-9; `llama-eval tasks` shows which task fills which table)")
    cells = [c for c in _cell_order() if c in set(pts["cell"])]
    labels = list(dict.fromkeys(pts["label"]))
    fig = Figure(figsize=(7.5, 1.6 + 0.3 * len(cells) * max(1, len(labels) ** 0.5)))
    ax = fig.add_subplot()
    y_of = {c: len(cells) - 1 - i for i, c in enumerate(cells)}  # first cell on top
    step = 0.6 / max(len(labels), 1)
    said: set[str] = set()
    for k, (label, group) in enumerate(pts.groupby("label", sort=False)):
        offset = (k - (len(labels) - 1) / 2) * step
        y = np.array([y_of[c] for c in group["cell"]]) + offset
        half = Z95 * group["stderr"].fillna(0).to_numpy(dtype=float)
        ax.errorbar(group["value"], y, xerr=half, fmt="o", ms=4, capsize=2, lw=1, label=f"{label}: ours, 95% interval")
        paper = group[group["paper_value"].notna()]
        for model, rows in paper.groupby("paper_model", sort=False):
            py = np.array([y_of[c] for c in rows["cell"]]) + offset
            ax.scatter(rows["paper_value"], py, marker="D", s=22, facecolors="none", edgecolors="black",
                       linewidths=0.9, zorder=3, label=None if model in said else f"paper: {model}")
            said.add(model)
    chance = pts.drop_duplicates("cell").dropna(subset=["chance"])
    if len(chance):
        ax.scatter(chance["chance"], [y_of[c] for c in chance["cell"]], marker="|", s=160, color="grey",
                   zorder=2, label="chance")
    ns = pts.groupby("cell", sort=False)["n"].agg(lambda n: " / ".join(f"{int(x):,}" for x in n if pd.notna(x)))
    ax.set_yticks(range(len(cells)))
    ax.set_yticklabels([f"{c}  (n={ns[c]})" if ns[c] else c for c in reversed(cells)], fontsize=8)
    ax.set_ylim(-0.7, len(cells) - 0.3)
    ax.set_xlim(0, 100)
    ax.set_xlabel("score (%); bars: value \u00b1 1.96 standard errors; n: documents"
                  + (" (per run, in legend order)" if len(labels) > 1 else ""), fontsize=8)
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    ax.set_title("Our numbers against the LLaMA paper's", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.06 - 0.6 / (len(cells) + 2)), ncol=2, frameon=False)
    return fig, pts


def _cell_order() -> list[str]:
    return [_PREFIX.get(table, "") + header for table, (_, columns) in PAPER_TABLES.items() for header, *_ in columns]


def points(runs: Sequence[Run]) -> pd.DataFrame:
    """Every summary row that is a cell of a paper table, in table order: columns label, cell,
    value, stderr, n, paper_model, paper_value (NaN when the paper lacks it) and chance."""
    order = [(table, header, task, metric, shots)
             for table, (_, columns) in PAPER_TABLES.items() for header, task, metric, shots in columns]
    frames = []
    for run in runs:
        s = run.summary
        for model in run.models():
            mine = s[s["model"] == model]
            for table, header, task, metric, shots in order:
                hit = mine[(mine["paper_task"] == task) & (mine["metric"] == metric) & (mine["shots"] == shots)]
                if not len(hit):
                    continue
                r = hit.iloc[-1]
                frames.append({
                    "label": model + (f" ({run.name})" if len(runs) > 1 else ""),
                    "cell": _PREFIX.get(table, "") + header, "value": float(r["value"]),
                    "stderr": float(r["stderr"]) if pd.notna(r["stderr"]) else np.nan,
                    "n": r["n"], "paper_model": r["paper_model"] or "",
                    "paper_value": float(r["paper_value"]) if pd.notna(r["paper_value"]) else np.nan,
                    "chance": CHANCE.get(task, CHANCE.get(task.split("-")[0], np.nan)),
                })
    return pd.DataFrame(frames, columns=["label", "cell", "value", "stderr", "n", "paper_model", "paper_value", "chance"])
