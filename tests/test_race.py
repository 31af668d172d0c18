"""RACE-middle and RACE-high: the release archive and hub readers, the prompt and the scoring rules.

The demo archive llama_eval/data/demo/race/RACE_test.tar.gz holds the made-up articles of DEMO
below, packed by `write_race_archive` (`python tests/test_race.py` writes it again);
tests/fixtures/hf/race_middle.jsonl holds the same middle questions in the hub's row layout,
with the articles in another order.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import warnings
from collections import Counter
from pathlib import Path

import pytest

from llama_eval.errors import UserError
from llama_eval.requests import LoglikelihoodRequest as R
from llama_eval.requests import LoglikelihoodResult
from llama_eval.tasks import data

from llama_eval.tasks.data import DataMismatchWarning
from llama_eval.tasks.race import RACEHigh, RACEMiddle

from conftest import FIXTURES, SAMPLE_DATA, make_settings

SOURCE_COMMIT_TIME = 1555360926  # member mtime of the release archive (PROVENANCE.md, RACE)

DEMO = {
    "RACE/test/middle/7.txt": {
        "answers": ["B", "C", "A"],
        "options": [["a bike", "a kite", "a boat", "a ball"],
                    ["on Monday", "on Friday", "on Saturday", "on Sunday"],
                    ["windy", "rainy", "snowy", "very hot"]],
        "questions": ["What did Tom make with his grandfather?",
                      "They went to the hill _ .",
                      "What was the weather like that day?"],
        "article": "Tom lives with his grandfather. Last week they made a red kite together. "
                   "On Saturday morning they took it to the hill behind the village. "
                   "It was windy, so the kite flew high above the trees.",
        "id": "middle7.txt",
    },
    "RACE/test/middle/101.txt": {
        "answers": ["D", "A"],
        "options": [["in the morning", "after lunch", "at noon", "after dinner"],
                    ["She feeds the fish.", "She reads a book.", "She cooks dinner.", "She calls her aunt."]],
        "questions": ["When does Lucy do her homework?", "What does Lucy do before she goes to bed?"],
        "article": "Lucy is a middle school student. She does her homework after dinner. "
                   "Before she goes to bed, she always feeds the fish in her room.",
        "id": "middle101.txt",
    },
    "RACE/test/high/20001.txt": {
        "answers": ["C", "B"],
        "options": [["Farmers are growing less rice.", "Cities buy more water.",
                     "Small pumps let farmers water fields at night.", "Rivers are cleaner than before."],
                    ["doubtful", "hopeful", "angry", "uninterested"]],
        "questions": ["Which of the following is TRUE according to the passage?",
                      "The writer's attitude towards the new pumps is   _  ."],
        "article": "In many dry regions, small solar pumps are changing how farmers work. "
                   "The pumps store the sun's energy during the day, so farmers can water their "
                   "fields at night, when less water is lost to the heat. Experts believe the idea "
                   "could spread quickly.",
        "id": "high20001.txt",
    },
    "RACE/test/high/20002.txt": {
        "answers": ["A", "D"],
        "options": [["to save paper", "to sell more books", "to train new teachers", "to close the library"],
                    ["A Busy Library", "New Teachers", "Old Books", "Reading Goes Online"]],
        "questions": ["Why did the school start an online reading room?",
                      "What is the best title for the passage?"],
        "article": "Our school opened an online reading room this year to save paper. Students "
                   "can now borrow e-books from home, and the old library is used for group study.",
        "id": "high20002.txt",
    },
}
DEMO_ARCHIVE = SAMPLE_DATA / "race" / "RACE_test.tar.gz"
SETTINGS = make_settings()
CALIBRATED = make_settings(options=(("race_scoring", "calibrated"),))
pytestmark = pytest.mark.filterwarnings("ignore::llama_eval.tasks.data.DataMismatchWarning")


def write_race_archive(path: Path, members: dict[str, dict | bytes]) -> None:
    """A gzip'd tar packed like the release archive (PROVENANCE.md): ustar, members sorted by name,
    mode 0644, uid/gid 0, no user or group names, the source commit time as mtime, gzip level 9
    with no name and mtime 0. Objects are written as the release's members are (json.dumps with
    its defaults, no newline); bytes as given."""
    with open(path, "wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(members):
            body = members[name]
            body = body if isinstance(body, bytes) else json.dumps(body).encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(body), 0o644, SOURCE_COMMIT_TIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(body))


def requests(task, docs, settings=SETTINGS) -> list[list[R]]:
    return [task.requests(d, [], settings) for d in docs]


def results(logprobs: list[float]) -> list[LoglikelihoodResult]:
    return [LoglikelihoodResult(x, False, 1) for x in logprobs]


# -- the demo archive and the prompt ----------------------------------------------------------

def test_demo_archive_holds_the_articles_written_here():
    with tarfile.open(DEMO_ARCHIVE, "r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(DEMO)
        assert {(m.mode, m.uid, m.uname, m.mtime) for m in members} == {(0o644, 0, "", SOURCE_COMMIT_TIME)}
        assert {m.name: json.loads(tar.extractfile(m).read()) for m in members} == DEMO


LUCY = ("Article: Lucy is a middle school student. She does her homework after dinner. Before she goes "
        "to bed, she always feeds the fish in her room.\n\n")
TOM = ("Article: Tom lives with his grandfather. Last week they made a red kite together. On Saturday "
       "morning they took it to the hill behind the village. It was windy, so the kite flew high above "
       "the trees.\n\n")
HARNESS = make_settings(options=(("race_layout", "harness"),))


def test_golden_prompt_gpt3_layout():
    """GPT-3's figures G.1 and G.3: the article, the article's earlier questions each with its
    answer ("Q: ... A: ..."), then the question and its answer slot "A:"."""
    docs = RACEMiddle().load(SAMPLE_DATA)
    assert docs[0]["id"] == "middle101.txt#0"
    options = (" She feeds the fish.", " She reads a book.", " She cooks dinner.", " She calls her aunt.")
    assert requests(RACEMiddle(), docs[1:2])[0] == [
        R(LUCY + "Q: When does Lucy do her homework?\nA: after dinner\n\n"
              "Q: What does Lucy do before she goes to bed?\nA:", c) for c in options
    ] + [R("A:", c) for c in options]  # calibrated: each option again after the bare answer slot


def test_golden_prompt_cloze_keeps_the_blank():
    docs = {d["id"]: d for d in RACEMiddle().load(SAMPLE_DATA)}
    assert requests(RACEMiddle(), [docs["middle7.txt#1"]])[0][:4] == [
        R(TOM + "Q: What did Tom make with his grandfather?\nA: a kite\n\nQ: They went to the hill _ .\nA:", c)
        for c in (" on Monday", " on Friday", " on Saturday", " on Sunday")]
    assert requests(RACEMiddle(), [docs["middle7.txt#2"]])[0][0].context == (
        TOM + "Q: What did Tom make with his grandfather?\nA: a kite\n\nQ: They went to the hill _ .\nA: on Saturday"
        "\n\nQ: What was the weather like that day?\nA:")


def test_harness_layout_is_an_option():
    docs = {d["id"]: d for d in RACEMiddle().load(SAMPLE_DATA)}
    assert requests(RACEMiddle(), [docs["middle7.txt#1"]], HARNESS)[0][:4] == [
        R(TOM + "Question: They went to the hill _ .\nAnswer:", c)
        for c in (" on Monday", " on Friday", " on Saturday", " on Sunday")]


def test_one_document_per_question_in_reading_order():
    middle, high = RACEMiddle().load(SAMPLE_DATA), RACEHigh().load(SAMPLE_DATA)
    # "middle101.txt" sorts before "middle7.txt", as in the archive
    assert [d["id"] for d in middle] == ["middle101.txt#0", "middle101.txt#1",
                                         "middle7.txt#0", "middle7.txt#1", "middle7.txt#2"]
    assert [d["gold"] for d in middle] == [3, 0, 1, 2, 0]
    assert [d["id"] for d in high] == ["high20001.txt#0", "high20001.txt#1", "high20002.txt#0", "high20002.txt#1"]
    assert (RACEHigh.paper_name, RACEHigh.hf_dataset, RACEMiddle.paper_table) == (
        "RACE-high", ("ehovy/race", "high", "test"), 6)


# -- the real release archive -----------------------------------------------------------------

def test_real_archive_counts_and_answer_letters(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataMismatchWarning)  # the manifest check passes
        middle, high = RACEMiddle().load(shared_data), RACEHigh().load(shared_data)
    assert (len(middle), len(high)) == (1436, 3498)
    assert len({d["id"].rpartition("#")[0] for d in middle}) == 362
    assert len({d["id"].rpartition("#")[0] for d in high}) == 1045
    assert len({d["id"] for d in middle + high}) == 1436 + 3498
    # answer letters as counted in PROVENANCE.md
    assert Counter(d["gold"] for d in middle) == {0: 309, 1: 388, 2: 374, 3: 365}
    assert Counter(d["gold"] for d in high) == {0: 754, 1: 935, 2: 950, 3: 859}
    assert middle[-1]["id"] == "middle999.txt#4"
    assert middle[-1]["question"] == "_   like chicken."


def test_demo_archive_is_not_the_release():
    with pytest.warns(DataMismatchWarning, match="RACE_test.tar.gz"):
        RACEMiddle().load(SAMPLE_DATA)


# -- hub rows and release files give identical documents ----------------------------------------

def hub_rows() -> list[dict]:
    text = (FIXTURES / "hf" / "race_middle.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_hub_rows_give_the_release_documents(monkeypatch):
    task = RACEMiddle()
    rows = hub_rows()
    assert rows[0]["example_id"] == "middle7.txt"  # the hub lists the articles in another order
    monkeypatch.setattr(data, "load_hf", lambda hf, split=None: rows if hf == task.hf_dataset else None)
    assert task.hf_dataset == ("ehovy/race", "middle", "test")
    from_hub, from_files = task.load(None), task.load(SAMPLE_DATA)
    assert from_hub == from_files
    assert requests(task, from_hub, CALIBRATED) == requests(task, from_files, CALIBRATED)


def test_hub_rows_of_the_other_level_are_refused(monkeypatch):
    monkeypatch.setattr(data, "load_hf", lambda hf, split=None: hub_rows())
    with pytest.raises(UserError, match=r"ehovy/race \(high, test\), line 1: field 'example_id'.*middle7.txt"):
        RACEHigh().load(None)


# -- malformed release members ------------------------------------------------------------------

MIDDLE_7 = DEMO["RACE/test/middle/7.txt"]


@pytest.mark.parametrize("article, field", [
    ({**MIDDLE_7, "answers": ["B", "E", "A"]},
     r"field 'answers\[1\]' should be one of the letters A, B, C, D, got 'E'"),
    ({**MIDDLE_7, "answers": ["B", "C"]}, r"field 'answers' should be a list of 3 entries"),
    ({**MIDDLE_7, "options": [["a", "b", "c", "d"], ["a", "b", "c"], ["a", "b", "c", "d"]]},
     r"field 'options\[1\]' should be a list of 4 strings"),
    ({k: v for k, v in MIDDLE_7.items() if k != "questions"}, r"field 'questions' is missing"),
    ({**MIDDLE_7, "id": "middle8.txt"}, r"field 'id' should be 'middle7.txt'"),
    (b'{"answers": ["B"', r"not a JSON article"),
])
def test_malformed_member_names_member_and_field(tmp_path, article, field):
    (tmp_path / "race").mkdir()
    write_race_archive(tmp_path / "race" / "RACE_test.tar.gz", {"RACE/test/middle/7.txt": article})
    with pytest.raises(UserError, match=r"member RACE/test/middle/7\.txt.*" + field):
        RACEMiddle().load(tmp_path)


def test_archive_without_the_level_or_not_an_archive(tmp_path):
    (tmp_path / "race").mkdir()
    write_race_archive(tmp_path / "race" / "RACE_test.tar.gz", {"RACE/test/middle/7.txt": MIDDLE_7})
    with pytest.raises(UserError, match=r"holds no RACE/test/high/<n>\.txt members"):
        RACEHigh().load(tmp_path)
    (tmp_path / "race" / "RACE_test.tar.gz").write_text("not gzip")
    with pytest.raises(UserError, match="not a readable gzip'd tar archive"):
        RACEMiddle().load(tmp_path)


# -- scoring with fake engine results -----------------------------------------------------------

def demo_doc() -> dict:
    return RACEMiddle().load(SAMPLE_DATA)[0]  # gold: " after dinner" (index 3)


def test_calibrated_is_the_default_rule():
    task, doc = RACEMiddle(), demo_doc()
    reqs = task.requests(doc, [], SETTINGS)
    assert reqs == task.requests(doc, [], CALIBRATED)
    assert reqs[4:] == [R("A:", c) for c in (" in the morning", " after lunch", " at noon", " after dinner")]
    # in context " in the morning" is best by every length rule; after the bare "A:" it is likely
    # anyway, so calibrated " after dinner" wins: -1-(-0.5) = -0.5 < -3-(-9) = 6
    s = task.score(doc, results([-1.0, -9.0, -9.0, -3.0, -0.5, -9.0, -9.0, -9.0]), SETTINGS)
    assert s.metrics == {"acc": 1.0, "acc_raw": 0.0, "acc_chars": 0.0, "acc_calibrated": 1.0}
    assert s.prediction == "3"
    assert s.extra["calibration_logprobs"] == [-0.5, -9.0, -9.0, -9.0]
    bare = make_settings(options=(("race_calibration_context", "Answer: "),))
    assert {r.context for r in RACEHigh().requests(doc, [], bare)[4:]} == {"Answer: "}


def test_chars_rule_is_an_option():
    task, doc = RACEMiddle(), demo_doc()
    chars = make_settings(options=(("race_scoring", "chars"),))
    assert len(task.requests(doc, [], chars)) == 4
    # raw: " at noon" (-6) wins; per character " after dinner" (-8 / 13 = -0.62) beats -6 / 8 = -0.75
    s = task.score(doc, results([-20.0, -15.0, -6.0, -8.0]), chars)
    assert s.metrics == {"acc": 1.0, "acc_raw": 0.0, "acc_chars": 1.0}
    assert (s.prediction, s.gold) == ("3", "3")


def test_unknown_rule_is_refused():
    with pytest.raises(UserError, match="race_scoring=raw: must be one of calibrated, chars"):
        RACEMiddle().requests(demo_doc(), [], make_settings(options=(("race_scoring", "raw"),)))


if __name__ == "__main__":
    # Writes the demo archive again (the committed file was made this way).
    DEMO_ARCHIVE.parent.mkdir(parents=True, exist_ok=True)
    write_race_archive(DEMO_ARCHIVE, DEMO)
