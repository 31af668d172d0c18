"""tasks -> requests -> engine -> per-document scores -> metrics -> result files.

`evaluate(RunConfig)` is the one function behind `llama-eval run`. It builds the requests of
every requested task first, then answers what the request cache does not already hold in two
engine passes: all log-likelihood requests of all tasks together (so prefixes shared across
tasks are run once), then all generation requests. Every answer goes to the cache as it
comes, and each (task, shots) is scored and written to the run folder as soon as all its
requests are answered, so the multiple-choice tasks are on disk before generation starts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__, parallel, reporting, tables, tasks as registry, transcripts
from .config import RunConfig, results_fields
from .engine import ENGINE_VERSION
from .engine.runner import Engine
from .engine.window import TokenCounts, WindowFit
from .errors import UserError
from .model.presets import PAPER_MODELS
from .progress import Reporter, Workload, estimate, model_line, resolve_model, summarise
from .requests import GenerationRequest, LoglikelihoodRequest, LoglikelihoodResult, Request, Result
from .tasks.base import Doc, DocScore, MetricValue, Settings, Task
from .tasks.data import DataSource
from .tasks.options import check_given, parse_assignments


@dataclass
class TaskRun:
    """One (task, shot count): its documents and each document's requests."""

    task: Task
    shots: int
    docs: list[Doc]
    requests: list[list[Request]]
    shots_used: list[int]  # per document: fewer than `shots` where a task dropped some to fit the window
    source: DataSource  # where the documents came from (documents = the count before --limit)
    shot_docs: list[list[Doc]] = field(default_factory=list)  # per document: the shots in its prompt
    scores: list[DocScore] = field(default_factory=list)
    metrics: list[MetricValue] = field(default_factory=list)


@dataclass
class RunOutcome:
    run_dir: Path
    runs: list[TaskRun]
    summary: list[dict[str, Any]]
    stats: dict[str, Any]


def settings_of(config: RunConfig) -> Settings:
    """What the tasks may read of `config` (option names and values are checked in `plan`)."""
    options = tuple(parse_assignments(config.options).items())
    return Settings(config.seed, config.samples, config.temperature, options, config.allow_code_execution,
                    config.allow_unsandboxed, fits=None)


def check_tasks(config: RunConfig, settings: Settings) -> tuple[list[Task], dict[str, tuple[int, ...]]]:
    """The selected tasks (and per-task shot counts), after the checks that need no data: task
    names, --include files, --data-dir, --task-shots, options, code execution. Cheap, so
    a mistyped flag is refused before anything is announced or read."""
    for path in config.include:
        registry.include(path, override=config.include_override)
    if config.data_dir and not Path(config.data_dir).is_dir():
        raise UserError(f"--data-dir {config.data_dir} is not a folder; give the folder holding the release files "
                        "(e.g. ../shared/data)")
    names = [registry.canonical_name(n) for n in config.tasks]  # letter case ignored
    folded = {n.casefold(): n for n in names}
    per_task = {folded.get(n.casefold(), n): k for n, k in config.task_shots}
    if unknown := set(per_task) - set(names):
        raise UserError(f"--task-shots names {', '.join(sorted(unknown))}, which --tasks does not include")
    tasks = [registry.get_task(name) for name in names]
    check_given(dict(settings.options), tasks, registry.all_option_names)
    for task in tasks:
        if task.needs_code_execution and not config.allow_code_execution:
            raise UserError(f"task {task.name} runs model-written code to grade it; pass --allow-code-execution "
                            "to allow that (it runs in a sandbox, see execution/__init__.py), or leave the task out")
    if config.allow_code_execution and any(task.needs_code_execution for task in tasks):
        from . import execution  # say how the model's code will be confined, or refuse (one line)

        print(execution.require_isolation(config.allow_unsandboxed).describe(), file=sys.stderr)
    return tasks, per_task


