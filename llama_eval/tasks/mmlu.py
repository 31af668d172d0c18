"""MMLU: 57-subject multiple-choice exam questions (Hendrycks et al. 2021).

Reproduces Table 9 of the LLaMA paper (5-shot accuracy: Humanities, STEM, Social Sciences,
Other, Average) and the per-subject Table 16; protocol in ../shared/reference/PROTOCOL.md.

- Dataset: the test split, 14,042 questions. Release files `mmlu/test/<subject>_test.csv`,
  header-less RFC-4180 CSV with columns question, A, B, C, D, answer letter (kept verbatim,
  trailing spaces included); hub: `cais/mmlu`, config `all`, split `test` (`choices` list,
  `answer` 0-3). Document ids: "<subject>/<0-based row in the subject's file>", e.g.
  "abstract_algebra/17"; shot ids: "<subject>/dev/<row>". A data folder missing some subjects is
  a warning, and the averages then cover only the subjects present.
- Shots: 5, as the paper states: each subject's five dev questions (`mmlu/dev/<subject>_dev.csv`,
  hub split `dev`) in file order, the same for every question of the subject; --shots k takes
  the first k (k <= 5). Not random, so the `--seed` does not matter.
- Prompt (NOT STATED in the paper; Hendrycks' original format):
      "The following are multiple choice questions (with answers) about {subject with spaces}.\n\n"
      then per shot  "{question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer: {letter}\n\n"
      then           "{question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer:"
  and the choices " A", " B", " C", " D" (letters scored, not answer texts; NOT STATED either).
- Scoring: raw log-likelihood of the letter.
- Window: with LLaMA-1's 2,048 tokens, 522 five-shot prompts do not fit (high_school_us_history,
  high_school_european_history, professional_law, high_school_world_history). As Hendrycks'
  evaluation code does, k is lowered until the prompt fits (Task.fit_shots with `fixed_shots`:
  the subject's first k dev questions), so no prompt loses its header or is cut mid-example;
  run.json counts the documents with fewer shots and the samples file gives `shots_dropped`.
  How the paper handled them is NOT STATED. Measured on the real files (benchmarks/README.md):
  the scorer then runs 1,542,528 tokens for all of MMLU instead of 2,274,626, since the shortened
  prompts share their subject's header again.
- Aggregation: per-subject accuracy (group = subject), per-category and overall averages
  weighted by question count, with anatomy counted under "Other" (Table 16 prints it under
  STEM, but only "Other" reproduces the paper's averages); see `mmlu_averages`.
"""

from __future__ import annotations

import csv
import functools
import warnings
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from . import data
from .base import Doc, DocScore, MetricValue, MultipleChoiceTask, Settings
from ..errors import UserError
from ..metrics import mean_stderr, weighted_mean

CATEGORIES = ("Humanities", "STEM", "Social Sciences", "Other")
LETTERS = ("A", "B", "C", "D")


@functools.lru_cache(maxsize=1)
def subjects() -> dict[str, tuple[str, int]]:
    """subject -> (category that reproduces the paper's averages, test questions), A to Z."""
    text = resources.files("llama_eval").joinpath("data/mmlu_subjects.csv").read_text(encoding="utf-8")
    return {r["subject"]: (r["category"], int(r["n_test"])) for r in csv.DictReader(text.splitlines())}


def mmlu_averages(per_subject: dict[str, tuple[float, int]]) -> dict[str, float]:
    """Category averages and the overall "Average" from {subject: (accuracy, questions)},
    each weighted by question count; only categories with a subject present appear."""
    known = subjects()
    unknown = sorted(set(per_subject) - set(known))
    if unknown:
        raise ValueError(f"not MMLU subjects: {', '.join(unknown)}")
    out = {}
    for category in CATEGORIES:
        members = [per_subject[s] for s in per_subject if known[s][0] == category]
        if members:
            out[category] = weighted_mean([acc for acc, _ in members], [n for _, n in members])
    if per_subject:
        out["Average"] = weighted_mean([acc for acc, _ in per_subject.values()], [n for _, n in per_subject.values()])
    return out


