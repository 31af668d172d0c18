"""`llama-eval table --plot`: each of a run's numbers against the paper's, as a scatter plot.

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
from .reporting import PAPER_TABLES, Run


def plot(runs: Sequence[Run], out_png: str | Path) -> Path:
    """Write a PNG with one point per number a run has that the paper also prints.

    x is the paper's value for the run's paper_model, y the run's; points on the y = x line
    reproduce the paper. Only the cells of the paper's tables (PAPER_TABLES) are drawn, so not
    MMLU's 57 subjects. A UserError when matplotlib is missing or there is nothing to draw.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UserError("plotting needs matplotlib: `pip install matplotlib` "
                        "(or `pip install llama-eval[plot]`)") from e
    points = _points(runs)
    if points.empty:
        raise UserError("nothing to plot: no run has a number the paper prints for the same model "
                        "(the summary's paper_value is empty, e.g. for a model the paper lacks)")
    fig = Figure(figsize=(6.5, 6.5))
    ax = fig.add_subplot()
    for label, group in points.groupby("label", sort=False):
        ax.scatter(group["paper_value"], group["value"], label=label, s=18)
        for row in group.itertuples():
            ax.annotate(row.cell, (row.paper_value, row.value), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    top = max(points["paper_value"].max(), points["value"].max(), 1.0) * 1.05
    ax.plot([0, top], [0, top], color="grey", linewidth=0.8, linestyle="--", label="y = x (paper)")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("paper (%)")
    ax.set_ylabel("this run (%)")
    ax.set_title("Our numbers against the LLaMA paper's")
    ax.legend(fontsize=7, loc="upper left")
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=150, bbox_inches="tight")
    return out_png


# Tables whose column headers do not name the task ("5-shot", "STEM").
_PREFIX = {4: "NQ ", 5: "TriviaQA ", 9: "MMLU "}


def _points(runs: Sequence[Run]) -> pd.DataFrame:
    """Rows (label, cell, paper_value, value): every summary row that is a cell of a paper table."""
    cells = {(task, metric, shots): _PREFIX.get(table, "") + header
             for table, (_, columns) in PAPER_TABLES.items() for header, task, metric, shots in columns}
    frames = []
    for run in runs:
        keys = zip(run.summary["paper_task"], run.summary["metric"], run.summary["shots"])
        in_table = np.array([k in cells for k in keys], dtype=bool)
        rows = run.summary[in_table & run.summary["paper_value"].notna().to_numpy()]
        frames.append(pd.DataFrame({
            "label": rows["model"] + (f" ({run.name})" if len(runs) > 1 else ""),
            "cell": [cells[k] for k in zip(rows["paper_task"], rows["metric"], rows["shots"])],
            "paper_value": rows["paper_value"].astype(float),
            "value": rows["value"].astype(float),
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
