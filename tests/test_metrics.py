"""Metrics against independent references: brute-force enumeration, exact fractions, the
statistics module, and tables of hand-checked cases."""

from __future__ import annotations

import itertools
import math
import statistics
from fractions import Fraction

import pytest

from llama_eval.metrics import (canonical_number, exact_match, extract_number, majority_vote, mcnemar_exact, mean_stderr,
                                normalize_answer, numbers_equal, paired_bootstrap, pass_at_k, weighted_mean)


# -- pass@k ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_equals_enumeration_of_all_k_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            hit = sum(any(i < c for i in s) for s in subsets)  # samples 0..c-1 are the passing ones
            assert pass_at_k(n, c, k) == pytest.approx(hit / len(subsets), abs=1e-12), (n, c, k)


@pytest.mark.parametrize("n,c,k", [(200, 13, 100), (200, 1, 1), (200, 199, 100), (100, 37, 10), (164, 0, 100)])
def test_pass_at_k_large_n_matches_exact_binomials(n, c, k):
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12, abs=1e-15)


def test_pass_at_1_is_the_pass_rate():
    assert pass_at_k(200, 37, 1) == pytest.approx(37 / 200)


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)


# -- exact match ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("Charles Darwin", "charles darwin"),
    ("  The   Beatles ", "beatles"),
    ("A Tale of Two Cities", "tale of two cities"),
    ("an apple", "apple"),
    ("Theatre", "theatre"),  # "the" only as a whole word
    ("U.S.A.", "usa"),
    ("1,000", "1000"),
    ("rock-and-roll", "rockandroll"),
    ("Château d'Amboise", "château damboise"),
    ("1930’s", "1930s"),  # Unicode apostrophe
    ("“Hello”, she said", "hello she said"),
    ("$5 (approx.)", "5 approx"),
    ("\tTHE\nEND\n", "end"),
    ("", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("prediction,golds,expected", [
    ("Charles Darwin", ["Charles Darwin"], 1.0),
    ("charles darwin.", ["Charles Darwin"], 1.0),
    ("The Nile", ["Nile River", "Nile"], 1.0),
    ("Darwin", ["Charles Darwin"], 0.0),  # no partial credit
    ("USA", ["U.S.A.", "United States"], 1.0),
    ("Mars", ["Planet Mars", "Mars (planet)"], 0.0),
    ("", ["the"], 0.0),  # an empty prediction never matches
    ("the", ["a"], 0.0),
])
def test_exact_match_against_every_alias(prediction, golds, expected):
    assert exact_match(prediction, golds) == expected


# -- GSM8K answers ------------------------------------------------------------------------------

@pytest.mark.parametrize("completion,expected", [
    (" Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether.\n#### 72", "72"),
    (" He earns 12/60 = $0.2 per minute.\nSo he earned 0.2 x 50 = $10.\n#### 10", "10"),
    (" The house cost 80,000 + 50,000 = $130,000.\nHe made a profit of $70,000.\n#### 70,000", "70000"),
    (" Each box holds 12 pencils, so 3 boxes hold 36. After 7 are gone, 29 remain. The answer is 29.", "29"),
    (" First 3 + 4 = 7. The answer is $1,250.50. Then 9.", "1250.5"),
    (" She has 5 - 12 = -7 degrees now.", "-7"),
    (" It is 15 - 3 = 12 pages", "12"),  # a minus between numbers is not a sign
    (" He writes a 3-page letter to 2 friends twice a week, so 3*2*2 = 12 pages", "12"),
    (" The total is 18.", "18"),  # a full stop is not a decimal point
    (" The ratio is 0.50", "0.5"),
    (" #### 3.0", "3"),
    (" #### -$4", "-4"),
    (" #### 5\n#### 7", "5"),  # the first final answer counts
    (" She needs 2 more apples than 8, so 10 apples.\n#### ", None),  # "####" with nothing after it
    (" I do not know.", None),
    ("", None),
])
def test_extract_number(completion, expected):
    assert extract_number(completion) == expected


@pytest.mark.parametrize("a,b,expected", [
    ("1,000", "1000", True),
    ("1000.00", "1000", True),
    ("$18", "18", True),
    ("-7", "-7.0", True),
    ("0.5", ".5", True),
    ("7", "-7", False),
    ("18", "18.1", False),
    (None, "18", False),
    (None, None, False),
    ("abc", "abc", False),
])
def test_numbers_equal(a, b, expected):
    assert numbers_equal(a, b) is expected


@pytest.mark.parametrize("text,expected", [("$1,250.00", "1250"), ("-0.50", "-0.5"), ("-0", "0"),
                                          ("100", "100"), ("18.", "18"), ("1e3", "1000"), ("nan", None), ("", None)])
def test_canonical_number(text, expected):
    assert canonical_number(text) == expected


# -- majority vote -------------------------------------------------------------------------------

@pytest.mark.parametrize("answers,expected", [
    (["3", "5", "5", "3", "5"], "5"),
    (["3", "5", "5", "3"], "3"),  # tie: the answer met first wins
    (["5", "3", "3", "5"], "5"),
    ([None, None, "2"], "2"),  # samples without an answer do not vote
    ([None, None], None),
    ([], None),
])
def test_majority_vote(answers, expected):
    assert majority_vote(answers) == expected


# -- the existing aggregates -------------------------------------------------------------------

def test_mean_stderr_matches_statistics_module():
    xs = [1.0, 0.0, 1.0, 1.0, 0.0, 0.5]
    mean, se = mean_stderr(xs)
    assert mean == pytest.approx(statistics.fmean(xs))
    assert se == pytest.approx(statistics.stdev(xs) / math.sqrt(len(xs)))
    assert mean_stderr([0.25]) == (0.25, 0.0)
    assert all(math.isnan(v) for v in mean_stderr([]))


def test_weighted_mean():
    assert weighted_mean([50.0, 80.0], [1.0, 3.0]) == pytest.approx(72.5)


def test_mcnemar_equals_brute_force_enumeration():
    # Under no change each discordant document flips either way with probability 1/2: count the
    # splits at least as uneven as the observed one among all 2^n equally likely ones.
    for lost, gained in [(0, 0), (1, 0), (3, 1), (5, 5), (9, 2), (0, 12), (7, 6)]:
        n = lost + gained
        extreme = sum(abs(2 * sum(s) - n) >= abs(lost - gained)
                      for s in itertools.product((0, 1), repeat=n))
        assert mcnemar_exact(lost, gained) == pytest.approx(extreme / 2**n, rel=1e-12)


def test_mcnemar_handles_thousands_of_documents():
    # 2^6100 is beyond float range; reference value: scipy.stats.binomtest(3000, 6100).pvalue
    assert mcnemar_exact(3100, 3000) == pytest.approx(0.2049495446515585, rel=1e-9)


def test_paired_bootstrap_on_differences_whose_distribution_is_known():
    x = [0.0, 1.0, 0.5, 0.25] * 10
    low, high, p = paired_bootstrap(x, [v + 0.1 for v in x])  # every resample's mean difference is 0.1
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1) and p == 0.0
    assert paired_bootstrap(x, x) == (0.0, 0.0, 1.0)  # no difference at all
    # One document of 40 differs by 1: a resample's mean is (copies drawn)/40, and a resample
    # misses it with probability (39/40)^40, so P(mean <= 0) is about 0.36 and p about 0.73.
    low, high, p = paired_bootstrap(x, x[:-1] + [x[-1] + 1.0], resamples=20_000)
    assert low == 0.0 and p == pytest.approx(2 * (39 / 40) ** 40, abs=0.03)
