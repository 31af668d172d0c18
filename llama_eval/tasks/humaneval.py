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
- Grading (`humaneval_check`): the sandbox runs prompt + completion; the checker, outside it,
  runs prompt + "\\n" + test and then `check({entry_point})` with the entry point bound to the
  candidate's function, called through execution's channel with plain values both ways (so a
  returned object cannot forge an equality, and the test is never in the candidate's process).
  This is OpenAI's human-eval program split in two; the prompt's helper functions (e.g. `poly`
  for find_zero) are the checker's own copies. Only with --allow-code-execution. A sample
  passes when its check raises nothing. Identical samples (common at temperature 0.1) run once.
- `llama-eval execute` grades a samples file ({"task_id", "completion"} lines) the same way
  (`execute_samples`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Sequence

from .. import execution
from ..config import SANDBOX_TIMEOUT_S
from ..errors import UserError
from ..metrics import pass_at_k
from . import code, data
from .base import Doc, DocScore, GenerationTask, Settings

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


def humaneval_doc(row: dict[str, Any], source: Any, lineno: int) -> Doc:
    doc = {name: data.field(row, name, source, lineno) for name in FIELDS}
    return {"id": doc.pop("task_id"), **doc}


def load_problems(path: Path) -> dict[str, Doc]:
    """The problems of a HumanEval.jsonl(.gz) file by task id; errors name file, line and field."""
    problems: dict[str, Doc] = {}
    try:
        for lineno, row in data.read_records(Path(path)):
            doc = humaneval_doc(row, path, lineno)
            if doc["id"] in problems:
                raise data.invalid(path, lineno, "task_id", doc["id"], "unique (it occurs twice)")
            problems[doc["id"]] = doc
    except (OSError, EOFError, UnicodeDecodeError) as error:
        kind = "gzip-compressed " if Path(path).suffix == ".gz" else ""
        raise UserError(f"{path}: not a {kind}JSON Lines file ({error}); the file is damaged") from None
    if not problems:
        raise UserError(f"HumanEval file {path} holds no problems")
    return problems


def humaneval_check(doc: Doc, completion: str) -> execution.Check:
    """One sample: the candidate (prompt + completion) in the sandbox, the test in the checker."""
    entry = doc["entry_point"]
    return execution.Check(candidate=doc["prompt"] + completion, setup=checker_setup(doc["prompt"], doc["test"]),
                           names=(entry,), test=f"check({entry})\n")


@functools.lru_cache(maxsize=1024)
def checker_setup(prompt: str, test: str) -> str:
    """The prompt (for its helper functions) and the test's definitions. A prompt ends inside the
    entry point's body, normally after its docstring; one that stops at the signature gets a
    `pass` body, so that it compiles on its own (the checker then binds the candidate's function
    over it)."""
    try:
        compile(prompt, "prompt", "exec")
    except SyntaxError:
        prompt += "    pass\n"
    return prompt + "\n" + test


def read_samples(path: Path, problems: dict[str, Doc]) -> list[tuple[str, str]]:
    """(task_id, completion) per line of a samples file; other keys of a line are ignored."""
    samples = []
    for lineno, row in data.read_records(Path(path)):
        task_id, completion = data.field(row, "task_id", path, lineno), data.field(row, "completion", path, lineno)
        if task_id not in problems:
            raise data.invalid(path, lineno, "task_id", task_id, f"a known problem (ids like {next(iter(problems))!r})")
        samples.append((task_id, completion))
    if not samples:
        raise UserError(f"samples file {path} holds no samples; expected JSON lines with task_id and completion")
    return samples


def execute_samples(samples_path: Path, problems: dict[str, Doc], output_path: Path, ks: Sequence[int] = (1, 10, 100),
                    timeout: float = SANDBOX_TIMEOUT_S, workers: int | None = None, allow_unsandboxed: bool = False) -> dict[str, float]:
    """Grade every sample of a JSON-lines file in the sandbox and return pass@k in percent.

    Output: one line {task_id, completion, status, detail} per sample, in input order, written
    as results arrive. pass@k is the unbiased estimator averaged over the tasks present in the
    file, reported only for the k that every task has at least k samples for.
    """
    for k in ks:
        if not isinstance(k, int) or k < 1:
            raise UserError(f"pass@k needs positive integer k, got {k!r}")
    samples = read_samples(Path(samples_path), problems)
    checks = [humaneval_check(problems[task_id], completion) for task_id, completion in samples]
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    passed: dict[str, list[bool]] = {}
    with open(output_path, "w", encoding="utf-8") as out:
        results = execution.iter_checks(checks, timeout, workers, execution.Limits(), allow_unsandboxed)
        for (task_id, completion), result in zip(samples, results):
            row = {"task_id": task_id, "completion": completion, "status": result.status, "detail": result.detail}
            out.write(json.dumps(row) + "\n")  # ensure_ascii: a lone surrogate is written escaped
            out.flush()
            passed.setdefault(task_id, []).append(result.status == "passed")
    scores = {}
    for k in ks:
        if all(len(outcomes) >= k for outcomes in passed.values()):
            per_task = [pass_at_k(len(outcomes), sum(outcomes), k) for outcomes in passed.values()]
            scores[f"pass@{k}"] = 100.0 * sum(per_task) / len(per_task)
    return scores


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
    release_files = ("humaneval/HumanEval.jsonl.gz",)
    options = code.code_options("humaneval", "1,100")

    def load(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is not None:
            path = data.release_file(Path(data_dir), "humaneval/HumanEval.jsonl.gz")
            return list(load_problems(path).values())  # the reader `llama-eval execute` uses
        source = data.hf_source(self.hf_dataset)
        return [humaneval_doc(row, source, i + 1) for i, row in enumerate(data.load_hf(self.hf_dataset))]

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        return doc["prompt"]

    def regimes(self, settings: Settings) -> list[code.Regime]:
        return code.sampling_regimes(settings, self)

    def sampling(self, settings: Settings) -> list[dict[str, Any]]:
        return [fields for fields, _ in self.regimes(settings)]

    def grade(self, doc: Doc, completions: list[tuple[str, ...]], settings: Settings) -> DocScore:
        programs = [[humaneval_check(doc, c) for c in samples] for samples in completions]
        return code.grade_programs(self, doc["id"], completions[0][0], doc["canonical_solution"], programs,
                                   self.regimes(settings), settings)
