"""MBPP: data from the demo release file and a hub-layout fixture, the golden 3-shot prompt,
the sampling regimes and their options, grading through a fake sandbox, and (when
../shared/data is present) the real file's counts and its canonical solutions through the
real sandbox.

The demo file llama_eval/data/demo/mbpp/mbpp.jsonl holds made-up problems in the release
schema: task id 1 (prompting range, not a shot), 2-4 (the shots), 11-13 (test; 13 has setup
code that uses the solution's own class) and 511 (validation).
"""

from __future__ import annotations

import json
import math
import re
import types
from pathlib import Path

import pandas as pd
import pytest
from conftest import FIXTURES, SAMPLE_DATA, SHARED_DATA, make_settings

from llama_eval.errors import UserError
from llama_eval.requests import GenerationResult
from llama_eval.tasks import data

from llama_eval.tasks.mbpp import MBPP, mbpp_program

pytestmark = pytest.mark.filterwarnings("ignore::llama_eval.tasks.data.DataMismatchWarning")

CODE = make_settings(allow_code_execution=True)
SQUARE_SUM = "def square_sum(n):\n    return sum(i * i for i in range(1, n + 1))\n"  # passes doc 11


def demo() -> tuple[MBPP, list[dict], list[dict]]:
    task = MBPP()
    return task, task.load(SAMPLE_DATA), task.load_shots(SAMPLE_DATA)


def comb_pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k written from its definition: 1 - P(all k drawn samples fail)."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# -- the paper's table ------------------------------------------------------------------------------

def test_paper_rows_exist_for_the_metrics_and_shots():
    task = MBPP()
    assert (task.name, task.paper_name, task.paper_table, task.paper_shots) == ("mbpp", "MBPP", 8, (3,))
    assert task.headline_metric == "pass@1" and task.needs_code_execution
    paper = pd.read_csv(Path(data.__file__).parents[1] / "data" / "paper" / "llama1_paper.csv")
    for metric, value in (("pass@1", 17.7), ("pass@80", 56.2)):
        hit = paper[(paper.task == "MBPP") & (paper.metric == metric) & (paper.shots == 3)
                    & (paper.model == "LLaMA-7B")]
        assert list(hit.value) == [value]


# -- data -------------------------------------------------------------------------------------------

def test_release_file_gives_the_test_range_and_the_three_fixed_shots():
    task, docs, shots = demo()
    assert [d["id"] for d in docs] == ["11", "12", "13"]  # 1-4 are prompting, 511 is validation
    assert [s["id"] for s in shots] == ["2", "3", "4"]  # not 1, though it is in the prompting range
    assert docs[0]["code"] == SQUARE_SUM  # "\r\n" and the stray final "\r" became "\n"
    assert docs[2]["setup"] == "r1 = Rect(2, 3)\nr2 = Rect(5, 5)\nr3 = Rect(0, 7)"
    assert docs[1]["tests"][1] == 'assert remove_repeated_words("one") == "one" '  # verbatim
    assert task.source(SAMPLE_DATA).location == "mbpp/mbpp.jsonl"
    for seed in (1, 99):
        assert task.select_shots(docs[seed % 3], shots, 3, make_settings(seed=seed)) == shots
    assert task.select_shots(docs[0], shots, 1, make_settings()) == shots[:1]
    with pytest.raises(UserError, match="task mbpp: --shots 4 asked for but its few-shot pool holds 3 examples"):
        task.select_shots(docs[0], shots, 4, make_settings())


