"""What a run says while it runs: the start-of-run summary and the progress of each phase.

Before any weights are read, `resolve_model` reads the checkpoint's config and tokenizer only,
and `summarise` prints the resolved model, then per task the shots, documents, requests and
tokens to run, how many prompts will be cut to fit the window, what sampling will cost, and
which settings differ from the paper's protocol. Token counts are estimates: context and
continuation are encoded apart (the engine encodes them together, which can merge one token
at the boundary).

`Reporter.track` wraps a phase's stream of results: a progress bar when stderr is a terminal,
otherwise (or with --no-progress) a plain line every LOG_INTERVAL seconds, for batch
schedulers and log files. Its unit is tokens, not requests, and its rate is the average since
the first result, so the ETA neither sits on the slow first batches nor swings with them.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence, TextIO

from .errors import UserError
from .requests import GenerationRequest, LoglikelihoodRequest, Request

if TYPE_CHECKING:
    from .engine.window import TokenCounts

LOG_INTERVAL = 30.0  # seconds between plain progress lines


@dataclass(frozen=True)
class ModelFacts:
    """The model a run will load, known before its weights are read."""

    spec: str
    format: str  # "meta" | "hf" | "llama2c" | "random"
    n_params: int
    window: int
    dtype: str
    device: str
    tokenizer: Any  # model.tokenizer.Tokenizer


def resolve_model(spec: str, tokenizer: str | None, device: Any, dtype: str | None,
                  max_len: int | None = None) -> ModelFacts:
    """Read a checkpoint's config and tokenizer (not its weights); UserError as loading would.
    The window is the one loading will give: max_len (--max-len), else the config's, capped."""
    from dataclasses import replace

    from .model import checkpoint as ck
    from .model.formats import WINDOW_CAP, read_config
    from .model.presets import lookup
    from .model.tokenizer import load_tokenizer
    from .parallel_plan import rank_parameters

    dev = ck.resolve_device(device)
    dt = str(ck.resolve_dtype(dtype, dev)).removeprefix("torch.")
    if spec.startswith(ck.RANDOM_PREFIX):
        name = spec.removeprefix(ck.RANDOM_PREFIX)
        try:
            args = lookup(name).args
        except KeyError as e:
            raise UserError(f"{spec}: {e.args[0]}") from e
        tok_path = tokenizer or os.environ.get(ck.TOKENIZER_ENV)
        if not tok_path:
            raise UserError(f"{spec} needs a tokenizer: pass --tokenizer PATH or set {ck.TOKENIZER_ENV}")
        tok, fmt = load_tokenizer(tok_path), "random"
        args = replace(args, vocab_size=tok.vocab_size, max_seq_len=min(args.max_seq_len, WINDOW_CAP))
    else:
        path = ck.resolve_spec(spec)
        fmt = ck.detect_format(path)
        tok = load_tokenizer(ck.tokenizer_path(fmt, path, tokenizer))
        args = read_config(fmt, path, tok.vocab_size)
    window = max_len or args.max_seq_len
    return ModelFacts(spec, fmt, rank_parameters(args, 1), window, dt, str(dev), tok)


@dataclass
class Workload:
    """Token estimates of every distinct request, for the summary and the progress ETA."""

    tokens: dict[Request, int] = field(default_factory=dict)  # tokens the model will run, at most
    cut: set[Request] = field(default_factory=set)  # requests the engine will cut from the left
    owner: dict[Request, str] = field(default_factory=dict)  # "task k-shot" of the first run asking


def estimate(runs: Sequence[Any], tokenizer: Any, window: int, reporter: "Reporter",
             counts: "TokenCounts | None" = None) -> Workload:
    """Count tokens of every distinct request of `runs` (evaluator.TaskRun), once per string;
    `counts` (kept, to be shared with the window check) is made here if not given."""
    from .engine.window import COUNT_CHUNK, TokenCounts, texts_of

    work = Workload()
    n = counts if counts is not None else TokenCounts(tokenizer)
    todo = list(dict.fromkeys((r, f"{run.task.name} {run.shots}-shot")
                              for run in runs for reqs in run.requests for r in reqs))
    start, last = time.monotonic(), time.monotonic()
    for lo in range(0, len(todo), COUNT_CHUNK):  # batched counts, with a progress line between batches
        n.add(texts_of(r for r, _ in todo[lo : lo + COUNT_CHUNK]))
        if time.monotonic() - last > LOG_INTERVAL:
            last = time.monotonic()
            reporter.say(f"tokenising: {lo + COUNT_CHUNK:,} of {len(todo):,} requests ({time.monotonic() - start:.0f} s)")
    for r, owner in todo:
        if r in work.tokens:
            continue
        work.owner[r] = owner
        if isinstance(r, LoglikelihoodRequest):
            total = 1 + n(r.context) + n(r.continuation)  # BOS + both
            work.tokens[r] = min(total, window + 1)
            if total - 1 > window:
                work.cut.add(r)
        else:
            prompt = 1 + n(r.prompt)
            work.tokens[r] = min(prompt, window - r.max_new_tokens) + r.n * r.max_new_tokens
            if prompt > window - r.max_new_tokens:
                work.cut.add(r)
    return work


