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
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import __version__, parallel, reporting, tasks as registry, transcripts
from .config import RunConfig, results_fields
from .engine import ENGINE_VERSION
from .engine.window import WindowFit
from .errors import UserError
from .requests import GenerationRequest, LoglikelihoodRequest, Request, Result
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
    return Settings(config.seed, config.samples, config.temperature, options, config.allow_code_execution, fits=None)


def plan(config: RunConfig, settings: Settings) -> list[TaskRun]:
    """Load every task's documents and build its requests; nothing runs the model yet."""
    for path in config.include:
        registry.include(path)
    data_dir = Path(config.data_dir) if config.data_dir else None
    if data_dir is not None and not data_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} is not a folder; give the folder holding the release files (e.g. ../shared/data)")
    runs = []
    per_task = dict(config.task_shots)
    if unknown := set(per_task) - set(config.tasks):
        raise UserError(f"--task-shots names {', '.join(sorted(unknown))}, which --tasks does not include")
    tasks = [registry.get_task(name) for name in config.tasks]
    check_given(dict(settings.options), tasks, registry.all_option_names)
    for name, task in zip(config.tasks, tasks):
        if task.needs_code_execution and not config.allow_code_execution:
            raise UserError(f"task {name} runs model-written code to grade it; pass --allow-code-execution "
                            "to allow that (it runs in a sandbox, see execution.py), or leave the task out")
        docs = task.load(data_dir)
        source = dataclasses.replace(task.source(data_dir), documents=len(docs))
        if config.limit is not None:
            docs = docs[: config.limit]
        pool: list[Doc] | None = None
        for k in per_task.get(name) or (config.shots if config.shots is not None else task.paper_shots):
            if k and pool is None:
                pool = task.load_shots(data_dir)
            chosen = [task.select_shots(doc, pool or [], k, settings) for doc in docs]
            reqs = [task.requests(doc, shots, settings) for doc, shots in zip(docs, chosen)]
            runs.append(TaskRun(task, k, docs, reqs, [len(shots) for shots in chosen], source, chosen))
    return runs


def fit_to_window(runs: list[TaskRun], settings: Settings) -> None:
    """Where a document's requests do not fit the model's window (settings.fits), let its task
    drop whole shots (Task.fit_shots) and rebuild its requests; shots_used records what is left."""
    assert settings.fits is not None
    for run in runs:
        for i, (doc, shots) in enumerate(zip(run.docs, run.shot_docs)):
            if not shots or all(settings.fits(r) for r in run.requests[i]):
                continue
            kept = run.task.fit_shots(doc, shots, settings)
            run.shot_docs[i], run.shots_used[i] = kept, len(kept)
            run.requests[i] = run.task.requests(doc, kept, settings)


def answer(requests: Sequence[Request], engine: "Engine", cache=None, progress: bool = True,
           dist: parallel.Dist | None = None) -> dict[Request, Result]:
    """Results for the distinct `requests`: from the cache where present, else from the engine.

    Under torchrun every rank calls this with the same requests; rank 0 alone holds the cache,
    tells the others what is left, and receives every result (the others get {}).
    """
    unique = list(dict.fromkeys(requests))
    done: dict[Request, Result] = cache.get_many(unique) if cache is not None else {}
    cached = [r in done for r in unique]
    if dist is not None:
        cached = parallel.broadcast_object(cached, dist)
    todo_ll = [r for r, c in zip(unique, cached) if not c and isinstance(r, LoglikelihoodRequest)]
    todo_gen = [r for r, c in zip(unique, cached) if not c and isinstance(r, GenerationRequest)]
    for phase, todo, run in (("scoring", todo_ll, engine.iter_loglikelihood),
                             ("generating", todo_gen, engine.iter_generate)):
        if not todo:
            continue
        results = run(todo) if dist is None else parallel.iter_data_parallel(todo, run, engine.tokenizer, dist)
        for i, res in _progress(results, len(todo), phase, engine, progress):
            done[todo[i]] = res
            if cache is not None:
                cache.put(todo[i], res)
        if cache is not None:
            cache.flush()
    return done


