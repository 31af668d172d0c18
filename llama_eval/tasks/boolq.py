"""BoolQ: yes/no questions about a Wikipedia passage (Clark et al. 2019).

Reproduces the BoolQ column of Table 3 of the LLaMA paper (zero-shot accuracy);
protocol in ../shared/reference/PROTOCOL.md.

- Dataset: the validation split, 3,270 questions (test labels are hidden), in the SuperGLUE
  format: release file `boolq/val.jsonl` ({"question", "passage", "idx", "label": "true" |
  "false"}); hub: `aps/super_glue` (the canonical home of `super_glue`), config `boolq`, split
  `validation` (label 0 = false, 1 = true). Both passages read "<title> -- <text>", so the two
  sources give the same prompts. Document ids: `idx`.
- Shots: 0 (no few-shot pool).
- Prompt (NOT STATED in the paper; the harness's template, GPT-3 style):
      "{passage}\nQuestion: {question}?\nAnswer:"  +  " no" | " yes"
- Scoring: calibrated, as the paper states: log P(answer | prompt) - log P(answer | "Answer:").
  Option `boolq_calibration_context` (default "Answer:") sets that bare context; the paper
  gives the string "Answer:" and does not say whether a space follows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import data
from .options import calibration_context
from .base import Doc, MultipleChoiceTask


class BoolQ(MultipleChoiceTask):
    name = "boolq"
    paper_name = "BoolQ"
    paper_table = 3
    paper_shots = (0,)
    headline_metric = "acc"
    hf_dataset = ("aps/super_glue", "boolq", "validation")
    release_files = ("boolq/val.jsonl",)
    release_split = "validation"
    scoring = "calibrated"
    calibration_option = "boolq_calibration_context"
    options = {**MultipleChoiceTask.options, calibration_option: calibration_context("boolq")}

    def from_release(self, data_dir: Path) -> list[Doc]:
        path = data.release_file(data_dir, "boolq/val.jsonl")
        docs = []
        for lineno, row in data.read_records(path):
            label = data.field(row, "label", path, lineno)
            if label not in ("true", "false"):
                raise data.invalid(path, lineno, "label", label, '"true" or "false"')
            docs.append(self._doc(row, path, lineno, label == "true"))
        return docs

    def from_hf_row(self, row: dict[str, Any], index: int) -> Doc:
        source = data.hf_source(self.hf_dataset)
        label = data.field(row, "label", source, index + 1, int)
        if label not in (0, 1):
            raise data.invalid(source, index + 1, "label", label, "0 (false) or 1 (true)")
        return self._doc(row, source, index + 1, label == 1)

    def _doc(self, row: dict[str, Any], source: Any, lineno: int, answer: bool) -> Doc:
        idx = data.field(row, "idx", source, lineno, int)
        passage, question = data.field(row, "passage", source, lineno), data.field(row, "question", source, lineno)
        return {"id": str(idx), "passage": passage, "question": question, "answer": answer}

    def context(self, doc: Doc, shots: list[Doc]) -> str:
        return f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"

    def choices(self, doc: Doc) -> list[str]:
        return [" no", " yes"]

    def gold(self, doc: Doc) -> int:
        return int(doc["answer"])
