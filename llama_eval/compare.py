"""`llama-eval compare`: what changed between runs, whether it is significant, and why.

Each run after the first is compared with the first (the baseline), document by document
where both have samples files: the exact McNemar test for 0/1 metrics, a paired bootstrap
otherwise. By default the significance marks and the `--fail-below` gate look only at each
task's headline metrics (the task's `headline_metric` and the metrics the paper's tables print
for it); secondary diagnostics such as acc_raw are shown and gated only with all_metrics. The
report also says what differs between the runs' configurations (run.json) and how many
predictions changed per task, and ends with a one-line verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .config import results_fields
from .errors import UserError
from .metrics import mcnemar_exact, paired_bootstrap
from .reporting import SAMPLE_COLUMNS, Run
from .tables import PAPER_TABLES



@dataclass
class Comparison:
    """What `compare` found; `format_compare` prints it."""

    table: pd.DataFrame  # one row per (run pair, task, shots, metric); see `compare`
    config_diffs: dict[tuple[str, str], list[str] | None]  # (run a, run b) -> "key: a -> b" lines; None: unknown
    changed: pd.DataFrame  # run_a, run_b, task, shots, changed, n: predictions that differ
    notes: list[str] = field(default_factory=list)  # e.g. what --intersect left out
    tripped: list[str] = field(default_factory=list)  # what made the gate fail, one line each
    all_metrics: bool = False
    fail_below: float | None = None

    @property
    def exit_code(self) -> int:
        return int(bool(self.tripped))


def compare(runs: Sequence[Run], fail_below: float | None = None, *, all_metrics: bool = False,
            intersect: bool = False, seed: int = 0, resamples: int = 10_000) -> Comparison:
    """Each run after the first against the first: values, difference and a paired test.

    Per (task, shots, metric) where both runs have per-document rows, joined on doc_id: the
    exact McNemar test (a two-sided binomial test on the discordant documents) for 0/1
    metrics, significant when p < 0.05; otherwise a paired bootstrap of the mean difference
    (`resamples` resamples, fixed `seed`), significant when its 95% interval excludes 0.
    Where only summaries exist the values are shown without a test. Values are in percent,
    diff = run - baseline; column `headline` says whether the metric is one of the task's
    headline metrics. The gate trips (exit code 1) when a headline metric (any metric with
    all_metrics) drops significantly by more than fail_below points (higher is better for
    every metric of the paper). Runs over different documents are refused with a UserError
    naming what differs, unless `intersect`, which compares the documents both runs share.
    """
    if len(runs) < 2:
        raise UserError("compare needs at least two runs (folders or CSV files)")
    result = Comparison(pd.DataFrame(), {}, pd.DataFrame(), all_metrics=all_metrics, fail_below=fail_below)
    tables, changed = [], []
    for run in runs[1:]:
        table, moved = _compare_pair(runs[0], run, seed, resamples, intersect, result.notes)
        tables.append(table)
        changed.append(moved)
        result.config_diffs[(runs[0].name, run.name)] = config_differences(runs[0], run)
    result.table = pd.concat(tables, ignore_index=True)
    result.changed = pd.concat(changed, ignore_index=True)
    if fail_below is not None:
        gated = result.table if all_metrics else result.table[result.table["headline"]]
        for r in gated[gated["significant"] & (gated["diff"] < -fail_below)].itertuples():
            result.tripped.append(f"{_slice(r)} {r.metric} {r.a:.2f} -> {r.b:.2f} ({r.diff:+.2f} points, "
                                  f"p={_p(r.p_value)}){_pair_label(r, len(runs))}")
    return result


def _slice(r) -> str:
    return f"{r.task} {int(r.shots)}-shot"


def _p(p: float) -> str:
    return "" if pd.isna(p) else f"{p:.3g}" if p > 0 else "~0"


def _pair_label(r, n_runs: int) -> str:
    return f" in {r.run_b}" if n_runs > 2 else ""


def _common_slices(a: Run, b: Run):
    """(task, shots, a's rows, b's rows) for each task and shot count both runs have samples of."""
    for task in [t for t in a.samples if t in b.samples]:
        sa, sb = a.samples[task], b.samples[task]
        for shots in sorted(set(sa["shots"]) & set(sb["shots"])):
            yield task, shots, sa[sa["shots"] == shots], sb[sb["shots"] == shots]


def _compare_pair(a: Run, b: Run, seed: int, resamples: int, intersect: bool,
                  notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not intersect:
        _check_same_documents(a, b)
    rows, changed = [], []
    for task, shots, sa, sb in _common_slices(a, b):
        joined = sa.merge(sb, on="doc_id")
        if intersect and len(joined) < max(len(sa), len(sb)):
            notes.append(f"{task} {shots}-shot: compared on the {len(joined)} documents both runs share "
                         f"({len(sa)} in {a.name}, {len(sb)} in {b.name})")
        changed.append({"run_a": a.name, "run_b": b.name, "task": task, "shots": shots, "n": len(joined),
                        "changed": int((joined["prediction_x"] != joined["prediction_y"]).sum())})
        headline = headline_metrics(a, task) | headline_metrics(b, task)
        for metric in [c for c in sa.columns if c in sb.columns and c not in (*SAMPLE_COLUMNS, "extra")]:
            pair = joined[[f"{metric}_x", f"{metric}_y"]].dropna().to_numpy(dtype=float)
            if len(pair):
                x, y = pair[:, 0], pair[:, 1]
                rows.append({"task": task, "shots": shots, "metric": metric, "a": 100 * x.mean(),
                             "b": 100 * y.mean(), "n": len(x), "headline": metric in headline or not headline,
                             **paired_test(x, y, seed, resamples)})
    tested = {(r["task"], r["shots"], r["metric"]) for r in rows}
    ka, kb = _summary_values(a), _summary_values(b)
    for key in [k for k in ka if k in kb and k not in tested]:
        headline = headline_metrics(a, key[0]) | headline_metrics(b, key[0])
        rows.append({"task": key[0], "shots": key[1], "metric": key[2], "a": ka[key], "b": kb[key],
                     "n": np.nan, "headline": key[2] in headline or not headline, "test": "",
                     "p_value": np.nan, "ci_low": np.nan, "ci_high": np.nan, "significant": False})
    df = pd.DataFrame(rows, columns=["task", "shots", "metric", "a", "b", "n", "headline", "test", "p_value",
                                     "ci_low", "ci_high", "significant"])
    df.insert(5, "diff", df["b"] - df["a"])
    df.insert(0, "run_b", b.name)
    df.insert(0, "run_a", a.name)
    moved = pd.DataFrame(changed, columns=["run_a", "run_b", "task", "shots", "changed", "n"])
    return df.astype({"significant": bool, "headline": bool}), moved


def headline_metrics(run: Run, task: str) -> set[str]:
    """The metrics a task is judged by: its headline metric and those the paper's tables print.

    Read from run.json (`datasets` records each task's headline metric), else from the task
    registry, else the samples file's `correct` column (the headline metric per document) tells
    which metric columns equal it. Empty when nothing says (then every metric counts).
    """
    found = {d["headline_metric"] for key, d in run.info.get("datasets", {}).items()
             if key.partition("@")[0] == task and d.get("headline_metric")}
    if not found:
        from . import tasks as registry

        if task in registry.names():
            try:
                found = {registry.get_task(task).headline_metric}
            except (UserError, ImportError):
                found = set()
    if not found and task in run.samples:
        s = run.samples[task]
        found = {c for c in s.columns if c not in (*SAMPLE_COLUMNS, "extra")
                 and s[c].equals(s["correct"].astype(s[c].dtype))}
    rows = run.summary[run.summary["task"] == task]
    if "paper_task" in rows.columns:
        printed = {(t, m, k) for _, columns in PAPER_TABLES.values() for _, t, m, k in columns}
        found |= {r.metric for r in rows.itertuples() if (r.paper_task, r.metric, r.shots) in printed}
    return found


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
                        + "\nRe-run them with the same data, --limit and --shots, or pass --intersect "
                        "to compare the documents both share.")


def config_differences(a: Run, b: Run) -> list[str] | None:
    """"key: a -> b" for each setting that differs between two runs' run.json (the model's
    fingerprint, dtype, engine and llama-eval versions, seed, shots, options, limit, ... and
    each task's document fingerprint); None when a run has no run.json."""
    if not a.info or not b.info:
        return None
    fa, fb = _facts(a.info), _facts(b.info)
    return [f"{key}: {_show(fa.get(key))} -> {_show(fb.get(key))}"
            for key in dict.fromkeys([*fa, *fb]) if fa.get(key) != fb.get(key)]


def _facts(info: dict[str, Any]) -> dict[str, Any]:
    model = info.get("model", {})
    facts = {"model fingerprint": model.get("fingerprint"), "dtype": model.get("dtype"),
             "engine version": info.get("engine_version", model.get("engine_version")),
             "llama-eval version": info.get("version")}
    counted = set(results_fields())  # the config fields declared to change the numbers
    facts.update({k: v for k, v in info.get("config", {}).items() if k in counted})
    for key, d in info.get("datasets", {}).items():
        facts[f"documents {key}"] = (d.get("documents"), d.get("fingerprint"))
    return {k: v for k, v in facts.items() if v is not None or k == "engine version"}


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], int):
        return f"{value[0]} docs ({value[1]})"  # a task's (document count, fingerprint)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if all(not isinstance(v, (list, tuple)) for v in value) else str(value)
    return "(absent)" if value is None else str(value)


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


