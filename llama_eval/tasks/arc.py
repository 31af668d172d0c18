"""ARC: grade-school science questions, Easy and Challenge sets (Clark et al. 2018).

Reproduces the ARC-e and ARC-c columns of Table 3 of the LLaMA paper (zero-shot accuracy);
protocol in ../shared/reference/PROTOCOL.md.

- Dataset: the test splits, 2,376 (Easy) and 1,172 (Challenge) questions. Release files
  `arc/ARC-Easy/ARC-Easy-Test.jsonl` and `arc/ARC-Challenge/ARC-Challenge-Test.jsonl`
  ({"id", "question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}); hub:
  `allenai/ai2_arc`, configs `ARC-Easy` / `ARC-Challenge`, split `test`. Document ids: `id`.
  Rows have 3 to 5 choices labelled ABCD, 1234, ABC, 123 or ABCDE: the answer key is looked
  up among the row's own labels.
- Shots: 0 (no few-shot pool).
- Prompt (NOT STATED in the paper; GPT-3's and the harness's template):
      "Question: {stem}\nAnswer:"  +  " {choice text}" for each choice
- Scoring: log-likelihood per character of the choice. GPT-3 calibrated ARC, but the LLaMA
  paper names only OBQA and BoolQ as calibrated, so ARC keeps the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import data
from .base import Doc, MultipleChoiceTask


class ARCEasy(MultipleChoiceTask):
    name = "arc_easy"
    paper_name = "ARC-e"
    paper_table = 3
    paper_shots = (0,)
    headline_metric = "acc"
    hf_dataset = ("allenai/ai2_arc", "ARC-Easy", "test")
    scoring = "chars"
    release_files = ("arc/ARC-Easy/ARC-Easy-Test.jsonl",)

    def from_release(self, data_dir: Path) -> list[Doc]:
        path = data.release_file(data_dir, self.release_files[0])
        return [data.ai2_release_doc(row, path, lineno) for lineno, row in data.read_records(path)]

    def from_hf_row(self, row: dict[str, Any], index: int) -> Doc:
        return data.ai2_hub_doc(row, "question", data.hf_source(self.hf_dataset), index + 1)

    def context(self, doc: Doc, shots: list[Doc]) -> str:
        return f"Question: {doc['question']}\nAnswer:"

    def choices(self, doc: Doc) -> list[str]:
        return [" " + text for text in doc["choices"]]

    def gold(self, doc: Doc) -> int:
        return doc["gold"]


class ARCChallenge(ARCEasy):
    """The same task on the Challenge set: only the data differs."""

    name = "arc_challenge"
    paper_name = "ARC-c"
    hf_dataset = ("allenai/ai2_arc", "ARC-Challenge", "test")
    release_files = ("arc/ARC-Challenge/ARC-Challenge-Test.jsonl",)
