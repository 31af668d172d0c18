"""The two shapes a benchmark takes: multiple choice and generation.

A task turns documents into requests (`requests`) and the engine's results back into
per-document scores (`score`). It never touches the model or the engine. Each benchmark
subclasses one of the two shapes below and fills in a few hooks; see `piqa.py` for a
complete example and the README's "Adding a task" guide.

Documents are plain dicts with at least an "id" (str, stable across runs and data sources).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from . import data
from ..errors import UserError
from ..metrics import mean_stderr
from ..requests import GenerationRequest, LoglikelihoodRequest, Request, Result
from .options import Option

Doc = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """Run-wide knobs a task may read; built from RunConfig (evaluator.settings_of), so every
    default lives there. Options are read through `Task.option`, which parses them. `fits` is
    the engine's answer to "does this request fit the model's window?" once a model is loaded
    (None before: nothing is dropped); tasks call it on their own requests and never see the
    model or its tokenizer."""

    seed: int
    samples: int | None  # generation: samples per problem (None: the task's default)
    temperature: float | None  # generation: override the task's sampling temperature
    options: tuple[tuple[str, str], ...]  # "--option name=value", checked against the tasks' declared options
    allow_code_execution: bool  # run model-written code (execution/) to grade it
    allow_unsandboxed: bool  # ... even where the sandbox has no kernel isolation (--allow-unsandboxed)
    fits: Callable[[Request], bool] | None  # the engine's window check (engine/window.py), or None


@dataclass
class DocScore:
    """One document's outcome: the row of samples_<task>.csv."""

    doc_id: str
    prediction: str
    gold: str
    metrics: dict[str, float]  # per-document metric values, e.g. {"acc": 1.0, "acc_raw": 0.0}
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. per-choice log-probs


@dataclass(frozen=True)
class MetricValue:
    metric: str
    value: float  # in percent, like the paper
    stderr: float  # in percent
    n: int
    group: str = ""  # sub-aggregate label (an MMLU category or subject); "" for the task itself


