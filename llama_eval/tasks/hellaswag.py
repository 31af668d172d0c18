"""HellaSwag: pick the most plausible continuation of a video caption or WikiHow text (Zellers et al. 2019).

Reproduces the HellaSwag column of Table 3 of the LLaMA paper (zero-shot accuracy);
protocol in ../shared/reference/PROTOCOL.md.

- Dataset: the validation split, 10,042 items. Release file `hellaswag/hellaswag_val.jsonl`,
  the jsonl derived from the `hellaswag_val_full.txt.bz2` text dump (see
  ../shared/data/PROVENANCE.md): {"ind", "activity_label", "ctx", "endings", "label": int}.
  Hub: `Rowan/hellaswag`, split `validation` (label is a string there). Document ids: 0-based
  position (the derived file's `ind`; the hub's `ind` is the original one, not the position).
- Text clean-up: the dump's author removed the WikiHow markers from every field: `[header]`,
  `[step]`, `[substeps]` dropped, ` [title]` -> `. `, other `[title]` dropped, double spaces
  collapsed once, one leading/trailing space trimmed. Hub rows get exactly that clean-up
  (`clean`), so both sources give the same prompts. This is close to, but not the same as, the
  harness: the harness drops every `[...]` (one `[portrait]` survives here) and capitalises
  `ctx_b`, whereas the dump's `ctx` = ctx_a + " " + ctx_b with ctx_b as written.
- Shots: 0 (no few-shot pool).
- Prompt (NOT STATED in the paper; the harness's template):
      "{activity_label}: {ctx}"  +  " {ending}" for each of the four endings
- Scoring: log-likelihood per character of the ending (the paper's default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from . import data
from .base import Doc, MultipleChoiceTask

# The dump's replacements, applied in this order (PROVENANCE.md, extract_hellaswag.cpp).
MARKERS = (("[header]", ""), ("[step]", ""), ("[substeps]", ""), (" [title]", ". "),
           ("[title] ", ""), ("[title].", ""), ("  ", " "))


def clean(text: str) -> str:
    """A hub field cleaned the way the release dump's fields were."""
    for old, new in MARKERS:
        text = text.replace(old, new)
    text = text[1:] if text.startswith(" ") else text
    return text[:-1] if text.endswith(" ") else text


class HellaSwag(MultipleChoiceTask):
    name = "hellaswag"
    paper_name = "HellaSwag"
    paper_table = 3
    paper_shots = (0,)
    headline_metric = "acc"
    hf_dataset = ("Rowan/hellaswag", None, "validation")
    release_files = ("hellaswag/hellaswag_val.jsonl",)
    release_split = "validation"
    scoring = "chars"

    def from_release(self, data_dir: Path) -> list[Doc]:
        path = data.release_file(data_dir, "hellaswag/hellaswag_val.jsonl")
        docs = []
        for i, (lineno, row) in enumerate(data.read_records(path)):
            label = data.field(row, "label", path, lineno, int)
            # The release text is already clean; cleaning it again would change it (`clean` is
            # not idempotent: a triple space becomes a double one each time).
            docs.append(self._doc(i, row, path, lineno, label, fix=str))
        return docs

    def from_hf_row(self, row: dict[str, Any], index: int) -> Doc:
        source = data.hf_source(self.hf_dataset)
        label = data.field(row, "label", source, index + 1)
        if label not in ("0", "1", "2", "3"):
            raise data.invalid(source, index + 1, "label", label, '"0" to "3"')
        return self._doc(index, row, source, index + 1, int(label), clean)

    def _doc(self, index: int, row: dict[str, Any], source: Any, lineno: int, label: int,
             fix: Callable[[str], str]) -> Doc:
        endings = data.field(row, "endings", source, lineno, list)
        if len(endings) != 4 or not all(isinstance(e, str) for e in endings):
            raise data.invalid(source, lineno, "endings", endings, "a list of 4 strings")
        if label not in range(4):
            raise data.invalid(source, lineno, "label", label, "0 to 3")
        return {
            "id": str(index),
            "activity_label": fix(data.field(row, "activity_label", source, lineno)),
            "ctx": fix(data.field(row, "ctx", source, lineno)),
            "endings": [fix(e) for e in endings],
            "label": label,
        }

    def context(self, doc: Doc, shots: list[Doc]) -> str:
        return f"{doc['activity_label']}: {doc['ctx']}"

    def choices(self, doc: Doc) -> list[str]:
        return [" " + e for e in doc["endings"]]

    def gold(self, doc: Doc) -> int:
        return doc["label"]
