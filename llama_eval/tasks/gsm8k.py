"""GSM8K: grade-school math word problems with worked solutions (Cobbe et al. 2021).

Reproduces the GSM8K columns of Table 7 of the LLaMA paper (one sample per problem, and
maj1@100); protocol in ../shared/reference/PROTOCOL.md, "Table 7". The paper says only "same
setup as Minerva"; shots, prompt, temperature and answer extraction are NOT STATED.

- Dataset: test, 1,319 problems. Release file `gsm8k/test.jsonl` ({"question", "answer"}, the
  answer a worked solution ending "#### <number>"); hub: `openai/gsm8k` `main` `test` (the same rows).
  Document id: "gsm8k-" + the first 12 hex digits of the question's sha1.
- Shots: 8 (the count the Llama 2 paper gives for the same numbers). The same eight for every
  problem: the first eight problems of the train split (`gsm8k/train.jsonl`; hub `main` train,
  same order), so all prompts share one header the engine computes once. The longest prompt
  is 1,335 LLaMA tokens, so prompt and the 256 new tokens fit the 2,048-token window. Their solutions are
  shown as released, calculator annotations "<<48/2=24>>" removed, ending "#### <number>".
- Prompt: "Question: {q}\\nAnswer: {solution}" per shot, blank line between blocks, then
  "Question: {q}\\nAnswer:". Generation stops at "\\n\\n" or "Question:", at most 256 new tokens.
- Decoding and metrics:
    acc          one greedy sample per problem (the paper's plain column, "maj1@1" in Llama 2).
    maj1@{k}     k samples at temperature 0.6 (Minerva's; --temperature overrides), top-p from
                 --option gsm8k_top_p (default 1.0, plain sampling); the majority answer
                 (metrics.majority_vote) is scored. k = --samples, default 100 as in the paper;
                 --samples 0 skips the sampled regime.
  The answer is metrics.extract_number (after "####", else after "The answer is", else the
  last number) compared by value with the gold number (metrics.numbers_equal).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..metrics import canonical_number, extract_number, numbers_equal
from . import data, voting
from .base import Doc, DocScore, GenerationTask, Settings
from .nq_open import content_id, unique_ids

SAMPLES = 100  # maj1@100, as in Table 7
_CALCULATOR = re.compile(r"<<[^>]*>>")


def gsm8k_doc(row: dict[str, Any], source: Any, lineno: int) -> Doc:
    """A problem from a release or hub row (both {"question", "answer"})."""
    question = data.field(row, "question", source, lineno)
    solution = data.field(row, "answer", source, lineno)
    gold = canonical_number(solution.rpartition("####")[2]) if "####" in solution else None
    if gold is None:
        raise data.invalid(source, lineno, "answer", solution[-60:], 'a worked solution ending "#### <number>"')
    return {"id": content_id("gsm8k", question), "question": question,
            "solution": _CALCULATOR.sub("", solution), "answer": gold}


class GSM8K(GenerationTask):
    name = "gsm8k"
    paper_name = "GSM8K"
    paper_table = 7
    paper_shots = (8,)
    headline_metric = "acc"
    hf_dataset = ("openai/gsm8k", "main", "test")
    few_shot_pool = "the first 8 problems of train (gsm8k/train.jsonl), the same for every problem"
    until = ("\n\n", "Question:")
    max_new_tokens = 256
    fixed_shots = True
    release_files = ("gsm8k/test.jsonl",)
    options = voting.voting_options("gsm8k")

    def load(self, data_dir: Path | None) -> list[Doc]:
        return self._read(data_dir, "test")

    def load_shots(self, data_dir: Path | None) -> list[Doc]:
        return self._read(data_dir, "train")

    def _read(self, data_dir: Path | None, split: str) -> list[Doc]:
        if data_dir is not None:
            path = data.release_file(Path(data_dir), f"gsm8k/{split}.jsonl")
            return unique_ids([gsm8k_doc(row, path, lineno) for lineno, row in data.read_records(path)])
        source = data.hf_source(self.hf_dataset, split)
        return unique_ids([gsm8k_doc(row, source, i + 1) for i, row in enumerate(data.load_hf(self.hf_dataset, split))])

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        blocks = [f"Question: {s['question']}\nAnswer: {s['solution']}" for s in shots]
        return "\n\n".join([*blocks, f"Question: {doc['question']}\nAnswer:"])

    def sampling(self, settings: Settings) -> list[dict[str, Any]]:
        return voting.majority_regimes(settings, self, SAMPLES)

    def grade(self, doc: Doc, completions: list[tuple[str, ...]], settings: Settings) -> DocScore:
        return voting.grade_by_vote(doc, completions, doc["answer"], extract_number, numbers_equal)
