"""What the code-generation tasks (HumanEval, MBPP) share: their sampling regimes, options and
the grading of programs through the sandbox (execution.py) into pass@k.

Options are named "<task>_<option>": <task>_k (the k values reported, must include 1),
<task>_pass1 (sampled | greedy), <task>_top_p, <task>_timeout. See humaneval.py for the
defaults the paper leaves open.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

from .. import execution
from ..errors import UserError
from ..metrics import pass_at_k
from .base import DocScore, Settings

SAMPLES = 200  # samples per problem and regime when --samples is not given
PASS1_TEMPERATURE = 0.1  # the paper's temperature for pass@1
SAMPLED_TEMPERATURE = 0.8  # the paper's temperature for pass@k, k > 1
TOP_P = "0.95"  # NOT STATED for LLaMA 1; the Llama 2 paper's value for the same numbers

Regime = tuple[dict[str, Any], tuple[int, ...]]  # (GenerationRequest fields, the k scored on its samples)


def number_option(settings: Settings, name: str, default: str, low: float, high: float) -> float:
    """The run option `name` as a number in (low, high]."""
    text = settings.option(name, default)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low < value <= high:
        raise UserError(f"--option {name}={text}: must be a number in ({low:g}, {high:g}]")
    return value


def pass_ks(settings: Settings, task: str, default: str) -> tuple[int, ...]:
    """The k values of option <task>_k: positive whole numbers, 1 among them."""
    text = settings.option(f"{task}_k", default)
    parts = text.split(",")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts) or 1 not in {int(p) for p in parts}:
        raise UserError(f"--option {task}_k={text}: give positive whole numbers separated by commas, "
                        "including 1 (e.g. 1,10,100)")
    return tuple(sorted({int(p) for p in parts}))


def sampling_regimes(settings: Settings, task: str, default_ks: str) -> list[Regime]:
    """pass@1 from samples at PASS1_TEMPERATURE (or one greedy completion with <task>_pass1=greedy),
    every other k from samples at SAMPLED_TEMPERATURE; n = --samples (default SAMPLES) each."""
    ks = pass_ks(settings, task, default_ks)
    mode = settings.option(f"{task}_pass1", "sampled")
    if mode not in ("sampled", "greedy"):
        raise UserError(f"--option {task}_pass1={mode}: must be sampled or greedy")
    n = SAMPLES if settings.samples is None else settings.samples
    largest = max((k for k in ks if k > 1 or mode == "sampled"), default=0)
    if n < largest:
        raise UserError(f"--samples {n}: pass@{largest} needs at least {largest} samples per problem; pass "
                        f"--samples {largest} or more, or lower the k values with --option {task}_k=1")
    top_p = number_option(settings, f"{task}_top_p", TOP_P, 0.0, 1.0)
    low, high = PASS1_TEMPERATURE, SAMPLED_TEMPERATURE
    if settings.temperature is not None:
        low = high = settings.temperature
    first = dict(temperature=0.0, n=1) if mode == "greedy" else dict(temperature=low, top_p=top_p, n=n)
    out = [(first, (1,))]
    if len(ks) > 1:
        out.append((dict(temperature=high, top_p=top_p, n=n), ks[1:]))
    return out


def grade_programs(task: str, doc_id: str, prediction: str, gold: str, programs: Sequence[Sequence[str]],
                   regimes: Sequence[Regime], settings: Settings) -> DocScore:
    """Run programs[i] (one per sample of regime i) in the sandbox; pass@k per regime's k.

    Identical programs (common at low temperature) run once. Refused without
    --allow-code-execution: the programs are the model's code.
    """
    if not settings.allow_code_execution:
        raise UserError(f"grading {task} runs the model's code; pass --allow-code-execution to allow it "
                        "(each program runs in a sandboxed child process, see execution.py)")
    timeout = number_option(settings, f"{task}_timeout", "10", 0.0, math.inf)
    unique = list(dict.fromkeys(p for ps in programs for p in ps))
    outcome = dict(zip(unique, execution.check_many(unique, timeout=timeout), strict=True))
    metrics, passed = {}, {}
    for (_, ks), ps in zip(regimes, programs, strict=True):
        c = sum(outcome[p].status == "passed" for p in ps)
        for k in ks:
            metrics[f"pass@{k}"] = pass_at_k(len(ps), c, k)
            passed[f"pass@{k}"] = f"{c}/{len(ps)}"
    statuses = Counter(outcome[p].status for ps in programs for p in ps)
    failure = next((outcome[p].detail for ps in programs for p in ps if outcome[p].status != "passed"), "")
    extra = {"passed": passed, "statuses": dict(statuses), "first_failure": failure[:300]}
    return DocScore(doc_id, prediction, gold, metrics, extra)
