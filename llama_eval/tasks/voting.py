"""What the quantitative-reasoning tasks (GSM8K, MATH) share: one greedy answer per problem
(the paper's plain column) and maj1@k, the majority answer of k samples (Wang et al. 2022).

k = --samples (each task's default is the paper's k; 0 skips sampling). The paper says "same
setup as Minerva", and Minerva (Lewkowycz et al. 2022) samples at temperature 0.6 with nucleus
top-p 0.95: TEMPERATURE unless --temperature is given, top-p the option <task>_top_p (default
TOP_P).
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

from ..errors import UserError
from ..metrics import majority_vote
from .base import Doc, DocScore, Settings, Task
from .options import Option, number_in

TEMPERATURE = 0.6  # Minerva's sampling temperature
TOP_P = "0.95"  # Minerva's nucleus sampling


def voting_options(task: str) -> dict[str, Option]:
    return {f"{task}_top_p": Option(TOP_P, "nucleus top-p of the maj1@k samples (Minerva's 0.95)", parse=number_in(0.0, 1.0))}


def sample_count(settings: Settings, default: int) -> int:
    k = default if settings.samples is None else settings.samples
    if k < 0:
        raise UserError(f"--samples {k}: must be 0 (greedy only) or the number of samples for maj1@k")
    return k


def majority_regimes(settings: Settings, task: Task, default_samples: int) -> list[dict[str, Any]]:
    """GenerationRequest fields: greedy, then (if k > 0) k samples."""
    regimes: list[dict[str, Any]] = [dict(temperature=0.0, n=1)]
    k = sample_count(settings, default_samples)
    if k:
        temperature = TEMPERATURE if settings.temperature is None else settings.temperature
        top_p = task.option(settings, f"{task.name}_top_p")
        regimes.append(dict(temperature=temperature, top_p=top_p, n=k))
    return regimes


def grade_by_vote(doc: Doc, completions: list[tuple[str, ...]], gold: str, answer_of: Callable[[str], Hashable | None],
                  correct: Callable[[Any, str], bool]) -> DocScore:
    """acc from the greedy completion, maj1@k from the majority of the sampled answers."""
    greedy = completions[0][0]
    prediction = answer_of(greedy)
    metrics = {"acc": float(correct(prediction, gold))}
    extra: dict[str, Any] = {"completion": greedy}
    if len(completions) > 1:
        answers = [answer_of(c) for c in completions[1]]
        vote = majority_vote(answers)
        metrics[f"maj1@{len(answers)}"] = float(correct(vote, gold))
        extra.update(majority=vote, votes=answers.count(vote) if vote is not None else 0, no_answer=answers.count(None))
    return DocScore(doc["id"], prediction or "", gold, metrics, extra)
