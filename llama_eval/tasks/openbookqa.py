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
from .base import Doc, MultipleChoiceTask, Settings
from ..requests import LoglikelihoodRequest, Request


class OpenBookQA(MultipleChoiceTask):
    name = "openbookqa"
    paper_name = "OBQA"
    paper_table = 3
    paper_shots = (0,)
    headline_metric = "acc"
    hf_dataset = ("allenai/openbookqa", "main", "test")
    scoring = "calibrated"

    def load(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is not None:
            return self.from_release(Path(data_dir))
        return [self.from_hf_row(row, i) for i, row in enumerate(data.load_hf(self.hf_dataset))]

    def from_release(self, data_dir: Path) -> list[Doc]:
        path = data.release_file(data_dir, "openbookqa/Main/test.jsonl")
        docs = []
        for lineno, row in data.read_records(path):
            stem, texts, labels = data.ai2_question(row, path, lineno)
            docs.append(self._doc(row, stem, texts, labels, path, lineno))
        return docs

    def from_hf_row(self, row: dict[str, Any], index: int) -> Doc:
        source = data.hf_source(self.hf_dataset)
        texts, labels = data.hf_choices(row, source, index + 1)
        return self._doc(row, data.field(row, "question_stem", source, index + 1), texts, labels, source, index + 1)

    def _doc(self, row: dict[str, Any], stem: str, texts: list[str], labels: list[str], source: Any,
             lineno: int) -> Doc:
        key = data.field(row, "answerKey", source, lineno)
        return {"id": data.field(row, "id", source, lineno), "question": stem, "choices": texts,
                "labels": labels, "gold": data.answer_index(labels, key, source, lineno)}

    def context(self, doc: Doc, shots: list[Doc]) -> str:
        return doc["question"]

    def choices(self, doc: Doc) -> list[str]:
        return [" " + text for text in doc["choices"]]

    def gold(self, doc: Doc) -> int:
        return doc["gold"]

    def requests(self, doc: Doc, shots: list[Doc], settings: Settings) -> list[Request]:
        # The base shape's requests, with the bare calibration context read from the option.
        bare = settings.option("openbookqa_calibration_context", self.calibration_context)
        ctx = self.context(doc, shots)
        return ([LoglikelihoodRequest(ctx, c) for c in self.choices(doc)]
                + [LoglikelihoodRequest(bare, c) for c in self.choices(doc)])