def plan(config: RunConfig, settings: Settings, window: int | None = None) -> list[TaskRun]:
    """Load every task's documents and build its requests; nothing runs the model yet.

    window: the model's, when known; generation limits are fitted to it (`fit_generation`).
    A task's own UserError is re-raised with the task's name in front.
    """
    tasks, per_task = check_tasks(config, settings)
    data_dir = Path(config.data_dir) if config.data_dir else None
    runs = []
    for task in tasks:
        name = task.name
        try:
            docs = task.load(data_dir)
            source = dataclasses.replace(task.source(data_dir), documents=len(docs))
            if config.limit is not None:
                docs = limit_documents(docs, config.limit, task.limit_group)
            pool: list[Doc] | None = None
            for k in per_task.get(name) or (config.shots if config.shots is not None else task.paper_shots):
                if k and pool is None:
                    pool = task.load_shots(data_dir)
                chosen = [task.select_shots(doc, pool or [], k, settings) for doc in docs]
                reqs = [task.requests(doc, shots, settings) for doc, shots in zip(docs, chosen)]
                reqs = fit_generation(task.name, reqs, config.max_new_tokens, window)
                runs.append(TaskRun(task, k, docs, reqs, [len(shots) for shots in chosen], source, chosen))
        except UserError as e:
            if str(e).startswith((name, f"task {name}")):
                raise
            raise UserError(f"task {name}: {e}") from e
    return runs


def fit_to_window(runs: list[TaskRun], settings: Settings, max_new_tokens: int | None, window: int) -> None:
    """Where a document's requests do not fit the model's window (settings.fits), let its task
    drop whole shots (Task.fit_shots) and rebuild its requests (generation limits fitted as in
    `plan`); shots_used records what is left."""
    assert settings.fits is not None
    for run in runs:
        for i, (doc, shots) in enumerate(zip(run.docs, run.shot_docs)):
            if not shots or all(settings.fits(r) for r in run.requests[i]):
                continue
            kept = run.task.fit_shots(doc, shots, settings)
            run.shot_docs[i], run.shots_used[i] = kept, len(kept)
            rebuilt = run.task.requests(doc, kept, settings)
            run.requests[i] = fit_generation(run.task.name, [rebuilt], max_new_tokens, window, warn=False)[0]


def limit_documents(docs: list[Doc], limit: int, group: str) -> list[Doc]:
    """The first `limit` documents, or the first `limit` of each value of the field `group`
    (MMLU's subjects), so a partial run still covers every group."""
    if limit < 1:
        raise UserError(f"--limit {limit}: must be at least 1 (leave it out to run every document)")
    if not group:
        return docs[:limit]
    seen: dict[Any, int] = {}
    out = []
    for doc in docs:
        key = doc.get(group)
        if seen.get(key, 0) < limit:
            seen[key] = seen.get(key, 0) + 1
            out.append(doc)
    return out


