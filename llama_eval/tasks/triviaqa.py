"""TriviaQA: closed-book trivia questions (Joshi et al. 2017).

Reproduces Table 5 of the LLaMA paper (exact match at 0, 1, 5 and 64 shots); protocol in
../shared/reference/PROTOCOL.md, "Table 4 ... and Table 5". Prompt, options, fitting 64 shots
into the window, decoding and grading are the closed-book QA protocol shared with
NaturalQuestions (qa.py, `ClosedBookQATask`), with exact match against every alias.

- Dataset: the paper evaluates "on the dev set of the filtered set"; which file exactly is NOT
  STATED. Two sources; the data source's `variant` field (run.json; Table 5 marks
  "unfiltered") says which one a run used:
    hub (no --data-dir, variant "filtered", the default): `mandarjoshi/trivia_qa`
      `rc.nocontext` `validation` (17,944): the questions of the filtered (reading-comprehension)
      dev set without their evidence documents, as the harness reads the paper ({"question", "answer": {"aliases",
      "value", ...}}).
    --data-dir (variant "unfiltered"): `triviaqa/topics.dpr.trivia.test.txt`, DPR's open-domain
      test split (11,313),
      which is the official *unfiltered* dev set: the filtered one is not in ../shared/data, so
      these numbers are close to, but not, the paper's set.
  Gold answers: every alias (the hub's `aliases` plus its `value`). Document id: "tqa-" + the
  first 12 hex digits of the question's sha1.
- DPR files CSV-quote some questions twice; they are decoded (data.undo_double_quoting).
- Shots: drawn per document. Pool: hub `rc.nocontext` train; release
  `triviaqa/topics.dpr.trivia.dev.txt` (8,837, held out of the unfiltered train set). A shot
  shows the hub's canonical `value`; DPR files list aliases in no order (the first may be
  "🚁" for "Helicopter"), so a DPR shot shows `shot_answer(aliases)`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from ..metrics import normalize_answer
from . import data
from .base import Doc
from .data import read_dpr, string_list, unique_ids
from .qa import ClosedBookQATask, qa_doc


def shot_answer(aliases: Sequence[str]) -> str:
    """The alias that best names the answer: the one whose normalised text occurs as a run of
    whole words in the most aliases ("Lusitania" in "Roman Lusitania", "Lusitania (ancient
    region)", ...); ties go to the shortest, then the earliest."""
    padded = [f" {normalize_answer(a)} " for a in aliases]  # spaces make the match whole-word
    support = [sum(p in q for q in padded) if p.strip() else 0 for p in padded]
    return aliases[max(range(len(aliases)), key=lambda i: (support[i], -len(aliases[i]), -i))]


class TriviaQA(ClosedBookQATask):
    """The closed-book QA protocol (qa.py) on TriviaQA's data."""

    name = "triviaqa"
    paper_name = "TriviaQA"
    paper_table = 5
    paper_shots = (0, 1, 5, 64)
    headline_metric = "exact_match"
    hf_dataset = ("mandarjoshi/trivia_qa", "rc.nocontext", "validation")
    few_shot_pool = "DPR trivia-dev (triviaqa/topics.dpr.trivia.dev.txt), or rc.nocontext train on the hub"
    release_files = ("triviaqa/topics.dpr.trivia.test.txt",)
    release_split = "dev"

    def source(self, data_dir: Path | None) -> data.DataSource:
        """The release file is DPR's open-domain test split, the official *unfiltered* dev set;
        the hub's rc.nocontext validation split is the filtered dev set the paper reports."""
        return replace(super().source(data_dir), variant="unfiltered" if data_dir is not None else "filtered")

    def load(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is not None:
            return self.from_dpr(data.release_file(Path(data_dir), "triviaqa/topics.dpr.trivia.test.txt"))
        return self.from_hf(None)

    def load_shots(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is not None:
            return self.from_dpr(data.release_file(Path(data_dir), "triviaqa/topics.dpr.trivia.dev.txt"))
        return self.from_hf("train")

    @staticmethod
    def from_dpr(path: Path) -> list[Doc]:
        return unique_ids([qa_doc("tqa", q, aliases, shot_answer(aliases)) for _, q, aliases in read_dpr(path)])

    def from_hf(self, split: str | None) -> list[Doc]:
        source = data.hf_source(self.hf_dataset, split)
        rows = data.load_hf(self.hf_dataset, split)
        return unique_ids([self.hf_doc(row, source, i + 1) for i, row in enumerate(rows)])

    @staticmethod
    def hf_doc(row: dict[str, Any], source: Any, lineno: int) -> Doc:
        """A document from a hub row: {"question", "answer": {"aliases": [str], "value": str, ...}}."""
        answer = data.field(row, "answer", source, lineno, dict)
        aliases = string_list(answer, "aliases", source, lineno)
        value = data.field(answer, "value", source, lineno)
        golds = aliases if value in aliases else [*aliases, value]
        return qa_doc("tqa", data.field(row, "question", source, lineno), golds, value)

