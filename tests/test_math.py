"""MATH: the boxed-answer reader, the answer normaliser rule by rule, answer extraction from
realistic completions, the golden prompt, grading of fake results, sampling options, hub rows
against the release archive, malformed archives, and (when ../shared/data is present) the real
5,000 problems.

The demo archive (llama_eval/data/demo/math) holds four made-up problems in the release layout;
tests/fixtures/hf/math.jsonl holds the same four as hub rows.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import FIXTURES, SAMPLE_DATA, make_settings

from llama_eval.errors import UserError
from llama_eval.metrics import final_math_answer, last_boxed, math_answer, normalize_math_answer
from llama_eval.requests import GenerationResult
from llama_eval.tasks import data

from llama_eval.tasks.hendrycks_math import EXEMPLARS, MATH, SUBJECTS

pytestmark = pytest.mark.filterwarnings("ignore::llama_eval.tasks.data.DataMismatchWarning")

# The `type` field of each subject's problems (../shared/data/PROVENANCE.md, MATH).
TYPES = {"algebra": "Algebra", "counting_and_probability": "Counting & Probability", "geometry": "Geometry",
         "intermediate_algebra": "Intermediate Algebra", "number_theory": "Number Theory",
         "prealgebra": "Prealgebra", "precalculus": "Precalculus"}


# -- last_boxed -------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    (r"so the answer is $\boxed{36}$.", "36"),
    (r"$\boxed{\frac{5}{12}}$", r"\frac{5}{12}"),  # nested braces
    (r"$\boxed{\left(\frac{1}{2}, \sqrt{3}\right)}$", r"\left(\frac{1}{2}, \sqrt{3}\right)"),
    (r"$\boxed{\{1, 2\}}$", r"\{1, 2\}"),  # escaped braces do not count
    (r"first $\boxed{1}$, then $\boxed{2}$", "2"),  # the last box
    (r"$\fbox{7}$", "7"),
    (r"$\boxed 5$.", "5"),  # the brace-less form runs to the next "$"
    (r"$\boxed {5}$", "5"),  # spaces before the group
    ("\\boxed{3} and at last \\boxed{\\frac{1}{2", "3"),  # an unclosed last box is passed over
    (r"$\boxed{}$", ""),
    (r"no box here, just 5", None),
    (r"$\boxedsymbol{5}$", None),  # another command
    (r"$\boxed$", None),  # no argument
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


# -- the normaliser: one or more cases per rule -------------------------------------------------

@pytest.mark.parametrize("rule,raw,expected", [
    (1, r"\left( 3, 4 \right)", "(3,4)"),
    (1, r"\displaystyle\frac{1}{2}", r"\frac{1}{2}"),
    (1, r"\leftarrow", r"\leftarrow"),  # only the whole command
    (2, r"2\!\sqrt{3}", r"2\sqrt{3}"),
    (2, r"5\,\text{cm}", "5"),
    (2, r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),  # "\\ " is a line break
    (3, r"$\frac{1}{2}$", r"\frac{1}{2}"),
    (3, r"\$18.90", "18.9"),
    (4, r"\dfrac{3}{4}", r"\frac{3}{4}"),
    (4, r"\tfrac{3}{4}", r"\frac{3}{4}"),
    (5, r"90^\circ", "90"),
    (5, r"180^{\circ}", "180"),
    (5, "45°", "45"),
    (6, r"25\%", "25"),
    (6, "7.5%", "7.5"),
    (7, r"575\text{ students}", "575"),
    (7, r"440\text{ cm}^2", "440"),
    (7, r"864 \mbox{ inches}^2", "864"),
    (7, r"8\text{ ways.}", "8"),
    (7, r"\frac{68}{3}\text{ pounds}", r"\frac{68}{3}"),
    (8, r"\text{(C)}", "(C)"),
    (8, r"\text{Monday}", "Monday"),  # a word alone is the answer, not a unit
    (8, r"10\text{ a.m.}", "10a.m"),  # "a.m." is not a plain word: kept
    (8, r"\mathrm{Sunday}", "Sunday"),
    (9, "x = 3", "3"),
    (9, r"k_1 = -\frac{1}{2}", r"-\frac{1}{2}"),
    (9, "y = 2x + 3", "2x+3"),
    (9, "x^2 + y^2 = 13", "x^2+y^2=13"),  # the left side is not a single variable
    (9, "x = 1, y = 2", "x=1,y=2"),  # two "=": kept
    (10, r"3 \pm 2 \sqrt{2}", r"3\pm2\sqrt{2}"),
    (11, r"\frac12", r"\frac{1}{2}"),
    (11, r"\frac 1 2", r"\frac{1}{2}"),
    (11, r"\frac1{2x}", r"\frac{1}{2x}"),
    (11, r"\frac{3}4", r"\frac{3}{4}"),
    (11, r"\frac\pi2", r"\frac{\pi}{2}"),
    (11, r"\frac{\frac12}{3}", r"\frac{\frac{1}{2}}{3}"),
    (11, r"2\sqrt2", r"2\sqrt{2}"),
    (11, r"\sqrt[3]{2}", r"\sqrt[3]{2}"),  # the optional argument is left alone
    (12, ".5", "0.5"),
    (12, "-.25", "-0.25"),
    (12, "x+.5", "x+0.5"),
    (13, "5.", "5"),
    (14, "1,000", "1000"),
    (14, r"15,\!000", "15000"),
    (14, "1,000,000.50", "1000000.5"),
    (14, "3.0", "3"),
    (14, "007", "7"),
    (14, "3/4", r"\frac{3}{4}"),
    (14, "-3/4", r"-\frac{3}{4}"),
    (14, "0,4", "0,4"),  # a list of two answers, not a thousands comma
    (14, "(1,000)", "(1,000)"),  # inside a tuple: left alone
])
def test_normalizer_rules(rule, raw, expected):
    assert normalize_math_answer(raw) == expected, f"rule {rule}"


@pytest.mark.parametrize("a,b", [
    (r"\frac{1}{2}", r"\dfrac12"), ("(3, 4)", r"\left(3,4\right)"), ("0.5", ".5"), ("1,008", r"1,\!008"),
    ("x=5", "5"), (r"90^\circ", "90"), (r"5\text{ cm}", "5"), (r"\$0.50", "0.5"), ("3/4", r"\frac34"),
])
def test_spellings_of_one_answer_agree(a, b):
    assert normalize_math_answer(a) == normalize_math_answer(b)


@pytest.mark.parametrize("a,b", [
    (r"\frac{1}{2}", r"\frac{1}{3}"), ("5", "50"), ("(1,2)", "(2,1)"), (r"\sqrt{2}", "2"), ("-3", "3"),
    (r"[0,1)", r"[0,1]"), ("0,4", "4"),
])
def test_different_answers_stay_different(a, b):
    assert normalize_math_answer(a) != normalize_math_answer(b)


# -- extraction from completions ---------------------------------------------------------------

@pytest.mark.parametrize("completion,stated,normalised", [
    # the exemplars' own format
    ("We have $x + 2 = 5$, so $x = 3$.\nThe final answer is $3$.\n", "3", "3"),
    ("Adding gives $2x = 8$.\nThe final answer is $\\left(4, 3\\right)$.", r"\left(4, 3\right)", "(4,3)"),
    # Minerva's format: the first $...$ only, not "I hope it is correct."
    ("... so it is $\\frac12$.\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.",
     r"\frac{1}{2}", r"\frac{1}{2}"),
    # no dollars: up to the end of the sentence, keeping a decimal point
    ("The final answer is 0.5. That is all.", "0.5", "0.5"),
    ("the final answer is 12\nProblem", "12", "12"),
    # a box after the phrase is unwrapped
    ("The final answer is $\\boxed{\\frac{5}{12}}$.", r"\frac{5}{12}", r"\frac{5}{12}"),
    ("The final answer is \\boxed{7}.", "7", "7"),
    # MATH's own style: the last box
    ("The sum is $\\frac{3}{12} + \\frac{2}{12} = \\boxed{\\frac{5}{12}}$.", r"\frac{5}{12}", r"\frac{5}{12}"),
    # the phrase with nothing after it falls back to the last box
    ("so $x = \\boxed{4}$. The final answer is", "4", "4"),
    # the first phrase wins over later ones
    ("The final answer is $6$.\nThe final answer is $7$.", "6", "6"),
    # nothing stated
    ("We have $x + 2 = 5$ and then we", None, None),
    ("The final answer is $\\$$.", None, None),  # normalises to nothing
])
def test_answer_extraction(completion, stated, normalised):
    if stated is not None:
        assert final_math_answer(completion) == stated
    assert math_answer(completion) == normalised


def test_every_exemplar_states_its_answer_in_the_format_the_grader_reads_first():
    expected = ["2", r"\frac{1}{12}", r"\sqrt{13}", "(4,3)"]
    assert [math_answer(solution) for _, solution in EXEMPLARS] == expected
    assert all(solution.endswith(f"\nThe final answer is ${final_math_answer(solution)}$.")
               for _, solution in EXEMPLARS)


# -- the task: documents, prompt, requests, grading ------------------------------------------------

def test_paper_rows_and_attributes():
    task = MATH()
    paper = pd.read_csv(Path(data.__file__).parents[1] / "data" / "paper" / "llama1_paper.csv")
    for metric in ("acc", "maj1@256"):
        hit = paper[(paper.task == task.paper_name) & (paper.metric == metric) & (paper.shots == 4)
                    & (paper.model == "LLaMA-7B") & (paper.table == task.paper_table)]
        assert len(hit) == 1, metric
    assert (task.name, task.paper_shots, task.headline_metric) == ("math", (4,), "acc")
    assert not task.needs_code_execution


def test_release_documents():
    docs = MATH().load(SAMPLE_DATA)
    assert [d["id"] for d in docs] == ["algebra/12", "algebra/3", "number_theory/40", "number_theory/5"]
    assert [d["answer"] for d in docs] == ["36", r"\frac{5}{12}", "12", "1008"]
    assert docs[1] == {"id": "algebra/3", "subject": "algebra", "level": "Level 3",
                       "problem": r"Write $\frac{1}{4} + \frac{1}{6}$ as a common fraction.",
                       "solution": r"The least common denominator is $12$, so the sum is "
                                   r"$\frac{3}{12} + \frac{2}{12} = \boxed{\frac{5}{12}}$.",
                       "answer": r"\frac{5}{12}"}


GOLDEN_PROMPT = r"""Problem:
What is the remainder when $2^{10}$ is divided by $7$?