class Task:
    """Common attributes; subclass MultipleChoiceTask or GenerationTask, not this."""

    name: ClassVar[str]  # registry name, e.g. "piqa"
    paper_name: ClassVar[str]  # task name in the paper's CSVs, e.g. "PIQA"
    paper_table: ClassVar[int | None] = None
    paper_shots: ClassVar[tuple[int, ...]] = (0,)  # shot counts the paper reports; first = default
    headline_metric: ClassVar[str] = "acc"  # the metric the paper prints
    hf_dataset: ClassVar[tuple[str, str | None, str]] = ("", None, "")  # (path, config, split)
    release_files: ClassVar[tuple[str, ...]] = ()  # evaluation files under --data-dir, for `source`
    release_split: ClassVar[str] = "test"  # the split those files hold
    few_shot_pool: ClassVar[str] = ""  # where shots come from, shown by `llama-eval tasks NAME`
    options: ClassVar[Mapping[str, Option]] = {}  # what --option may set for this task (options.py)
    needs_code_execution: ClassVar[bool] = False  # grading runs model-written code (execution/)
    fixed_shots: ClassVar[bool] = False  # True: every document gets the pool's first k examples
    limit_group: ClassVar[str] = ""  # document field whose groups --limit N takes N of each (MMLU: "subject")

    # -- data -------------------------------------------------------------------------
    def load(self, data_dir: Path | None) -> list[Doc]:
        """Evaluation documents: `from_release(data_dir)` when a data folder is given, else
        each row of the hub dataset `hf_dataset` through `from_hf_row`; both must give the
        same documents for the same rows."""
        if data_dir is not None:
            return self.from_release(Path(data_dir))
        return [self.from_hf_row(row, i) for i, row in enumerate(data.load_hf(self.hf_dataset))]

    def from_release(self, data_dir: Path) -> list[Doc]:
        """Documents from the release files under data_dir (the layout of ../shared/data)."""
        raise NotImplementedError

    def from_hf_row(self, row: dict[str, Any], index: int) -> Doc:
        """The document of the hub dataset's row number `index` (0-based)."""
        raise NotImplementedError

    def load_shots(self, data_dir: Path | None) -> list[Doc]:
        """The pool few-shot examples are drawn from (empty for zero-shot-only tasks)."""
        return []

    def source(self, data_dir: Path | None) -> data.DataSource:
        """Where `load(data_dir)` reads its documents: `release_files` or the hub's `hf_dataset`.
        A task that declares neither (a plugin with documents of its own) is its own source."""
        if data_dir is not None and self.release_files:
            return data.release_source(Path(data_dir), self.release_files, self.release_split)
        if data_dir is None and self.hf_dataset[0]:
            return data.hub_source(self.hf_dataset)
        return data.DataSource("task", type(self).__module__, self.release_split)

    def option(self, settings: Settings, name: str) -> Any:
        """The parsed value of this task's declared option `name` in this run."""
        return self.options[name].value(name, dict(settings.options).get(name))

    # -- requests and scores ------------------------------------------------------------
    def requests(self, doc: Doc, shots: list[Doc], settings: Settings) -> list[Request]:
        raise NotImplementedError

    def score(self, doc: Doc, results: Sequence[Result], settings: Settings) -> DocScore:
        raise NotImplementedError

    def aggregate(self, scores: Sequence[DocScore]) -> list[MetricValue]:
        """Mean and standard error of every per-document metric, in percent."""
        names = list(scores[0].metrics) if scores else []
        out = []
        for name in names:
            mean, se = mean_stderr([s.metrics[name] for s in scores])
            out.append(MetricValue(name, 100 * mean, 100 * se, len(scores)))
        return out

    # -- few-shot selection -------------------------------------------------------------
    def fit_shots(self, doc: Doc, shots: list[Doc], settings: Settings) -> list[Doc]:
        """The shots `doc` keeps so that every request of the document fits the model's window
        (settings.fits), dropping whole shots, never text: with `fixed_shots` the last one
        (Hendrycks' MMLU code lowers k until the prompt fits, so the kept shots stay the pool's
        first k and documents with the same k share one header); otherwise the first, the
        farthest from the question. All of them may go; a zero-shot prompt that still does not
        fit is cut from the left by the engine, its last resort, counted in run.json."""
        if settings.fits is None:
            return shots
        kept = list(shots)
        while kept and not all(settings.fits(r) for r in self.requests(doc, kept, settings)):
            kept = kept[:-1] if self.fixed_shots else kept[1:]
        return kept

    def select_shots(self, doc: Doc, pool: Sequence[Doc], k: int, settings: Settings) -> list[Doc]:
        """k examples for `doc`, never the document itself.

        With `fixed_shots`, the first k of the pool for every document (a header the engine
        runs once). Otherwise drawn from the document's own random stream, seeded by (task,
        seed, document id), so a document's shots do not depend on which other documents are
        in the run, their order, the batch size or the number of processes.
        """
        if k == 0:
            return []
        if not pool:
            raise UserError(f"task {self.name} has no few-shot pool: it is evaluated zero-shot (use --shots 0)")
        candidates = [d for d in pool if d["id"] != doc["id"]]
        if len(candidates) < k:
            raise UserError(f"task {self.name}: --shots {k} asked for but its few-shot pool holds {len(candidates)} examples")
        if self.fixed_shots:
            return candidates[:k]
        rng = random.Random(f"{self.name}:{settings.seed}:{doc['id']}")
        return rng.sample(candidates, k)


CHAR_LENGTH = Option("whole", "whole: per-character scores divide by the length of the continuation as scored, "
                     "leading space included (the harness's acc_norm); stripped: without the leading space",
                     choices=("whole", "stripped"))


