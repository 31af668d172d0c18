"""HumanEval: write a Python function from its signature and docstring (Chen et al. 2021).

Reproduces the HumanEval columns of Table 8 of the LLaMA paper (pass@1 and pass@100);
protocol in ../shared/reference/PROTOCOL.md, "Table 8".

- Dataset: test, 164 problems. Release file `humaneval/HumanEval.jsonl.gz` ({"task_id",
  "prompt", "entry_point", "canonical_solution", "test"}); hub: `openai/openai_humaneval` `test` (the
  same fields). Document id: the task_id ("HumanEval/0").
- Shots: 0. Prompt: the problem's `prompt` as is (code ending in the docstring).
- Generation stops at "\\nclass", "\\ndef", "\\n#", "\\nif" or "\\nprint" (the end of the function
  body; NOT STATED in the paper, Codex's list), at most 512 new tokens (NOT STATED).
- Sampling (paper): pass@1 from samples at temperature 0.1, pass@100 from samples at 0.8, with
  the unbiased estimator (metrics.pass_at_k). NOT STATED, so defaults and options:
    --samples n       samples per problem and temperature, default 200; must be >= every k.
    humaneval_k       the k values reported, default "1,100"; must include 1. k = 1 is scored on
                      the low-temperature samples, every other k on the 0.8 samples.
    humaneval_pass1   sampled (default) | greedy: pass@1 from one greedy completion instead.
    humaneval_top_p   0.95 (default): the Llama 2 paper's value for these numbers, NOT STATED
                      for LLaMA 1.
    humaneval_timeout 10 (default): seconds each program may run.
  --temperature replaces both temperatures.
- Grading: program = prompt + completion + "\\n" + test + "\\ncheck({entry_point})\\n", run by
  execution.check_many (the only place model-written code runs, in a sandbox), only with
  --allow-code-execution. A sample passes when its program ends with status "passed".
  Identical programs (common at temperature 0.1) are run once.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from .. import execution
from ..errors import UserError
from ..metrics import pass_at_k
from . import data
from .base import Doc, DocScore, GenerationTask, Settings

SAMPLES = 200
PASS1_TEMPERATURE = 0.1
SAMPLED_TEMPERATURE = 0.8  # for every k > 1
FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


def humaneval_doc(row: dict[str, Any], source: Any, lineno: int) -> Doc:
    doc = {name: data.field(row, name, source, lineno) for name in FIELDS}
    return {"id": doc.pop("task_id"), **doc}


def _number_option(settings: Settings, name: str, default: str, low: float, high: float) -> float:
    text = settings.option(name, default)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low < value <= high:
        raise UserError(f"--option {name}={text}: must be a number in ({low:g}, {high:g}]")
    return value


def pass_ks(settings: Settings) -> tuple[int, ...]:
    text = settings.option("humaneval_k", "1,100")
    parts = text.split(",")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts) or 1 not in {int(p) for p in parts}:
        raise UserError(f"--option humaneval_k={text}: give positive whole numbers separated by commas, "
                        "including 1 (e.g. 1,10,100)")
    return tuple(sorted({int(p) for p in parts}))


class HumanEval(GenerationTask):
    name = "humaneval"
    paper_name = "HumanEval"
    paper_table = 8
    paper_shots = (0,)
    headline_metric = "pass@1"
    hf_dataset = ("openai/openai_humaneval", None, "test")
    needs_code_execution = True
    until = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
    max_new_tokens = 512
    source_description = ""  # set by load()

    def load(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is not None:
            self.source_description = "release file humaneval/HumanEval.jsonl.gz (164 problems)"
            path = data.release_file(Path(data_dir), "humaneval/HumanEval.jsonl.gz")
            problems = execution.load_humaneval_problems(path)  # the reader `llama-eval execute` uses
            return [humaneval_doc(p, path, n) for n, p in enumerate(problems.values(), 1)]
        self.source_description = source = data.hf_source(self.hf_dataset)
        return [humaneval_doc(row, source, i + 1) for i, row in enumerate(data.load_hf(self.hf_dataset))]

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        return doc["prompt"]

    def regimes(self, settings: Settings) -> list[tuple[dict[str, Any], tuple[int, ...]]]:
        """(GenerationRequest fields, the k values scored on its samples) per decoding regime."""
        ks = pass_ks(settings)
        mode = settings.option("humaneval_pass1", "sampled")
        if mode not in ("sampled", "greedy"):
            raise UserError(f"--option humaneval_pass1={mode}: must be sampled or greedy")
        n = SAMPLES if settings.samples is None else settings.samples
        largest = max((k for k in ks if k > 1 or mode == "sampled"), default=0)
        if n < largest:
            raise UserError(f"--samples {n}: pass@{largest} needs at least {largest} samples per problem")
        top_p = _number_option(settings, "humaneval_top_p", "0.95", 0.0, 1.0)
        low, high = PASS1_TEMPERATURE, SAMPLED_TEMPERATURE
        if settings.temperature is not None:
            low = high = settings.temperature
        first = dict(temperature=0.0, n=1) if mode == "greedy" else dict(temperature=low, top_p=top_p, n=n)
        out = [(first, (1,))]
        if len(ks) > 1:
            out.append((dict(temperature=high, top_p=top_p, n=n), ks[1:]))
        return out

    def sampling(self, settings: Settings) -> list[dict[str, Any]]:
        return [fields for fields, _ in self.regimes(settings)]

    def grade(self, doc: Doc, completions: list[tuple[str, ...]], settings: Settings) -> DocScore:
        if not settings.allow_code_execution:
            raise UserError("grading humaneval runs the model's code; pass --allow-code-execution to allow it "
                            "(each program runs in a sandboxed child process, see execution.py)")
        timeout = _number_option(settings, "humaneval_timeout", "10", 0.0, math.inf)
        programs = [[execution.humaneval_program(doc, c) for c in samples] for samples in completions]
        unique = list(dict.fromkeys(p for ps in programs for p in ps))
        outcome = dict(zip(unique, execution.check_many(unique, timeout=timeout)))
        metrics, passed = {}, {}
        for (_, ks), ps in zip(self.regimes(settings), programs, strict=True):
            c = sum(outcome[p].status == "passed" for p in ps)
            for k in ks:
                metrics[f"pass@{k}"] = pass_at_k(len(ps), c, k)
                passed[f"pass@{k}"] = f"{c}/{len(ps)}"
        statuses = Counter(outcome[p].status for ps in programs for p in ps)
        failure = next((outcome[p].detail for ps in programs for p in ps if outcome[p].status != "passed"), "")
        extra = {"passed": passed, "statuses": dict(statuses), "first_failure": failure[:300]}
        return DocScore(doc["id"], completions[0][0], doc["canonical_solution"], metrics, extra)