class MMLU(MultipleChoiceTask):
    name = "mmlu"
    paper_name = "MMLU"
    paper_table = 9
    paper_shots = (5,)
    headline_metric = "acc"
    hf_dataset = ("cais/mmlu", "all", "test")
    few_shot_pool = "each subject's 5 dev questions, in file order"
    scoring = "raw"
    limit_group = "subject"  # --limit N takes N questions of every subject, so every category is covered
    fixed_shots = True  # the subject's first k dev questions; fit_shots lowers k (Hendrycks' rule)

    def load(self, data_dir: Path | None) -> list[Doc]:
        return self.from_release(Path(data_dir), "test") if data_dir is not None else self._from_hf("test")

    def source(self, data_dir: Path | None) -> data.DataSource:
        if data_dir is None:
            return super().source(None)
        present = [f"mmlu/test/{s}_test.csv" for s in subjects() if (Path(data_dir) / f"mmlu/test/{s}_test.csv").is_file()]
        return data.release_source(Path(data_dir), present or ["mmlu/test/abstract_algebra_test.csv"], "test")

    def load_shots(self, data_dir: Path | None) -> list[Doc]:
        return self.from_release(Path(data_dir), "dev") if data_dir is not None else self._from_hf("dev")

    def from_release(self, data_dir: Path, split: str = "test") -> list[Doc]:
        present = [s for s in subjects() if (data_dir / f"mmlu/{split}/{s}_{split}.csv").is_file()]
        if not present:
            raise UserError(f"no MMLU {split} files under {data_dir / 'mmlu' / split}; --data-dir should hold "
                            f"mmlu/{split}/<subject>_{split}.csv for the 57 subjects (the layout of ../shared/data)")
        if len(present) < len(subjects()):
            missing = [s for s in subjects() if s not in present]
            warnings.warn(f"{data_dir / 'mmlu' / split} lacks {len(missing)} of the 57 subjects ({', '.join(missing[:3])}"
                          f"{', ...' if len(missing) > 3 else ''}); MMLU averages will cover the others only")
        docs = []
        for subject in present:
            path = data.release_file(data_dir, f"mmlu/{split}/{subject}_{split}.csv")
            for i, (lineno, row) in enumerate(data.read_csv_rows(path, 6)):
                if row[5] not in LETTERS:
                    raise data.invalid(path, lineno, "answer (column 6)", row[5], "A, B, C or D")
                docs.append(self._doc(subject, split, i, row[0], row[1:5], LETTERS.index(row[5])))
        return docs

    def _from_hf(self, split: str) -> list[Doc]:
        counts: Counter[str] = Counter()  # rows seen per subject: the hub's "all" lists subjects in turn
        docs = []
        for i, row in enumerate(data.load_hf(self.hf_dataset, split)):
            subject = data.field(row, "subject", data.hf_source(self.hf_dataset, split), i + 1)
            docs.append(self.from_hf_row(row, counts[subject], split))
            counts[subject] += 1
        return docs

    def from_hf_row(self, row: dict[str, Any], index: int, split: str = "test") -> Doc:
        """`index`: the row's position within its subject."""
        source = data.hf_source(self.hf_dataset, split)
        subject = data.field(row, "subject", source, index + 1)
        if subject not in subjects():
            raise data.invalid(source, index + 1, "subject", subject, "one of the 57 MMLU subjects")
        source = f"{source}, subject {subject}"
        choices = data.field(row, "choices", source, index + 1, list)
        if len(choices) != 4 or not all(isinstance(c, str) for c in choices):
            raise data.invalid(source, index + 1, "choices", choices, "a list of 4 strings")
        answer = data.field(row, "answer", source, index + 1, int)
        if answer not in range(4):
            raise data.invalid(source, index + 1, "answer", answer, "0 to 3")
        return self._doc(subject, split, index, data.field(row, "question", source, index + 1), choices, answer)

    def _doc(self, subject: str, split: str, index: int, question: str, choices: list[str], answer: int) -> Doc:
        doc_id = f"{subject}/{index}" if split == "test" else f"{subject}/{split}/{index}"
        return {"id": doc_id, "subject": subject, "question": question, "choices": list(choices), "answer": answer}

    def select_shots(self, doc: Doc, pool: Sequence[Doc], k: int, settings: Settings) -> list[Doc]:
        """The first k dev questions of the document's subject, in file order."""
        if k == 0:
            return []
        if k > 5:
            raise UserError(f"mmlu: {k} shots asked for, but MMLU's shots are each subject's 5 dev questions; use 0 to 5")
        shots = [d for d in pool if d["subject"] == doc["subject"]][:k]
        if len(shots) < k:
            raise UserError(f"mmlu: subject {doc['subject']} has {len(shots)} dev questions, {k} shots asked for; "
                            "check the mmlu/dev files")
        return shots

    def context(self, doc: Doc, shots: list[Doc]) -> str:
        header = f"The following are multiple choice questions (with answers) about {doc['subject'].replace('_', ' ')}.\n\n"
        solved = "".join(f"{self._question(s)} {LETTERS[s['answer']]}\n\n" for s in shots)
        return header + solved + self._question(doc)

    def _question(self, doc: Doc) -> str:
        options = "".join(f"\n{letter}. {text}" for letter, text in zip(LETTERS, doc["choices"]))
        return f"{doc['question']}{options}\nAnswer:"

    def choices(self, doc: Doc) -> list[str]:
        return [" " + letter for letter in LETTERS]

    def gold(self, doc: Doc) -> int:
        return doc["answer"]

    def aggregate(self, scores: Sequence[DocScore]) -> list[MetricValue]:
        """Overall metrics (group ""), then each category's and each subject's accuracy."""
        by_subject: dict[str, list[float]] = defaultdict(list)
        for s in scores:
            by_subject[s.doc_id.split("/")[0]].append(s.metrics["acc"])
        per_subject = {subject: (100 * sum(xs) / len(xs), len(xs)) for subject, xs in sorted(by_subject.items())}
        averages = mmlu_averages(per_subject)
        out = super().aggregate(scores)
        for category in CATEGORIES:
            if category in averages:
                xs = [x for subject, ys in by_subject.items() if subjects()[subject][0] == category for x in ys]
                out.append(MetricValue("acc", averages[category], 100 * mean_stderr(xs)[1], len(xs), group=category))
        for subject, xs in by_subject.items():
            mean, se = mean_stderr(xs)
            out.append(MetricValue("acc", 100 * mean, 100 * se, len(xs), group=subject))
        return out