def format_compare(result: Comparison) -> str:
    """The comparison as plain text: per run pair the configuration difference, the changed
    predictions and the table (significant changes marked "drop" or "gain"); then the verdict."""
    df = result.table
    shown_rows = df if result.all_metrics else df[df["headline"]]
    parts = []
    for (run_a, run_b), cfg in result.config_diffs.items():
        pair = shown_rows[(shown_rows["run_a"] == run_a) & (shown_rows["run_b"] == run_b)]
        lines = [f"A = {run_a}", f"B = {run_b}"]
        if cfg is None:
            lines.append("config: unknown (a CSV file has no run.json; pass run folders to see what differs)")
        elif cfg:
            lines.append("config differences:" + "".join(f"\n  {c}" for c in cfg))
        else:
            lines.append("config: identical")
        moved = result.changed[(result.changed["run_a"] == run_a) & (result.changed["run_b"] == run_b)]
        if len(moved):
            lines.append("changed predictions: " + ", ".join(
                f"{r.task} {int(r.shots)}-shot {r.changed} of {r.n}" for r in moved.itertuples()))
        lines.append(_table_text(pair) if len(pair) else "No task, shot count and metric is common to these runs.")
        parts.append("\n".join(lines))
    hidden = int((~df["headline"]).sum()) if not result.all_metrics else 0
    legend = ("McNemar exact test for 0/1 metrics, paired bootstrap 95% interval otherwise; "
              "marked when p < 0.05 or the interval excludes 0.")
    if hidden:
        legend += f" {hidden} secondary metric row(s) not shown or gated (--all-metrics shows them)."
    parts += [*result.notes, legend, verdict(result)]
    return "\n\n".join(parts)


