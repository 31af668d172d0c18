"""The generation tasks (NQ, TriviaQA, GSM8K, HumanEval): data from fixtures in the release
and hub schemas, golden prompts, answer cleaning, grading of fake results, options, the
64-shot character budget, and (when ../shared/data is present) the real files.

The fixtures live in tests/fixtures/<task>/ under the release files' own names, so
data.release_file warns that they differ from the released files; that warning is tested
in test_data.py and ignored here.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pandas as pd
import pytest
from conftest import FIXTURES, SAMPLE_DATA, make_settings

from llama_eval.errors import UserError
from llama_eval.metrics import pass_at_k
from llama_eval.requests import GenerationResult
from llama_eval.tasks import data, get_task

from llama_eval.tasks.data import undo_double_quoting
from llama_eval.tasks.gsm8k import COT_EXEMPLARS
from llama_eval.tasks.nq_open import detokenize_dpr
from llama_eval.tasks.qa import QAFormat, clean_answer, qa_prompt
from llama_eval.tasks.triviaqa import shot_answer

pytestmark = pytest.mark.filterwarnings("ignore::llama_eval.tasks.data.DataMismatchWarning")

GENERATION_TASKS = ("nq_open", "triviaqa", "gsm8k", "humaneval")
CODE = make_settings(allow_code_execution=True)


def rows(relpath: str) -> list[dict]:
    """Rows of a hub-layout fixture (tests/fixtures) or of a release file the hub serves as is."""
    path = FIXTURES / relpath if (FIXTURES / relpath).exists() else SAMPLE_DATA / relpath
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def qa(question: str, answer: str = "", id_: str | None = None) -> dict:
    return {"id": id_ or question, "question": question, "answers": [answer], "answer": answer}


# -- registry and the paper's table -----------------------------------------------------------

def test_registry_names_and_paper_rows():
    paper = pd.read_csv(Path(data.__file__).parents[1] / "data" / "paper" / "llama1_paper.csv")
    expected = {"nq_open": ("NaturalQuestions", 4, ["exact_match"]), "triviaqa": ("TriviaQA", 5, ["exact_match"]),
                "gsm8k": ("GSM8K", 7, ["acc", "maj1@100"]), "humaneval": ("HumanEval", 8, ["pass@1", "pass@100"])}
    for name, (paper_name, table, metrics) in expected.items():
        task = get_task(name)
        assert (task.name, task.paper_name, task.paper_table) == (name, paper_name, table)
        assert task.headline_metric == metrics[0]
        for metric in metrics:
            for shots in task.paper_shots:
                hit = paper[(paper.task == paper_name) & (paper.metric == metric) & (paper.shots == shots)
                            & (paper.model == "LLaMA-7B") & (paper.table == table)]
                assert len(hit) == 1, (name, metric, shots)
    assert get_task("nq_open").paper_shots == get_task("triviaqa").paper_shots == (0, 1, 5, 64)
    assert get_task("humaneval").needs_code_execution and not get_task("gsm8k").needs_code_execution


# -- NQ and TriviaQA: prompts ---------------------------------------------------------------------

def test_nq_prompt_reproduces_the_papers_figure_3():
    task = get_task("nq_open")
    doc = qa("who wrote the book the origin of species", "Charles Darwin")
    shot = qa("who sang who wants to be a millionaire in high society", "Frank Sinatra")
    assert task.prompt(doc, [shot]) == ("Answer these questions:\n"
                                        "Q: Who sang who wants to be a millionaire in high society?\n"
                                        "A: Frank Sinatra\n"
                                        "Q: Who wrote the book the origin of species?\n"
                                        "A:")
    [req] = task.requests(doc, [shot], make_settings(seed=7))
    assert req.prompt == task.prompt(doc, [shot])
    assert (req.until, req.temperature, req.n, req.seed, req.max_new_tokens) == (("\n",), 0.0, 1, 7, 32)


def test_triviaqa_prompt_reproduces_the_papers_figure_3():
    task = get_task("triviaqa")
    doc = qa("The ancient city of Troy is located in what modern country?", "Turkey")
    shot = qa("In Scotland a bothy/bothie is a?", "House")
    assert task.prompt(doc, [shot]) == ("Answer these questions:\nQ: In Scotland a bothy/bothie is a?\nA: House\n"
                                        "Q: The ancient city of Troy is located in what modern country?\nA:")
    assert task.prompt(doc, []) == ("Answer these questions:\n"
                                    "Q: The ancient city of Troy is located in what modern country?\nA:")


def test_qa_prompt_options():
    doc, shots = qa("who is it"), [qa("what is one", "1"), qa("what is two?", "2")]
    settings = make_settings(options=(("qa_separator", "blank"), ("qa_question", "raw"), ("qa_answer_space", "yes")))
    [req] = get_task("nq_open").requests(doc, shots, settings)
    assert req.prompt == "Answer these questions:\nQ: what is one\nA: 1\n\nQ: what is two?\nA: 2\n\nQ: who is it\nA: "
    fmt = QAFormat()
    assert [fmt.ask(q) for q in ("who is it", "Who is it?", "name it.", " what ")] == \
           ["Who is it?", "Who is it?", "Name it.", "What?"]  # never a doubled "?"


@pytest.mark.parametrize("option,value,message", [
    ("qa_separator", "tab", "none, blank"), ("qa_question", "title", "figure, raw"),
    ("qa_answer_space", "1", "no, yes"), ("qa_cut", "word", "final, clause"),
])
def test_qa_bad_options_are_user_errors(option, value, message):
    with pytest.raises(UserError, match=f"{option}={value}.*{message}"):
        get_task("triviaqa").requests(qa("q"), [], make_settings(options=((option, value),)))


# -- NQ and TriviaQA: answers and grading ---------------------------------------------------------

@pytest.mark.parametrize("completion,final,clause", [
    (" Charles Darwin", "Charles Darwin", "Charles Darwin"),
    (" Charles Darwin.", "Charles Darwin", "Charles Darwin"),
    (" Charles Darwin ,", "Charles Darwin", "Charles Darwin"),
    (" Charles Darwin\nQ: Who painted the Mona Lisa?", "Charles Darwin", "Charles Darwin"),
    (" Paris, France", "Paris, France", "Paris"),
    (" Paris. It is the capital", "Paris. It is the capital", "Paris"),
    (" 1,000 metres", "1,000 metres", "1,000 metres"),  # a thousands comma is not a clause break
    (" 3.5 million", "3.5 million", "3.5 million"),  # nor is a decimal point
    (" St. Louis", "St. Louis", "St"),
    (" R. H. Thomson", "R. H. Thomson", "R"),
    (" T.J. Miller.", "T.J. Miller", "T.J"),
    ("\nParis", "", ""),
    ("", "", ""),
])
def test_clean_answer(completion, final, clause):
    assert clean_answer(completion) == clean_answer(completion, "final") == final
    assert clean_answer(completion, "clause") == clause


@pytest.mark.parametrize("name", ["nq_open", "triviaqa"])
def test_qa_grading_with_fake_results(name):
    task = get_task(name)
    doc = {"id": "d", "question": "q", "answers": ["Planet Mars", "Mars"], "answer": "Mars"}
    cases = {" Mars.\nQ: next": 1.0, " the planet Mars": 1.0, " Mars the red planet": 0.0,
             " MARS,": 1.0, " MARS, the red one": 0.0, " Venus": 0.0, "": 0.0}
    for completion, expected in cases.items():
        score = task.score(doc, [GenerationResult((completion,))], make_settings())
        assert score.metrics == {"exact_match": expected}, completion
        assert score.extra == {"completion": completion}
    assert score.gold == "Planet Mars | Mars"


# -- NQ and TriviaQA: shots and the window ------------------------------------------------------

def long_pool(n: int, width: int) -> list[dict]:
    return [qa(f"question number {i} " + "x" * width, f"answer {i}", id_=f"p{i}") for i in range(n)]


def within(limit: int):
    """A stand-in for the engine's window check: a prompt fits when it has at most `limit` characters."""
    return lambda request: len(request.prompt) <= limit