def model_line(facts: ModelFacts) -> str:
    """The first line of the start-of-run summary: the model that will be loaded."""
    from .model.checkpoint import RANDOM_PREFIX

    weights = "random weights" if facts.spec.startswith(RANDOM_PREFIX) else f"{facts.format} checkpoint"
    return (f"model: {facts.spec} ({weights}, {_count(facts.n_params)} parameters), window {facts.window:,} tokens, "
            f"{facts.dtype} on {facts.device}")


def summarise(runs: Sequence[Any], work: Workload, differences: Sequence[str]) -> list[str]:
    """The start-of-run summary after `model_line`, one string per line (module docstring)."""
    lines = [f"{'task':<14}{'shots':>6}{'documents':>20}{'requests':>10}{'tokens':>9}{'cut':>7}{'lost shots':>11}"]
    for run in runs:
        distinct = list(dict.fromkeys(r for reqs in run.requests for r in reqs))
        tokens = sum(work.tokens.get(r, 0) for r in distinct)
        cut = sum(r in work.cut for r in distinct)
        lost = sum(used < run.shots for used in run.shots_used)
        total = run.source.documents
        docs = f"{len(run.docs):,}" if total == len(run.docs) else f"{len(run.docs):,} of {total:,}"
        lines.append(f"{run.task.name:<14}{run.shots:>6}{docs:>20}{len(distinct):>10,}{_count(tokens):>9}"
                     f"{cut:>7,}{lost:>11,}")
    lines += sampling_costs(runs)
    total = sum(work.tokens.values())
    lines.append(f"total: {len(work.tokens):,} distinct requests, about {_count(total)} tokens before prefix sharing"
                 + (f"; {len(work.cut):,} will be cut from the left to fit the window" if work.cut else ""))
    if differences:
        lines.append("differs from the paper's protocol: " + "; ".join(differences))
    return lines


def sampling_costs(runs: Sequence[Any]) -> list[str]:
    """What the sampled regimes will draw: per task, samples per problem and completions in all."""
    out = []
    for run in runs:
        sampled = [r for reqs in run.requests for r in reqs if isinstance(r, GenerationRequest) and r.n > 1]
        if not sampled:
            continue
        per = Counter(r.n for r in sampled)
        draws = sum(r.n for r in sampled)
        new = sum(r.n * r.max_new_tokens for r in sampled)
        k = ", ".join(f"{n} samples" for n in sorted(per))
        out.append(f"sampling: {run.task.name} {run.shots}-shot draws {k} per problem for {len(run.docs):,} "
                   f"problems = {draws:,} completions, at most {_count(new)} new tokens (--samples sets the count)")
    return out


def _count(n: int) -> str:
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class Reporter:
    """Where a run's progress goes (module docstring). `bar`: a progress bar when the stream is
    a terminal; False (--no-progress) always writes plain lines. `quiet`: nothing at all (the
    ranks other than 0 under torchrun)."""

    def __init__(self, bar: bool = True, stream: TextIO | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bar = bar and not quiet and self.stream.isatty()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def track(self, phase: str, results: Iterator, todo: Sequence[Request], work: Workload) -> Iterator:
        """Yield `results` ((index into todo, result) pairs) while reporting progress."""
        if self.quiet:
            yield from results
            return
        weight = [max(work.tokens.get(r, 1), 1) for r in todo]
        total = sum(weight)
        per_task = Counter(work.owner.get(r, "?") for r in todo)
        done_task: Counter[str] = Counter()
        what = ", ".join(f"{t} {n:,}" for t, n in per_task.items())
        self.say(f"{phase}: {len(todo):,} requests, about {_count(total)} tokens ({what}); preparing batches")
        bar = None
        if self.bar:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=phase, unit="tok", unit_scale=True, smoothing=0, file=self.stream,
                       dynamic_ncols=True, mininterval=1.0,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tok [{elapsed}{postfix}]")
        start = time.monotonic()
        first_at, first_done, done, last = None, 0, 0, start
        try:
            for n, (i, res) in enumerate(results, 1):
                done += weight[i]
                done_task[work.owner.get(todo[i], "?")] += 1
                now = time.monotonic()
                if first_at is None:
                    first_at, first_done = now, done
                rate = (done - first_done) / (now - first_at) if now > first_at and done > first_done else 0.0
                eta = f"ETA {_clock((total - done) / rate)}" if rate else "ETA ?"
                tasks = ", ".join(f"{t} {100 * done_task[t] // c}%" for t, c in per_task.items())
                if bar is not None:
                    bar.update(weight[i])
                    if n % 16 == 0 or n == len(todo):
                        bar.set_postfix_str(f"{_count(int(rate))} tok/s, {eta}; {tasks}", refresh=False)
                elif now - last >= LOG_INTERVAL:
                    last = now
                    self.say(f"{phase}: {n:,}/{len(todo):,} requests, {100 * done // total}% of tokens, "
                             f"{_count(int(rate))} tok/s, {eta}; {tasks}")
                yield i, res
        finally:
            if bar is not None:
                bar.close()
        self.say(f"{phase}: done, {len(todo):,} requests in {_clock(time.monotonic() - start)}")
