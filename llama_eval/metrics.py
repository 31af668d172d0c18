"""Metrics as small pure functions, each tested against brute force."""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Hashable, Sequence


def mean_stderr(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n))."""
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    mean = sum(xs) / n
    if n == 1:
        return mean, 0.0
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, math.sqrt(var / n)


def weighted_mean(values: Sequence[float], weights: Sequence[float]) -> float:
    total = sum(weights)
    return sum(v * w for v, w in zip(values, weights)) / total


# -- code generation (HumanEval) ----------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from n samples of which c passed (Chen et al. 2021).

    pass@k = 1 - C(n-c, k) / C(n, k): the chance that k samples drawn without replacement
    from the n contain at least one that passed. Computed as a product so that large n
    (hundreds of samples) stays exact in floating point without huge binomials.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset holds a passing sample
    fail_all = 1.0
    for i in range(n - c + 1, n + 1):
        fail_all *= 1.0 - k / i
    return 1.0 - fail_all


# -- closed-book question answering (NaturalQuestions, TriviaQA) ---------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _is_punctuation(ch: str) -> bool:
    # ASCII punctuation and symbols (the SQuAD set) plus every Unicode punctuation mark,
    # so curly quotes and dashes ("1930’s", "1930–1939") go too.
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def _drop_punctuation(text: str) -> str:
    if text.isascii():  # the common case, done in C
        return text.translate(_ASCII_PUNCTUATION)
    return "".join(ch for ch in text if not _is_punctuation(ch))


def normalize_answer(text: str) -> str:
    """The SQuAD/TriviaQA answer normalisation: lowercase, delete punctuation, delete the
    articles "a", "an", "the" as whole words, and collapse whitespace to single spaces.

    Punctuation is deleted, not replaced by a space ("U.S." -> "us", "1,000" -> "1000").
    """
    text = _drop_punctuation(text.lower())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0.

    A prediction that normalises to the empty string is never correct (an empty answer
    would otherwise match a gold that is only punctuation or articles).
    """
    pred = normalize_answer(prediction)
    return float(bool(pred) and any(pred == normalize_answer(g) for g in golds))


# -- math word problems (GSM8K) ------------------------------------------------------------

# A number as written in a solution: an optional minus sign (not a hyphen after a word or a
# number, as in "3-page" or "5-3"), an optional "$", digits with optional thousands commas,
# optional decimals. It never starts inside a word or a number ("x2", the "5" of "3.5").
_NUMBER = re.compile(r"(?:(?<![\w)])-|(?<![\w.]))\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
_ANSWER_MARKERS = (re.compile(r"####"), re.compile(r"the answer is", re.IGNORECASE))


def canonical_number(text: str) -> str | None:
    """A written number in canonical form ("$1,250.00" -> "1250", "-0.50" -> "-0.5"),
    or None if `text` is not a number."""
    cleaned = text.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    out = format(value.normalize(), "f")
    return "0" if out in ("-0", "0") else out


def extract_number(completion: str) -> str | None:
    """The final answer of a worked solution, as a canonical number string, or None.

    The first number after the first "####" if there is one; else the first number after the
    first "The answer is" (any case); else the last number anywhere in the completion.
    Numbers may carry a minus sign, a "$", thousands commas and decimals; a sentence-ending
    dot is not a decimal point ("is 18." -> "18").
    """
    for marker in _ANSWER_MARKERS:
        found = marker.search(completion)
        if found:
            match = _NUMBER.search(completion, found.end())
            return canonical_number(match.group()) if match else None
    matches = _NUMBER.findall(completion)
    return canonical_number(matches[-1]) if matches else None


def numbers_equal(a: str | None, b: str | None) -> bool:
    """Whether two written numbers have the same value ("1,000" == "1000.00" == "$1000").
    None (no number found) equals nothing."""
    ca = canonical_number(a) if a is not None else None
    cb = canonical_number(b) if b is not None else None
    return ca is not None and ca == cb


def majority_vote(answers: Sequence[Hashable | None]) -> Hashable | None:
    """The most frequent answer, ignoring None (samples with no answer); None if none is left.

    Ties go to the tied answer that appears first in `answers`, so the vote depends only on
    the samples and their order (which the engine makes reproducible from the seed).
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    # Counter keeps first-insertion order and most_common sorts stably: ties keep that order.
    return counts.most_common(1)[0][0]