def test_64_shots_that_fit_are_all_kept():
    task, doc, pool = get_task("nq_open"), qa("who is it"), long_pool(100, 10)
    shots = task.select_shots(doc, pool, 64, make_settings())
    settings = make_settings(fits=within(10_000))
    assert task.fit_shots(doc, shots, settings) == shots and len(shots) == 64


def test_64_shots_over_the_window_drop_the_farthest_first():
    task, doc, pool = get_task("triviaqa"), qa("who is it"), long_pool(100, 60)
    drawn = task.select_shots(doc, pool, 64, make_settings())
    settings = make_settings(fits=within(5500))
    kept = task.fit_shots(doc, drawn, settings)
    assert 0 < len(kept) < 64
    assert kept == drawn[64 - len(kept):]  # a tail: the shots nearest the question stay
    [req] = task.requests(doc, kept, settings)
    assert len(req.prompt) <= 5500 < len(qa_prompt(doc, drawn[63 - len(kept):], QAFormat()))  # one more would not fit


def test_fitting_uses_the_chosen_format_and_can_drop_every_shot():
    task, doc, shots = get_task("nq_open"), qa("who is it"), long_pool(10, 20)
    limit = len(qa_prompt(doc, shots[-4:], QAFormat()))  # exactly four shots fit without blank lines
    plain = make_settings(fits=within(limit))
    blank = make_settings(fits=within(limit), options=(("qa_separator", "blank"),))
    assert len(task.fit_shots(doc, shots, plain)) == 4 and len(task.fit_shots(doc, shots, blank)) == 3
    assert task.fit_shots(qa("y" * 400), shots, plain) == []  # the question alone is over: no shots, no error
    assert task.fit_shots(doc, shots, make_settings()) == shots  # no window known: nothing dropped


