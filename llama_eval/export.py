"""lm-eval interop: a run written in lm-eval's result format, and lm-eval's results read as a run.

lm-eval (EleutherAI's lm-evaluation-harness, 0.4.x) writes, under its output folder,
`<model>/results_<date>.json` and one `<model>/samples_<task>_<date>.jsonl` per task, where
<date> is an ISO time with ':' replaced by '-'. The results file holds `results` (per task:
`alias`, `sample_len` and "metric,filter" keys such as "acc,none" and "acc_stderr,none", values
as fractions), `versions`, `n-shot`, `configs`, `higher_is_better`, `n-samples` and `config`
(the model and run settings). Each samples line holds `doc_id`, `doc`, `target`, `arguments`
({"gen_args_i": {"arg_0": ..., "arg_1": ...}}, one per request), `resps` and `filtered_resps`
(strings; a log-likelihood answer is [log_prob, is_greedy]), `filter`, `metrics` (the metric
names, each also a key with the document's value) and sha256 `doc_hash`, `prompt_hash`,
`target_hash`. `export_lm_eval` writes that layout, so lm-eval's table printer and file-name
readers accept it.

Metric names are kept as llama-eval's (`acc` is the paper's headline accuracy of each task,
which for most multiple-choice tasks is lm-eval's "acc_norm" idea, normalised by characters);
the filter is "none". The prompts and raw answers come from replanning the run's requests from
run.json (the same data must be readable) and reading the answers from the run's request cache.

Reading an lm-eval results file (`load_lm_eval_run`) keeps each task's headline metric only,
under llama-eval's task and metric names, and labels the model "<name> [lm-eval]".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from . import reporting
from .errors import UserError
from .requests import GenerationRequest

FILTER = "none"
LM_EVAL_MARK = " [lm-eval]"

# lm-eval task names that differ from ours (lm-eval's "race" is the high-school part).
LM_EVAL_TASKS = {"social_iqa": "siqa", "race": "race_high", "hendrycks_math": "math", "minerva_math": "math",
                 "nq_open": "nq_open", "triviaqa": "triviaqa"}
# lm-eval metric names to look for, in order, for each of our headline metrics: its length-normalised
# accuracy is the paper's choice for multiple choice; its generation tasks report exact match.
LM_EVAL_METRICS = {"acc": ("acc_norm", "acc", "exact_match"), "exact_match": ("exact_match",),
                   "pass@1": ("pass@1", "pass_at_1")}
FILTER_PREFERENCE = ("none", "strict-match", "remove_whitespace")


# -- writing -----------------------------------------------------------------------------------

def export_lm_eval(run_dir: str | Path, out_dir: str | Path | None = None,
                   data_dir: str | Path | None = None) -> tuple[list[Path], dict[str, int]]:
    """Write the run in `run_dir` as lm-eval files under out_dir/<model>/ (default run_dir/lm-eval).

    data_dir overrides the run's --data-dir for replanning the prompts. Returns the files written
    and counts {"requests": all, "answered": found in the cache}.
    """
    run_dir = Path(run_dir)
    run = reporting.load_run(run_dir)
    if not run.info:
        raise UserError(f"{run_dir}: no run.json; give a run folder written by `llama-eval run`")
    if run.info.get("status") != "complete":
        raise UserError(f"{run_dir}: the run is not complete (status {run.info.get('status')!r}); "
                        "finish it by running the same command again, then export")
    date_id = _date_id(run.info["date"])
    model = run.summary["model"].iloc[0] if len(run.summary) else run.info["model"]["label"]
    folder = Path(out_dir or run_dir / "lm-eval") / _sanitize_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    names = lm_eval_names(run)
    results = results_json(run, names)
    samples, counts = samples_records(run, run_dir, names, data_dir)
    written = []
    for name, records in samples.items():
        path = folder / f"samples_{name}_{date_id}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
        written.append(path)
        results["task_hashes"][name] = _sha256("".join(r["doc_hash"] + r["prompt_hash"] + r["target_hash"]
                                                      for r in records))
    path = folder / f"results_{date_id}.json"
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return [path, *written], counts


def lm_eval_names(run: reporting.Run) -> dict[tuple[str, int], str]:
    """(task, shots) -> lm-eval task name: the task's name, with "_<k>shot" where it ran at several."""
    pairs = sorted({(r.task, int(r.shots)) for r in run.summary.itertuples()})
    several = {t for t, _ in pairs if sum(1 for u, _ in pairs if u == t) > 1}
    return {(t, k): f"{t}_{k}shot" if t in several else t for t, k in pairs}


