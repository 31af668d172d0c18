"""OpenBookQA: elementary science questions needing a fact plus common knowledge (Mihaylov et al. 2018).

Reproduces the OBQA column of Table 3 of the LLaMA paper (zero-shot accuracy);
protocol in ../shared/reference/PROTOCOL.md.

- Dataset: the main test split, 500 questions. Release file `openbookqa/Main/test.jsonl`
  ({"id", "question": {"stem", "choices": [{"text", "label": "A".."D"}]}, "answerKey"});
  hub: `allenai/openbookqa`, config `main`, split `test` (the stem is `question_stem` there).
  Document ids: `id`.
- Shots: 0 (no few-shot pool).
- Prompt (NOT STATED in the paper; GPT-3's and the harness's template): the stem, which is
  usually the start of a sentence, continued by each choice:
      "{stem}"  +  " {choice text}" for each choice
- Scoring: calibrated, as the paper states: log P(choice | stem) - log P(choice | "Answer:").
  Option `openbookqa_calibration_context` (default "Answer:") sets that bare context; the
  paper gives the string "Answer:" and does not say whether a space follows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import data
from .options import calibration_context
from .base import Doc, MultipleChoiceTask


class OpenBookQA(MultipleChoiceTask):
    name = "openbookqa"
    paper_name = "OBQA"
    paper_table = 3
    paper_shots = (0,)
    headline_metric = "acc"
    hf_dataset = ("allenai/openbookqa", "main", "test")
    release_files = ("openbookqa/Main/test.jsonl",)
    scoring = "calibrated"
    calibration_option = "openbookqa_calibration_context"
    options = {**MultipleChoiceTask.options, calibration_option: calibration_context("openbookqa")}

    def from_release(self, data_dir: Path) -> list[Doc]:
        path = data.release_file(data_dir, "openbookqa/Main/test.jsonl")
        return [data.ai2_release_doc(row, path, lineno) for lineno, row in data.read_records(path)]

    def from_hf_row(self, row: dict[str, Any], index: int) -> Doc:
        return data.ai2_hub_doc(row, "question_stem", data.hf_source(self.hf_dataset), index + 1)

    def context(self, doc: Doc, shots: list[Doc]) -> str:
        return doc["question"]

    def choices(self, doc: Doc) -> list[str]:
        return [" " + text for text in doc["choices"]]

    def gold(self, doc: Doc) -> int:
        return doc["gold"]