def fit_generation(task: str, reqs: list[list[Request]], max_new_tokens: int | None,
                   window: int | None, warn: bool = True) -> list[list[Request]]:
    """Generation requests with `max_new_tokens` (--max-new-tokens) or, without it, the task's
    own limit clamped to half the window (so half is left for the prompt), with a warning."""
    if max_new_tokens is not None and (max_new_tokens < 1 or (window is not None and max_new_tokens >= window)):
        raise UserError(f"--max-new-tokens {max_new_tokens}: must be at least 1 and below the model's "
                        f"window{f' ({window})' if window else ''}")
    if max_new_tokens is None and window is None:
        return reqs
    out, clamped = [], set()
    for doc_reqs in reqs:
        fitted = []
        for r in doc_reqs:
            if isinstance(r, GenerationRequest):
                limit = max_new_tokens if max_new_tokens is not None else min(r.max_new_tokens, window // 2)
                if limit != r.max_new_tokens:
                    if max_new_tokens is None:
                        clamped.add(r.max_new_tokens)
                    r = dataclasses.replace(r, max_new_tokens=limit)
            fitted.append(r)
        out.append(fitted)
    if clamped and warn:
        warnings.warn(f"{task}: max new tokens {', '.join(map(str, sorted(clamped)))} clamped to {window // 2} "
                      f"to fit the model's {window}-token window with room for the prompt "
                      "(--max-new-tokens N sets it)")
    return out


def protocol_differences(config: RunConfig, runs: list[TaskRun]) -> list[str]:
    """The settings of this run that the paper's protocol does not have, in words."""
    out = []
    if config.limit is not None:
        grouped = sorted({r.task.limit_group for r in runs if r.task.limit_group})
        out.append(f"--limit {config.limit}" + (f" (per {', '.join(grouped)} where a task has them)" if grouped else ""))
    for task in dict.fromkeys(r.task for r in runs):
        shots = tuple(r.shots for r in runs if r.task is task)
        if shots != task.paper_shots:
            out.append(f"{task.name} at {','.join(map(str, shots))} shots (paper: {','.join(map(str, task.paper_shots))})")
    out += [f"--samples {config.samples}"] if config.samples is not None else []
    out += [f"--temperature {config.temperature}"] if config.temperature is not None else []
    out += [f"--max-new-tokens {config.max_new_tokens}"] if config.max_new_tokens is not None else []
    declared = {name: option for r in runs for name, option in r.task.options.items()}
    for name, value in parse_assignments(config.options).items():
        if name in declared and value != declared[name].default:
            out.append(f"--option {name}={value} (default {declared[name].default})")
    return out


def answer(requests: Sequence[Request], engine: Engine, cache=None, reporter: Reporter | None = None,
           dist: parallel.Dist | None = None, work: Workload | None = None) -> dict[Request, Result]:
    """Results for the distinct `requests`: from the cache where present, else from the engine.

    Under torchrun every rank calls this with the same requests; rank 0 alone holds the cache,
    tells the others what is left, and receives every result (the others get {}). `reporter`
    shows the progress of each phase, weighted by `work`'s token estimates.
    """
    reporter = reporter or Reporter(quiet=True)
    unique = list(dict.fromkeys(requests))
    done: dict[Request, Result] = cache.get_many(unique) if cache is not None else {}
    cached = [r in done for r in unique]
    if dist is not None:
        cached = parallel.broadcast_object(cached, dist)
    if any(cached):
        reporter.say(f"cache: {sum(cached):,} of {len(unique):,} requests already answered")
    todo_ll = [r for r, c in zip(unique, cached) if not c and isinstance(r, LoglikelihoodRequest)]
    todo_gen = [r for r, c in zip(unique, cached) if not c and isinstance(r, GenerationRequest)]
    for phase, todo, run in (("scoring", todo_ll, engine.iter_loglikelihood),
                             ("generating", todo_gen, engine.iter_generate)):
        if not todo:
            continue
        results = run(todo) if dist is None else parallel.iter_data_parallel(todo, run, engine.tokenizer, dist)
        for i, res in reporter.track(phase, results, todo, work or Workload()):
            if isinstance(res, LoglikelihoodResult) and not math.isfinite(res.logprob):
                raise UserError(f"the model scored {res.logprob} for the continuation {todo[i].continuation[:60]!r} "
                                f"after {todo[i].context[-60:]!r}: its weights or dtype give non-finite numbers "
                                "(try --dtype float32, or check the checkpoint)")
            done[todo[i]] = res
            if cache is not None:
                cache.put(todo[i], res)
        if cache is not None:
            cache.flush()
    return done


def score(run: TaskRun, results: dict[Request, Result], settings: Settings) -> None:
    """Grade each document of `run` from its requests' results, then aggregate."""
    answered = [[results[r] for r in reqs] for reqs in run.requests]
    run.scores = [run.task.score(doc, res, settings) for doc, res in zip(run.docs, answered)]
    for s, res, used in zip(run.scores, answered, run.shots_used):
        if used < run.shots:
            s.extra["shots_dropped"] = run.shots - used
        if cut := sum(r.truncated for r in res):
            s.extra["truncated_requests"] = cut  # cut from the left to fit the model's window
    run.metrics = run.task.aggregate(run.scores)


def model_label(spec: str) -> str:
    return spec if "/" not in spec and not spec.endswith(".bin") else Path(spec.rstrip("/")).name or "model"


APPENDABLE = ("tasks", "task_shots", "shots", "include")  # what --append may change in a run folder


def config_hash(config: RunConfig, fingerprint: str, base: bool = False) -> str:
    """Hash of everything that decides the numbers: the config fields declared to change results,
    the weights' fingerprint and the engine version (not output paths or progress bars).
    `base`: leave out which tasks and shots run (what --append may add to a folder)."""
    relevant = {k: getattr(config, k) for k in results_fields() if not (base and k in APPENDABLE)}
    relevant.update(fingerprint=fingerprint, engine_version=ENGINE_VERSION)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:12]


