"""WinoGrande: fill the blank of a Winograd-style sentence with one of two names (Sakaguchi et al. 2020).

Reproduces the WinoGrande column of Table 3 of the LLaMA paper (zero-shot accuracy);
protocol in ../shared/reference/PROTOCOL.md.

- Dataset: the dev set shared by all training sizes (= hub `winogrande_xl` validation),
  1,267 sentences. Release file `winogrande/dev.jsonl` ({"qID", "sentence", "option1",
  "option2", "answer": "1" | "2"}; `dev-labels.lst` repeats `answer` and is not needed);
  hub: `allenai/winogrande`, config `winogrande_xl`, split `validation` (no `qID` there).
  Document ids: 0-based position, so both sources agree.
- Shots: 0 (no few-shot pool).
- Prompt: partial scoring (Trinh & Le 2018, as in GPT-3 and the harness; how the paper split
  the sentence is NOT STATED). Each option is substituted for the `_`; the context is the
  sentence up to and including the option, the continuation the rest after the blank, the
  same for both options:
      "Sarah was a much better surgeon than Maria so Sarah"  +  " always got the easier cases."
      "Sarah was a much better surgeon than Maria so Maria"  +  " always got the easier cases."
  The continuation is " " + the rest stripped (in the real data a space always follows `_`).
- Scoring: log-likelihood of the shared continuation. Normalising by characters divides both
  options by the same length, so `acc`, `acc_raw` and `acc_chars` always agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import data
from .base import Doc, MultipleChoiceTask, Settings
from ..requests import LoglikelihoodRequest, Request


class WinoGrande(MultipleChoiceTask):
    name = "winogrande"
    paper_name = "WinoGrande"
    paper_table = 3
    paper_shots = (0,)
    headline_metric = "acc"
    hf_dataset = ("allenai/winogrande", "winogrande_xl", "validation")
    release_files = ("winogrande/dev.jsonl",)
    release_split = "dev"
    scoring = "chars"

    def from_release(self, data_dir: Path) -> list[Doc]:
        path = data.release_file(data_dir, "winogrande/dev.jsonl")
        return [self._doc(i, row, path, lineno) for i, (lineno, row) in enumerate(data.read_records(path))]

    def from_hf_row(self, row: dict[str, Any], index: int) -> Doc:
        return self._doc(index, row, data.hf_source(self.hf_dataset), index + 1)

    def _doc(self, index: int, row: dict[str, Any], source: Any, lineno: int) -> Doc:
        sentence = data.field(row, "sentence", source, lineno)
        if sentence.count("_") != 1:
            raise data.invalid(source, lineno, "sentence", sentence, "a sentence with exactly one '_' blank")
        answer = data.field(row, "answer", source, lineno)
        if answer not in ("1", "2"):
            raise data.invalid(source, lineno, "answer", answer, '"1" or "2"')
        options = [data.field(row, "option1", source, lineno), data.field(row, "option2", source, lineno)]
        return {"id": str(index), "sentence": sentence, "options": options, "label": int(answer) - 1}

    def contexts(self, doc: Doc) -> list[str]:
        """One context per option: the sentence up to the blank, the option filled in."""
        before = doc["sentence"].split("_")[0]
        return [before + option for option in doc["options"]]

    def choices(self, doc: Doc) -> list[str]:
        """The continuation scored for each option (the same text for both)."""
        after = doc["sentence"].split("_")[1]
        return [" " + after.strip()] * len(doc["options"])

    def gold(self, doc: Doc) -> int:
        return doc["label"]

    def requests(self, doc: Doc, shots: list[Doc], settings: Settings) -> list[Request]:
        return [LoglikelihoodRequest(ctx, cont) for ctx, cont in zip(self.contexts(doc), self.choices(doc))]