def results_json(run: reporting.Run, names: dict[tuple[str, int], str]) -> dict[str, Any]:
    """The lm-eval results dict of a run; values are fractions as lm-eval writes them."""
    info, cfg = run.info, run.info["config"]
    out: dict[str, Any] = {k: {} for k in ("results", "group_subtasks", "configs", "versions", "n-shot",
                                           "higher_is_better", "n-samples", "task_hashes")}
    for (task, shots), name in names.items():
        rows = run.summary[(run.summary["task"] == task) & (run.summary["shots"] == shots)]
        for group, part in rows.groupby("group", sort=False):
            key = name if group == "" else f"{name}_{_sanitize_task(group)}"
            entry: dict[str, Any] = {"alias": key if group == "" else group, "name": key}
            for r in part.itertuples():
                entry[f"{r.metric},{FILTER}"] = r.value / 100
                entry[f"{r.metric}_stderr,{FILTER}"] = "N/A" if _nan(r.stderr) else r.stderr / 100
            n = int(part["n"].max())
            entry["sample_len"] = n
            out["results"][key] = entry
            out["n-shot"][key] = shots
            out["versions"][key] = f"llama-eval {info['version']}"
            out["higher_is_better"][key] = {m: True for m in part["metric"]}
            out["n-samples"][key] = {"original": n, "effective": n}
            out["configs"][key] = _task_config(task, key, shots, group)
            if group != "":
                out["group_subtasks"].setdefault(name, []).append(key)
    model = info["model"]
    out["config"] = {
        "model": "llama-eval", "model_args": cfg["model"], "model_num_parameters": model.get("n_params"),
        "model_dtype": str(model.get("dtype", "")).removeprefix("torch."), "model_sha": model.get("fingerprint"),
        "batch_size": None, "device": str(model.get("device", "")), "use_cache": None, "limit": cfg["limit"],
        "bootstrap_iters": 0, "gen_kwargs": None, "random_seed": cfg["seed"], "numpy_seed": cfg["seed"],
        "torch_seed": cfg["seed"], "fewshot_seed": cfg["seed"],
    }
    out.update(date=dt.datetime.fromisoformat(info["date"]).timestamp(), git_hash=None,
               model_source="llama-eval", model_name=model.get("label", cfg["model"]),
               model_name_sanitized=_sanitize_model(model.get("label", cfg["model"])),
               llama_eval={"run_id": info["run_id"], "config_hash": info["config_hash"], "version": info["version"],
                           "paper_model": model.get("paper_model")})
    return out


def _task_config(task: str, key: str, shots: int, group: str) -> dict[str, Any]:
    from .tasks import get_task
    from .tasks.base import MultipleChoiceTask

    try:
        t = get_task(task)
    except UserError:  # a task from an --include file that is not loaded now
        return {"task": key, "num_fewshot": shots, "metadata": {"llama_eval_task": task, "group": group}}
    path, name, split = t.hf_dataset
    return {"task": key, "dataset_path": path, "dataset_name": name, "test_split": split, "num_fewshot": shots,
            "output_type": "multiple_choice" if isinstance(t, MultipleChoiceTask) else "generate_until",
            "metadata": {"llama_eval_task": task, "group": group, "paper_name": t.paper_name,
                         "headline_metric": t.headline_metric}}


