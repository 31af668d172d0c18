"""NaturalQuestions (open): closed-book question answering (Kwiatkowski et al. 2019, Lee et al. 2019).

Reproduces Table 4 of the LLaMA paper (exact match at 0, 1, 5 and 64 shots); protocol in
../shared/reference/PROTOCOL.md, "Table 4 ... and Table 5". Prompt, options, fitting 64 shots
into the window, decoding and grading are the closed-book QA protocol shared with TriviaQA
(qa.py, `ClosedBookQATask`): "Answer these questions:\\n" + "Q: {q}\\nA: {a}\\n" per shot +
"Q: {q}\\nA:", greedy, exact match.

- Dataset: NQ-open "dev", the 3,610 questions open-domain QA papers use as the test set.
  Release file `nq_open/NQ-open.dev.jsonl` ({"question", "answer": [str]}); hub:
  `google-research-datasets/nq_open`, split `validation` (the same rows). Document id: "nq-"
  + the first 12 hex digits of the question's sha1, the same whichever source is read.
- Shots: drawn per document (Task.select_shots). Pool: the DPR nq-dev questions, which DPR held
  out of the NQ-open train split (release `nq_open/topics.dpr.nq.dev.txt`, 8,757; DPR's tokenised
  answers are detokenised for display, "May 18 , 2018" -> "May 18, 2018"); hub: train split.
  A shot shows its first gold answer. Which examples the paper used is NOT STATED.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import data
from .base import Doc
from .data import read_dpr, string_list, unique_ids
from .qa import ClosedBookQATask, qa_doc

_DPR_SPACING = (
    (re.compile(r" ([,.;:!?%)\]])"), r"\1"),  # "May 18 , 2018" -> "May 18, 2018"
    (re.compile(r"([(\[$]) "), r"\1"),  # "( second edition" -> "(second edition"
    (re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b"), r"\1"),  # "McDonald 's" -> "McDonald's"
    (re.compile(r"(\w) - (?=\w)"), r"\1-"),  # "2017 - 11 - 05" -> "2017-11-05"
)


def detokenize_dpr(text: str) -> str:
    """Undo the spaces DPR's tokeniser put around punctuation in NQ answers."""
    for pattern, repl in _DPR_SPACING:
        text = pattern.sub(repl, text)
    return text


class NaturalQuestions(ClosedBookQATask):
    name = "nq_open"
    paper_name = "NaturalQuestions"
    paper_table = 4
    paper_shots = (0, 1, 5, 64)
    headline_metric = "exact_match"
    hf_dataset = ("google-research-datasets/nq_open", None, "validation")
    few_shot_pool = "DPR nq-dev (nq_open/topics.dpr.nq.dev.txt), or nq_open train on the hub"
    release_files = ("nq_open/NQ-open.dev.jsonl",)
    release_split = "dev"

    def load(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is not None:
            path = data.release_file(Path(data_dir), "nq_open/NQ-open.dev.jsonl")
            return unique_ids([self.doc(row, path, lineno) for lineno, row in data.read_records(path)])
        source = data.hf_source(self.hf_dataset)
        return unique_ids([self.doc(row, source, i + 1) for i, row in enumerate(data.load_hf(self.hf_dataset))])

    def load_shots(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is not None:
            path = data.release_file(Path(data_dir), "nq_open/topics.dpr.nq.dev.txt")
            return unique_ids([qa_doc("nq", q, answers, detokenize_dpr(answers[0])) for _, q, answers in read_dpr(path)])
        source = data.hf_source(self.hf_dataset, "train")
        rows = data.load_hf(self.hf_dataset, "train")
        return unique_ids([self.doc(row, source, i + 1) for i, row in enumerate(rows)])

    @staticmethod
    def doc(row: dict[str, Any], source: Any, lineno: int) -> Doc:
        """A document from a release or hub row (both are {"question", "answer": [str]})."""
        answers = string_list(row, "answer", source, lineno)
        return qa_doc("nq", data.field(row, "question", source, lineno), answers, answers[0])
