"""What the code-generation tasks (HumanEval, MBPP) share: their sampling regimes, options and
the grading of samples through the sandbox (execution/) into pass@k.

Options are named "<task>_<option>": <task>_k (the k values reported, must include 1),
<task>_pass1 (sampled | greedy), <task>_top_p, <task>_timeout. See humaneval.py for the
defaults the paper leaves open.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence

from .. import execution
from ..config import SANDBOX_TIMEOUT_S
from ..errors import UserError
from ..metrics import pass_at_k
from .base import DocScore, Settings, Task
from .options import Option, number_in, pass_ks

SAMPLES = 200  # samples per problem and regime when --samples is not given
PASS1_TEMPERATURE = 0.1  # the paper's temperature for pass@1
SAMPLED_TEMPERATURE = 0.8  # the paper's temperature for pass@k, k > 1
TOP_P = "0.95"  # NOT STATED for LLaMA 1; the Llama 2 paper's value for the same numbers
TIMEOUT = f"{SANDBOX_TIMEOUT_S:g}"  # seconds per program, as text (an option default)

Regime = tuple[dict[str, Any], tuple[int, ...]]  # (GenerationRequest fields, the k scored on its samples)


def code_options(task: str, default_ks: str) -> dict[str, Option]:
    """The options of a code task: <task>_k, <task>_pass1, <task>_top_p, <task>_timeout."""
    return {
        f"{task}_k": Option(default_ks, "the k of pass@k reported (1 among them)", parse=pass_ks),
        f"{task}_pass1": Option("sampled", f"sampled: pass@1 from samples at T={PASS1_TEMPERATURE}; "
                                "greedy: one greedy completion", choices=("sampled", "greedy")),
        f"{task}_top_p": Option(TOP_P, "nucleus sampling top-p", parse=number_in(0.0, 1.0)),
        f"{task}_timeout": Option(TIMEOUT, "seconds one program may run in the sandbox",
                                  parse=number_in(0.0, math.inf)),
    }


def sampling_regimes(settings: Settings, task: Task) -> list[Regime]:
    """pass@1 from samples at PASS1_TEMPERATURE (or one greedy completion with <task>_pass1=greedy),
    every other k from samples at SAMPLED_TEMPERATURE; n = --samples (default SAMPLES) each."""
    ks = task.option(settings, f"{task.name}_k")
    mode = task.option(settings, f"{task.name}_pass1")
    n = SAMPLES if settings.samples is None else settings.samples
    largest = max((k for k in ks if k > 1 or mode == "sampled"), default=0)
    if n < largest:
        raise UserError(f"--samples {n}: pass@{largest} needs at least {largest} samples per problem; pass "
                        f"--samples {largest} or more, or lower the k values with --option {task.name}_k=1")
    top_p = task.option(settings, f"{task.name}_top_p")
    low, high = PASS1_TEMPERATURE, SAMPLED_TEMPERATURE
    if settings.temperature is not None:
        low = high = settings.temperature
    first = dict(temperature=0.0, n=1) if mode == "greedy" else dict(temperature=low, top_p=top_p, n=n)
    out = [(first, (1,))]
    if len(ks) > 1:
        out.append((dict(temperature=high, top_p=top_p, n=n), ks[1:]))
    return out


def grade_programs(task: Task, doc_id: str, prediction: str, gold: str,
                   programs: Sequence[Sequence[execution.Check]], regimes: Sequence[Regime],
                   settings: Settings) -> DocScore:
    """Grade programs[i] (one check per sample of regime i) in the sandbox; pass@k per regime's k.

    Identical programs (common at low temperature) run once. Refused without
    --allow-code-execution: the programs are the model's code.
    """
    if not settings.allow_code_execution:
        raise UserError(f"grading {task.name} runs the model's code; pass --allow-code-execution to allow it "
                        "(each program runs in a sandboxed child process, see execution/__init__.py)")
    timeout = task.option(settings, f"{task.name}_timeout")
    unique = list(dict.fromkeys(p for ps in programs for p in ps))
    results = execution.check_many(unique, timeout=timeout, allow_unsandboxed=settings.allow_unsandboxed)
    outcome = dict(zip(unique, results, strict=True))
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
