"""The nine multiple-choice benchmarks: prompts, data sources, scoring and MMLU's averages.

Fixtures: tests/fixtures/<task>/... hold a few hand-written documents in each dataset's real
release layout (so tests/fixtures works as a --data-dir), tests/fixtures/hf/<task>.jsonl the
same documents in the Hugging Face field layout. They differ from the real files, so loading
them warns (sha256 mismatch); that warning is tested in test_data.py and ignored here.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from llama_eval.errors import UserError
from llama_eval.requests import LoglikelihoodRequest as R
from llama_eval.requests import LoglikelihoodResult
from llama_eval.tasks import data, get_task
from llama_eval.tasks.base import DocScore, Settings
from llama_eval.tasks.hellaswag import clean
from llama_eval.tasks.mmlu import mmlu_averages, subjects

pytestmark = [pytest.mark.filterwarnings("ignore::llama_eval.tasks.data.DataMismatchWarning"),
              pytest.mark.filterwarnings("ignore:.*of the 57 subjects")]

from conftest import FIXTURES, SAMPLE_DATA, make_settings  # noqa: E402
TASKS = ["boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa", "mmlu"]
SETTINGS = make_settings()


def build(name: str, docs, pool=None, settings: Settings = SETTINGS) -> list[list[R]]:
    """Every document's requests, with the task's paper shot count."""
    task = get_task(name)
    k = task.paper_shots[0]
    return [task.requests(d, task.select_shots(d, pool or [], k, settings), settings) for d in docs]


def release(name: str):
    task = get_task(name)
    return task.load(SAMPLE_DATA), task.load_shots(SAMPLE_DATA)


def hub_rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "hf" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def results(logprobs: list[float]) -> list[LoglikelihoodResult]:
    return [LoglikelihoodResult(x, False, 1) for x in logprobs]


# -- golden prompts: the exact text of one prompt and its choices per task --------------------

GOLDEN = {
    "boolq": [R("Moon -- The Moon is Earth's only natural satellite. Its diameter is about a quarter of Earth's, "
                "making it the fifth largest satellite in the Solar System.\nQuestion: is the moon larger than the earth?"
                "\nAnswer:", c) for c in (" no", " yes")] + [R("Answer:", " no"), R("Answer:", " yes")],
    "piqa": [R("Question: How do I keep a cut avocado from turning brown?\nAnswer:",
               " Wrap it tightly in plastic so no air reaches the flesh."),
             R("Question: How do I keep a cut avocado from turning brown?\nAnswer:",
               " Leave it open on the counter so the air can reach the flesh.")],
    "siqa": [R("Q: Jordan forgot his umbrella and walked home in the rain. How would Jordan feel afterwards?\nA:", c)
             for c in (" wet and cold", " proud of himself", " well rested")],
    # ctx_b capitalised, as the harness does and GPT-3's figure G.9 shows ("... in a kitchen. They")
    "hellaswag": [R("Washing dishes: A woman stands at a sink full of plates. She", c)
                  for c in (" turns on the tap and scrubs a plate.", " throws the plates out of the window.",
                            " sits on the sink and reads a book.", " paints the plates blue.")],
    "winogrande": [R("The trophy didn't fit in the suitcase because the trophy", " was too big."),
                   R("The trophy didn't fit in the suitcase because the suitcase", " was too big.")],
    "arc_easy": [R("Question: Which of these is a source of light?\nAnswer:", c)
                 for c in (" a mirror", " the Sun", " the Moon's shadow", " a rock")],
    "arc_challenge": [R("Question: Why does a metal spoon feel colder than a wooden spoon at the same temperature?"
                        "\nAnswer:", c) for c in (" Metal conducts heat away from the hand faster.",
                                                   " Metal is always colder.", " Wood makes its own heat.")],
    "openbookqa": [R("A plant leaning toward a window is reacting to", c) for c in (" sound", " light", " gravity", " wind")]
    + [R("Answer:", c) for c in (" sound", " light", " gravity", " wind")],
}

MMLU_GOLDEN_CONTEXT = (
    "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
    "What is the order of the identity element in any group?\nA. 0\nB. 1\nC. 2\nD. infinite\nAnswer: B\n\n"
    "How many elements does Z_6 have?\nA. 3\nB. 5\nC. 6\nD. 12\nAnswer: C\n\n"
    "Statement 1 | Every cyclic group is abelian. Statement 2 | Every abelian group is cyclic.\n"
    "A. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: C\n\n"
    "Find the characteristic of the ring Z_4.\nA. 0\nB. 2\nC. 4\nD. 8\nAnswer: C\n\n"
    "Which of these groups is not abelian?\nA. Z_2\nB. Z_3\nC. S_3\nD. Z_5\nAnswer: C\n\n"
    "How many generators does Z_8 have?\nA. 1\nB. 2\nC. 4\nD. 8\nAnswer:")


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_prompt(name):
    docs, pool = release(name)
    assert build(name, docs[:1], pool)[0] == GOLDEN[name]


def test_golden_prompt_mmlu():
    docs, pool = release("mmlu")
    assert docs[0]["id"] == "abstract_algebra/0"
    assert build("mmlu", docs[:1], pool)[0] == [R(MMLU_GOLDEN_CONTEXT, c) for c in (" A", " B", " C", " D")]


def test_mmlu_fixture_csv_quoting_survives():
    docs, _ = release("mmlu")
    by_id = {d["id"]: d for d in docs}
    assert by_id["philosophy/0"]["choices"][0] == "dialectic, or elenchus"
    assert by_id["philosophy/1"]["question"] == "Which of these is a question of metaphysics?\nChoose the best answer."
    assert by_id["anatomy/1"]["choices"][0] == "biceps brachii "  # trailing space kept, as in the release


def test_hellaswag_hub_text_cleaned_like_the_dump():
    assert clean("[header] How to x [title] Do y. [step] Then z.") == "How to x. Do y. Then z."
    assert clean("[title] Lower it.") == "Lower it."
    assert clean("a [portrait] b") == "a [portrait] b"  # only the WikiHow markers go, like the dump


def test_arc_label_schemes():
    docs, _ = release("arc_easy")
    assert [(d["labels"], d["gold"]) for d in docs] == [
        (list("ABCD"), 1), (list("1234"), 0), (list("ABC"), 2), (list("ABCDE"), 2)]
    assert [len(r) for r in build("arc_easy", docs)] == [4, 4, 3, 5]


def test_calibration_context_is_an_option():
    docs, _ = release("openbookqa")
    settings = make_settings(options=(("openbookqa_calibration_context", "Answer: "),))
    assert {r.context for r in build("openbookqa", docs[:1], settings=settings)[0][4:]} == {"Answer: "}
    docs, _ = release("boolq")
    settings = make_settings(options=(("boolq_calibration_context", "A:"),))
    assert {r.context for r in build("boolq", docs[:1], settings=settings)[0][2:]} == {"A:"}


# -- hub rows and release files give identical documents and requests -------------------------

@pytest.mark.parametrize("name", [t for t in TASKS if t != "mmlu"])
def test_hub_and_release_give_identical_requests(name, monkeypatch):
    task = get_task(name)
    from_files = task.load(SAMPLE_DATA)
    monkeypatch.setattr(data, "load_hf", lambda hf, split=None: hub_rows(name) if hf == task.hf_dataset else None)
    from_hub = task.load(None)
    assert from_hub == from_files
    assert build(name, from_hub) == build(name, from_files)


def test_hub_and_release_give_identical_requests_mmlu(monkeypatch):
    task = get_task("mmlu")
    files_docs, files_pool = task.load(SAMPLE_DATA), task.load_shots(SAMPLE_DATA)
    monkeypatch.setattr(data, "load_hf", lambda hf, split=None: hub_rows(f"mmlu_{split}"))
    hub_docs, hub_pool = task.load(None), task.load_shots(None)
    assert (hub_docs, hub_pool) == (files_docs, files_pool)
    assert build("mmlu", hub_docs, hub_pool) == build("mmlu", files_docs, files_pool)


# -- scoring with fake engine results ---------------------------------------------------------

@pytest.mark.parametrize("name", TASKS)
def test_gold_with_best_logprob_scores_one(name):
    task = get_task(name)
    docs, pool = release(name)
    scores = []
    for doc, reqs in zip(docs, build(name, docs, pool)):
        n = len(task.choices(doc))
        ll = [-1.0 if i == task.gold(doc) else -9.0 for i in range(n)]
        scores.append(task.score(doc, results(ll + [0.0] * (len(reqs) - n)), SETTINGS))
    assert [s.metrics["acc"] for s in scores] == [1.0] * len(docs)
    assert [s.prediction for s in scores] == [s.gold for s in scores]
    overall = [m for m in task.aggregate(scores) if m.group == "" and m.metric == "acc"]
    assert [(m.value, m.n) for m in overall] == [(100.0, len(docs))]


def test_char_normalisation_and_raw_differ():
    task = get_task("piqa")
    doc = {"id": "x", "goal": "g", "solutions": ["short", "a much longer solution text"], "label": 1}
    # raw: -5 beats -10; per character: -10/27 beats -5/5
    s = task.score(doc, results([-5.0, -10.0]), SETTINGS)
    assert (s.metrics["acc"], s.metrics["acc_chars"], s.metrics["acc_raw"]) == (1.0, 1.0, 0.0)


def test_calibration_flips_the_decision():
    task = get_task("boolq")
    doc = {"id": "x", "passage": "p", "question": "q", "answer": True}
    # in context " no" wins (-1.0 > -1.2); but " no" is likelier anyway after a bare "Answer:"
    # (-0.5 vs -2.0), so calibrated: no = -0.5, yes = +0.8
    s = task.score(doc, results([-1.0, -1.2, -0.5, -2.0]), SETTINGS)
    assert (s.metrics["acc"], s.metrics["acc_calibrated"], s.metrics["acc_raw"]) == (1.0, 1.0, 0.0)
    assert s.prediction == "1"


def test_winogrande_scores_the_shared_continuation():
    task = get_task("winogrande")
    docs, _ = release("winogrande")
    reqs = build("winogrande", docs)[2]
    assert reqs == [R("Emma lent her bike to Olivia because Emma", " had no way to get to school."),
                    R("Emma lent her bike to Olivia because Olivia", " had no way to get to school.")]
    s = task.score(docs[2], results([-7.0, -6.0]), SETTINGS)
    assert s.metrics == {"acc": 1.0, "acc_raw": 1.0, "acc_chars": 1.0}


# -- MMLU: shots and aggregation --------------------------------------------------------------

def test_mmlu_shots_are_the_subjects_dev_questions_in_order():
    task = get_task("mmlu")
    docs, pool = release("mmlu")
    anatomy = next(d for d in docs if d["subject"] == "anatomy")
    assert [s["id"] for s in task.select_shots(anatomy, pool, 3, SETTINGS)] == [f"anatomy/dev/{i}" for i in range(3)]
    assert task.select_shots(anatomy, pool, 0, SETTINGS) == []
    assert task.select_shots(anatomy, pool, 5, make_settings(seed=7)) == task.select_shots(anatomy, pool, 5, SETTINGS)
    with pytest.raises(UserError, match="use 0 to 5"):
        task.select_shots(anatomy, pool, 6, SETTINGS)
    with pytest.raises(UserError, match="anatomy has 4 dev questions"):
        task.select_shots(anatomy, pool[:9], 5, SETTINGS)


def test_mmlu_aggregate_weights_by_question_count():
    task = get_task("mmlu")
    # abstract_algebra (STEM) 1/2 right; anatomy (Other, though Table 16 says STEM) 3/3;
    # philosophy (Humanities) 0/1
    outcome = {"abstract_algebra": [1, 0], "anatomy": [1, 1, 1], "philosophy": [0]}
    scores = [DocScore(f"{s}/{i}", "0", "0", {"acc": float(x), "acc_raw": float(x), "acc_chars": float(x)})
              for s, xs in outcome.items() for i, x in enumerate(xs)]
    got = {(m.group, m.metric): (m.value, m.n) for m in task.aggregate(scores)}
    assert got[("", "acc")] == (pytest.approx(400 / 6), 6)
    assert got[("STEM", "acc")] == (50.0, 2)
    assert got[("Other", "acc")] == (100.0, 3)
    assert got[("Humanities", "acc")] == (0.0, 1)
    assert ("Social Sciences", "acc") not in got
    assert got[("anatomy", "acc")] == (100.0, 3)


def test_mmlu_averages_weight_by_count():
    got = mmlu_averages({"abstract_algebra": (10.0, 100), "astronomy": (40.0, 200), "anatomy": (70.0, 100)})
    assert got == {"STEM": pytest.approx(30.0), "Other": pytest.approx(70.0), "Average": pytest.approx(40.0)}
    with pytest.raises(ValueError, match="not MMLU subjects: algebra"):
        mmlu_averages({"algebra": (1.0, 1)})


def test_mmlu_subject_table():
    meta = subjects()
    assert len(meta) == 57 and sum(n for _, n in meta.values()) == 14042
    totals = {c: sum(n for cat, n in meta.values() if cat == c) for c in ("Humanities", "STEM", "Social Sciences", "Other")}
    assert totals == {"Humanities": 4705, "STEM": 3018, "Social Sciences": 3077, "Other": 3242}  # PROTOCOL.md
    assert meta["anatomy"] == ("Other", 135)


@pytest.fixture
def reference(shared_data: Path) -> Path:
    path = shared_data.parent / "reference"
    if not (path / "llama1_paper_mmlu_subjects.csv").is_file():
        pytest.skip("../shared/reference is absent")
    return path


@pytest.mark.parametrize("model", ["LLaMA-7B", "LLaMA-13B", "LLaMA-33B", "LLaMA-65B"])
def test_mmlu_averages_reproduce_table_9(reference, model):
    with open(reference / "llama1_paper_mmlu_subjects.csv", newline="") as f:
        per_subject = {r["task"].removeprefix("MMLU:"): (float(r["value"]), subjects()[r["task"].removeprefix("MMLU:")][1])
                       for r in csv.DictReader(f) if r["model"] == model and r["task"].startswith("MMLU:")}
    with open(reference / "llama1_paper.csv", newline="") as f:
        table9 = {r["task"]: float(r["value"]) for r in csv.DictReader(f) if r["model"] == model and r["table"] == "9"}
    assert len(per_subject) == 57 and len(table9) == 5
    # the paper's rows: "MMLU-<group>", spaces as hyphens (as reporting.paper_task names them)
    ours = {f"MMLU-{k.replace(' ', '-')}": v for k, v in mmlu_averages(per_subject).items()}
    assert ours.keys() == table9.keys()
    for row, value in table9.items():
        assert math.isclose(ours[row], value, abs_tol=0.1), (row, ours[row], value)


def test_paper_names_are_the_csv_names(reference):
    with open(reference / "llama1_paper.csv", newline="") as f:
        rows = {(int(r["table"]), r["task"]) for r in csv.DictReader(f)}
    for name in TASKS:
        task = get_task(name)
        if name == "mmlu":
            wanted = {(9, f"MMLU-{g}") for g in ("Humanities", "STEM", "Social-Sciences", "Other", "Average")}
        else:
            wanted = {(3, task.paper_name)}
        assert wanted <= rows and {task.paper_table} == {t for t, _ in wanted}, name


# -- the real release files (skipped when ../shared/data is absent) ----------------------------

COUNTS = {"piqa": 1838, "boolq": 3270, "hellaswag": 10042, "siqa": 1954, "winogrande": 1267,
          "arc_easy": 2376, "arc_challenge": 1172, "openbookqa": 500, "mmlu": 14042}


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("name", TASKS)
def test_real_files_load_with_published_counts(shared_data, name):
    task = get_task(name)
    docs = task.load(shared_data)
    assert len(docs) == COUNTS[name]
    assert len({d["id"] for d in docs}) == len(docs)
    if name == "mmlu":
        assert len(task.load_shots(shared_data)) == 285
        per_subject = {s: sum(d["subject"] == s for d in docs) for s in subjects()}
        assert per_subject == {s: n for s, (_, n) in subjects().items()}


def test_real_first_prompts(shared_data):
    mmlu = get_task("mmlu")
    docs, pool = mmlu.load(shared_data), mmlu.load_shots(shared_data)
    ctx = build("mmlu", docs[:1], pool)[0][0].context
    assert ctx.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    assert ctx.endswith("Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
                        "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:")
    assert ctx.count("\nAnswer:") == 6 and docs[0]["answer"] == 1
    hs = get_task("hellaswag").load(shared_data)[0]
    assert build("hellaswag", [hs])[0][3] == R("Roof shingle removal: A man is sitting on a roof. He",
                                               " starts pulling up roofing on a roof.")
    assert hs["label"] == 3


# -- malformed rows: errors name file, line and field ------------------------------------------

MALFORMED = [
    ("boolq", {"boolq/val.jsonl": '{"question": "q", "passage": "p", "idx": 0, "label": "true"}\n'
                                  '{"question": "q", "passage": "p", "idx": 1, "label": "yes"}\n'},
     ["val.jsonl, line 2", "'label'", "'yes'"]),
    ("piqa", {"piqa/valid.jsonl": '{"goal": "g", "sol1": "a", "sol2": "b"}\n',
              "piqa/valid-labels.lst": "2\n"}, ["valid-labels.lst, line 1", "'2'"]),
    ("piqa", {"piqa/valid.jsonl": '{"goal": "g", "sol1": "a", "sol2": "b"}\n',
              "piqa/valid-labels.lst": "0\n1\n"}, ["holds 2 labels", "valid.jsonl holds 1"]),
    ("siqa", {"siqa/dev.jsonl": '{"context": "c", "question": "q", "answerA": "a", "answerB": "b"}\n',
              "siqa/dev-labels.lst": "1\n"}, ["dev.jsonl, line 1", "'answerC' is missing"]),
    ("hellaswag", {"hellaswag/hellaswag_val.jsonl": '{"ind": 0, "activity_label": "a", "ctx": "c", '
                                                    '"endings": ["x", "y", "z"], "label": 0}\n'},
     ["hellaswag_val.jsonl, line 1", "'endings'"]),
    ("winogrande", {"winogrande/dev.jsonl": '{"qID": "q", "sentence": "no blank here", "option1": "a", '
                                            '"option2": "b", "answer": "1"}\n'},
     ["dev.jsonl, line 1", "'sentence'"]),
    ("arc_easy", {"arc/ARC-Easy/ARC-Easy-Test.jsonl": '{"id": "x", "question": {"stem": "s", "choices": '
                                                      '[{"text": "a", "label": "A"}]}, "answerKey": "B"}\n'},
     ["ARC-Easy-Test.jsonl, line 1", "'answerKey'", "'B'"]),
    ("openbookqa", {"openbookqa/Main/test.jsonl": '\n{"id": "x", "question": {"stem": "s", "choices": "A"}, '
                                                  '"answerKey": "A"}\n'},
     ["test.jsonl, line 2", "'choices'"]),
    ("mmlu", {"mmlu/test/anatomy_test.csv": 'q,a,b,c,d,A\n"two\nlines",a,b,c,d,E\n'},
     ["anatomy_test.csv, line 2", "answer", "'E'"]),
    ("mmlu", {"mmlu/test/anatomy_test.csv": 'q,a,b,c,d,A\nq,a,b,c,A\n'}, ["anatomy_test.csv, line 2", "5 fields"]),
    ("mmlu", {"mmlu/test/anatomy_test.csv": 'q,a,b,c,d,AB\n'}, ["anatomy_test.csv, line 1", "'AB'"]),
]


@pytest.mark.parametrize("name,files,expected", MALFORMED)
def test_malformed_rows_name_file_line_field(tmp_path, name, files, expected):
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as e:
        get_task(name).load(tmp_path)
    for part in expected:
        assert part in str(e.value)


def test_malformed_hub_row_names_dataset_and_field():
    with pytest.raises(UserError, match=r"allenai/social_i_qa \(validation\), line 3: field 'label'"):
        get_task("siqa").from_hf_row({"context": "c", "question": "q", "answerA": "a", "answerB": "b",
                                      "answerC": "c", "label": "0"}, 2)


def test_missing_release_file_says_what_to_pass(tmp_path):
    with pytest.raises(UserError, match="piqa/valid.jsonl"):
        get_task("piqa").load(tmp_path)
    with pytest.raises(UserError, match="no MMLU test files"):
        get_task("mmlu").load(tmp_path)


def test_mmlu_partial_data_dir_warns():
    with pytest.warns(UserWarning, match="lacks 53 of the 57 subjects"):
        get_task("mmlu").load(SAMPLE_DATA)


# -- HellaSwag text and the per-character length (issue 11, items 8 and 9) ----------------------

def test_hellaswag_harness_preprocessing():
    from llama_eval.tasks.hellaswag import harness_text, split_dump_context

    # the harness's steps: strip, " [title]" -> ". ", every [...] removed, double spaces made single
    assert harness_text(" [header] How to x [title] Do y. [step] Then z. ") == "How to x. Do y. Then z."
    assert harness_text("a [portrait] b") == "a b"  # every bracketed marker goes, not only WikiHow's
    assert harness_text("[title] Lower it.") == "Lower it."
    assert split_dump_context("A lady walks to a barbell. She bends down. the lady") == (
        "A lady walks to a barbell. She bends down.", "the lady")
    assert split_dump_context("How to boil an egg. Fill a pot with water.") == (
        "How to boil an egg. Fill a pot with water.", "")


def test_hellaswag_dump_text_is_an_option():
    docs, _ = release("hellaswag")
    dump = make_settings(options=(("hellaswag_text", "dump"),))
    assert build("hellaswag", docs[:1], settings=dump)[0][0].context == (
        "Washing dishes: A woman stands at a sink full of plates. she")


def test_per_character_length_counts_the_leading_space_by_default():
    from llama_eval.tasks.base import MultipleChoiceTask

    class TwoChoices(MultipleChoiceTask):
        name = "two_choices"

        def choices(self, doc):
            return [" ab", " abc"]

        def gold(self, doc):
            return 0

    # 3 and 4 characters with the space (2 and 3 without): -1.5 / 3 = -0.5 beats -2.2 / 4 = -0.55;
    # stripped, -2.2 / 3 = -0.73 beats -1.5 / 2 = -0.75.
    results = [LoglikelihoodResult(-1.5, False, 1), LoglikelihoodResult(-2.2, False, 1)]
    whole = TwoChoices().score({"id": "d"}, results, make_settings())
    stripped = TwoChoices().score({"id": "d"}, results, make_settings(options=(("mc_char_length", "stripped"),)))
    assert (whole.prediction, stripped.prediction) == ("0", "1")
    assert whole.metrics["acc_chars"] == 1.0 and stripped.metrics["acc_chars"] == 0.0