def test_shots_are_drawn_per_document_and_never_the_document_itself():
    task, pool = get_task("nq_open"), long_pool(30, 5)
    doc = dict(pool[3])
    a = task.select_shots(doc, pool, 5, make_settings(seed=1))
    assert a == task.select_shots(doc, list(reversed(pool))[::-1], 5, make_settings(seed=1))
    assert a != task.select_shots(doc, pool, 5, make_settings(seed=2))
    assert all(s["id"] != doc["id"] for s in task.select_shots(doc, pool, 29, make_settings()))


# -- NQ and TriviaQA: data -----------------------------------------------------------------------

def test_nq_release_files():
    task = get_task("nq_open")
    docs, pool = task.load(SAMPLE_DATA), task.load_shots(SAMPLE_DATA)
    assert len(docs) == 5 and len(pool) == 8
    assert docs[2]["answers"] == ["four", "4"] and docs[2]["id"].startswith("nq-")
    assert task.source(SAMPLE_DATA).location == "nq_open/NQ-open.dev.jsonl"
    shown = [d["answer"] for d in pool]
    assert shown[1:5] == ["March 31, 1889", "the Ingres Museum", "McDonald's", "Electroencephalography (EEG)"]
    assert pool[2]["answers"] == ["the Ingres Museum", "Château d'Amboise"]


def test_triviaqa_release_files_and_source_record():
    task = get_task("triviaqa")
    docs, pool = task.load(SAMPLE_DATA), task.load_shots(SAMPLE_DATA)
    assert docs[1]["question"] == 'Who wrote the novel "Nineteen Eighty-Four"?'  # CSV-quoted twice in the file
    assert docs[4]["question"] == '"Elementary, my dear Watson" is a phrase linked with which fictional detective?'
    assert docs[0]["answers"] == ["Planet Mars", "Mars", "Mars (planet)", "♂"]
    source = task.source(SAMPLE_DATA)
    assert source.variant == "unfiltered" and source.location == "triviaqa/topics.dpr.trivia.test.txt"
    assert task.source(None).variant == "filtered"
    assert [d["answer"] for d in pool] == ["Au", "Titanic", "Mozart", "Pacific", "1989", "Sweden"]


