"""PIQA: physical commonsense, pick the better of two solutions (Bisk et al. 2020).

Reproduces the PIQA column of Table 3 of the LLaMA paper (zero-shot accuracy);
protocol in ../shared/reference/PROTOCOL.md.

- Dataset: the validation split, 1,838 questions (test labels are hidden). Release files
  `piqa/valid.jsonl` ({"goal", "sol1", "sol2"}) + `piqa/valid-labels.lst` (0 = sol1, 1 = sol2,
  same line order); hub: `ybisk/piqa`, split `validation`. Document ids: 0-based position.
- Shots: 0 (no few-shot pool).
- Prompt (NOT STATED in the paper; the harness's GPT-3-style template):
      "Question: {goal}\nAnswer:"  +  " {sol1}" | " {sol2}"
  Solutions are kept verbatim, trailing spaces included.
- Scoring: log-likelihood per character of the solution (the paper's default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import data
from .base import Doc, MultipleChoiceTask


class PIQA(MultipleChoiceTask):
    name = "piqa"
    paper_name = "PIQA"
    paper_table = 3
    paper_shots = (0,)
    headline_metric = "acc"
    hf_dataset = ("ybisk/piqa", None, "validation")
    release_files = ("piqa/valid.jsonl", "piqa/valid-labels.lst")
    release_split = "validation"
    scoring = "chars"

    def from_release(self, data_dir: Path) -> list[Doc]:
        path = data.release_file(data_dir, "piqa/valid.jsonl")
        labels_path = data.release_file(data_dir, "piqa/valid-labels.lst")
        rows = list(data.read_records(path))
        labels = data.read_labels(labels_path, ("0", "1"))
        data.check_count(path, len(rows), labels_path, len(labels))
        return [self._doc(i, row, path, lineno, int(label))
                for i, ((lineno, row), label) in enumerate(zip(rows, labels))]

    def from_hf_row(self, row: dict[str, Any], index: int) -> Doc:
        source = data.hf_source(self.hf_dataset)
        label = data.field(row, "label", source, index + 1, int)
        if label not in (0, 1):
            raise data.invalid(source, index + 1, "label", label, "0 or 1")
        return self._doc(index, row, source, index + 1, label)

    def _doc(self, index: int, row: dict[str, Any], source: Any, lineno: int, label: int) -> Doc:
        goal, sol1, sol2 = (data.field(row, k, source, lineno) for k in ("goal", "sol1", "sol2"))
        return {"id": str(index), "goal": goal, "solutions": [sol1, sol2], "label": label}

    def context(self, doc: Doc, shots: list[Doc]) -> str:
        return f"Question: {doc['goal']}\nAnswer:"

    def choices(self, doc: Doc) -> list[str]:
        return [" " + s for s in doc["solutions"]]

    def gold(self, doc: Doc) -> int:
        return doc["label"]