def docs_fingerprint(docs: list[Doc]) -> str:
    return hashlib.sha256(json.dumps(docs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def evaluate(config: RunConfig, load: Callable | None = None) -> RunOutcome | None:
    """Run `config` end to end and write the run folder; see the module docstring.

    Under torchrun every rank calls this; rank 0 writes the files and returns the outcome,
    the other ranks return None.
    """
    dist = parallel.init_from_env(config.tp, config.device, config.dist_timeout)
    try:
        with parallel.report_failure(dist):
            return _evaluate(config, dist, load)
    finally:
        parallel.shutdown(dist)


def _same_tokenizer(a, b) -> bool:
    """Whether two tokenizer objects read the same file as the same kind (so their counts agree)."""
    path = getattr(a, "path", None)
    return type(a) is type(b) and path is not None and path == getattr(b, "path", None)


def _evaluate(config: RunConfig, dist: parallel.Dist | None, load: Callable | None) -> RunOutcome | None:
    from .model.checkpoint import load_checkpoint

    main_rank = dist is None or dist.is_main
    reporter = Reporter(bar=config.progress, quiet=not main_rank)
    settings = settings_of(config)
    if config.show_prompts is not None:
        # Without the model (nor its window): every shot asked for is shown.
        if main_rank:
            print(transcripts.show_prompts(plan(config, settings), config.show_prompts))
        return None
    facts = None
    if load is None:  # the model's config and tokenizer only: a wrong name fails before any data is read
        facts = resolve_model(config.model, config.tokenizer, dist.device if dist else config.device, config.dtype,
                              config.max_len)
    tasks, _ = check_tasks(config, settings)
    if facts is not None:
        reporter.say(model_line(facts))
    reporter.say(f"planning: reading the documents of {', '.join(t.name for t in tasks)} and building their requests")
    runs = plan(config, settings, facts.window if facts else None)
    work, counts = Workload(), None
    if facts is not None and main_rank:
        counts = TokenCounts(facts.tokenizer)
        work = estimate(runs, facts.tokenizer, facts.window, reporter, counts)
        for line in summarise(runs, work, protocol_differences(config, runs)):
            reporter.say(line)
    kw = dict(device=dist.device if dist else config.device, dtype=config.dtype, tokenizer=config.tokenizer,
              max_seq_len=config.max_len)
    ahead = None
    if facts is not None and dist is None:  # tokenise for the scorer while the weights load
        from .engine.scoring import EncodedAhead

        scoring = [r for run in runs for reqs in run.requests for r in reqs if isinstance(r, LoglikelihoodRequest)]
        ahead = EncodedAhead(facts.tokenizer.path, scoring, facts.window) if scoring else None
    started_loading = time.monotonic()
    if dist is not None and dist.tp > 1:
        loaded = parallel.load_tensor_parallel(config.model, dist, **kw)
    else:
        loaded = (load or load_checkpoint)(config.model, **kw)
    reporter.say(f"weights loaded in {time.monotonic() - started_loading:.1f} s")
    # Only now is the window known: documents whose prompts are too long drop whole shots.
    window = loaded.model.args.max_seq_len
    if counts is None or not _same_tokenizer(counts.tokenizer, loaded.tokenizer):
        counts = TokenCounts(loaded.tokenizer)
    fits = WindowFit(loaded.tokenizer, window, counts)
    fits.prime(r for run in runs for reqs in run.requests for r in reqs)
    settings = dataclasses.replace(settings, fits=fits)
    fit_to_window(runs, settings, config.max_new_tokens, window)
    if ahead is not None and (ahead.window != window or not _same_tokenizer(facts.tokenizer, loaded.tokenizer)):
        ahead = None
    engine = Engine(loaded.model, loaded.tokenizer, config, tp=dist.tp if dist else 1, ahead=ahead)
    requests = [r for run in runs for reqs in run.requests for r in reqs]
    # Scoring first, then generation: tasks that only score are written before generation starts.
    phases = [[r for r in requests if isinstance(r, kind)] for kind in (LoglikelihoodRequest, GenerationRequest)]
    if not main_rank:
        for phase in phases:
            answer(phase, engine, None, reporter, dist)
        parallel.gather_to_main(engine.stats(), dist)  # rank 0 reports the work of every copy
        return None

    info = loaded.info
    chash = config_hash(config, info.fingerprint)
    label = model_label(config.model)
    run_dir = Path(config.output) if config.output else Path("runs") / f"{label}-{info.fingerprint[:8]}"
    previous = claim_run_dir(run_dir, config, info.fingerprint, chash)
    cache = None
    if config.use_cache:  # opened before run.json is touched: a damaged cache leaves the folder as it was
        from .cache import ResultCache, cache_namespace

        cache = ResultCache(config.cache or run_dir / "cache.sqlite", cache_namespace(info.fingerprint, info.dtype, ENGINE_VERSION))
    date = previous["date"] if previous and previous.get("config_hash") == chash else _now()
    writer = ResultWriter(run_dir, label, config.paper_model or PAPER_MODELS.get(config.model),
                          f"{label}-{chash}", chash, date)
    meta = {"run_id": writer.run_id, "version": __version__, "engine_version": ENGINE_VERSION,
            "date": writer.date, "config_hash": chash, "base_hash": config_hash(config, info.fingerprint, base=True),
            "status": "running", "config": dataclasses.asdict(config),
            "model": {**_jsonable(dataclasses.asdict(info)), "label": writer.model, "paper_model": writer.paper_model},
            "datasets": {**(previous or {}).get("datasets", {}), **_datasets(runs, config)}}
    _write_json(run_dir / "run.json", meta)
    started = time.monotonic()
    results: dict[Request, Result] = {}
    try:
        for phase in phases:
            results.update(answer(phase, engine, cache, reporter, dist, work))
            writer.write_finished(runs, results, settings)
    except BaseException as error:  # recorded, then raised as it was: the run folder says it failed
        meta.update(status="failed", error=f"{type(error).__name__}: {error}"[:2000])
        _write_json(run_dir / "run.json", meta)
        raise
    finally:
        if cache is not None:
            cache.close()
    counts = engine.stats() if dist is None else _sum_counts(parallel.gather_to_main(engine.stats(), dist))
    stats = {"seconds": round(time.monotonic() - started, 2), **counts,
             "elementwise_compiled": engine.model.elementwise_compiled,  # --compile as resolved for the device
             "cache": {"reused": cache.hits, "computed": cache.stored} if cache else None,
             "processes": dist.world_size if dist else 1}
    if cut := sum((counts.get(phase) or {}).get("truncated", 0) for phase in ("scoring", "generation")):
        # Tasks drop whole shots first (fit_to_window); what is left is longer than the window alone.
        warnings.warn(f"{cut} requests did not fit the model's window even without shots and were cut from the "
                      "left (run.json stats; truncated_requests in the samples files)", stacklevel=2)
    meta.update(status="complete", stats=stats)
    meta["datasets"].update(_datasets(runs, config))  # now with what the window did to each task
    meta["caveats"] = tables.caveats(meta)
    _write_json(run_dir / "run.json", meta)
    return RunOutcome(run_dir, runs, writer.rows, stats)


def _datasets(runs: list[TaskRun], config: RunConfig) -> dict[str, Any]:
    """run.json's record of each (task, shots): its data, what was run, and (once scored) what
    the window did to it."""
    return {f"{r.task.name}@{r.shots}": {
        "documents": len(r.docs), "documents_available": r.source.documents, "limit": config.limit,
        "limit_group": r.task.limit_group if config.limit is not None else "",
        "fingerprint": docs_fingerprint(r.docs), "source": dataclasses.asdict(r.source),
        "headline_metric": r.task.headline_metric, "requests": sum(len(reqs) for reqs in r.requests),
        "truncated_requests": sum(s.extra.get("truncated_requests", 0) for s in r.scores),
        "shots_dropped_documents": sum(used < r.shots for used in r.shots_used),
        "shots_used": dict(sorted(Counter(r.shots_used).items()))} for r in runs}


RESULT_FILES = ("run.json", "summary.csv", "samples_*.csv", "samples_*.jsonl")


def claim_run_dir(run_dir: Path, config: RunConfig, fingerprint: str, chash: str) -> dict[str, Any] | None:
    """Make `run_dir` this run's folder and return the run.json found there (None if none).

    The same config resumes. Another model or config is refused unless --overwrite (its result
    files are removed) or --append (same weights and config but other tasks: results are added).
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--output {run_dir} is a file; give a folder for the run's results") from None
    path = run_dir / "run.json"
    try:
        previous = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    except (OSError, ValueError) as e:
        previous = {"unreadable": str(e)}
    if previous is None or previous.get("config_hash") == chash:
        return previous
    if config.overwrite:
        for pattern in RESULT_FILES:
            for file in run_dir.glob(pattern):
                file.unlink()
        return None
    same_weights = previous.get("model", {}).get("fingerprint") == fingerprint
    if config.append and same_weights and previous.get("base_hash") == config_hash(config, fingerprint, base=True):
        return previous
    what = ("is not readable" if "unreadable" in previous else
            f"holds a run of {previous.get('model', {}).get('label', '?')} "
            f"({'the same weights' if same_weights else 'other weights'}) with another config")
    why = " (--append needs the same weights and settings, other tasks)" if config.append else ""
    raise UserError(f"{run_dir}/run.json {what}{why}; pass --overwrite to replace its results, --append to add "
                    "tasks of the same model and config, or --output another folder")


@dataclass
class ResultWriter:
    """Writes each (task, shots) to the run folder as soon as all its requests are answered."""

    run_dir: Path
    model: str
    paper_model: str | None
    run_id: str
    config_hash: str
    date: str  # when the run first started (kept on resume, so the files come out the same)
    rows: list[dict[str, Any]] = field(default_factory=list)  # summary rows written so far
    written: set[int] = field(default_factory=set)  # indices of the runs already written

    def write_finished(self, runs: list[TaskRun], results: dict[Request, Result], settings: Settings) -> None:
        for i, run in enumerate(runs):
            if i in self.written or not all(r in results for reqs in run.requests for r in reqs):
                continue
            score(run, results, settings)
            reporting.write_samples(self.run_dir, run.task.name, run.shots, run.scores, run.task.headline_metric)
            transcripts.write_prompts(self.run_dir, run.task, run.shots, run.docs, run.requests, results, run.scores,
                                      run.shots_used)
            self.rows += reporting.summary_rows(
                self.model, self.paper_model, run.task.name, run.task.paper_name, run.shots, run.metrics,
                run_id=self.run_id, config_hash=self.config_hash, date=self.date, version=__version__,
            )
            self.written.add(i)
        reporting.write_summary(self.run_dir, self.rows)


def _sum_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Engine counters of several data-parallel copies added up (None where no copy had any)."""
    out: dict[str, Any] = {}
    for part in parts:
        for phase, counters in part.items():
            if counters is None:
                out.setdefault(phase, None)
                continue
            mine = out[phase] = out.get(phase) or dict.fromkeys(counters, 0)
            for key, value in counters.items():
                mine[key] += value
    return out


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))