def samples_records(run: reporting.Run, run_dir: Path, names: dict[tuple[str, int], str],
                    data_dir: str | Path | None) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """lm-eval samples lines per lm-eval task name, from the replanned requests and the cache."""
    from .evaluator import plan, settings_of

    config = _run_config(run.info["config"], data_dir)
    settings = settings_of(config)
    try:
        runs = plan(config, settings)
    except UserError as e:
        raise UserError(f"cannot rebuild the prompts of {run_dir}: {e} (pass --data-dir with the data the run read)") from None
    cache = _open_cache(run, run_dir, config)
    out: dict[str, list[dict]] = {}
    counts = {"requests": 0, "answered": 0}
    try:
        for tr in runs:
            name = names.get((tr.task.name, tr.shots))
            rows = run.samples.get(tr.task.name)
            if name is None or rows is None:
                continue
            rows = rows[rows["shots"] == tr.shots].set_index("doc_id", drop=False)
            metrics = [c for c in rows.columns if c not in (*reporting.SAMPLE_COLUMNS, "extra")]
            answers = cache.get_many(dict.fromkeys(r for reqs in tr.requests for r in reqs)) if cache else {}
            records = []
            for i, (doc, reqs) in enumerate(zip(tr.docs, tr.requests)):
                doc_id = str(doc["id"])
                if doc_id not in rows.index:
                    raise UserError(f"{run_dir}: document {doc_id!r} of {tr.task.name} at {tr.shots} shots is not in "
                                    f"samples_{tr.task.name}.csv; the data differ from the run's (pass --data-dir)")
                row = rows.loc[doc_id]
                counts["requests"] += len(reqs)
                counts["answered"] += sum(r in answers for r in reqs)
                records.append(_sample(i, doc, reqs, answers, row, [m for m in metrics if not _nan(row[m])]))
            out[name] = records
    finally:
        if cache is not None:
            cache.close()
    return out, counts


def _sample(i: int, doc: dict, reqs: list, answers: dict, row, metrics: list[str]) -> dict[str, Any]:
    """One lm-eval samples line: document i's requests (arguments), the cached answers (resps) and its row."""
    arguments, resps, filtered = {}, [], []
    for j, req in enumerate(reqs):
        res = answers.get(req)
        if isinstance(req, GenerationRequest):
            kwargs = {"until": list(req.until), "max_gen_toks": req.max_new_tokens, "temperature": req.temperature,
                      "top_p": req.top_p, "do_sample": req.temperature > 0, "n": req.n, "seed": req.seed}
            arguments[f"gen_args_{j}"] = {"arg_0": req.prompt, "arg_1": kwargs}
            resps.append(list(res.completions) if res else [])
            filtered.append(str(row["prediction"]))
        else:
            arguments[f"gen_args_{j}"] = {"arg_0": req.context, "arg_1": req.continuation}
            pair = [str(res.logprob), str(res.is_greedy)] if res else []
            resps.append([pair] if res else [])
            filtered.append(pair)
    target = str(row["gold"])
    first = reqs[0].prompt if isinstance(reqs[0], GenerationRequest) else reqs[0].context
    rec = {"doc_id": i, "doc": doc, "target": target, "arguments": arguments, "resps": resps,
           "filtered_resps": filtered, "filter": FILTER, "metrics": metrics,
           "doc_hash": _sha256(json.dumps(doc, indent=2, ensure_ascii=False, default=str)),
           "prompt_hash": _sha256(first), "target_hash": _sha256(target)}
    rec.update({m: float(row[m]) for m in metrics})
    rec["llama_eval"] = {"doc_id": str(doc["id"]), "prediction": str(row["prediction"]),
                         "extra": json.loads(row["extra"] or "{}")}
    return rec


def _run_config(saved: dict[str, Any], data_dir: str | Path | None):
    from .config import RunConfig

    fields = {f.name for f in dataclasses.fields(RunConfig)}
    values = {k: _tuples(v) for k, v in saved.items() if k in fields}
    if data_dir is not None:
        values["data_dir"] = str(data_dir)
    return RunConfig(**values)


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _open_cache(run: reporting.Run, run_dir: Path, config):
    from .cache import ResultCache, cache_namespace

    path = Path(config.cache) if config.cache else run_dir / "cache.sqlite"
    if not path.is_file():
        return None
    model = run.info["model"]
    # The namespace the run wrote under: its own engine version, whatever this one is.
    return ResultCache(path, cache_namespace(model["fingerprint"], model["dtype"], run.info["engine_version"]))


# -- reading -----------------------------------------------------------------------------------

