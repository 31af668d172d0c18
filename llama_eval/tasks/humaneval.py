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

from pathlib import Path
from typing import Any

from .. import execution
from . import code, data
from .base import Doc, DocScore, GenerationTask, Settings

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


def humaneval_doc(row: dict[str, Any], source: Any, lineno: int) -> Doc:
    doc = {name: data.field(row, name, source, lineno) for name in FIELDS}
    return {"id": doc.pop("task_id"), **doc}


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
            problems = execution.load_humaneval_problems(path)  # the reader `llama-eval execute` uses
            return [humaneval_doc(p, path, n) for n, p in enumerate(problems.values(), 1)]
        source = data.hf_source(self.hf_dataset)
        return [humaneval_doc(row, source, i + 1) for i, row in enumerate(data.load_hf(self.hf_dataset))]

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        return doc["prompt"]

    def regimes(self, settings: Settings) -> list[code.Regime]:
        return code.sampling_regimes(settings, self)

    def sampling(self, settings: Settings) -> list[dict[str, Any]]:
        return [fields for fields, _ in self.regimes(settings)]

    def grade(self, doc: Doc, completions: list[tuple[str, ...]], settings: Settings) -> DocScore:
        programs = [[execution.humaneval_program(doc, c) for c in samples] for samples in completions]
        return code.grade_programs(self, doc["id"], completions[0][0], doc["canonical_solution"], programs,
                                   self.regimes(settings), settings)
