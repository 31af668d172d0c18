"""HellaSwag: pick the most plausible continuation of a video caption or WikiHow text (Zellers et al. 2019).

Reproduces the HellaSwag column of Table 3 of the LLaMA paper (zero-shot accuracy);
protocol in ../shared/reference/PROTOCOL.md.

- Dataset: the validation split, 10,042 items. Release file `hellaswag/hellaswag_val.jsonl`,
  the jsonl derived from the `hellaswag_val_full.txt.bz2` text dump (see
  ../shared/data/PROVENANCE.md): {"ind", "activity_label", "ctx", "endings", "label": int}.
  Hub: `Rowan/hellaswag`, split `validation` (label is a string there). Document ids: 0-based
  position (the derived file's `ind`; the hub's `ind` is the original one, not the position).
- Text, option `hellaswag_text`:
    harness (default) the preprocessing with which the harness reproduces the paper's HellaSwag
            (lm-eval's `hellaswag`): context = activity label + ": " + ctx_a + " " + ctx_b with
            ctx_b capitalised (Python's str.capitalize: first letter upper, the rest lower);
            then, on context and each ending: strip, " [title]" -> ". ", every bracketed "[...]"
            removed, double spaces made single. The release dump has no ctx_a / ctx_b, only
            their join with its own clean-up (below), so ctx_b is taken as the text after the
            last sentence end (". ", "! ", "? ") when it starts with a lowercase letter, as
            ActivityNet's ctx_b fragments do ("A man is sitting on a roof. he" -> "... roof. He");
            WikiHow contexts mostly have an empty ctx_b. Hub rows give the same text from their
            ctx_a / ctx_b (the tests check both sources agree).
    dump    the text as the release dump's author cleaned it: `[header]`, `[step]`, `[substeps]`
            dropped, ` [title]` -> `. `, other `[title]` dropped, double spaces collapsed once,
            one leading/trailing space trimmed (hub rows get exactly that clean-up, `clean`);
            ctx_b as written.
  One difference from the harness: the text is stripped at the end, so an ending that starts
  with a marker ("[title] Lower the egg ...", rare) has no
  leading space left, as in the dump; both sources then give the same prompts.
- Shots: 0 (no few-shot pool).
- Prompt (NOT STATED in the paper; the harness's template, and GPT-3's figure G.9):
      "{activity_label}: {ctx}"  +  " {ending}" for each of the four endings
- Scoring: log-likelihood per character of the ending (the paper's default).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from . import data
from .base import Doc, MultipleChoiceTask, Settings
from .options import Option

# The dump's replacements, applied in this order (PROVENANCE.md, extract_hellaswag.cpp).
MARKERS = (("[header]", ""), ("[step]", ""), ("[substeps]", ""), (" [title]", ". "),
           ("[title] ", ""), ("[title].", ""), ("  ", " "))


_BRACKETED = re.compile(r"\[.*?\]")
# ctx_b inside the dump's joined ctx: the text after the last sentence end, if it starts lowercase.
_LAST_FRAGMENT = re.compile(r"(.*[.!?] )([a-z][^.!?]*)", re.DOTALL)


def harness_text(text: str) -> str:
    """The harness's HellaSwag preprocessing of one text (see the module docstring)."""
    text = text.strip().replace(" [title]", ". ")
    # The final strip is ours: an ending that starts with a marker ("[title] Lower the egg")
    # would keep a leading space, which the release dump (markers already dropped) cannot show.
    return _BRACKETED.sub("", text).replace("  ", " ").strip()


def split_dump_context(ctx: str) -> tuple[str, str]:
    """(ctx_a, ctx_b) of a dump context: ctx_b is a trailing lowercase fragment, or ""."""
    fragment = _LAST_FRAGMENT.fullmatch(ctx)
    return (fragment[1][:-1], fragment[2]) if fragment else (ctx, "")


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
    options = {**MultipleChoiceTask.options,
               "hellaswag_text": Option("harness", "harness: the harness's preprocessing (ctx_b capitalised, every "
                                        "[...] removed); dump: the text as the release dump cleaned it",
                                        choices=("harness", "dump"))}

    def from_release(self, data_dir: Path) -> list[Doc]:
        path = data.release_file(data_dir, "hellaswag/hellaswag_val.jsonl")
        docs = []
        for i, (lineno, row) in enumerate(data.read_records(path)):
            label = data.field(row, "label", path, lineno, int)
            # The release text is already clean; cleaning it again would change it (`clean` is
            # not idempotent: a triple space becomes a double one each time).
            doc = self._doc(i, row, path, lineno, label, fix=str)
            ctx_a, ctx_b = split_dump_context(doc["ctx"])
            docs.append(self._with_harness_text(doc, ctx_a, ctx_b, row["endings"]))
        return docs

    def from_hf_row(self, row: dict[str, Any], index: int) -> Doc:
        source = data.hf_source(self.hf_dataset)
        label = data.field(row, "label", source, index + 1)
        if label not in ("0", "1", "2", "3"):
            raise data.invalid(source, index + 1, "label", label, '"0" to "3"')
        doc = self._doc(index, row, source, index + 1, int(label), clean)
        ctx_a, ctx_b = (data.field(row, name, source, index + 1) for name in ("ctx_a", "ctx_b"))
        return self._with_harness_text(doc, ctx_a, ctx_b, row["endings"])

    @staticmethod
    def _with_harness_text(doc: Doc, ctx_a: str, ctx_b: str, endings: list[str]) -> Doc:
        label = doc["activity_label"]
        doc["harness_context"] = harness_text(f"{label}: {ctx_a} {ctx_b.capitalize()}")
        doc["harness_endings"] = [harness_text(e) for e in endings]
        return doc

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
        """The dump's text; the run's option picks the text in `requests`."""
        return f"{doc['activity_label']}: {doc['ctx']}"

    def choices(self, doc: Doc) -> list[str]:
        return [" " + e for e in doc["endings"]]

    def requests(self, doc: Doc, shots: list[Doc], settings: Settings):
        if self.option(settings, "hellaswag_text") == "dump":
            return super().requests(doc, shots, settings)
        return self.choice_requests(doc["harness_context"], {**doc, "endings": doc["harness_endings"]}, settings)

    def score(self, doc: Doc, results, settings: Settings):
        if self.option(settings, "hellaswag_text") == "dump":
            return super().score(doc, results, settings)
        # The per-character rule divides by the length of the endings actually scored.
        return super().score({**doc, "endings": doc["harness_endings"]}, results, settings)

    def gold(self, doc: Doc) -> int:
        return doc["label"]