Solution:
Since $2^3 = 8 = 7 + 1$, we have $2^3 \equiv 1 \pmod{7}$. Then $2^{10} = (2^3)^3 \cdot 2 \equiv 1^3 \cdot 2 = 2 \pmod{7}$.
The final answer is $2$.

Problem:
Two fair six-sided dice are rolled. What is the probability that the two numbers rolled add up to $4$? Express your answer as a common fraction.

Solution:
There are $6 \cdot 6 = 36$ equally likely outcomes. A sum of $4$ comes from $(1,3)$, $(2,2)$ and $(3,1)$, so $3$ outcomes. The probability is $\frac{3}{36} = \frac{1}{12}$.
The final answer is $\frac{1}{12}$.

Problem:
What is the distance between the points $(1, 2)$ and $(3, 5)$? Express your answer in simplest radical form.

Solution:
The points differ by $3 - 1 = 2$ horizontally and $5 - 2 = 3$ vertically, so the distance is $\sqrt{2^2 + 3^2} = \sqrt{13}$.
The final answer is $\sqrt{13}$.

Problem:
Find the ordered pair $(x, y)$ that satisfies $x + y = 7$ and $x - y = 1$.

Solution:
Adding the two equations gives $2x = 8$, so $x = 4$. Then $y = 7 - x = 3$.
The final answer is $(4, 3)$.

