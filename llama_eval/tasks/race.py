"""RACE: reading comprehension from English exams for Chinese middle and high schools (Lai et al. 2017).

Reproduces Table 6 of the LLaMA paper: RACE-middle and RACE-high, zero-shot accuracy; protocol
in ../shared/reference/PROTOCOL.md, "Table 6". The paper says only that it follows Brown et al.
(2020), GPT-3; split, prompt and scoring are NOT STATED.

- Dataset: the test split, scored per question: 1,436 middle and 3,498 high questions (in 362
  and 1,045 articles). The old harness's `race` task (v0.3) is not this test: it is RACE-high
  only, groups the questions by article and scores only the last question of each article
  (1,045 items).
  Release file `race/RACE_test.tar.gz`, members `RACE/test/{middle,high}/<n>.txt`, each one
  article {"article", "questions", "options", "answers", "id"}: parallel lists, 4 options per
  question, answers the letters A-D, `id` the level plus the file name ("middle999.txt").
  Hub: `ehovy/race`, config `middle` / `high`, split `test`, one row per question
  {"example_id" (the article's id), "article", "question", "options", "answer"}; the hub has no
  question number, so a question's number is its place among its article's rows (the hub keeps
  the release's order inside an article).
  Document id: "<article id>#<question number from 0>", e.g. "middle999.txt#4". Documents are
  ordered by article id, then question number, whatever order the source lists them in.
- Shots: 0.
- Prompt, option `race_layout`:
    gpt3     (default) GPT-3's layout for RACE (Brown et al. 2020, appendix figures G.1 and G.3):
             the article, then the article's earlier questions each with its correct answer,
             then the question with its answer slot:
                 "Article: {article}\\n\\n" + "Q: {earlier q}\\nA: {its answer}\\n\\n" ... +
                 "Q: {question}\\nA:"  +  " {option}" for each option
             (the figures' line breaks are lost in the paper's text; this whitespace is ours).
    harness  one question at a time, as the harness lays it out:
                 "Article: {article}\\n\\nQuestion: {question}\\nAnswer:"  +  " {option}"
  Article, questions and options are used verbatim. About half the questions are cloze-style
  ("_ likes fruit for breakfast."); as in GPT-3's figures the blank stays in the question and
  the option is scored in the answer slot. Questions of one article share its prefix, which the
  engine's prefix trie runs once. The longest prompt fits the 2,048-token window.
- Scoring, option `race_scoring` (shared by race_middle and race_high):
    calibrated  (default) GPT-3's rule for RACE (its section 2.4 and the captions of figures G.1
                and G.3, "we normalize by the unconditional probability of each answer"):
                log P(option | prompt) - log P(option | bare), the bare context from option
                `race_calibration_context` (default "A:", the answer slot of this layout; GPT-3
                names "Answer: " or "A: ").
    chars       log-likelihood per character of the option, the paper's general rule.
  Why calibrated by default: the paper's general rule names BoolQ and OBQA as its calibrated
  exceptions, but for RACE it says only "we follow the evaluation setup from Brown et al.
  (2020)", and that setup calibrates RACE. The RACE-specific sentence is read as the rule for
  RACE. Both are cheap, so every run reports both: acc (the rule chosen), acc_chars and
  acc_calibrated (summary.csv has a row for each), and acc_raw.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from ..errors import UserError
from . import data
from .base import Doc, MultipleChoiceTask, Settings
from .options import Option

RELEASE_PATH = "race/RACE_test.tar.gz"
LETTERS = ("A", "B", "C", "D")
RACE_SCORING = Option("calibrated", "calibrated: GPT-3's rule for RACE (the paper follows Brown et al. for RACE); "
                     "chars: log-likelihood per character (the paper's general rule)", choices=("calibrated", "chars"))
RACE_LAYOUT = Option("gpt3", "gpt3: article, its earlier questions with answers, 'Q: {question}\\nA:' (GPT-3's "
                     "figures); harness: 'Article: ...\\n\\nQuestion: {question}\\nAnswer:'", choices=("gpt3", "harness"))
RACE_CALIBRATION = Option("A:", "the bare context RACE's calibration scores each answer after "
                          "(log P(answer | prompt) - log P(answer | this))")


def read_articles(path: Path, level: str) -> list[tuple[str, dict[str, Any]]]:
    """(member name, article object) for every RACE/test/<level>/ file of the release archive."""
    prefix = f"RACE/test/{level}/"
    articles = []
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                if not (member.isfile() and member.name.startswith(prefix)):
                    continue
                raw = archive.extractfile(member).read()  # type: ignore[union-attr]
                try:
                    article = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    raise UserError(f"{path}, member {member.name}: not a JSON article ({e}); "
                                    "the archive is damaged or is not the RACE release") from None
                if not isinstance(article, dict):
                    raise UserError(f"{path}, member {member.name}: expected a JSON object, "
                                    f"got {type(article).__name__}")
                articles.append((member.name, article))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable gzip'd tar archive ({e}); it should be the release's "
                        f"{RELEASE_PATH} (see ../shared/data/PROVENANCE.md)") from None
    if not articles:
        raise UserError(f"{path} holds no {prefix}<n>.txt members; it should be the release's {RELEASE_PATH}")
    return articles


def release_docs(article: dict[str, Any], member: str, level: str, source: str) -> list[Doc]:
    """The documents of one release article, one per question. `source` names the member in
    errors; a member is one line of JSON, so errors say line 1."""
    article_id = data.field(article, "id", source, 1)
    expected_id = level + PurePosixPath(member).name
    if article_id != expected_id:
        raise data.invalid(source, 1, "id", article_id, f"{expected_id!r}, the member's level and file name")
    text = data.field(article, "article", source, 1)
    questions, options, answers = (data.field(article, name, source, 1, list)
                                   for name in ("questions", "options", "answers"))
    for name, values in (("options", options), ("answers", answers)):
        if len(values) != len(questions):
            raise data.invalid(source, 1, name, values, f"a list of {len(questions)} entries, one per question")
    docs = []
    for number, (question, choices, answer) in enumerate(zip(questions, options, answers)):
        if not isinstance(question, str):
            raise data.invalid(source, 1, f"questions[{number}]", question, "a string")
        docs.append(race_doc(article_id, number, text, question,
                             checked_options(choices, f"options[{number}]", source, 1),
                             gold_index(answer, f"answers[{number}]", source, 1)))
    return docs


def hub_doc(row: dict[str, Any], number: int, level: str, source: str, lineno: int) -> Doc:
    """The document of a hub row, the question numbered `number` within its article."""
    article_id = data.field(row, "example_id", source, lineno)
    if not re.fullmatch(rf"{level}\d+\.txt", article_id):
        raise data.invalid(source, lineno, "example_id", article_id, f"'{level}<number>.txt', a {level}-school article")
    return race_doc(article_id, number, data.field(row, "article", source, lineno),
                    data.field(row, "question", source, lineno),
                    checked_options(data.field(row, "options", source, lineno, list), "options", source, lineno),
                    gold_index(data.field(row, "answer", source, lineno), "answer", source, lineno))


def checked_options(value: Any, name: str, source: str, lineno: int) -> list[str]:
    if not (isinstance(value, list) and len(value) == len(LETTERS) and all(isinstance(o, str) for o in value)):
        raise data.invalid(source, lineno, name, value, "a list of 4 strings")
    return value


def gold_index(value: Any, name: str, source: str, lineno: int) -> int:
    if value not in LETTERS:
        raise data.invalid(source, lineno, name, value, "one of the letters A, B, C, D")
    return LETTERS.index(value)


def race_doc(article_id: str, number: int, article: str, question: str, options: list[str], gold: int) -> Doc:
    return {"id": f"{article_id}#{number}", "article": article, "question": question, "options": options, "gold": gold}


def reading_order(doc: Doc) -> tuple[str, int]:
    """Sort key: article id, then question number (numerically: "#10" after "#9")."""
    article_id, _, number = doc["id"].rpartition("#")
    return article_id, int(number)


def in_reading_order(docs: list[Doc]) -> list[Doc]:
    """The documents sorted by article and question, each with "earlier": the (question, correct
    option) pairs before it in its article, which GPT-3's layout shows."""
    docs = sorted(docs, key=reading_order)
    for i, doc in enumerate(docs):
        before = docs[i - 1] if i else None
        same = before is not None and reading_order(before)[0] == reading_order(doc)[0]
        doc["earlier"] = [*before["earlier"], (before["question"], before["options"][before["gold"]])] if same else []
    return docs