def load_lm_eval_run(path: str | Path) -> reporting.Run:
    """A Run from an lm-eval results JSON: each task's headline metric, in percent, summary only."""
    import pandas as pd

    from .tasks import TASKS, get_task
    from .tasks.base import MetricValue

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read it as JSON ({e}); give lm-eval's results_<date>.json") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise UserError(f"{path}: no 'results' object in it; give lm-eval's results_<date>.json")
    ours = "llama_eval" in data
    label = _model_name(data) + LM_EVAL_MARK
    subtasks = {s for subs in data.get("group_subtasks", {}).values() for s in subs}
    date = dt.datetime.fromtimestamp(float(data.get("date") or 0), dt.timezone.utc).isoformat(timespec="seconds")
    rows = []
    for name, entry in data["results"].items():
        if name in subtasks or not isinstance(entry, dict):
            continue  # headline metrics only: a benchmark's whole-task number, not its parts
        meta = data.get("configs", {}).get(name, {}).get("metadata", {}) if ours else {}
        task = meta.get("llama_eval_task") or LM_EVAL_TASKS.get(name, name)
        if task not in TASKS:
            continue
        t = get_task(task)
        found = _headline(entry, t.headline_metric, ours)
        if found is None:
            continue
        value, stderr = found
        shots = _shots(data, name)
        n = int(entry.get("sample_len") or data.get("n-samples", {}).get(name, {}).get("effective") or 0)
        rows += reporting.summary_rows(
            label, None, task, t.paper_name, shots, [MetricValue(t.headline_metric, value, stderr, n)],
            run_id=f"lm-eval:{path.stem}", config_hash="", date=date,
            version=f"lm-eval {data.get('lm_eval_version', '')}".strip())
    if not rows:
        raise UserError(f"{path}: none of its tasks ({', '.join(data['results'])}) is a llama-eval task "
                        f"with a headline metric in it")
    summary = pd.DataFrame(rows, columns=list(reporting.SUMMARY_COLUMNS))
    return reporting.Run(str(path), summary, {}, {"source": "lm-eval", "file": str(path)})


def _headline(entry: dict[str, Any], metric: str, ours: bool) -> tuple[float, float] | None:
    """(value, stderr) in percent of `metric` (or lm-eval's name for it) under the preferred filter."""
    candidates = (metric,) if ours else LM_EVAL_METRICS.get(metric, (metric,))
    for name in candidates:
        filters = [k.partition(",")[2] for k in entry if k.partition(",")[0] == name]
        for f in sorted(filters, key=lambda f: (FILTER_PREFERENCE.index(f) if f in FILTER_PREFERENCE else 99, f)):
            value = entry[f"{name},{f}"]
            if isinstance(value, (int, float)):
                se = entry.get(f"{name}_stderr,{f}")
                return 100 * float(value), 100 * float(se) if isinstance(se, (int, float)) else math.nan
    return None


def _shots(data: dict[str, Any], name: str) -> int:
    n_shot = data.get("n-shot", {})
    if name in n_shot:
        return int(n_shot[name])
    if name in data.get("configs", {}) and data["configs"][name].get("num_fewshot") is not None:
        return int(data["configs"][name]["num_fewshot"])
    for sub in data.get("group_subtasks", {}).get(name, []):  # a group: its subtasks' count, at any depth
        if sub != name and (k := _shots(data, sub)):
            return k
    return 0


def _model_name(data: dict[str, Any]) -> str:
    if data.get("model_name"):
        return str(data["model_name"])
    args = data.get("config", {}).get("model_args")
    if isinstance(args, dict) and args.get("pretrained"):
        return str(args["pretrained"])
    if isinstance(args, str) and (m := re.search(r"pretrained=([^,]+)", args)):
        return m.group(1)
    return str(data.get("config", {}).get("model") or "model")


# -- names and hashes, as lm-eval forms them ---------------------------------------------------

def _sanitize_model(name: str) -> str:
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def _sanitize_task(name: str) -> str:
    return re.sub(r"\W", "_", name).lower()


def _date_id(iso: str) -> str:
    """lm-eval's file date: ISO time, ':' -> '-' (no '_', which its readers split on)."""
    return dt.datetime.fromisoformat(iso).replace(tzinfo=None).isoformat().replace(":", "-")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)