Problem:
If $2a + 5 = 17$, what is the value of $a^2$?

Solution:
"""


LLAMA_EVAL_PROMPT = make_settings(options=(("math_prompt", "llama_eval"), ("math_grader", "llama_eval")))

# Minerva's four-shot MATH prompt (Lewkowycz et al. 2022, appendix), typed from the source text,
# with its layout: exemplars separated by blank lines, then the problem and "Solution:".
MINERVA_TEXT = r"""Problem:
Find the domain of the expression  $\frac{\sqrt{x-2}}{\sqrt{5-x}}$.}

Solution:
The expressions inside each square root must be non-negative. Therefore, $x-2 \ge 0$, so $x\ge2$, and $5 - x \ge 0$, so $x \le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which gives $x<5$. Therefore, the domain of the expression is $\boxed{[2,5)}$.
Final Answer: The final answer is $[2,5)$. I hope it is correct.

Problem:
If $\det \mathbf{A} = 2$ and $\det \mathbf{B} = 12,$ then find $\det (\mathbf{A} \mathbf{B}).$

Solution:
We have that $\det (\mathbf{A} \mathbf{B}) = (\det \mathbf{A})(\det \mathbf{B}) = (2)(12) = \boxed{24}.$
Final Answer: The final answer is $24$. I hope it is correct.