def write_release(tmp_path: Path, rows: list[dict]) -> Path:
    (tmp_path / "mbpp").mkdir(parents=True)
    (tmp_path / "mbpp" / "mbpp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return tmp_path


def demo_rows() -> list[dict]:
    return [json.loads(line) for line in (SAMPLE_DATA / "mbpp" / "mbpp.jsonl").read_text(encoding="utf-8").splitlines()]


def test_malformed_release_rows_are_user_errors(tmp_path):
    rows = demo_rows()
    without_shot = write_release(tmp_path / "a", [r for r in rows if r["task_id"] != 3])
    with pytest.raises(UserError, match=r"lacks the prompting examples with task ids \[3\]"):
        MBPP().load_shots(without_shot)
    with pytest.raises(UserError, match="task id 12 occurs more than once"):
        MBPP().load(write_release(tmp_path / "b", rows + [rows[5]]))
    bad_tests = [dict(r, test_list="assert f() == 1") if r["task_id"] == 12 else r for r in rows]
    with pytest.raises(UserError, match="mbpp.jsonl, line 6: field 'test_list' should be list"):
        MBPP().load(write_release(tmp_path / "c", bad_tests))
    with pytest.raises(UserError, match="line 1: field 'task_id' should be int"):
        MBPP().load(write_release(tmp_path / "d", [dict(rows[0], task_id="1")]))


def fake_hub(hf_dataset, split=None):
    """The hub's `full` config from the fixture: its splits are the README's task-id ranges."""
    assert hf_dataset == ("google-research-datasets/mbpp", "full", "test")
    ranges = {"prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601)}
    rows = [json.loads(line) for line in (FIXTURES / "hf" / "mbpp.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if r["task_id"] in ranges[split or hf_dataset[2]]]


def test_hub_and_release_rows_give_identical_requests(monkeypatch):
    monkeypatch.setattr(data, "load_hf", fake_hub)
    settings = make_settings(seed=3, samples=80)
    built = []
    for task, data_dir in ((MBPP(), SAMPLE_DATA), (hub := MBPP(), None)):
        docs, pool = task.load(data_dir), task.load_shots(data_dir)
        built.append([task.requests(d, task.select_shots(d, pool, 3, settings), settings) for d in docs])
    assert len(built[0]) == 3 and built[0] == built[1]
    assert hub.source(None).describe() == "Hugging Face dataset google-research-datasets/mbpp/full (test)"


# -- prompt and requests ------------------------------------------------------------------------------

SHOT_BLOCKS = (
    "You are an expert Python programmer, and here is your task: Write a function to reverse a given string. "
    "Your code should pass these tests:\n\n"
    'assert reverse_string("abc") == "cba"\nassert reverse_string("") == ""\n'
    'assert reverse_string("level") == "level"\n'
    "[BEGIN]\ndef reverse_string(s):\n    return s[::-1]\n[DONE]\n\n"
    "You are an expert Python programmer, and here is your task: Write a python function to check whether a number "
    "is even. Your code should pass these tests:\n\n"
    "assert is_even(4) == True\nassert is_even(7) == False\nassert is_even(0) == True\n"
    "[BEGIN]\ndef is_even(n): \n    return n % 2 == 0\n[DONE]\n\n"
    "You are an expert Python programmer, and here is your task: Write a function to count the vowels in a string. "
    "Your code should pass these tests:\n\n"
    'assert count_vowels("Python") == 1\nassert count_vowels("AEIOU") == 5\nassert count_vowels("xyz") == 0\n'
    '[BEGIN]\ndef count_vowels(text):\n    count = 0\n    for ch in text.lower():\n        if ch in "aeiou":\n'
    "            count += 1\n    return count\n[DONE]\n\n"
)


def test_golden_prompt():
    task, docs, shots = demo()
    assert task.prompt(docs[0], shots) == SHOT_BLOCKS + (
        "You are an expert Python programmer, and here is your task: Write a function to find the sum of the squares "
        "of the first n natural numbers. Your code should pass these tests:\n\n"
        "assert square_sum(1) == 1\nassert square_sum(3) == 14\nassert square_sum(10) == 385\n[BEGIN]\n")
    assert task.prompt(docs[0], []) == task.prompt(docs[0], shots)[len(SHOT_BLOCKS):]


def test_requests_share_one_header_and_use_the_papers_temperatures():
    task, docs, shots = demo()
    requests = [task.requests(d, task.select_shots(d, shots, 3, make_settings()), make_settings(seed=9)) for d in docs]
    prompts = {r.prompt for reqs in requests for r in reqs}
    assert len(prompts) == 3 and all(p.startswith(SHOT_BLOCKS) for p in prompts)
    assert all(p.count("[BEGIN]") == 4 and p.count("[DONE]") == 3 for p in prompts)
    low, high = requests[0]
    assert (low.temperature, low.top_p, low.n, low.seed) == (0.1, 0.95, 200, 9)
    assert (high.temperature, high.top_p, high.n, high.seed) == (0.8, 0.95, 200, 9)
    assert low.until == high.until == ("[DONE]", "You are an expert Python programmer")
    assert low.max_new_tokens == 512


def test_options_and_sample_counts():
    task, doc = MBPP(), demo()[1][0]
    with pytest.raises(UserError, match="--samples 79: pass@80 needs at least 80"):
        task.requests(doc, [], make_settings(samples=79))
    [greedy] = task.requests(doc, [], make_settings(options=(("mbpp_pass1", "greedy"), ("mbpp_k", "1"))))
    assert (greedy.temperature, greedy.n) == (0.0, 1)
    low, high = task.requests(doc, [], make_settings(samples=10, options=(("mbpp_k", "10,1"), ("mbpp_top_p", "1"))))
    assert (low.n, high.n, low.temperature, high.temperature, high.top_p) == (10, 10, 0.1, 0.8, 1.0)
    assert [r.temperature for r in task.requests(doc, [], make_settings(temperature=0.5))] == [0.5, 0.5]
    for option, value in (("mbpp_k", "80"), ("mbpp_k", "1,x"), ("mbpp_k", "0,1"), ("mbpp_pass1", "best"),
                          ("mbpp_top_p", "0"), ("mbpp_top_p", "1.5")):
        with pytest.raises(UserError, match=f"--option {option}={re.escape(value)}"):
            task.requests(doc, [], make_settings(options=((option, value),)))
    for value in ("0", "soon"):
        settings = make_settings(allow_code_execution=True, options=(("mbpp_timeout", value),))
        with pytest.raises(UserError, match=f"--option mbpp_timeout={value}"):
            task.score(doc, [GenerationResult(("x",))] * 2, settings)


# -- grading ------------------------------------------------------------------------------------------

def test_grading_needs_allow_code_execution():
    with pytest.raises(UserError, match="--allow-code-execution"):
        MBPP().score(demo()[1][0], [GenerationResult((SQUARE_SUM,))], make_settings(samples=1, options=(("mbpp_k", "1"),)))


@pytest.fixture
def fake_execution(monkeypatch):
    """A stand-in for execution.check_many that records its programs: a program passes when it
    holds the sum of squares solution (the test, not the sandbox, decides)."""
    calls = []

    def check_many(programs, timeout=10.0, workers=None):
        calls.append((list(programs), timeout))
        return [types.SimpleNamespace(status="passed" if SQUARE_SUM in p else "failed", detail="AssertionError")
                for p in programs]

    from llama_eval import execution

    monkeypatch.setattr(execution, "check_many", check_many)
    return calls


def test_grading_with_a_fake_sandbox(fake_execution):
    task, docs, _ = demo()
    settings = make_settings(samples=100, allow_code_execution=True, options=(("mbpp_timeout", "3"),))
    wrong = "def square_sum(n):\n    return n * n\n"
    low = (SQUARE_SUM,) * 60 + (wrong,) * 40
    high = (SQUARE_SUM,) * 5 + tuple(f"def square_sum(n):\n    return {i}\n" for i in range(95))
    score = task.score(docs[0], [GenerationResult(low), GenerationResult(high)], settings)
    assert score.metrics == {"pass@1": pytest.approx(0.6), "pass@80": pytest.approx(comb_pass_at_k(100, 5, 80))}
    assert score.extra["passed"] == {"pass@1": "60/100", "pass@80": "5/100"}
    assert score.extra["statuses"] == {"passed": 65, "failed": 135}
    assert score.extra["first_failure"] == "AssertionError"
    [(programs, timeout)] = fake_execution
    assert timeout == 3.0 and len(programs) == 97  # identical programs run once, across regimes too
    assert programs[0] == (SQUARE_SUM + "\n"  # then the (empty) setup code and the asserts
                           + "\nassert square_sum(1) == 1\nassert square_sum(3) == 14\nassert square_sum(10) == 385\n")
    assert (score.doc_id, score.prediction, score.gold) == ("11", SQUARE_SUM, SQUARE_SUM)


def test_pass_at_k_uses_each_regimes_own_samples(fake_execution):
    task, doc = MBPP(), demo()[1][0]
    settings = make_settings(samples=12, allow_code_execution=True, options=(("mbpp_k", "1,5,10"),))
    high = (SQUARE_SUM,) * 2 + tuple(f"def square_sum(n):\n    return {i}\n" for i in range(10))
    metrics = task.score(doc, [GenerationResult((SQUARE_SUM,) * 12), GenerationResult(high)], settings).metrics
    assert metrics == {"pass@1": 1.0, "pass@5": pytest.approx(comb_pass_at_k(12, 2, 5)),
                       "pass@10": pytest.approx(comb_pass_at_k(12, 2, 10))}
    greedy = make_settings(allow_code_execution=True, options=(("mbpp_pass1", "greedy"), ("mbpp_k", "1")))
    wrong = GenerationResult(("def square_sum(n):\n    return 0\n",))
    assert task.score(doc, [wrong], greedy).metrics == {"pass@1": 0.0}


def test_setup_code_runs_after_the_solution():
    rect = demo()[1][2]
    program = mbpp_program(rect, rect["code"])
    assert program.index("class Rect") < program.index("r1 = Rect(2, 3)") < program.index("assert rect_area(r1)")


# -- the real sandbox and the real file --------------------------------------------------------------

def stub(code: str) -> str:
    """The solution's top-level functions with `pass` bodies: defines every name, returns None."""
    return "".join(line.rstrip() + "\n    pass\n" for line in code.splitlines() if line.startswith("def "))


def sandbox_outcomes(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(metrics with the solution, metrics with stubs) per problem, graded by the real sandbox."""
    task, settings = MBPP(), make_settings(samples=1, allow_code_execution=True, options=(("mbpp_k", "1"),))
    return [(task.score(d, [GenerationResult((d["code"],))], settings).metrics,
             task.score(d, [GenerationResult((stub(d["code"]),))], settings).metrics) for d in docs]


def test_demo_solutions_pass_the_real_sandbox_and_stubs_fail():
    _, docs, shots = demo()
    assert sandbox_outcomes(docs + shots) == [({"pass@1": 1.0}, {"pass@1": 0.0})] * 6


@pytest.fixture(scope="module")
def real_mbpp() -> tuple[MBPP, list[dict], list[dict]]:
    """(task, documents, shots) from ../shared/data, read once for the module."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    task = MBPP()
    return task, task.load(SHARED_DATA), task.load_shots(SHARED_DATA)


def test_real_file_counts_and_shots(shared_data, real_mbpp):
    task, docs, shots = real_mbpp
    assert [d["task_id"] for d in docs] == list(range(11, 511))
    assert [s["task_id"] for s in shots] == [2, 3, 4]
    assert all(len(d["tests"]) == 3 and "\r" not in d["code"] + d["setup"] for d in docs + shots)
    assert task.source(SHARED_DATA).sha256 is not None
    prompt = task.prompt(docs[0], shots)
    assert prompt.startswith("You are an expert Python programmer, and here is your task: Write a function to find "
                             "the similar elements from the given two tuple lists. Your code should pass these tests:")
    assert prompt.endswith('assert remove_Occ("PHP","P") == "H"\n[BEGIN]\n')


def test_real_solutions_pass_the_real_sandbox_and_stubs_fail(shared_data, real_mbpp):
    assert sandbox_outcomes(real_mbpp[1][:20]) == [({"pass@1": 1.0}, {"pass@1": 0.0})] * 20


def test_real_prompts_that_leave_no_room_for_512_new_tokens(shared_data, real_mbpp, llama_tokenizer_path):
    import sentencepiece as spm

    task, docs, shots = real_mbpp
    sp = spm.SentencePieceProcessor(model_file=str(llama_tokenizer_path))
    lengths = {d["id"]: len(sp.encode(task.prompt(d, shots))) + 1 for d in docs}  # + BOS
    assert {i: n for i, n in lengths.items() if n > 2048 - task.max_new_tokens} == {"462": 1569, "493": 4390}
    prompt = task.prompt(docs[0], shots)
    assert len(sp.encode(prompt[: prompt.rindex("You are an expert")])) == 637  # the shared header
