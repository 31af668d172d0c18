"""Data readers: the release-file manifest, hashing, line-accurate errors and the hub loader."""

from __future__ import annotations

import hashlib
import re
import sys
import types
from pathlib import Path

import pytest

from llama_eval.errors import UserError
from llama_eval.tasks import data
from llama_eval.tasks.data import DataMismatchWarning


def provenance_hashes(provenance: Path) -> dict[str, str]:
    """Every "| path | ... | sha256 | ..." table row of PROVENANCE.md, plus the derived HellaSwag
    jsonl, whose hash is given in prose."""
    text = provenance.read_text(encoding="utf-8")
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        hashes = [c for c in cells if re.fullmatch(r"[0-9a-f]{64}", c)]
        if hashes and "/" in cells[0]:
            out[cells[0]] = hashes[0]
    derived = re.search(r"hellaswag_val\.jsonl.*?sha256 `([0-9a-f]{64})`", text, re.S)
    out["hellaswag/hellaswag_val.jsonl"] = derived.group(1)
    return out


def test_manifest_is_provenance_and_covers_every_shared_file(shared_data):
    manifest = data.manifest()
    assert manifest == provenance_hashes(shared_data / "PROVENANCE.md")
    on_disk = {p.relative_to(shared_data).as_posix() for p in shared_data.rglob("*") if p.is_file()}
    assert on_disk - set(manifest) == {"PROVENANCE.md"}
    assert len(manifest) == 205


def test_verify_real_data_dir_passes(shared_data):
    statuses = data.verify_data_dir(shared_data)
    assert len(statuses) == len(data.manifest())
    assert {status for _, status in statuses} == {"ok"}


def test_verify_reports_missing_and_mismatch(tmp_path):
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa" / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    statuses = dict(data.verify_data_dir(tmp_path))
    assert statuses["piqa/valid.jsonl"] == "mismatch"
    assert statuses["piqa/valid-labels.lst"] == "missing"
    assert set(statuses.values()) == {"mismatch", "missing"}


def test_verify_ok_for_a_byte_identical_copy(shared_data, tmp_path):
    (tmp_path / "mmlu").mkdir()
    (tmp_path / "mmlu" / "README.txt").write_bytes((shared_data / "mmlu" / "README.txt").read_bytes())
    assert dict(data.verify_data_dir(tmp_path))["mmlu/README.txt"] == "ok"


def test_release_file_warns_on_mismatch_and_errs_when_missing(tmp_path):
    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq" / "val.jsonl").write_text("{}\n")
    with pytest.warns(DataMismatchWarning, match=r"released boolq/val.jsonl \(sha256 mismatch\)"):
        assert data.release_file(tmp_path, "boolq/val.jsonl") == tmp_path / "boolq" / "val.jsonl"
    with pytest.raises(UserError, match=r"siqa/dev.jsonl under it"):
        data.release_file(tmp_path, "siqa/dev.jsonl")


def test_unknown_files_are_not_checked(tmp_path, recwarn):
    (tmp_path / "extra.jsonl").write_text("{}\n")
    data.release_file(tmp_path, "extra.jsonl")
    assert not [w for w in recwarn if issubclass(w.category, DataMismatchWarning)]


def test_each_file_is_hashed_once_until_it_changes(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("one")
    assert data.file_sha256(path) == hashlib.sha256(b"one").hexdigest()
    before = data._sha256.cache_info()
    assert data.file_sha256(path) == hashlib.sha256(b"one").hexdigest()
    after = data._sha256.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)
    path.write_text("two!")  # a different size (and mtime): the cache key changes, so it is hashed again
    assert data.file_sha256(path) == hashlib.sha256(b"two!").hexdigest()
    assert data._sha256.cache_info().misses == before.misses + 1


def test_read_labels_names_file_and_line(tmp_path):
    path = tmp_path / "labels.lst"
    path.write_text("1\n2\n\n4\n")
    with pytest.raises(UserError, match=r"labels.lst, line 4: label '4' is not one of 1, 2, 3"):
        data.read_labels(path, ("1", "2", "3"))
    path.write_text("1\n\n3\n")
    assert data.read_labels(path, ("1", "2", "3")) == ["1", "3"]


def test_csv_rows_report_the_line_where_a_record_starts(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('a,b\n"multi\nline, with comma",c\nd,e\n', encoding="utf-8")
    assert list(data.read_csv_rows(path, 2)) == [(1, ["a", "b"]), (2, ["multi\nline, with comma", "c"]), (4, ["d", "e"])]
    path.write_text('a,b\n"x\ny",c\nd,e,f\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"x.csv, line 4: 3 fields, expected 2"):
        list(data.read_csv_rows(path, 2))


def test_records_must_be_objects_and_valid_json(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(UserError, match=r"x.jsonl, line 2: expected a JSON object, got list"):
        list(data.read_records(path))
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(UserError, match=r"x.jsonl, line 3: not valid JSON"):
        list(data.read_records(path))


def test_answer_key_is_looked_up_among_the_rows_labels():
    assert data.answer_index(["1", "2", "3"], "3", "f", 1) == 2
    with pytest.raises(UserError, match=r"f, line 9: field 'answerKey' should be one of the row's choice labels"):
        data.answer_index(["A", "B"], "C", "f", 9)


def fake_datasets(load_dataset) -> types.ModuleType:
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    return module


def test_load_hf_passes_config_and_split(monkeypatch):
    calls = []

    def load_dataset(path, config, split):
        calls.append((path, config, split))
        return [{"x": 1}]

    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(load_dataset))
    assert data.load_hf(("cais/mmlu", "all", "test"), "dev") == [{"x": 1}]
    assert data.load_hf(("ybisk/piqa", None, "validation")) == [{"x": 1}]
    assert calls == [("cais/mmlu", "all", "dev"), ("ybisk/piqa", None, "validation")]


def test_load_hf_failure_tells_the_user_to_pass_data_dir(monkeypatch):
    def load_dataset(path, config, split):
        raise ConnectionError("offline mode is enabled")

    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(load_dataset))
    with pytest.raises(UserError, match=r"aps/super_glue \(boolq, validation\).*offline mode.*--data-dir"):
        data.load_hf(("aps/super_glue", "boolq", "validation"))