class MultipleChoiceTask(Task):
    """Score every choice as a continuation of the context; pick the best.

    Hooks: `context(doc, shots)`, `choices(doc)` (the continuation strings, each usually
    starting with a space), `gold(doc)` (index of the right choice).

    Scoring rules (`scoring`, ../shared/reference/PROTOCOL.md §3):
      "chars"      log-likelihood / characters of the choice (the paper's default, after Gao et
                   al. 2021). Which characters: option `mc_char_length`, default "whole": the
                   continuation string as scored, its leading space included, as the harness's
                   acc_norm divides (it reproduces the paper's HellaSwag within 0.1; the paper
                   says only "normalized by the number of characters"); "stripped": without
                   the leading space.
      "calibrated" log P(choice | context) - log P(choice | "Answer:") (BoolQ, OBQA); the bare
                   context is the declared option named by `calibration_option`
      "raw"        log-likelihood as is
    A task whose rule is a run option overrides `scoring_rule(settings)`.
    The per-document metrics are `acc` (the task's rule, the paper's number), `acc_raw`
    (unnormalised), `acc_chars` (length-normalised), and `acc_calibrated` where computed.
    """

    scoring: ClassVar[str] = "chars"
    calibration_option: ClassVar[str] = ""  # the declared option holding the bare context, if calibrated
    options: ClassVar[Mapping[str, Option]] = {"mc_char_length": CHAR_LENGTH}  # subclasses add theirs to these

    def scoring_rule(self, settings: Settings) -> str:
        return self.scoring

    def context(self, doc: Doc, shots: list[Doc]) -> str:
        raise NotImplementedError

    def choices(self, doc: Doc) -> list[str]:
        raise NotImplementedError

    def gold(self, doc: Doc) -> int:
        raise NotImplementedError

    def requests(self, doc: Doc, shots: list[Doc], settings: Settings) -> list[Request]:
        return self.choice_requests(self.context(doc, shots), doc, settings)

    def choice_requests(self, ctx: str, doc: Doc, settings: Settings) -> list[Request]:
        """Each choice after `ctx`, then (calibrated) each choice after the bare context."""
        reqs: list[Request] = [LoglikelihoodRequest(ctx, c) for c in self.choices(doc)]
        if self.scoring_rule(settings) == "calibrated":
            bare = self.option(settings, self.calibration_option)
            reqs += [LoglikelihoodRequest(bare, c) for c in self.choices(doc)]
        return reqs

    def score(self, doc: Doc, results: Sequence[Result], settings: Settings) -> DocScore:
        choices = self.choices(doc)
        n = len(choices)
        ll = [r.logprob for r in results[:n]]  # type: ignore[union-attr]
        strip = self.option(settings, "mc_char_length") == "stripped"
        by_chars = [x / max(len(c.lstrip() if strip else c), 1) for x, c in zip(ll, choices)]
        ranked = {"raw": ll, "chars": by_chars}
        extra: dict[str, Any] = {"logprobs": [round(x, 6) for x in ll]}
        rule = self.scoring_rule(settings)
        if rule == "calibrated":
            uncond = [r.logprob for r in results[n : 2 * n]]  # type: ignore[union-attr]
            ranked["calibrated"] = [a - b for a, b in zip(ll, uncond)]
            extra["calibration_logprobs"] = [round(x, 6) for x in uncond]
        gold = self.gold(doc)
        pred = argmax(ranked[rule])
        metrics = {"acc": float(pred == gold)}
        metrics.update({f"acc_{rule}": float(argmax(r) == gold) for rule, r in ranked.items()})
        return DocScore(str(doc["id"]), str(pred), str(gold), metrics, extra)


class GenerationTask(Task):
    """Generate from a prompt and grade the completions.

    Hooks: `prompt(doc, shots)` (the text sent to the model), `sampling(settings)` (one dict of
    GenerationRequest fields per decoding regime, e.g. greedy then k samples) and
    `grade(doc, completions, settings)` -> DocScore, where completions[i] holds the samples
    of the i-th regime. See gsm8k.py for a plain example.
    """

    until: ClassVar[tuple[str, ...]] = ("\n",)
    max_new_tokens: ClassVar[int] = 128

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        raise NotImplementedError

    def sampling(self, settings: Settings) -> list[dict[str, Any]]:
        """One dict of GenerationRequest fields per decoding regime (default: greedy)."""
        return [dict(temperature=0.0, n=1)]

    def requests(self, doc: Doc, shots: list[Doc], settings: Settings) -> list[Request]:
        prompt = self.prompt(doc, shots)
        return [self.generation_request(prompt, settings, **kw) for kw in self.sampling(settings)]

    def generation_request(self, prompt: str, settings: Settings, **fields: Any) -> GenerationRequest:
        """A request for `prompt` with this task's stop strings and token limit; `fields` are one
        regime of `sampling` (temperature, top_p, n)."""
        return GenerationRequest(prompt, self.until, self.max_new_tokens, seed=settings.seed, **fields)

    def score(self, doc: Doc, results: Sequence[Result], settings: Settings) -> DocScore:
        return self.grade(doc, [r.completions for r in results], settings)  # type: ignore[union-attr]

    def grade(self, doc: Doc, completions: list[tuple[str, ...]], settings: Settings) -> DocScore:
        """completions[i] are the samples of the i-th regime returned by `sampling`."""
        raise NotImplementedError


def argmax(xs: Sequence[float]) -> int:
    """Index of the largest value; the first one on ties; NaN never wins."""
    best, best_i = -math.inf, 0
    for i, x in enumerate(xs):
        if x > best:
            best, best_i = x, i
    return best_i