Problem:
Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many times must Terrell lift them in order to lift the same total weight?

Solution:
If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\cdot 12\cdot20=480$ pounds of weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of $2\cdot15\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:
\begin{align*}
30n&=480\\
\Rightarrow\qquad n&=480/30=\boxed{16}
\end{align*}
Final Answer: The final answer is $16$. I hope it is correct.

Problem:
If the system of equations

\begin{align*}
6x-4y&=a,\\
6y-9x &=b.
\end{align*}has a solution $(x, y)$ where $x$ and $y$ are both nonzero,
find $\frac{a}{b},$ assuming $b$ is nonzero.

Solution:
If we multiply the first equation by $-\frac{3}{2}$, we obtain

$$6y-9x=-\frac{3}{2}a.$$Since we also know that $6y-9x=b$, we have

$$-\frac{3}{2}a=b\Rightarrow\frac{a}{b}=\boxed{-\frac{2}{3}}.$$
Final Answer: The final answer is $-\frac{2}{3}$. I hope it is correct."""


def test_default_prompt_is_minervas_four_shot_prompt():
    task = MATH()
    docs, pool = task.load(SAMPLE_DATA), task.load_shots(SAMPLE_DATA)
    settings = make_settings(seed=1)
    shots = task.select_shots(docs[0], pool, 4, settings)
    assert shots == task.select_shots(docs[3], pool, 4, make_settings(seed=99))
    [greedy, _] = task.requests(docs[0], shots, settings)
    assert greedy.prompt == MINERVA_TEXT + "\n\nProblem:\nIf $2a + 5 = 17$, what is the value of $a^2$?\n\nSolution:"


def test_golden_prompt_with_the_four_fixed_exemplars():
    task = MATH()
    docs, pool = task.load(SAMPLE_DATA), task.load_shots(SAMPLE_DATA)
    shots = task.select_shots(docs[0], pool, 4, LLAMA_EVAL_PROMPT)
    assert shots == task.select_shots(docs[3], pool, 4, LLAMA_EVAL_PROMPT) == pool[4:]
    assert task.load_shots(None) == pool
    assert task.requests(docs[0], shots, LLAMA_EVAL_PROMPT)[0].prompt == GOLDEN_PROMPT
    assert task.prompt(docs[0], [], "llama_eval") == "Problem:\nIf $2a + 5 = 17$, what is the value of $a^2$?\n\nSolution:\n"
    with pytest.raises(UserError, match="--shots 5"):
        task.select_shots(docs[0], pool, 5, make_settings())


def test_sampling_regimes():
    task = MATH()
    doc = task.load(SAMPLE_DATA)[0]
    greedy, sampled = task.requests(doc, [], make_settings(seed=5))
    assert (greedy.temperature, greedy.n, greedy.max_new_tokens) == (0.0, 1, 512)
    assert greedy.until == sampled.until == ("\nProblem:", "\nSolution:", "I hope it is correct.")
    assert (sampled.temperature, sampled.top_p, sampled.n, sampled.seed) == (0.6, 0.95, 256, 5)
    [only] = task.requests(doc, [], make_settings(samples=0))
    assert only.temperature == 0.0
    other = task.requests(doc, [], make_settings(samples=7, temperature=0.3, options=(("math_top_p", "1.0"),)))[1]
    assert (other.temperature, other.top_p, other.n) == (0.3, 1.0, 7)
    for bad in ("0", "1.5", "high"):
        with pytest.raises(UserError, match=f"math_top_p={bad}"):
            task.requests(doc, [], make_settings(options=(("math_top_p", bad),)))
    with pytest.raises(UserError, match="--samples -1"):
        task.requests(doc, [], make_settings(samples=-1))


def test_minerva_grading_with_fake_results():
    task = MATH()
    doc = task.load(SAMPLE_DATA)[1]  # gold \frac{5}{12}
    said = "Final Answer: The final answer is ${}$. I hope it is correct."
    greedy = GenerationResult(("So $\\frac{5}{12}$.\n" + said.format("\\dfrac{5}{12}"),))
    samples = GenerationResult((said.format("10/24"), said.format("\\frac{1}{2}"), said.format("x = 10/24"),
                                said.format("0.5"), "... $\\boxed{\\frac{5}{12}}$", "I do not know"))
    score = task.score(doc, [greedy, samples], make_settings(samples=6))
    # The vote counts normalised strings ("x =" goes): "10/24" twice wins; SymPy finds it equal
    # to the gold. A bare box is not Minerva's answer sentence: no answer.
    assert score.metrics == {"acc": 1.0, "maj1@6": 1.0}
    assert score.extra["majority"] == "10/24" and score.extra["votes"] == 2 and score.extra["no_answer"] == 2
    # Minerva's shorthand rule turns "\frac5{12}" into "\frac{5}{{}12}", which SymPy cannot read.
    quirk = task.score(doc, [GenerationResult((said.format("\\frac5{12}"),))], make_settings(samples=0))
    assert quirk.prediction == "\\frac{5}{{}12}" and quirk.metrics == {"acc": 0.0}
    wrong = task.score(doc, [GenerationResult((said.format("\\frac{5}{13}"),))], make_settings(samples=0))
    assert wrong.metrics == {"acc": 0.0}
    cut_off = task.score(doc, [GenerationResult(("Final Answer: The final answer is $\\frac{5}{12}$.",))],
                         make_settings(samples=0))  # generation stopped before "I hope it is correct."
    assert cut_off.metrics == {"acc": 1.0}


def test_grading_with_fake_results():
    task = MATH()
    doc = task.load(SAMPLE_DATA)[1]  # gold \frac{5}{12}
    greedy = GenerationResult(("The sum is $\\frac{5}{12}$.\nThe final answer is $\\dfrac{5}{12}$.",))
    samples = GenerationResult(("The final answer is $\\frac5{12}$.", "... $\\boxed{\\frac{5}{12}}$",
                                "The final answer is $5/12$.", "The final answer is $\\frac{1}{2}$.",
                                "The final answer is $\\frac12$.", "I do not know"))
    settings = make_settings(samples=6, options=LLAMA_EVAL_PROMPT.options)
    score = task.score(doc, [greedy, samples], settings)
    assert score.metrics == {"acc": 1.0, "maj1@6": 1.0}
    assert (score.doc_id, score.prediction, score.gold) == ("algebra/3", r"\frac{5}{12}", r"\frac{5}{12}")
    assert score.extra["majority"] == r"\frac{5}{12}" and score.extra["votes"] == 3 and score.extra["no_answer"] == 1
    votes = GenerationResult(("The final answer is $\\frac12$.",
                              "$\\boxed{0.5}$ hmm, The final answer is $\\frac{1}{2}$",  # the stated answer wins
                              "The final answer is $\\frac{5}{12}$."))
    wrong = task.score(doc, [GenerationResult(("The final answer is $\\frac{5}{13}$.",)), votes],
                       make_settings(samples=3, options=LLAMA_EVAL_PROMPT.options))
    assert wrong.metrics == {"acc": 0.0, "maj1@3": 0.0}
    nothing = [GenerationResult(("no answer",)), GenerationResult(("no", "answer"))]
    silent = task.score(doc, nothing, make_settings(samples=2, options=LLAMA_EVAL_PROMPT.options))
    assert silent.metrics == {"acc": 0.0, "maj1@2": 0.0}
    assert silent.prediction == "" and silent.extra["majority"] is None and silent.extra["no_answer"] == 2
    greedy_only = task.score(doc, [greedy], make_settings(samples=0, options=LLAMA_EVAL_PROMPT.options))
    assert greedy_only.metrics == {"acc": 1.0}


# -- the hub gives the same documents ---------------------------------------------------------------

def fake_hub(hf_dataset, split=None):
    """The fixture's rows of one subject config (a config's rows are those of its `type`)."""
    path, config, default_split = hf_dataset
    assert (path, split or default_split) == ("EleutherAI/hendrycks_math", "test") and config in SUBJECTS
    rows = [json.loads(line) for line in (FIXTURES / "hf" / "math.jsonl").read_text(encoding="utf-8").splitlines()]
    return [row for row in rows if row["type"] == TYPES[config]]


def test_hub_rows_give_the_release_documents_and_requests(monkeypatch):
    monkeypatch.setattr(data, "load_hf", fake_hub)
    release, hub = MATH(), MATH()
    release_docs, hub_docs = release.load(SAMPLE_DATA), hub.load(None)
    # Hub rows carry no file number: ids are "<subject>/<row index>", the content is the same.
    assert [d["id"] for d in hub_docs] == ["algebra/0", "algebra/1", "number_theory/0", "number_theory/1"]
    assert [{**d, "id": None} for d in hub_docs] == [{**d, "id": None} for d in release_docs]
    settings = make_settings(seed=3, samples=8)
    built = [[task.requests(d, task.select_shots(d, task.load_shots(None), 4, settings), settings) for d in docs]
             for task, docs in ((release, release_docs), (hub, hub_docs))]
    assert built[0] == built[1]
    assert release.source(SAMPLE_DATA).kind == "release" and hub.source(None) == data.DataSource(
        "hub", "EleutherAI/hendrycks_math", "test")


def test_bad_hub_row_names_config_row_and_field(monkeypatch):
    row = {"problem": "p", "level": "Level 1", "type": "Algebra"}
    monkeypatch.setattr(data, "load_hf", lambda dataset, split=None: [row])
    message = r"EleutherAI/hendrycks_math \(algebra, test\), row 1: field 'solution' is missing"
    with pytest.raises(UserError, match=message):
        MATH().load(None)


# -- malformed archives ------------------------------------------------------------------------------

def write_archive(folder: Path, members: dict[str, bytes]) -> Path:
    path = folder / "math" / "MATH_test.tar.gz"
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


GOOD = json.dumps({"problem": "p", "level": "Level 1", "type": "Algebra", "solution": r"so $\boxed{3}$."}).encode()


@pytest.mark.parametrize("name,body,message", [
    ("MATH/test/algebra/7.json", json.dumps({"problem": "p", "level": "Level 1", "type": "Algebra"}).encode(),
     r"member MATH/test/algebra/7.json: field 'solution' is missing"),
    ("MATH/test/algebra/7.json", json.dumps({"problem": 5, "level": "L", "type": "T", "solution": "s"}).encode(),
     r"member MATH/test/algebra/7.json: field 'problem' should be a string, got 5"),
    ("MATH/test/algebra/7.json",
     json.dumps({"problem": "p", "level": "L", "type": "T", "solution": "it is 3"}).encode(),
     r"member MATH/test/algebra/7.json: field 'solution' should end with the answer in \\boxed"),
    ("MATH/test/algebra/7.json", b"{not json", r"member MATH/test/algebra/7.json: not valid UTF-8 JSON"),
    ("MATH/test/algebra/7.json", b"[1, 2]", r"member MATH/test/algebra/7.json: expected a JSON object, got list"),
    ("MATH/test/calculus/7.json", GOOD, r"member MATH/test/calculus/7.json: not a MATH test problem"),
    ("MATH/train/algebra/7.json", GOOD, r"member MATH/train/algebra/7.json: not a MATH test problem"),
])
def test_malformed_member_names_member_and_field(tmp_path, name, body, message):
    write_archive(tmp_path, {"MATH/test/algebra/1.json": GOOD, name: body})
    with pytest.raises(UserError, match=message):
        MATH().load(tmp_path)


def test_damaged_or_missing_archive_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="MATH_test.tar.gz does not exist"):
        MATH().load(tmp_path)
    (tmp_path / "math").mkdir()
    (tmp_path / "math" / "MATH_test.tar.gz").write_bytes(b"not a gzip file at all")
    with pytest.raises(UserError, match="not a readable .tar.gz archive"):
        MATH().load(tmp_path)


def test_documents_come_in_member_name_order(tmp_path):
    write_archive(tmp_path, {"MATH/test/number_theory/2.json": GOOD, "MATH/test/algebra/2.json": GOOD,
                             "MATH/test/algebra/10.json": GOOD})
    assert [d["id"] for d in MATH().load(tmp_path)] == ["algebra/10", "algebra/2", "number_theory/2"]


# -- the real archive -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_docs() -> list:
    """The real 5,000 problems, read once per module (skipped with the data)."""
    return []


def test_real_archive(shared_data, real_docs):
    task = MATH()
    docs = task.load(shared_data)
    real_docs.extend(docs)
    assert len(docs) == 5000 and len({d["id"] for d in docs}) == 5000
    counts = {s: sum(d["subject"] == s for d in docs) for s in SUBJECTS}
    assert counts == {"algebra": 1187, "counting_and_probability": 474, "geometry": 479, "intermediate_algebra": 903,
                      "number_theory": 540, "prealgebra": 871, "precalculus": 546}
    levels = {f"Level {i}": sum(d["level"] == f"Level {i}" for d in docs) for i in range(1, 6)}
    assert levels == {"Level 1": 437, "Level 2": 894, "Level 3": 1131, "Level 4": 1214, "Level 5": 1324}
    # Every solution has a boxed answer that normalises to something (load() also insists).
    assert all(last_boxed(d["solution"]) is not None and d["answer"] for d in docs)
    assert docs[0]["id"] == "algebra/1" and docs[0]["answer"] == "2"
    source = task.source(shared_data)
    assert (source.kind, source.location, source.split) == ("release", "math/MATH_test.tar.gz", "test")


def test_real_prompts_fit_the_window_by_dropping_shots(shared_data, real_docs, llama_tokenizer_path):
    """With Minerva's prompt, BOS and 512 new tokens, 11 of the 5,000 problems do not fit LLaMA's
    2,048 tokens with 4 shots; they keep as many shots as fit (one keeps none), and every
    prompt then fits whole."""
    from llama_eval.engine.window import WindowFit
    from llama_eval.model.tokenizer import Tokenizer

    tok = Tokenizer(llama_tokenizer_path)
    task = MATH()
    docs = real_docs or task.load(shared_data)
    pool, settings = task.load_shots(shared_data), make_settings(samples=0)
    fits = make_settings(samples=0, fits=WindowFit(tok, 2048))
    dropped = {}
    for doc in docs:
        shots = task.fit_shots(doc, task.select_shots(doc, pool, 4, settings), fits)
        if len(shots) < 4:
            dropped[doc["id"]] = len(shots)
            [req] = task.requests(doc, shots, settings)
            assert len(tok.encode(req.prompt, bos=True)) + 512 <= 2048 or not shots
    assert len(dropped) == 11 and dropped["counting_and_probability/670"] == 0
