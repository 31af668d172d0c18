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
from typing import Any, ClassVar

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
    release_path: ClassVar[str] = "arc/ARC-Easy/ARC-Easy-Test.jsonl"

    def load(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is not None:
            return self.from_release(Path(data_dir))
        return [self.from_hf_row(row, i) for i, row in enumerate(data.load_hf(self.hf_dataset))]

    def from_release(self, data_dir: Path) -> list[Doc]:
        path = data.release_file(data_dir, self.release_path)
        docs = []
        for lineno, row in data.read_records(path):
            stem, texts, labels = data.ai2_question(row, path, lineno)
            docs.append(self._doc(row, stem, texts, labels, path, lineno))
        return docs

    def from_hf_row(self, row: dict[str, Any], index: int) -> Doc:
        source = data.hf_source(self.hf_dataset)
        texts, labels = data.hf_choices(row, source, index + 1)
        return self._doc(row, data.field(row, "question", source, index + 1), texts, labels, source, index + 1)

    def _doc(self, row: dict[str, Any], stem: str, texts: list[str], labels: list[str], source: Any,
             lineno: int) -> Doc:
        key = data.field(row, "answerKey", source, lineno)
        return {"id": data.field(row, "id", source, lineno), "question": stem, "choices": texts,
                "labels": labels, "gold": data.answer_index(labels, key, source, lineno)}

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
    release_path = "arc/ARC-Challenge/ARC-Challenge-Test.jsonl"
