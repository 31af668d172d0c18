"""NaturalQuestions (open): closed-book question answering (Kwiatkowski et al. 2019, Lee et al. 2019).

Reproduces Table 4 of the LLaMA paper (exact match at 0, 1, 5 and 64 shots); protocol in
../shared/reference/PROTOCOL.md, "Table 4 ... and Table 5". TriviaQA (triviaqa.py) uses the
prompt, decoding and scoring defined here.

- Dataset: NQ-open "dev", the 3,610 questions open-domain QA papers use as the test set.
  Release file `nq_open/NQ-open.dev.jsonl` ({"question", "answer": [str]}); hub:
  `google-research-datasets/nq_open`, split `validation` (the same rows). Document id: "nq-"
  + the first 12 hex digits of the question's sha1, the same whichever source is read.
- Shots: drawn per document (Task.select_shots). Pool: the DPR nq-dev questions, which DPR held
  out of the NQ-open train split (release `nq_open/topics.dpr.nq.dev.txt`, 8,757; DPR's tokenised
  answers are detokenised for display, "May 18 , 2018" -> "May 18, 2018"); hub: train split.
  A shot shows its first gold answer. Which examples the paper used is NOT STATED.
- Prompt (the paper's Figure 3): "Answer these questions:\\n", then "Q: {q}\\nA: {a}\\n" per
  shot, then "Q: {q}\\nA:". NOT STATED, so named options (--option name=value):
    qa_question     figure (default): first letter capitalised and "?" added unless the question
                    ends in "?", "." or "!", as in the figure; raw: the question as in the data.
    qa_separator    none (default): shot blocks follow each other, as in the figure;
                    blank: a blank line between blocks (and before the question).
    qa_answer_space no (default): the prompt ends "A:" (the answer's leading space is part of
                    the model's first token); yes: it ends "A: ".
    qa_char_budget  5500 (default): the longest prompt, in characters. The task cannot tokenise,
                    so the 2,048-token window is kept by characters: while a prompt is longer,
                    the shot farthest from the question is dropped (in select_shots, so the
                    shots a document got are len(select_shots(...))). Measured with the LLaMA
                    tokenizer on every 4th question of the real NQ and TriviaQA files, both
                    separators: at most 1,887 tokens, leaving room for BOS and the 32 new
                    tokens (a test checks this). At 64 shots NQ keeps all 64; TriviaQA's longer questions
                    keep 41 to 64 (median 54) on the DPR test file.
- Decoding: greedy, stop at "\\n", at most 32 new tokens (NOT STATED).
- Scoring: `clean_answer` (the paper's cut at the first line break, final dot or comma), then
  exact match against every gold answer after normalisation (metrics.exact_match).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError
from ..metrics import exact_match
from ..requests import GenerationRequest, Request
from . import data
from .base import Doc, DocScore, GenerationTask, Settings, Task
from .options import Option, positive_int

HEADER = "Answer these questions:\n"

# The prompt choices the paper leaves open, shared by NaturalQuestions and TriviaQA, in
# QAFormat's field order (the module docstring explains each).
QA_OPTIONS = {
    "qa_question": Option("figure", "figure: capitalised, '?' added as in the paper's figure; raw: as in the data",
                          choices=("figure", "raw")),
    "qa_separator": Option("none", "none: shot blocks follow each other; blank: a blank line between blocks",
                           choices=("none", "blank")),
    "qa_answer_space": Option("no", "no: the prompt ends 'A:'; yes: it ends 'A: '", choices=("no", "yes")),
    "qa_char_budget": Option("5500", "longest prompt in characters; farther shots are dropped to fit",
                             parse=positive_int),
}


@dataclass(frozen=True)
class QAFormat:
    """The prompt choices the paper leaves open (see the module docstring for each)."""

    question: str = "figure"
    separator: str = "none"
    answer_space: str = "no"
    char_budget: int = 5500

    @classmethod
    def from_settings(cls, task: Task, settings: Settings) -> QAFormat:
        return cls(*(task.option(settings, name) for name in QA_OPTIONS))

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


def fit_shots(doc: Doc, shots: Sequence[Doc], fmt: QAFormat) -> list[Doc]:
    """The longest tail of `shots` whose prompt fits fmt.char_budget (maybe none).

    Shots come first in the prompt, so dropping from the front drops those farthest from the
    question, as a left truncation of the window would, but at whole-example boundaries.
    """
    kept = list(shots)
    while kept and len(qa_prompt(doc, kept, fmt)) > fmt.char_budget:
        kept.pop(0)
    return kept


# The cut point after the first line: a comma or dot that ends a clause, i.e. is followed by
# whitespace or ends the text. Thousands commas and decimal points ("1,000", "3.5") are kept.
_CLAUSE_END = re.compile(r"[.,](?=\s|$)")


def clean_answer(completion: str) -> str:
    """The paper's answer cut: keep the text before the first line break, then before the first
    clause-ending comma or dot, and strip surrounding whitespace.

    " Charles Darwin.\\nQ: ..." -> "Charles Darwin"; " Paris, France" -> "Paris";
    " 1,000 km" -> "1,000 km"; " St. Louis" -> "St" (a cost of the paper's rule).
    """
    first_line = completion.split("\n", 1)[0]
    cut = _CLAUSE_END.search(first_line)
    return (first_line[: cut.start()] if cut else first_line).strip()


def qa_requests(doc: Doc, shots: list[Doc], settings: Settings, task: GenerationTask) -> list[Request]:
    prompt = qa_prompt(doc, shots, QAFormat.from_settings(task, settings))
    return [GenerationRequest(prompt, task.until, task.max_new_tokens, temperature=0.0, n=1, seed=settings.seed)]


def grade_qa(doc: Doc, completions: list[tuple[str, ...]]) -> DocScore:
    completion = completions[0][0]
    answer = clean_answer(completion)
    return DocScore(doc["id"], answer, " | ".join(doc["answers"]),
                    {"exact_match": exact_match(answer, doc["answers"])}, {"completion": completion})


# -- documents --------------------------------------------------------------------------------

def content_id(prefix: str, text: str) -> str:
    """A document id from its text: the same whichever source (release file or hub) or row
    order it came from, and a question met in both the eval set and the shot pool is never
    its own shot (select_shots skips the document's own id)."""
    return f"{prefix}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"


def qa_doc(prefix: str, question: str, answers: list[str], shown: str) -> Doc:
    """A question with its gold answers and the answer a shot shows."""
    return {"id": content_id(prefix, question), "question": question, "answers": answers, "answer": shown}


def unique_ids(docs: list[Doc]) -> list[Doc]:
    """Docs whose id repeats an earlier one (the same question twice) get "-2", "-3", ..."""
    seen: Counter[str] = Counter()
    for doc in docs:
        seen[doc["id"]] += 1
        if seen[doc["id"]] > 1:
            doc["id"] = f"{doc['id']}-{seen[doc['id']]}"
    return docs


def string_list(row: dict[str, Any], name: str, source: Any, lineno: int) -> list[str]:
    """row[name] as a non-empty list of strings, else an error naming source, line and field."""
    value = data.field(row, name, source, lineno, list)
    if not value or not all(isinstance(v, str) for v in value):
        raise data.invalid(source, lineno, name, value, "a non-empty list of strings")
    return value


def read_dpr(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, question, answers) from a DPR question file: tab-separated, no header, answers a
    Python list literal of strings (CSV quoting where a field holds quotes)."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        for fields in reader:
            lineno = reader.line_num
            if len(fields) != 2:
                raise UserError(f"{path}, line {lineno}: {len(fields)} tab-separated fields, "
                                "expected 2 (question, answers)")
            try:
                answers = ast.literal_eval(fields[1])
            except (ValueError, SyntaxError):
                answers = None
            if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
                raise data.invalid(path, lineno, "answers", fields[1], "a Python list of strings such as ['Paris']")
            rows.append((lineno, undo_double_quoting(fields[0]), answers))
    return rows


def undo_double_quoting(question: str) -> str:
    """A question that was CSV-quoted twice (708 in DPR's TriviaQA test file:
    '"Who was the target of the failed ""Bomb Plot"" of 1944?"'), quoted once less.

    Only a field that starts and ends with a quote and holds no lone quote between them is
    decoded, so questions that merely begin with a quotation are kept as they are.
    """
    inner = question[1:-1]
    if len(question) >= 2 and question[0] == question[-1] == '"' and '"' not in inner.replace('""', ""):
        return inner.replace('""', '"')
    return question


_DPR_SPACING = (
    (re.compile(r" ([,.;:!?%)\]])"), r"\1"),  # "May 18 , 2018" -> "May 18, 2018"
    (re.compile(r"([(\[$]) "), r"\1"),  # "( second edition" -> "(second edition"
    (re.compile(r" (n't|'s|'re|'ve|'ll|'d|'m)\b"), r"\1"),  # "McDonald 's" -> "McDonald's"
    (re.compile(r"(\w) - (?=\w)"), r"\1-"),  # "2017 - 11 - 05" -> "2017-11-05"
)


def detokenize_dpr(text: str) -> str:
    """Undo the spaces DPR's tokeniser put around punctuation in NQ answers."""
    for pattern, repl in _DPR_SPACING:
        text = pattern.sub(repl, text)
    return text


class NaturalQuestions(GenerationTask):
    name = "nq_open"
    paper_name = "NaturalQuestions"
    paper_table = 4
    paper_shots = (0, 1, 5, 64)
    headline_metric = "exact_match"
    hf_dataset = ("google-research-datasets/nq_open", None, "validation")
    few_shot_pool = "DPR nq-dev (nq_open/topics.dpr.nq.dev.txt), or nq_open train on the hub"
    until = ("\n",)
    max_new_tokens = 32
    options = QA_OPTIONS
    release_files = ("nq_open/NQ-open.dev.jsonl",)
    release_split = "dev"

    def load(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is not None:
            path = data.release_file(Path(data_dir), "nq_open/NQ-open.dev.jsonl")
            return unique_ids([self.doc(row, path, lineno) for lineno, row in data.read_records(path)])
        source = data.hf_source(self.hf_dataset)
        return unique_ids([self.doc(row, source, i + 1) for i, row in enumerate(data.load_hf(self.hf_dataset))])

    def load_shots(self, data_dir: Path | None) -> list[Doc]:
        if data_dir is not None:
            path = data.release_file(Path(data_dir), "nq_open/topics.dpr.nq.dev.txt")
            return unique_ids([qa_doc("nq", q, answers, detokenize_dpr(answers[0])) for _, q, answers in read_dpr(path)])
        source = data.hf_source(self.hf_dataset, "train")
        rows = data.load_hf(self.hf_dataset, "train")
        return unique_ids([self.doc(row, source, i + 1) for i, row in enumerate(rows)])

    @staticmethod
    def doc(row: dict[str, Any], source: Any, lineno: int) -> Doc:
        """A document from a release or hub row (both are {"question", "answer": [str]})."""
        answers = string_list(row, "answer", source, lineno)
        return qa_doc("nq", data.field(row, "question", source, lineno), answers, answers[0])

    def select_shots(self, doc: Doc, pool: Sequence[Doc], k: int, settings: Settings) -> list[Doc]:
        return fit_shots(doc, super().select_shots(doc, pool, k, settings), QAFormat.from_settings(self, settings))

    def prompt(self, doc: Doc, shots: list[Doc]) -> str:
        """The prompt with the default options (requests() applies the run's options)."""
        return qa_prompt(doc, shots, QAFormat())

    def requests(self, doc: Doc, shots: list[Doc], settings: Settings) -> list[Request]:
        return qa_requests(doc, shots, settings, self)

    def grade(self, doc: Doc, completions: list[tuple[str, ...]], settings: Settings) -> DocScore:
        return grade_qa(doc, completions)