def _table_text(df: pd.DataFrame) -> str:
    shown = pd.DataFrame({
        "task": df["task"], "shots": df["shots"], "metric": df["metric"],
        "A": df["a"].map("{:.2f}".format), "B": df["b"].map("{:.2f}".format),
        "B-A": df["diff"].map("{:+.2f}".format),
        "n": df["n"].map(lambda n: "" if pd.isna(n) else str(int(n))),
        "test": df["test"], "p": df["p_value"].map(_p),
        "95% CI": [("" if pd.isna(lo) else f"[{lo:+.2f}, {hi:+.2f}]")
                   for lo, hi in zip(df["ci_low"], df["ci_high"])],
        "": [("drop" if d < 0 else "gain") if s else "" for d, s in zip(df["diff"], df["significant"])],
    })
    return shown.to_string(index=False)


def verdict(result: Comparison) -> str:
    """One line: the significant drops and gains among the metrics that count, and the gate."""
    df = result.table if result.all_metrics else result.table[result.table["headline"]]
    which = "metrics" if result.all_metrics else "headline metrics"
    if df.empty:
        return "verdict: nothing to compare (no task, shot count and metric common to the runs)"
    if not (df["test"] != "").any():
        return (f"verdict: no paired test possible ({len(df)} {which} compared from summaries only); "
                "pass run folders or samples files to test significance")
    sig = df[df["significant"]]
    drops, gains = sig[sig["diff"] < 0], sig[sig["diff"] > 0]
    if drops.empty and gains.empty:
        text = f"verdict: no significant change in {len(df)} {which}"
    else:
        said = []
        for rows, word in ((drops, "drop"), (gains, "gain")):
            if len(rows):
                items = "; ".join(f"{_slice(r)} {r.metric} {r.diff:+.2f} (p={_p(r.p_value)})" for r in rows.itertuples())
                said.append(f"{len(rows)} significant {word}{'s' * (len(rows) > 1)}: {items}")
        text = f"verdict ({which}): " + "; and ".join(said)
    if result.fail_below is not None:
        text += (f"\n--fail-below {result.fail_below:g}: FAILED by " + "; ".join(result.tripped)
                 if result.tripped else f"\n--fail-below {result.fail_below:g}: passed")
    return text
