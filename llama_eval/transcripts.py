"""Every prompt a run sends, with what came back: prompts_<task>_<k>shot.jsonl.gz in the run folder.

The samples CSV holds one row of scores per document; this file holds what produced them, so
reading a result never needs the task's code. One JSON object per document:

    {"task", "shots" (asked for), "shots_used" (after dropping shots to fit the window),
     "doc_id", "prediction", "gold", "metrics",
     "requests": [ one per distinct context or prompt, in the task's order:
        {"kind": "loglikelihood", "context", "continuations": [...], "logprobs": [...],
         "greedy": [...], "truncated": [...]}
        {"kind": "generation", "prompt", "until", "max_new_tokens", "temperature", "top_p", "n",
         "seed", "completions": [...every sample...], "truncated"} ],
     "choices", "predicted_text", "gold_text"  (multiple choice: the continuations scored first,
                                               and the predicted and gold ones among them)}

Gzip'd JSON lines (`zcat` reads them): a 64-shot or a sampled task repeats long prompts and
hundreds of completions, which would swamp a CSV. `show_prompts` prints the first rendered
prompts of each task for `llama-eval run --show-prompts N`, before any model is loaded.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any, Sequence

from .requests import GenerationRequest, GenerationResult, LoglikelihoodRequest, Request, Result
from .tasks.base import Doc, DocScore, MultipleChoiceTask, Task


def _grouped(requests: Sequence[Request], results: Sequence[Result] | None) -> list[dict[str, Any]]:
    """The requests as records, log-likelihood requests with one context grouped together."""
    out: list[dict[str, Any]] = []
    for i, r in enumerate(requests):
        res = results[i] if results is not None else None
        if isinstance(r, GenerationRequest):
            rec = {"kind": "generation", "prompt": r.prompt, "until": list(r.until), "max_new_tokens": r.max_new_tokens,
                   "temperature": r.temperature, "top_p": r.top_p, "n": r.n, "seed": r.seed}
            if isinstance(res, GenerationResult):
                rec.update(completions=list(res.completions), truncated=res.truncated)
            out.append(rec)
            continue
        assert isinstance(r, LoglikelihoodRequest)
        if not (out and out[-1]["kind"] == "loglikelihood" and out[-1]["context"] == r.context):
            out.append({"kind": "loglikelihood", "context": r.context, "continuations": []}
                       | ({"logprobs": [], "greedy": [], "truncated": []} if res is not None else {}))
        out[-1]["continuations"].append(r.continuation)
        if res is not None:
            out[-1]["logprobs"].append(res.logprob)  # type: ignore[union-attr]
            out[-1]["greedy"].append(res.is_greedy)  # type: ignore[union-attr]
            out[-1]["truncated"].append(res.truncated)
    return out


def document_record(task: Task, shots: int, shots_used: int, doc: Doc, requests: Sequence[Request],
                    results: Sequence[Result] | None = None, score: DocScore | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"task": task.name, "shots": shots, "shots_used": shots_used, "doc_id": str(doc["id"])}
    if score is not None:
        rec.update(prediction=score.prediction, gold=score.gold, metrics=score.metrics)
    rec["requests"] = _grouped(requests, results)
    if isinstance(task, MultipleChoiceTask):
        choices = [r.continuation for r in requests[: len(task.choices(doc))]]  # type: ignore[union-attr]
        rec["choices"] = choices
        if score is not None:
            for key, index in (("predicted_text", score.prediction), ("gold_text", score.gold)):
                if index.isdigit() and int(index) < len(choices):
                    rec[key] = choices[int(index)]
    return rec


def write_prompts(run_dir: str | Path, task: Task, shots: int, docs: Sequence[Doc], requests: Sequence[Sequence[Request]],
                  results: dict[Request, Result], scores: Sequence[DocScore], shots_used: Sequence[int]) -> Path:
    """Write prompts_<task>_<shots>shot.jsonl.gz (see the module docstring); returns its path.
    Written beside and renamed into place, so a crash never leaves half a file."""
    path = Path(run_dir) / f"prompts_{task.name}_{shots}shot.jsonl.gz"
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        for doc, reqs, score, used in zip(docs, requests, scores, shots_used):
            rec = document_record(task, shots, used, doc, reqs, [results[r] for r in reqs], score)
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def show_prompts(runs: Sequence[Any], n: int) -> str:
    """The first `n` documents' requests of each (task, shots), as text: the context or prompt
    between rulers, then what is scored or how it is generated."""
    lines = []
    for run in runs:
        for doc, reqs, used in list(zip(run.docs, run.requests, run.shots_used))[:n]:
            lines.append(f"===== {run.task.name}, {run.shots} shots ({used} used), document {doc['id']} =====")
            for rec in _grouped(reqs, None):
                if rec["kind"] == "generation":
                    lines += [rec["prompt"], f"----- generate: until {rec['until']}, at most {rec['max_new_tokens']} "
                              f"tokens, temperature {rec['temperature']}, top-p {rec['top_p']}, n {rec['n']}"]
                else:
                    lines += [rec["context"], "----- scored continuations: "
                              + " | ".join(json.dumps(c, ensure_ascii=False) for c in rec["continuations"])]
    return "\n".join(lines)
