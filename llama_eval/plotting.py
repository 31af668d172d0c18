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
    cells = list(dict.fromkeys(pts["cell"]))
    labels = list(dict.fromkeys(pts["label"]))
    fig = Figure(figsize=(7.5, 1.2 + 0.32 * len(cells) * max(1, len(labels) ** 0.5)))
    ax = fig.add_subplot()
    y_of = {c: len(cells) - 1 - i for i, c in enumerate(cells)}  # first cell on top
    step = 0.6 / max(len(labels), 1)
    for k, (label, group) in enumerate(pts.groupby("label", sort=False)):
        y = np.array([y_of[c] for c in group["cell"]]) + (k - (len(labels) - 1) / 2) * step
        half = Z95 * group["stderr"].fillna(0).to_numpy(dtype=float)
        ax.errorbar(group["value"], y, xerr=half, fmt="o", ms=4, capsize=2, lw=1, label=f"{label} (95% interval)")
        paper = group[group["paper_value"].notna()]
        if len(paper):
            py = np.array([y_of[c] for c in paper["cell"]]) + (k - (len(labels) - 1) / 2) * step
            models = ", ".join(dict.fromkeys(paper["paper_model"]))
            ax.scatter(paper["paper_value"], py, marker="D", s=22, facecolors="none", edgecolors="black",
                       linewidths=0.9, zorder=3, label=f"paper: {models}" if k == 0 or len(labels) > 1 else None)
    chance = pts.drop_duplicates("cell").dropna(subset=["chance"])
    if len(chance):
        ax.scatter(chance["chance"], [y_of[c] for c in chance["cell"]], marker="|", s=160, color="grey",
                   zorder=2, label="chance")
    n_of = pts.drop_duplicates("cell").set_index("cell")["n"]
    ax.set_yticks(range(len(cells)))
    ax.set_yticklabels([f"{c}  (n={int(n_of[c]):,})" if pd.notna(n_of[c]) else c for c in reversed(cells)], fontsize=8)
    ax.set_ylim(-0.7, len(cells) - 0.3)
    ax.set_xlim(0, 100)
    ax.set_xlabel("score (%)")
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    ax.set_title("Our numbers against the LLaMA paper's", fontsize=10)
    fig.text(0.01, 0.0, "dots: ours, bars: value \u00b1 1.96 standard errors; diamonds: the paper; "
             "ticks: chance; n: documents", fontsize=7, color="0.3")
    ax.legend(fontsize=7, loc="lower right", framealpha=0.9)
    return fig, pts


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
