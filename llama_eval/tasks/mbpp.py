"""MBPP: write a short Python function from a one-sentence task and three asserts (Austin et al. 2021).

Reproduces the MBPP columns of Table 8 of the LLaMA paper (pass@1 and pass@80, 3-shot);
protocol in ../shared/reference/PROTOCOL.md, "Table 8". The paper says only "3-shot, with
prompts similar to Austin et al. (2021)"; the split, the shots and the prompt are NOT STATED.

- Dataset: test = task ids 11-510 (500 problems, the release README's split). Release file
  `mbpp/mbpp.jsonl` ({"text", "code", "task_id", "test_setup_code", "test_list": [3 asserts],
  "challenge_test_list"}); hub: `google-research-datasets/mbpp` `full` `test` (the same fields,
  the same 500 rows). Document id: the task id as text ("11").
- Shots: 3, the same for every problem (so all prompts share one header the engine computes
  once): task ids 2, 3 and 4 from the prompting range 1-10, the three Austin et al. used
  (release file; hub: the `prompt` split). Fewer shots take the first ones of 2, 3, 4.
- Prompt, format "austin" (Austin et al.'s wording and [BEGIN]/[DONE] delimiters; the exact
  whitespace is NOT STATED, ours is): for each shot
      "You are an expert Python programmer, and here is your task: {text} Your code should pass
      these tests:\\n\\n{assert 1}\\n{assert 2}\\n{assert 3}\\n[BEGIN]\\n{code}\\n[DONE]\\n\\n"
  (one line up to "tests:"), then the problem's own task and asserts the same way, ending
  "[BEGIN]\\n". Asserts are shown verbatim; code is shown with its "\\r\\n" (and four stray
  final "\\r") line breaks turned into "\\n", nothing else changed.
- Generation stops at "[DONE]" or at the start of a new task (the model skipped [DONE]), at most
  512 new tokens (both NOT STATED; the longest canonical solution is 469 LLaMA tokens). The
  header is 637 tokens and most prompts stay under 1,200. Two do not fit 2,048 - 512 tokens
  with 3 shots; they drop whole shots from the end, Hendrycks-style (Task.fit_shots): task 462
  keeps 2 (1,284 tokens); task 493 keeps none and, at 3,753 tokens on its own (its asserts hold
  long lists), is still cut from the left by the engine, its last resort (counted in run.json
  and in the samples file's `truncated_requests`).
- Sampling, as for HumanEval (humaneval.py): pass@1 from samples at temperature 0.1, pass@80
  from samples at 0.8, with the unbiased estimator (metrics.pass_at_k). NOT STATED, so defaults
  and options:
    --samples n   samples per problem and temperature, default 200; must be >= every k.
    mbpp_k        the k values reported, default "1,80"; must include 1. k = 1 is scored on the
                  low-temperature samples, every other k on the 0.8 samples.
    mbpp_pass1    sampled (default) | greedy: pass@1 from one greedy completion instead.
    mbpp_top_p    0.95 (default): the Llama 2 paper's value, NOT STATED for LLaMA 1.
    mbpp_timeout  10 (default): seconds each program may run.
  --temperature replaces both temperatures.
- Grading (`mbpp_check`): the sandbox runs completion + "\\n" + test_setup_code (the setup code
  comes after the completion because it may use what the solution defines: task 367 builds
  trees from the solution's own `class Node`); the checker, outside it, runs the three asserts
  with every non-builtin name they read bound to the candidate's object of that name: its
  functions are called through execution's channel with plain values both ways, and objects
  that are not plain values (367's trees) can only be passed back to them as arguments. So a
  returned object cannot forge an equality and the asserts never run in the candidate's
  process. The challenge asserts are not run (Austin et al. report on test_list). Only with
  --allow-code-execution; a sample passes when the asserts raise nothing. Identical samples
  run once.
"""

from __future__ import annotations

import ast
import builtins
from collections import Counter
from pathlib import Path
from typing import Any

from .. import execution
from ..errors import UserError
from . import code, data
from .base import Doc, DocScore, GenerationTask, Settings
from .data import string_list

RELEASE_FILE = "mbpp/mbpp.jsonl"
TEST_IDS = range(11, 511)  # the release README's test split
SHOT_IDS = (2, 3, 4)  # Austin et al.'s three prompting examples, in prompt order


def mbpp_doc(row: dict[str, Any], source: Any, lineno: int) -> Doc:
    """A problem from a release or hub row (the same fields in both)."""
    task_id = data.field(row, "task_id", source, lineno, int)
    text, code, setup = (data.field(row, name, source, lineno) for name in ("text", "code", "test_setup_code"))
    return {"id": str(task_id), "task_id": task_id, "text": text, "code": _unix_lines(code),
            "setup": _unix_lines(setup), "tests": string_list(row, "test_list", source, lineno)}