@pytest.mark.parametrize("field,expected", [
    ('"""Bomb Plot"" of 1944"', '"Bomb Plot" of 1944'),
    ('"Who said, ""Hello?"""', 'Who said, "Hello?"'),
    ('"Hi" said he', '"Hi" said he'),
    ('"Four score" began what speech?', '"Four score" began what speech?'),
    ('"a" and "b"', '"a" and "b"'),  # lone quotes inside: not a twice-quoted field
    ('"', '"'),
])
def test_undo_double_quoting(field, expected):
    assert undo_double_quoting(field) == expected


@pytest.mark.parametrize("text,expected", [("May 18 , 2018", "May 18, 2018"), ("McDonald 's", "McDonald's"),
                                          ("581 ( second edition )", "581 (second edition)"),
                                          ("2017 - 11 - 05", "2017-11-05"), ("do n't stop", "don't stop"),
                                          ("Frank Sinatra", "Frank Sinatra")])
def test_detokenize_dpr(text, expected):
    assert detokenize_dpr(text) == expected


def test_shot_answer_picks_the_alias_the_others_share():
    assert shot_answer(["🚢", "RMS Titanic (ship)", "Titanic", "S.S. Titanic"]) == "Titanic"
    assert shot_answer(["The Republic of Austria", "Oesterreich", "Austria"]) == "Austria"
    assert shot_answer(["Scorpio"]) == "Scorpio"
    assert shot_answer(["bb", "aa"]) == "bb"  # a tie of equal length: the first