def _progress(results: Iterator, total: int, phase: str, engine: "Engine", enabled: bool) -> Iterator:
    from tqdm import tqdm

    start, tokens_before = time.monotonic(), engine.tokens()
    with tqdm(total=total, desc=phase, unit="req", disable=not enabled, dynamic_ncols=True) as bar:
        for n, item in enumerate(results, 1):
            bar.update()
            if n % 64 == 0 or n == total:
                rate = (engine.tokens() - tokens_before) / max(time.monotonic() - start, 1e-9)
                bar.set_postfix_str(f"{rate:.0f} tok/s")
            yield item


class Engine:
    """The scorer and the generator over one loaded model.

    The generator's KV cache (max_batch rows of the whole window) is allocated only when a run
    has generation requests, so scoring-only runs keep that memory for the scorer.
    """

    def __init__(self, model, tokenizer, config: RunConfig, tp: int = 1):
        from .engine.scoring import Scorer

        self.model, self.tokenizer, self.config, self.tp = model, tokenizer, config, tp
        # A vocabulary-parallel output scores tokens without gathering whole logit rows.
        self.scorer = Scorer(model, tokenizer, config.batch_tokens, config.share_prefixes,
                             token_logprobs=parallel.vocab_parallel_logprobs if tp > 1 else None)
        self.generator = None

    def iter_loglikelihood(self, requests):
        return self.scorer.iter_loglikelihood(requests)

    def iter_generate(self, requests):
        if self.generator is None:
            from .engine.generation import Generator

            # CUDA graphs are left out under tensor parallelism: collectives inside a captured
            # graph have not been checked on several GPUs.
            self.generator = Generator(self.model, self.tokenizer, max_batch=self.config.max_batch,
                                       use_cuda_graphs=False if self.tp > 1 else None)
        return self.generator.iter_generate(requests)

    def tokens(self) -> int:
        """Tokens run through the model so far (scoring + generation), for throughput."""
        g = self.generator.stats if self.generator else None
        return self.scorer.stats.tokens_run + (g.prompt_tokens + g.generated_tokens if g else 0)

    def stats(self) -> dict[str, Any]:
        return {"scoring": dataclasses.asdict(self.scorer.stats),
                "generation": dataclasses.asdict(self.generator.stats) if self.generator else None}


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


def cache_namespace(fingerprint: str, dtype: str) -> str:
    """The request cache's namespace: results are reused only for the same weights and tokenizer,
    compute dtype and engine behaviour."""
    return f"{fingerprint}:{dtype}:engine{ENGINE_VERSION}"


def model_label(spec: str) -> str:
    return spec if "/" not in spec and not spec.endswith(".bin") else Path(spec.rstrip("/")).name or "model"


def config_hash(config: RunConfig, fingerprint: str) -> str:
    """Hash of everything that decides the numbers: the config fields declared to change results,
    the weights' fingerprint and the engine version (not output paths or progress bars)."""
    relevant = {k: getattr(config, k) for k in results_fields()}
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


