"""Closed-book question answering as the LLaMA paper runs it (NaturalQuestions, Table 4;
TriviaQA, Table 5): one protocol object, `CLOSED_BOOK_QA`, that both tasks hold.

Protocol (../shared/reference/PROTOCOL.md, "Table 4 ... and Table 5"; the paper's appendix A
and Figure 3):
- Prompt: "Answer these questions:\\n", then "Q: {q}\\nA: {a}\\n" per shot, then "Q: {q}\\nA:".
  What the paper leaves open is a named option (--option name=value):
    qa_question     figure (default): first letter capitalised and "?" added unless the question
                    ends in "?", "." or "!", as in the figure; raw: the question as in the data.
    qa_separator    none (default): shot blocks follow each other, as in the figure;
                    blank: a blank line between blocks (and before the question).
    qa_answer_space no (default): the prompt ends "A:" (the answer's leading space is part of
                    the model's first token); yes: it ends "A: ".
- Shots that do not fit: with 64 shots some prompts exceed LLaMA's 2,048-token window. The
  prompt must leave room for BOS and the 32 new tokens; the engine says whether a request fits
  (Settings.fits) and the task drops whole shots, farthest from the question first
  (Task.fit_shots). How the paper fitted 64 shots is NOT STATED.
- Decoding: greedy, stop at "\\n", at most 32 new tokens (NOT STATED).
- Answer: the paper truncates "at the first line break, final dot, or comma". Option qa_cut:
    final  (default) the first line, without one final "." or "," (and surrounding spaces).
    clause the first line up to its first clause-ending "." or "," (one followed by a space or
           ending the line): "Paris, France" -> "Paris", but "R. H. Thomson" -> "R".
  The default is the reading that loses fewest gold answers when each question's first gold
  answer is fed back verbatim (the ceiling test, tests/test_qa_ceiling.py, on the real files):
  NaturalQuestions 3 of 3,610 fail with `final` (answers that are only punctuation), 312 with
  `clause` (initials, dates "May 18, 2018", "Cannes, France"); TriviaQA (DPR test file) 1 and
  584 of 11,313.
- Scoring: exact match against every gold answer after SQuAD normalisation (metrics.exact_match).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ..metrics import exact_match
from ..requests import Request
from .base import Doc, DocScore, GenerationTask, Settings
from .data import content_id
from .options import Option

HEADER = "Answer these questions:\n"

# Shared by NaturalQuestions and TriviaQA, in QAFormat's field order.
QA_OPTIONS = {
    "qa_question": Option("figure", "figure: capitalised, '?' added as in the paper's figure; raw: as in the data",
                          choices=("figure", "raw")),
    "qa_separator": Option("none", "none: shot blocks follow each other; blank: a blank line between blocks",
                           choices=("none", "blank")),
    "qa_answer_space": Option("no", "no: the prompt ends 'A:'; yes: it ends 'A: '", choices=("no", "yes")),
    "qa_cut": Option("final", "final: the first line without a final dot or comma; clause: the first line "
                     "up to its first clause-ending dot or comma", choices=("final", "clause")),
}


@dataclass(frozen=True)
class QAFormat:
    """The choices the paper leaves open (see the module docstring for each)."""

    question: str = "figure"
    separator: str = "none"
    answer_space: str = "no"
    cut: str = "final"

    def ask(self, question: str) -> str:
        q = question.strip()
        if self.question == "figure":
            q = q[:1].upper() + q[1:]
            q = q if q.endswith(("?", ".", "!")) else q + "?"
        return q


def qa_prompt(doc: Doc, shots: Sequence[Doc], fmt: QAFormat) -> str:
    blocks = [f"Q: {fmt.ask(s['question'])}\nA: {s['answer']}\n" for s in shots]
    final = f"Q: {fmt.ask(doc['question'])}\nA:" + (" " if fmt.answer_space == "yes" else "")
    return HEADER + ("\n" if fmt.separator == "blank" else "").join([*blocks, final])


# A comma or dot that ends a clause: followed by whitespace or ending the text. Thousands
# commas and decimal points ("1,000", "3.5") are not.
_CLAUSE_END = re.compile(r"[.,](?=\s|$)")


def clean_answer(completion: str, cut: str = "final") -> str:
    """The answer in a completion: the text before the first line break, then

    final:  without one final "." or "," (" Charles Darwin.\\nQ: ..." -> "Charles Darwin",
            " R. H. Thomson" -> "R. H. Thomson", " Paris, France" -> "Paris, France");
    clause: up to the first clause-ending comma or dot (" Paris, France" -> "Paris",
            " 1,000 km" -> "1,000 km", " St. Louis" -> "St").
    Surrounding whitespace is stripped.
    """
    line = completion.split("\n", 1)[0]
    if cut == "clause":
        end = _CLAUSE_END.search(line)
        return (line[: end.start()] if end else line).strip()
    line = line.strip()
    return line[:-1].rstrip() if line.endswith((".", ",")) else line


class ClosedBookQATask(GenerationTask):
    """The prompt, decoding and grading both closed-book QA tasks use; a subclass supplies only
    its data. Documents: {"id", "question", "answers": [gold answers], "answer": the answer a
    shot shows}."""

    options = QA_OPTIONS
    until = ("\n",)
    max_new_tokens = 32

    def format(self, settings: Settings) -> QAFormat:
        return QAFormat(*(self.option(settings, name) for name in QA_OPTIONS))

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        """The prompt with the default options; `requests` applies the run's options."""
        return qa_prompt(doc, shots, QAFormat())

    def requests(self, doc: Doc, shots: list[Doc], settings: Settings) -> list[Request]:
        return [self.generation_request(qa_prompt(doc, shots, self.format(settings)), settings, temperature=0.0, n=1)]

    def grade(self, doc: Doc, completions: list[tuple[str, ...]], settings: Settings) -> DocScore:
        completion = completions[0][0]
        answer = clean_answer(completion, self.option(settings, "qa_cut"))
        return DocScore(doc["id"], answer, " | ".join(doc["answers"]),
                        {"exact_match": exact_match(answer, doc["answers"])}, {"completion": completion})


def qa_doc(prefix: str, question: str, answers: list[str], shown: str) -> Doc:
    """A question with its gold answers and the answer a shot shows."""
    return {"id": content_id(prefix, question), "question": question, "answers": answers, "answer": shown}