def test_malformed_dpr_rows_name_file_and_line(tmp_path):
    bad = tmp_path / "nq_open"
    bad.mkdir()
    (bad / "topics.dpr.nq.dev.txt").write_text("fine question\t['ok']\nbroken question\tnot a list\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"topics.dpr.nq.dev.txt, line 2: field 'answers'"):
        get_task("nq_open").load_shots(tmp_path)
    (bad / "topics.dpr.nq.dev.txt").write_text("q\t['a']\textra\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 1: 3 tab-separated fields"):
        get_task("nq_open").load_shots(tmp_path)
    (bad / "NQ-open.dev.jsonl").write_text('{"question": "q", "answer": []}\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 1: field 'answer' should be a non-empty list of strings"):
        get_task("nq_open").load(tmp_path)


def test_missing_release_file_is_a_user_error(tmp_path):
    for name in GENERATION_TASKS:
        with pytest.raises(UserError, match="does not exist"):
            get_task(name).load(tmp_path)


# -- hub rows and release rows give identical requests ---------------------------------------------

HUB_ROWS = {
    ("google-research-datasets/nq_open", "validation"): "nq_open/NQ-open.dev.jsonl",
    ("google-research-datasets/nq_open", "train"): "nq_open/hf_train.jsonl",
    ("mandarjoshi/trivia_qa", "validation"): "triviaqa/hf_validation.jsonl",
    ("mandarjoshi/trivia_qa", "train"): "triviaqa/hf_train.jsonl",
    ("openai/gsm8k", "test"): "gsm8k/test.jsonl", ("openai/gsm8k", "train"): "gsm8k/train.jsonl",
}


def fake_hub(hf_dataset, split=None):
    if hf_dataset[0] == "openai/openai_humaneval":
        import gzip
        with gzip.open(SAMPLE_DATA / "humaneval" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f]
    return rows(HUB_ROWS[hf_dataset[0], split or hf_dataset[2]])


@pytest.mark.parametrize("name,shots", [("nq_open", 5), ("triviaqa", 5), ("gsm8k", 8), ("humaneval", 0)])
def test_hub_and_release_rows_give_identical_requests(name, shots, monkeypatch):
    settings = make_settings(seed=3, samples=100)
    release, hub = get_task(name), get_task(name)
    monkeypatch.setattr(data, "load_hf", fake_hub)
    built = []
    for task, data_dir in ((release, SAMPLE_DATA), (hub, None)):
        docs, pool = task.load(data_dir), task.load_shots(data_dir) if shots else []
        built.append([task.requests(d, task.select_shots(d, pool, shots, settings), settings) for d in docs])
    assert built[0] == built[1]
    assert hub.source(None).kind == "hub" and release.source(SAMPLE_DATA).kind == "release"


def test_triviaqa_hub_golds_include_the_value():
    task = get_task("triviaqa")
    doc = task.hf_doc(rows("triviaqa/hf_validation.jsonl")[2], "hub", 3)
    assert doc["answers"] == ["Republic of Turkey", "Türkiye", "Turkey"] and doc["answer"] == "Turkey"
    with pytest.raises(UserError, match="line 3: field 'answer' should be dict"):
        task.hf_doc({"question": "q", "answer": "Turkey"}, "hub", 3)


# -- GSM8K -------------------------------------------------------------------------------------------

# Wei et al. (2022), Table 20 ("Few-shot exemplars for full chain of thought prompt for math word
# problems"), typed from the paper, and its Q:/A: layout (Figure 1, Figure 3).
WEI_TABLE_20 = """\
Q: There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, there will be 21 trees. How many trees did the grove workers plant today?
A: There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have been 21 - 15 = 6. The answer is 6.

Q: If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?
A: There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5.

Q: Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?
A: Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, they had 74 - 35 = 39. The answer is 39.

Q: Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did Jason give to Denny?
A: Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. The answer is 8.

Q: Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have now?
A: Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. The answer is 9.

Q: There were nine computers in the server room. Five more computers were installed each day, from monday to thursday. How many computers are now in the server room?
A: There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 computers were added. 9 + 20 is 29. The answer is 29.

Q: Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf balls did he have at the end of wednesday?
A: Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, he had 35 - 2 = 33 golf balls. The answer is 33.

Q: Olivia has $23. She bought five bagels for $3 each. How much money does she have left?
A: Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars left. 23 - 15 is 8. The answer is 8.

"""


def test_gsm8k_default_prompt_is_wei_et_al_chain_of_thought():
    task = get_task("gsm8k")
    docs, pool = task.load(SAMPLE_DATA), task.load_shots(SAMPLE_DATA)
    settings = make_settings(seed=1)
    shots = task.select_shots(docs[0], pool, 8, settings)
    assert shots == task.select_shots(docs[2], pool, 8, make_settings(seed=99))  # one header for all
    req = task.requests(docs[0], shots, settings)[0]
    assert req.prompt == WEI_TABLE_20 + "Q: " + docs[0]["question"] + "\nA:"
    assert len(COT_EXEMPLARS) == 8 and all(a.endswith(".") and "The answer is" in a for _, a in COT_EXEMPLARS)


def test_gsm8k_train_prompt_option_uses_the_first_eight_train_problems():
    task = get_task("gsm8k")
    docs, pool = task.load(SAMPLE_DATA), task.load_shots(SAMPLE_DATA)
    assert docs[1]["answer"] == "2400" and docs[2]["answer"] == "-7"
    settings = make_settings(seed=1, options=(("gsm8k_prompt", "train"),))
    shots = task.select_shots(docs[0], pool, 8, settings)
    assert [s["id"] for s in shots] == [d["id"] for d in task.load_shots(SAMPLE_DATA)[8:16]]
    prompt = task.requests(docs[0], shots, settings)[0].prompt
    assert prompt.startswith("Question: Ana reads 15 pages a day. How many pages does she read in a week?\n"
                             "Answer: In a week she reads 15 * 7 = 105 pages.\n#### 105\n\n"
                             "Question: A bag holds 6 red and 9 blue marbles.")
    assert prompt.endswith("#### 36\n\nQuestion: Tom has 3 boxes with 12 pencils each. He gives away 7 pencils. "
                           "How many pencils does he have left?\nAnswer:")
    assert prompt.count("Question:") == 9 and "<<" not in prompt


def test_gsm8k_sampling_regimes():
    task = get_task("gsm8k")
    doc = task.load(SAMPLE_DATA)[0]
    greedy, sampled = task.requests(doc, [], make_settings(seed=5))
    assert (greedy.temperature, greedy.n, greedy.until, greedy.max_new_tokens) == (0.0, 1, ("\n\n", "Q:", "Question:"), 512)
    assert (sampled.temperature, sampled.top_p, sampled.n, sampled.seed, sampled.max_new_tokens) == (0.6, 0.95, 100, 5, 512)
    [only] = task.requests(doc, [], make_settings(samples=0))
    assert only.temperature == 0.0
    other = task.requests(doc, [], make_settings(samples=7, temperature=0.3, options=(("gsm8k_top_p", "0.9"),)))[1]
    assert (other.temperature, other.top_p, other.n) == (0.3, 0.9, 7)
    with pytest.raises(UserError, match="gsm8k_top_p=1.5"):
        task.requests(doc, [], make_settings(options=(("gsm8k_top_p", "1.5"),)))
    with pytest.raises(UserError, match="--samples -1"):
        task.requests(doc, [], make_settings(samples=-1))


def test_gsm8k_grading_with_fake_results():
    task = get_task("gsm8k")
    doc = task.load(SAMPLE_DATA)[1]  # gold 2,400
    samples = (" ... The answer is 2,400.", " so 2400 dollars.", " The answer is $2400.00.", " The answer is 600.",
               " The answer is 600.", " no idea")
    score = task.score(doc, [GenerationResult((" It makes 2 * 1200 = 2400. The answer is 2400.",)),
                             GenerationResult(samples)], make_settings(samples=6))
    assert score.metrics == {"acc": 1.0, "maj1@6": 1.0}
    assert (score.prediction, score.gold) == ("2400", "2400")
    assert score.extra["majority"] == "2400" and score.extra["votes"] == 3 and score.extra["no_answer"] == 1
    votes = GenerationResult((" The answer is 600.", " The answer is 600.", " The answer is 2400."))
    wrong = task.score(doc, [GenerationResult((" The answer is 240.",)), votes], make_settings(samples=3))
    assert wrong.metrics == {"acc": 0.0, "maj1@3": 0.0}
    # The chain-of-thought prompt reads "The answer is" first, the train prompt "####" first.
    both = [GenerationResult((" The answer is 2400. #### 240",))]
    assert task.score(doc, both, make_settings(samples=0)).metrics == {"acc": 1.0}
    train = make_settings(samples=0, options=(("gsm8k_prompt", "train"),))
    assert task.score(doc, both, train).metrics == {"acc": 0.0}


def test_gsm8k_answer_without_final_number_is_a_user_error(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text('{"question": "q", "answer": "no final line"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"test.jsonl, line 1: field 'answer'.*####"):
        get_task("gsm8k").load(tmp_path)


# -- HumanEval ----------------------------------------------------------------------------------------

def test_humaneval_prompt_and_default_regimes():
    task = get_task("humaneval")
    docs = task.load(SAMPLE_DATA)
    assert [d["id"] for d in docs] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    low, high = task.requests(docs[2], [], make_settings(seed=9))
    assert low.prompt == docs[2]["prompt"] and low.prompt.startswith("from typing import List\n")
    assert low.until == ("\nclass", "\ndef", "\n#", "\nif", "\nprint") and low.max_new_tokens == 512
    assert (low.temperature, low.top_p, low.n, low.seed) == (0.1, 0.95, 200, 9)
    assert (high.temperature, high.top_p, high.n) == (0.8, 0.95, 200)


def test_humaneval_options_and_sample_counts():
    task, doc = get_task("humaneval"), {"prompt": "def f():\n"}
    with pytest.raises(UserError, match="--samples 50: pass@100 needs at least 100"):
        task.requests(doc, [], make_settings(samples=50))
    [greedy] = task.requests(doc, [], make_settings(options=(("humaneval_pass1", "greedy"), ("humaneval_k", "1"))))
    assert (greedy.temperature, greedy.n) == (0.0, 1)
    low, high = task.requests(doc, [], make_settings(samples=10, options=(("humaneval_k", "10,1"),)))
    assert (low.n, high.n, high.temperature) == (10, 10, 0.8)
    assert [r.temperature for r in task.requests(doc, [], make_settings(temperature=0.5))] == [0.5, 0.5]
    for option, value in (("humaneval_k", "10"), ("humaneval_k", "1,x"), ("humaneval_pass1", "best"),
                          ("humaneval_top_p", "0")):
        with pytest.raises(UserError, match=f"{option}={value}"):
            task.requests(doc, [], make_settings(options=((option, value),)))


def test_humaneval_grading_needs_allow_code_execution():
    task = get_task("humaneval")
    doc = task.load(SAMPLE_DATA)[0]
    with pytest.raises(UserError, match="--allow-code-execution"):
        task.score(doc, [GenerationResult(("    return a + b\n",))], make_settings())


@pytest.fixture
def fake_execution(monkeypatch):
    """A stand-in for execution.check_many that records its programs: a program passes when
    it holds "return a + b" (the test, not the sandbox, decides)."""
    calls = []

    def check_many(programs, timeout=10.0, workers=None, allow_unsandboxed=False):
        calls.append((list(programs), timeout))
        return [types.SimpleNamespace(status="passed" if "return a + b" in p.candidate else "failed", detail="AssertionError")
                for p in programs]

    from llama_eval import execution

    monkeypatch.setattr(execution, "check_many", check_many)
    return calls


def test_humaneval_grading_with_fake_sandbox(fake_execution):
    task = get_task("humaneval")
    doc = task.load(SAMPLE_DATA)[0]
    settings = make_settings(samples=100, allow_code_execution=True, options=(("humaneval_timeout", "3"),))
    low = ("    return a + b\n",) * 60 + ("    return a - b\n",) * 40
    high = ("    return a + b\n",) * 5 + tuple(f"    return {i}\n" for i in range(95))
    score = task.score(doc, [GenerationResult(low), GenerationResult(high)], settings)
    assert score.metrics == {"pass@1": pytest.approx(0.6), "pass@100": 1.0}
    assert score.extra["passed"] == {"pass@1": "60/100", "pass@100": "5/100"}
    assert score.extra["statuses"] == {"passed": 65, "failed": 135}
    [(programs, timeout)] = fake_execution
    assert timeout == 3.0 and len(programs) == 97  # identical programs run once
    # OpenAI's program split in two: the candidate runs in the sandbox, the test in the checker.
    assert programs[0].candidate == doc["prompt"] + "    return a + b\n"
    assert (programs[0].setup, programs[0].names, programs[0].test) == (doc["prompt"] + "\n" + doc["test"], ("add",), "check(add)\n")
    assert score.prediction == "    return a + b\n" and score.gold == doc["canonical_solution"]


def test_humaneval_pass_at_k_uses_each_regimes_own_samples(fake_execution):
    task = get_task("humaneval")
    doc = task.load(SAMPLE_DATA)[0]
    settings = make_settings(samples=12, allow_code_execution=True, options=(("humaneval_k", "1,5,10"),))
    low = ("    return a + b\n",) * 12
    high = ("    return a + b\n",) * 2 + tuple(f"    return {i}\n" for i in range(10))
    metrics = task.score(doc, [GenerationResult(low), GenerationResult(high)], settings).metrics
    assert metrics == {"pass@1": 1.0, "pass@5": pytest.approx(pass_at_k(12, 2, 5)),
                       "pass@10": pytest.approx(pass_at_k(12, 2, 10))}
    greedy = make_settings(allow_code_execution=True, options=(("humaneval_pass1", "greedy"), ("humaneval_k", "1")))
    assert task.score(doc, [GenerationResult(("    return a - b\n",))], greedy).metrics == {"pass@1": 0.0}


def test_humaneval_canonical_solutions_pass_the_real_sandbox():
    execution = pytest.importorskip("llama_eval.execution")
    assert execution.check_many  # the sandbox exists: grade through it for real
    task = get_task("humaneval")
    settings = make_settings(samples=2, allow_code_execution=True, options=(("humaneval_k", "1,2"),))
    for doc in task.load(SAMPLE_DATA):
        good = task.score(doc, [GenerationResult((doc["canonical_solution"],) * 2)] * 2, settings)
        assert good.metrics == {"pass@1": 1.0, "pass@2": 1.0}, good.extra
        bad = task.score(doc, [GenerationResult(("    pass\n",) * 2)] * 2, settings)
        assert bad.metrics == {"pass@1": 0.0, "pass@2": 0.0}


def test_humaneval_damaged_gzip_is_a_user_error(tmp_path):
    (tmp_path / "humaneval").mkdir()
    (tmp_path / "humaneval" / "HumanEval.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="not a gzip-compressed JSON Lines file"):
        get_task("humaneval").load(tmp_path)


# -- the real files (skipped when ../shared/data is absent) ---------------------------------------------

@pytest.fixture(scope="module")
def loaded() -> dict:
    """(task, documents, pool) per task name, read once per module: the real files take seconds."""
    return {}


def real(name: str, shared_data: Path, loaded: dict):
    if name not in loaded:
        task = get_task(name)
        loaded[name] = task, task.load(shared_data), task.load_shots(shared_data)
    return loaded[name]


@pytest.mark.parametrize("name,n_docs,n_pool", [("nq_open", 3610, 8757), ("triviaqa", 11313, 8837),
                                                ("gsm8k", 1319, 16), ("humaneval", 164, 0)])
def test_real_file_counts(shared_data, loaded, name, n_docs, n_pool):
    task, docs, pool = real(name, shared_data, loaded)
    assert len(docs) == n_docs and len({d["id"] for d in docs}) == n_docs
    assert len(pool) == n_pool
    assert task.source(shared_data).kind == "release"


def test_real_triviaqa_questions_are_decoded(shared_data, loaded):
    _, docs, _ = real("triviaqa", shared_data, loaded)
    questions = {d["question"] for d in docs}
    assert 'How many different animal shapes are there in the "Animal Crackers" cookie zoo?' in questions
    assert not any(q.startswith('"') and q.endswith('"') and '""' in q for q in questions)


def test_real_64_shot_prompts_fit_the_window(shared_data, loaded, llama_tokenizer_path):
    """With the engine's window check (LLaMA tokenizer, 2,048 tokens), 64-shot prompts keep
    every shot that fits: all 64 for NQ; for TriviaQA only questions over the window lose any."""
    from llama_eval.engine.window import WindowFit
    from llama_eval.model.tokenizer import Tokenizer

    tok = Tokenizer(llama_tokenizer_path)
    settings = make_settings()
    for name in ("nq_open", "triviaqa"):
        task, docs, pool = real(name, shared_data, loaded)
        fits = make_settings(fits=WindowFit(tok, 2048))
        kept = []
        for doc in docs[:: len(docs) // 40]:
            drawn = task.select_shots(doc, pool, 64, settings)
            shots = task.fit_shots(doc, drawn, fits)
            [req] = task.requests(doc, shots, settings)
            assert len(tok.encode(req.prompt, bos=True)) + req.max_new_tokens <= 2048, (name, doc["id"])
            if len(shots) < 64:  # one more shot would not have fitted
                [longer] = task.requests(doc, drawn[63 - len(shots):], settings)
                assert len(tok.encode(longer.prompt, bos=True)) + longer.max_new_tokens > 2048
            kept.append(len(shots))
        assert min(kept) == 64 if name == "nq_open" else min(kept) > 30, (name, sorted(kept)[:5])


def test_real_gsm8k_prompts_fit_the_window(shared_data, loaded, llama_tokenizer_path):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(llama_tokenizer_path))
    task, docs, pool = real("gsm8k", shared_data, loaded)
    for doc in docs[::10]:
        req = task.requests(doc, task.select_shots(doc, pool, 8, make_settings()), make_settings())[0]
        assert len(sp.encode(req.prompt)) + 1 + req.max_new_tokens <= 2048, doc["id"]
