"""SIQA (Social IQa): reasoning about people's actions and their social consequences (Sap et al. 2019).

Reproduces the SIQA column of Table 3 of the LLaMA paper (zero-shot accuracy);
protocol in ../shared/reference/PROTOCOL.md. The paper warns that SIQA swings a lot during
training and may not be reliable.

- Dataset: the dev set, 1,954 questions. Release files `siqa/dev.jsonl` ({"context",
  "question", "answerA", "answerB", "answerC"}) + `siqa/dev-labels.lst` (1-BASED: 1 = answerA);
  hub: `allenai/social_i_qa`, split `validation` (label "1".."3", also 1-based).
  Document ids: 0-based position.
- Shots: 0 (no few-shot pool).
- Prompt (NOT STATED in the paper; the harness's template):
      "Q: {context} {question}\nA:"  +  " {answerA}" | " {answerB}" | " {answerC}"
- Scoring: log-likelihood per character of the answer (the paper's default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import data
from .base import Doc, MultipleChoiceTask

ANSWER_FIELDS = ("answerA", "answerB", "answerC")


class SIQA(MultipleChoiceTask):
    name = "siqa"
    paper_name = "SIQA"
    paper_table = 3
    paper_shots = (0,)
    headline_metric = "acc"
    hf_dataset = ("allenai/social_i_qa", None, "validation")
    release_files = ("siqa/dev.jsonl", "siqa/dev-labels.lst")
    release_split = "dev"
    scoring = "chars"

    def from_release(self, data_dir: Path) -> list[Doc]:
        path = data.release_file(data_dir, "siqa/dev.jsonl")
        labels_path = data.release_file(data_dir, "siqa/dev-labels.lst")
        rows = list(data.read_records(path))
        labels = data.read_labels(labels_path, ("1", "2", "3"))
        data.check_count(path, len(rows), labels_path, len(labels))
        return [self._doc(i, row, path, lineno, int(label) - 1)
                for i, ((lineno, row), label) in enumerate(zip(rows, labels))]

    def from_hf_row(self, row: dict[str, Any], index: int) -> Doc:
        source = data.hf_source(self.hf_dataset)
        label = data.field(row, "label", source, index + 1)
        if label not in ("1", "2", "3"):
            raise data.invalid(source, index + 1, "label", label, '"1", "2" or "3"')
        return self._doc(index, row, source, index + 1, int(label) - 1)

    def _doc(self, index: int, row: dict[str, Any], source: Any, lineno: int, label: int) -> Doc:
        return {
            "id": str(index),
            "context": data.field(row, "context", source, lineno),
            "question": data.field(row, "question", source, lineno),
            "answers": [data.field(row, k, source, lineno) for k in ANSWER_FIELDS],
            "label": label,  # 0-based
        }

    def context(self, doc: Doc, shots: list[Doc]) -> str:
        return f"Q: {doc['context']} {doc['question']}\nA:"

    def choices(self, doc: Doc) -> list[str]:
        return [" " + a for a in doc["answers"]]

    def gold(self, doc: Doc) -> int:
        return doc["label"]
