"""Reading benchmark documents: release files under --data-dir, or the Hugging Face hub.

Every reader names file, line and field when a row is malformed, and checks known release
files against the manifest (a mismatch is a warning: the numbers may not be comparable).

The manifest (`llama_eval/data/manifest.json`) maps each release file's path relative to the
data folder to its sha256, as listed in ../shared/data/PROVENANCE.md (every file there,
including the generation tasks' files and the tokenizer).
"""

from __future__ import annotations

import ast
import csv
import functools
import gzip
import hashlib
import json
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from collections import Counter
from typing import Any, Iterator, Sequence

from ..errors import UserError


class DataMismatchWarning(UserWarning):
    """A release file whose sha256 differs from the manifest's."""


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for each non-empty line of a JSON Lines file (gzip-compressed
    when its name ends in .gz)."""
    if not path.is_file():
        raise UserError(f"data file {path} does not exist; check --data-dir (it should hold the release files)")
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}, line {lineno}: not valid JSON ({e.msg}); the file is damaged or not JSON Lines") from None
        except UnicodeDecodeError:
            raise UserError(f"{path}, after line {lineno}: not UTF-8 text; save the file as UTF-8") from None


def field(row: dict[str, Any], name: str, path: Path, lineno: int, kind: type | tuple[type, ...] = str) -> Any:
    """row[name], checked to be of `kind`; otherwise an error naming file, line and field."""
    if name not in row:
        raise UserError(f"{path}, line {lineno}: field {name!r} is missing (fields present: {', '.join(row)})")
    value = row[name]
    if not isinstance(value, kind):
        raise UserError(f"{path}, line {lineno}: field {name!r} should be {getattr(kind, '__name__', kind)}, got {value!r:.60}")
    return value


def invalid(path: Path | str, lineno: int, name: str, value: Any, expected: str) -> UserError:
    """The error for a field that is present but holds a bad value (raise it)."""
    return UserError(f"{path}, line {lineno}: field {name!r} should be {expected}, got {value!r:.60}")


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """read_jsonl, with each line checked to hold a JSON object."""
    for lineno, row in read_jsonl(path):
        if not isinstance(row, dict):
            raise UserError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def read_labels(path: Path, allowed: tuple[str, ...]) -> list[str]:
    """The labels of a one-label-per-line file (PIQA, SIQA, WinoGrande), each one of `allowed`."""
    if not path.is_file():
        raise UserError(f"data file {path} does not exist; check --data-dir (it should hold the release files)")
    labels = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if line.strip() not in allowed:
                raise UserError(f"{path}, line {lineno}: label {line.strip()!r:.40} is not one of {', '.join(allowed)}")
            labels.append(line.strip())
    return labels


def check_count(path: Path, n: int, labels_path: Path, n_labels: int) -> None:
    """The labels file must hold one label per record of its data file."""
    if n != n_labels:
        raise UserError(f"{labels_path} holds {n_labels} labels but {path} holds {n} records; "
                        "the two files must come from the same release")


def read_csv_rows(path: Path, n_fields: int) -> Iterator[tuple[int, list[str]]]:
    """(1-based line where the record starts, fields) for a header-less RFC-4180 CSV file.

    Fields may hold commas, quotes and line breaks, so a record can span several lines.
    """
    if not path.is_file():
        raise UserError(f"data file {path} does not exist; check --data-dir (it should hold the release files)")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        start = 1
        try:
            for fields in reader:
                if fields:
                    if len(fields) != n_fields:
                        raise UserError(f"{path}, line {start}: {len(fields)} fields, expected {n_fields}")
                    yield start, fields
                start = reader.line_num + 1
        except csv.Error as e:
            raise UserError(f"{path}, line {start}: not valid CSV ({e})") from None


def ai2_question(row: dict[str, Any], path: Path | str, lineno: int) -> tuple[str, list[str], list[str]]:
    """(stem, choice texts, choice labels) of an AI2 release row (ARC, OpenBookQA):
    {"question": {"stem": str, "choices": [{"text": str, "label": str}, ...]}, ...}."""
    question = field(row, "question", path, lineno, dict)
    stem = field(question, "stem", path, lineno)
    texts, labels = [], []
    for choice in field(question, "choices", path, lineno, list):
        if not isinstance(choice, dict):
            raise invalid(path, lineno, "choices", choice, 'a list of {"text", "label"} objects')
        texts.append(field(choice, "text", path, lineno))
        labels.append(field(choice, "label", path, lineno))
    return stem, texts, labels


def ai2_release_doc(row: dict[str, Any], path: Path, lineno: int) -> dict[str, Any]:
    """An AI2 release row (ARC, OpenBookQA) as a document: id, question, choices, labels, gold."""
    stem, texts, labels = ai2_question(row, path, lineno)
    return _ai2_doc(row, stem, texts, labels, path, lineno)


def ai2_hub_doc(row: dict[str, Any], stem_field: str, source: str, lineno: int) -> dict[str, Any]:
    """The same document from a hub row ({"id", stem_field, "choices": {"text", "label"}, "answerKey"})."""
    texts, labels = hf_choices(row, source, lineno)
    return _ai2_doc(row, field(row, stem_field, source, lineno), texts, labels, source, lineno)


def _ai2_doc(row: dict[str, Any], stem: str, texts: list[str], labels: list[str], source: Path | str,
             lineno: int) -> dict[str, Any]:
    key = field(row, "answerKey", source, lineno)
    return {"id": field(row, "id", source, lineno), "question": stem, "choices": texts,
            "labels": labels, "gold": answer_index(labels, key, source, lineno)}


def hf_choices(row: dict[str, Any], source: str, lineno: int) -> tuple[list[str], list[str]]:
    """(choice texts, choice labels) of a hub row with "choices": {"text": [...], "label": [...]}."""
    choices = field(row, "choices", source, lineno, dict)
    texts, labels = field(choices, "text", source, lineno, list), field(choices, "label", source, lineno, list)
    if len(texts) != len(labels) or not all(isinstance(x, str) for x in texts + labels):
        raise invalid(source, lineno, "choices", choices, "equally long lists of strings 'text' and 'label'")
    return texts, labels


def answer_index(labels: list[str], key: str, path: Path | str, lineno: int) -> int:
    """Position of the answer key among the row's own choice labels (ABCD, 1234, ABCDE...)."""
    if key not in labels:
        raise invalid(path, lineno, "answerKey", key, f"one of the row's choice labels {labels}")
    return labels.index(key)


