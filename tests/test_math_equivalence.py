"""Minerva's MATH answer grading (math_answers.py): its normalisation rules (Lewkowycz et al.
2022, appendix D) and the SymPy equivalence check, on a table of answer pairs each asserted
equal or different, plus the answer sentence and the time limit."""

from __future__ import annotations

import time

import pytest

from llama_eval.math_answers import answers_equivalent, minerva_answer, minerva_normalize, tex_to_python

# (model answer, gold answer, the same?) -- both go through minerva_normalize, then answers_equivalent.
PAIRS = [
    # units and unit words (the paper's removed expressions; \mbox becomes \text first)
    (r"5\text{ cm}^2", "5", True),
    (r"12 \text{ inches}", "12", True),
    (r"40 \mbox{ dollars}", "40", True),
    (r"3\text{ hours}", "3", True),
    (r"\$5.00", "5", True),  # the dollar sign goes; SymPy: 5.00 = 5
    # fractions, \dfrac / \tfrac, shorthand, decimals
    (r"\frac{1}{2}", "0.5", True),
    (r"\dfrac{3}{4}", r"\frac34", True),
    (r"\tfrac{3}{4}", "0.75", True),
    (r"\frac12", r"\frac{1}{2}", True),
    (r"\boxed{\frac{1}{2}}", "1/2", True),
    (r"\frac{2}{3}", "0.67", False),  # a rounded decimal is another number
    (r"\frac{1}{3}", "0.3333", False),
    ("3.0", "3", True),
    # intervals and tuples: same brackets, equivalent elements in order
    ("(1,2)", "(1, 2)", True),
    ("[2,5)", "[2, 5)", True),
    ("[2,5)", "(2,5)", False),
    ("(1,2)", "(2,1)", False),
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    # "x = 3" forms: only what follows the last "=" counts
    ("x = 3", "3", True),
    ("y=2x+1", "1+2x", True),
    ("k = -4", "-4", True),
    # degrees
    (r"90^\circ", "90", True),
    (r"45^{\circ}", "45", True),
    ("30 degrees", "30", True),
    # boxes, text wrappers
    (r"\boxed{7}", "7", True),
    (r"\text{(A)}", "A", True),
    (r"\textbf{(C)}", "(C)", True),
    # radicals and symbolic equality (SymPy)
    (r"\sqrt2", r"\sqrt{2}", True),
    (r"2\sqrt{2}", r"\sqrt{8}", True),
    (r"\sqrt{2}/2", r"\frac{1}{\sqrt{2}}", True),
    (r"2\pi", r"\pi+\pi", True),
    ("x^2-1", "(x-1)(x+1)", True),
    ("x^2+1", "(x+1)^2", False),
    (r"\pi", "3.14", False),
    # numbers with commas, powers
    ("100,000", "100000", True),
    ("1,000,000", "10^6", True),
    # plain differences; words compare as strings; Minerva's rules keep "\%"
    ("5", "6", False),
    ("-3", "3", False),
    ("Monday", "monday", False),
    (r"10\%", "10", False),
]


@pytest.mark.parametrize("answer,gold,same", PAIRS)
def test_minerva_rules_and_sympy(answer, gold, same):
    assert answers_equivalent(minerva_normalize(answer), minerva_normalize(gold)) is same


def test_the_table_is_large_enough():
    assert len(PAIRS) >= 30 and sum(same for *_, same in PAIRS) >= 10 and sum(not same for *_, same in PAIRS) >= 10


@pytest.mark.parametrize("raw,normalised", [
    (r"\text{ cm}", ""),  # every rule applies wherever the text occurs
    (r"(-\infty,3]", r"(-\iny,3]"),  # "ft" is a removed unit, even inside \infty (the paper's rule as written)
    (r"\frac5{12}", r"\frac{5}{{}12}"),  # the shorthand rule takes two characters, whatever they are
    ("The answer is $4$ apples", "4"),
    ("a = b = 7", "7"),
    (r"\overline{12}", "12"),
    ("1,234", "1234"),
    ("1,2", "12"),  # commas go whenever the rest is digits
])
def test_normaliser_rules_as_the_paper_writes_them(raw, normalised):
    assert minerva_normalize(raw) == normalised


@pytest.mark.parametrize("completion,stated", [
    ("work\nFinal Answer: The final answer is $24$. I hope it is correct.\n", "$24$"),
    ("Final Answer: The final answer is $[2,5)$. I hope it is correct.", "$[2,5)$"),
    ("Final Answer: The final answer is $\\frac{1}{2}$.", "$\\frac{1}{2}$"),  # stopped at "I hope it is correct."
    ("Final Answer: The final answer is 3.5. I hope it is correct.", "3.5"),
    ("so $\\boxed{3}$", None),
])
def test_minerva_answer_sentence(completion, stated):
    assert minerva_answer(completion) == stated


def test_tex_to_python():
    assert tex_to_python(r"\frac{1}{2}\sqrt{3}") == "((1)/(2))((3)**(1/(2)))"
    assert tex_to_python(r"\sqrt[3]{8}") == "((8)**(1/(3)))"
    with pytest.raises(ValueError):
        tex_to_python(r"\mathbf{A}")


def test_a_slow_comparison_is_cut_off_and_counts_as_different(monkeypatch):
    import sympy

    def endless(expression):
        while True:
            time.sleep(0.01)

    assert answers_equivalent("2x", "x+x", seconds=0.3) is True
    monkeypatch.setattr(sympy, "simplify", endless)  # SymPy stuck on a hard expression
    start = time.monotonic()
    assert answers_equivalent("2x", "x+x", seconds=0.3) is False
    assert time.monotonic() - start < 3