def _unix_lines(code: str) -> str:
    return code.replace("\r\n", "\n").replace("\r", "\n")


def task_block(doc: Doc) -> str:
    """The task and its asserts as the prompt states them, up to (not including) "[BEGIN]"."""
    tests = "\n".join(doc["tests"])
    return (f"You are an expert Python programmer, and here is your task: {doc['text']} "
            f"Your code should pass these tests:\n\n{tests}\n")


def mbpp_check(doc: Doc, completion: str) -> execution.Check:
    """One sample: the solution and the setup code in the sandbox, the asserts in the checker."""
    tests = "\n".join(doc["tests"]) + "\n"
    return execution.Check(candidate=completion + "\n" + doc["setup"] + "\n", test=tests,
                           names=names_read(tests, doc["code"]))


def names_read(tests: str, reference: str) -> tuple[str, ...]:
    """The names the asserts read that the candidate must provide, each once: every one that is
    not a builtin (the solution's functions; for task 367 also the setup code's trees), and a
    builtin only where the reference solution redefines it (task 126's `sum`). Other builtins
    stay the checker's own, so a solution that redefines `set` cannot change what asserts compute."""
    try:
        read = [n.id for n in ast.walk(ast.parse(tests)) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    except SyntaxError:
        return ()  # the checker then fails every sample with the same SyntaxError
    return tuple(dict.fromkeys(n for n in read if not hasattr(builtins, n) or n in top_level_names(reference)))


def top_level_names(code: str) -> set[str]:
    """Names a module binds at its top level (functions, classes, assignments, imports)."""
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return set()
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


class MBPP(GenerationTask):
    name = "mbpp"
    paper_name = "MBPP"
    paper_table = 8
    paper_shots = (3,)
    headline_metric = "pass@1"
    hf_dataset = ("google-research-datasets/mbpp", "full", "test")
    few_shot_pool = "task ids 2, 3, 4 (Austin et al.'s prompting examples), the same for every problem"
    needs_code_execution = True
    until = ("[DONE]", "You are an expert Python programmer")
    max_new_tokens = 512
    fixed_shots = True
    release_files = (RELEASE_FILE,)
    options = code.code_options("mbpp", "1,80")

    def load(self, data_dir: Path | None) -> list[Doc]:
        """Task ids 11-510, the test split (the release file holds every split)."""
        return [d for d in self._read(data_dir, self.hf_dataset[2]) if d["task_id"] in TEST_IDS]

    def load_shots(self, data_dir: Path | None) -> list[Doc]:
        by_id = {d["task_id"]: d for d in self._read(data_dir, "prompt")}
        if missing := [i for i in SHOT_IDS if i not in by_id]:
            where = RELEASE_FILE if data_dir is not None else data.hf_source(self.hf_dataset, "prompt")
            raise UserError(f"{where} lacks the prompting examples with task ids {missing}; "
                            "it is not the MBPP release (task ids 1-974)")
        return [by_id[i] for i in SHOT_IDS]

    def _read(self, data_dir: Path | None, split: str) -> list[Doc]:
        """Every problem of the release file, or of the hub's `split`."""
        if data_dir is not None:
            source: Any = data.release_file(Path(data_dir), RELEASE_FILE)
            docs = [mbpp_doc(row, source, lineno) for lineno, row in data.read_records(source)]
        else:
            source = data.hf_source(self.hf_dataset, split)
            docs = [mbpp_doc(row, source, i + 1) for i, row in enumerate(data.load_hf(self.hf_dataset, split))]
        if repeated := [i for i, n in Counter(d["task_id"] for d in docs).items() if n > 1]:
            raise UserError(f"{source}: task id {repeated[0]} occurs more than once; MBPP task ids are unique")
        return docs

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        header = "".join(f"{task_block(s)}[BEGIN]\n{s['code']}\n[DONE]\n\n" for s in shots)
        return f"{header}{task_block(doc)}[BEGIN]\n"

    def regimes(self, settings: Settings) -> list[code.Regime]:
        return code.sampling_regimes(settings, self)

    def sampling(self, settings: Settings) -> list[dict[str, Any]]:
        return [fields for fields, _ in self.regimes(settings)]

    def grade(self, doc: Doc, completions: list[tuple[str, ...]], settings: Settings) -> DocScore:
        programs = [[mbpp_check(doc, c) for c in samples] for samples in completions]
        return code.grade_programs(self, doc["id"], completions[0][0], doc["code"], programs,
                                   self.regimes(settings), settings)