# -- document ids and common fields -----------------------------------------------------------

def content_id(prefix: str, text: str) -> str:
    """A document id from its text: the same whichever source (release file or hub) or row
    order it came from, and a question met in both the eval set and the shot pool is never
    its own shot (select_shots skips the document's own id)."""
    return f"{prefix}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"


def unique_ids(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Docs whose id repeats an earlier one (the same question twice) get "-2", "-3", ..."""
    seen: Counter[str] = Counter()
    for doc in docs:
        seen[doc["id"]] += 1
        if seen[doc["id"]] > 1:
            doc["id"] = f"{doc['id']}-{seen[doc['id']]}"
    return docs


def string_list(row: dict[str, Any], name: str, source: Any, lineno: int) -> list[str]:
    """row[name] as a non-empty list of strings, else an error naming source, line and field."""
    value = field(row, name, source, lineno, list)
    if not value or not all(isinstance(v, str) for v in value):
        raise invalid(source, lineno, name, value, "a non-empty list of strings")
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
                raise invalid(path, lineno, "answers", fields[1], "a Python list of strings such as ['Paris']")
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


# -- the manifest of known release files --------------------------------------------------

@functools.lru_cache(maxsize=1)
def manifest() -> dict[str, str]:
    """Release-file path (relative to the data folder, "/"-separated) -> sha256."""
    text = resources.files("llama_eval").joinpath("data/manifest.json").read_text(encoding="utf-8")
    return json.loads(text)


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process for each (path, size, mtime)."""
    st = path.stat()
    return _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the key so that a file changed on disk is hashed again.
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def existing_file(data_dir: Path, relpath: str) -> Path:
    """data_dir/relpath, which must exist."""
    path = Path(data_dir) / relpath
    if not path.is_file():
        raise UserError(f"{path} does not exist; --data-dir should hold the release files in the layout of "
                        f"../shared/data (expected {relpath} under it), or leave --data-dir out to use the hub")
    return path


def release_file(data_dir: Path, relpath: str) -> Path:
    """data_dir/relpath, which must exist; a warning if it is a known file with other content."""
    path = existing_file(data_dir, relpath)
    expected = manifest().get(relpath)
    if expected is not None and file_sha256(path) != expected:
        warnings.warn(f"{path} differs from the released {relpath} (sha256 mismatch); "
                      "results may not be comparable with the paper", DataMismatchWarning, stacklevel=2)
    return path


def verify_data_dir(data_dir: Path) -> list[tuple[str, str]]:
    """(relative path, "ok" | "mismatch" | "missing") for every file in the manifest."""
    out = []
    for relpath, expected in manifest().items():
        path = Path(data_dir) / relpath
        if not path.is_file():
            out.append((relpath, "missing"))
        else:
            out.append((relpath, "ok" if file_sha256(path) == expected else "mismatch"))
    return out


# -- where a task's documents came from ------------------------------------------------------

@dataclass(frozen=True)
class DataSource:
    """Where a task's evaluation documents come from: a typed record written to run.json.

    Reports read these fields (e.g. Table 5 marks a TriviaQA run whose `variant` is
    "unfiltered"), never prose.
    """

    kind: str  # "release" (files under --data-dir), "hub" (a Hugging Face dataset) or "task" (its own code)
    location: str  # release: the files read, relative to the data folder; hub: "path" or "path/config"
    split: str  # e.g. "test", "validation", "dev"
    variant: str = ""  # a named variant of the data set where one exists (TriviaQA: "filtered"/"unfiltered")
    documents: int | None = None  # documents loaded (before --limit); filled in by the evaluator
    sha256: str | None = None  # release: sha256 over the files' own sha256 values, in order

    def describe(self) -> str:
        where = {"release": "release files", "hub": "Hugging Face dataset", "task": "documents of"}[self.kind]
        where = f"{where} {self.location}"
        extra = ", ".join(x for x in (self.split, self.variant and f"{self.variant} variant",
                                      self.documents is not None and f"{self.documents:,} documents") if x)
        return f"{where} ({extra})"


def release_source(data_dir: Path, paths: Sequence[str], split: str, variant: str = "") -> DataSource:
    """The DataSource of release files `paths` (relative to data_dir), hashed whole."""
    digest = hashlib.sha256()
    for relpath in paths:
        digest.update(file_sha256(existing_file(data_dir, relpath)).encode())
    location = paths[0] if len(paths) == 1 else f"{paths[0]} ... ({len(paths)} files)"
    return DataSource("release", location, split, variant, sha256=digest.hexdigest())


def hub_source(hf_dataset: tuple[str, str | None, str], variant: str = "") -> DataSource:
    path, config, split = hf_dataset
    return DataSource("hub", f"{path}/{config}" if config else path, split, variant)


# -- the Hugging Face hub -----------------------------------------------------------------

def hf_source(hf_dataset: tuple[str, str | None, str], split: str | None = None) -> str:
    """How errors name a hub dataset, e.g. "Hugging Face dataset aps/super_glue (boolq, validation)"."""
    path, config, default_split = hf_dataset
    parts = ", ".join(p for p in (config, split or default_split) if p)
    return f"Hugging Face dataset {path} ({parts})"


def load_hf(hf_dataset: tuple[str, str | None, str], split: str | None = None) -> list[dict[str, Any]]:
    """The rows of a hub dataset split (default: the one named in `hf_dataset`).

    `datasets` caches downloads and honours HF_DATASETS_OFFLINE / HF_HUB_OFFLINE itself.
    """
    import datasets  # imported here: it is slow to import and only this path needs it

    path, config, default_split = hf_dataset
    try:
        rows = datasets.load_dataset(path, config, split=split or default_split)
    except Exception as e:  # noqa: BLE001 -- any failure here has the same fix, named below
        raise UserError(f"could not load the {hf_source(hf_dataset, split)} ({type(e).__name__}: {str(e)[:200]}); "
                        "pass --data-dir with the release files (the layout of ../shared/data), "
                        "or make the dataset available in the Hugging Face cache") from None
    return [dict(row) for row in rows]