class RACEMiddle(MultipleChoiceTask):
    """RACE-middle. `load` is overridden: a hub row's question number depends on the rows before it."""

    name = "race_middle"
    paper_name = "RACE-middle"
    paper_table = 6
    paper_shots = (0,)
    headline_metric = "acc"
    hf_dataset = ("ehovy/race", "middle", "test")
    scoring = "calibrated"  # the default of option race_scoring
    release_files = (RELEASE_PATH,)
    # Both levels share one protocol, so they share its options.
    calibration_option = "race_calibration_context"
    options = {**MultipleChoiceTask.options, "race_scoring": RACE_SCORING, "race_layout": RACE_LAYOUT,
               calibration_option: RACE_CALIBRATION}
    level: ClassVar[str] = "middle"

    def load(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is not None:
            return self.from_release(Path(data_dir))
        source = data.hf_source(self.hf_dataset)
        seen: Counter[str] = Counter()  # rows read so far per article: the next question's number
        docs = []
        for i, row in enumerate(data.load_hf(self.hf_dataset)):
            article_id = data.field(row, "example_id", source, i + 1)
            docs.append(hub_doc(row, seen[article_id], self.level, source, i + 1))
            seen[article_id] += 1
        return in_reading_order(docs)

    def from_release(self, data_dir: Path) -> list[Doc]:
        path = data.release_file(data_dir, RELEASE_PATH)
        docs = []
        for member, article in read_articles(path, self.level):
            docs += release_docs(article, member, self.level, f"{path}, member {member}")
        return in_reading_order(docs)

    def context(self, doc: Doc, shots: list[Doc], layout: str = "gpt3") -> str:
        if layout == "harness":
            return f"Article: {doc['article']}\n\nQuestion: {doc['question']}\nAnswer:"
        earlier = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in doc.get("earlier", []))
        return f"Article: {doc['article']}\n\n{earlier}Q: {doc['question']}\nA:"

    def requests(self, doc: Doc, shots: list[Doc], settings: Settings):
        return self.choice_requests(self.context(doc, shots, self.option(settings, "race_layout")), doc, settings)

    def choices(self, doc: Doc) -> list[str]:
        return [" " + option for option in doc["options"]]

    def gold(self, doc: Doc) -> int:
        return doc["gold"]

    # -- the scoring rule is a run option here, not a class constant ---------------------
    def scoring_rule(self, settings: Settings) -> str:
        return self.option(settings, "race_scoring")


class RACEHigh(RACEMiddle):
    """The same task on the high-school articles: only the data differs."""

    name = "race_high"
    paper_name = "RACE-high"
    hf_dataset = ("ehovy/race", "high", "test")
    level = "high"