def _evaluate(config: RunConfig, dist: parallel.Dist | None, load: Callable | None) -> RunOutcome | None:
    from .model.checkpoint import RANDOM_PREFIX, load_checkpoint, resolve_spec

    settings = settings_of(config)
    if config.show_prompts is not None:
        # Before the model (and its window) is known: every shot asked for is shown.
        if dist is None or dist.is_main:
            print(transcripts.show_prompts(plan(config, settings), config.show_prompts))
        return None
    if load is None and not config.model.startswith(RANDOM_PREFIX):
        resolve_spec(config.model)  # a wrong model name fails before any data is read
    runs = plan(config, settings)
    kw = dict(device=dist.device if dist else config.device, dtype=config.dtype, tokenizer=config.tokenizer)
    if dist is not None and dist.tp > 1:
        loaded = parallel.load_tensor_parallel(config.model, dist, **kw)
    else:
        loaded = (load or load_checkpoint)(config.model, **kw)
    # Only now is the window known: documents whose prompts are too long drop whole shots.
    settings = dataclasses.replace(settings, fits=WindowFit(loaded.tokenizer, loaded.model.args.max_seq_len))
    fit_to_window(runs, settings)
    engine = Engine(loaded.model, loaded.tokenizer, config, tp=dist.tp if dist else 1)
    requests = [r for run in runs for reqs in run.requests for r in reqs]
    # Scoring first, then generation: tasks that only score are written before generation starts.
    phases = [[r for r in requests if isinstance(r, kind)] for kind in (LoglikelihoodRequest, GenerationRequest)]
    if dist is not None and not dist.is_main:
        for phase in phases:
            answer(phase, engine, None, False, dist)
        parallel.gather_to_main(engine.stats(), dist)  # rank 0 reports the work of every copy
        return None

    info = loaded.info
    chash = config_hash(config, info.fingerprint)
    run_dir = Path(config.output or Path("runs") / model_label(config.model))
    run_dir.mkdir(parents=True, exist_ok=True)
    writer = ResultWriter(run_dir, model_label(config.model), config.paper_model or reporting.PAPER_MODELS.get(config.model),
                          f"{model_label(config.model)}-{chash}", chash, _start_date(run_dir, chash))
    meta = {"run_id": writer.run_id, "version": __version__, "engine_version": ENGINE_VERSION,
            "date": writer.date, "config_hash": chash,
            "status": "running", "config": dataclasses.asdict(config),
            "model": {**_jsonable(dataclasses.asdict(info)), "label": writer.model, "paper_model": writer.paper_model}}
    _write_json(run_dir / "run.json", meta)
    cache = None
    if config.use_cache:
        from .cache import ResultCache

        cache = ResultCache(config.cache or run_dir / "cache.sqlite", cache_namespace(info.fingerprint, info.dtype))
    started = time.monotonic()
    results: dict[Request, Result] = {}
    try:
        for phase in phases:
            results.update(answer(phase, engine, cache, config.progress, dist))
            writer.write_finished(runs, results, settings)
    finally:
        if cache is not None:
            cache.close()
    counts = engine.stats() if dist is None else _sum_counts(parallel.gather_to_main(engine.stats(), dist))
    stats = {"seconds": round(time.monotonic() - started, 2), **counts,
             "cache": {"reused": cache.hits, "computed": cache.stored} if cache else None,
             "processes": dist.world_size if dist else 1}
    if cut := sum((counts.get(phase) or {}).get("truncated", 0) for phase in ("scoring", "generation")):
        # Tasks drop whole shots first (fit_to_window); what is left is longer than the window alone.
        warnings.warn(f"{cut} requests did not fit the model's window even without shots and were cut from the "
                      "left (run.json stats; truncated_requests in the samples files)", stacklevel=2)
    meta.update(status="complete", stats=stats, datasets={
        f"{r.task.name}@{r.shots}": {"documents": len(r.docs), "fingerprint": docs_fingerprint(r.docs),
                                     "documents_with_fewer_shots": sum(used < r.shots for used in r.shots_used),
                                     "shots_used": dict(sorted(Counter(r.shots_used).items())),
                                     "source": dataclasses.asdict(r.source)} for r in runs})
    _write_json(run_dir / "run.json", meta)
    return RunOutcome(run_dir, runs, writer.rows, stats)


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


def _start_date(run_dir: Path, chash: str) -> str:
    """When this run first started: a resumed run keeps the date, so its files come out the same."""
    try:
        previous = json.loads((run_dir / "run.json").read_text())
        if previous.get("config_hash") == chash:
            return previous["date"]
    except (OSError, ValueError, KeyError):
        pass
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))
