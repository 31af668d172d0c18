"""Metrics as small pure functions, each tested against brute force."""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Hashable, Sequence

import numpy as np


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
# Where a worked solution states its answer, searched in order: GSM8K's own solutions end
# "#### N"; Wei et al.'s chain-of-thought exemplars end "The answer is N."
TRAIN_MARKERS = (re.compile(r"####"), re.compile(r"the answer is", re.IGNORECASE))
COT_MARKERS = TRAIN_MARKERS[::-1]


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


def extract_number(completion: str, markers: Sequence[re.Pattern] = TRAIN_MARKERS) -> str | None:
    """The final answer of a worked solution, as a canonical number string, or None.

    The first number after the first match of the first of `markers` found in the completion
    (by default "####", then "The answer is" in any case); else the last number anywhere in it.
    Numbers may carry a minus sign, a "$", thousands commas and decimals; a sentence-ending
    dot is not a decimal point ("is 18." -> "18").
    """
    for marker in markers:
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


# -- competition mathematics (MATH) ---------------------------------------------------------

# "\boxed" or "\fbox", not the start of a longer command name such as "\boxedsymbol".
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """(content, index after the closing brace) of the group opening at text[start] == "{",
    or None if it never closes. A backslash escapes the next character, so "\\{" and "\\}"
    are literal braces that do not count."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None


def _box_content(text: str, end: int) -> str | None:
    """The argument of a box command ending at text[end]: a balanced {...} group (spaces may
    come first), or after at least one space, "\\boxed 5", the text up to the next "$" or line end."""
    i = end
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        group = _braced(text, i)
        return group[0] if group else None
    if i > end:
        return re.split(r"[$\n]", text[i:], maxsplit=1)[0].strip() or None
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last complete box in `text`, or None if there is none.

    A box is "\\boxed{...}" or "\\fbox{...}" with balanced braces ("\\boxed{\\frac{1}{2}}" gives
    "\\frac{1}{2}"), or the brace-less "\\boxed 5" (up to the next "$" or the end of the line).
    A last box that never closes (a completion cut off mid-answer) is passed over for the one
    before it.
    """
    for match in reversed(list(_BOX_COMMAND.finditer(text))):
        content = _box_content(text, match.end())
        if content is not None:
            return content
    return None


_FINAL_ANSWER = re.compile(r"final answer is:?", re.IGNORECASE)
# A stated answer ends at the line end or at a sentence-ending dot (one followed by a space);
# the dot of "0.5" is followed by a digit and stays.
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")


def final_math_answer(completion: str) -> str | None:
    """The answer a worked MATH solution states, not yet normalised, or None.

    After the first "final answer is" (any case, as in "The final answer is $\\frac{1}{2}$."):
    the first $...$ formula if the text there starts with "$", else the text up to the end of
    the sentence or line; a box in it is unwrapped. Without that phrase, or with nothing after
    it: the content of the last box (`last_boxed`), the format of MATH's own solutions.
    """
    found = _FINAL_ANSWER.search(completion)
    if found:
        rest = completion[found.end():].lstrip(" ")
        if rest.startswith("$"):
            stated = re.split(r"(?<!\\)\$", rest.lstrip("$"), maxsplit=1)[0]  # "\$" is a dollar sign
        else:
            stated = rest[: m.start()] if (m := _SENTENCE_END.search(rest)) else rest
        stated = last_boxed(stated) or stated
        if stated.strip():
            return stated.strip()
    return last_boxed(completion)


# Normalisation rules, applied in this order by normalize_math_answer. Both the gold answer and
# the prediction go through them, so each only has to make two spellings of one answer agree.
_SIZING = re.compile(r"\\(?:left|right|displaystyle)(?![A-Za-z])")  # "\left(" -> "("
# "\!", "\,", "\;", "\:", "\ " -> nothing; not the "\ " ending a "\\" line break.
_THIN_SPACES = re.compile(r"(?<!\\)\\[!,;: ]")
_DOLLARS = re.compile(r"\\?\$")  # "$" and the escaped "\$" of money
_FRAC_VARIANTS = re.compile(r"\\[dt]frac(?![A-Za-z])")  # "\dfrac", "\tfrac" -> "\frac"
_DEGREES = re.compile(r"\^\s*(?:\\circ|\{\s*\\circ\s*\})|°")  # "^\circ", "^{\circ}", "°"
_PERCENT = re.compile(r"\\?%")  # "\%" and "%"
# A trailing unit: \text{...} or \mbox{...} holding only words (and perhaps a final dot)
# after some answer, with an optional power ("5\text{ cm}^2" -> "5").
_UNIT = re.compile(r"(?<=\S)\s*\\(?:text|mbox)\{\s*[A-Za-z]+(?:\s+[A-Za-z]+)*\.?\s*\}(?:\^\{?\d\}?)?\s*$")
_TEXT = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm)\{([^{}]*)\}")  # "\text{(C)}" -> "(C)"
# "x = 3", "k_1 = 3": a single variable named on the left of the only "=".
_ASSIGNMENT = re.compile(r"^\s*[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*=")
_LEADING_DOT = re.compile(r"(?<!\d)\.(?=\d)")  # ".5" -> "0.5"
_NUMBER_WITH_COMMAS = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_SLASH_FRACTION = re.compile(r"(-?)(\d+)/(\d+)")  # "3/4" -> "\frac{3}{4}"


def _argument(text: str, i: int) -> tuple[str, int] | None:
    """(argument, index after it) of a TeX macro argument at text[i]: a {...} group, a control
    word such as "\\pi", or a single character; None where no argument follows (the end of the
    text, an unclosed group, a closing brace, or the "[" of an optional argument)."""
    if i >= len(text) or text[i] in "[]}":
        return None
    if text[i] == "{":
        return _braced(text, i)
    word = re.match(r"\\[A-Za-z]+", text[i:])
    if word:
        return word.group(), i + len(word.group())
    return text[i], i + 1


def _brace_arguments(text: str, command: str, count: int) -> str:
    """Every `command` with its first `count` arguments written in braces:
    "\\frac12" -> "\\frac{1}{2}", "\\frac1{x}" -> "\\frac{1}{x}", "\\sqrt2" -> "\\sqrt{2}".
    A command with an optional "[...]" argument ("\\sqrt[3]{x}") or missing arguments is left as is."""
    pattern = re.compile(re.escape(command) + r"(?![A-Za-z])")
    out, pos = [], 0
    for match in pattern.finditer(text):
        if match.start() < pos:
            continue  # inside an argument already rewritten
        args, i = [], match.end()
        while len(args) < count and (arg := _argument(text, i)) is not None:
            args.append(_brace_arguments(arg[0], command, count))
            i = arg[1]
        if len(args) == count:
            out.append(text[pos : match.start()] + command + "".join("{" + a + "}" for a in args))
            pos = i
    return "".join(out) + text[pos:]


def normalize_math_answer(answer: str) -> str:
    """A MATH answer in a canonical spelling, so that equal answers compare equal as strings.

    In the spirit of Hendrycks et al. (2021) and Lewkowycz et al. (2022), written here; in order:
      1. "\\left", "\\right" and "\\displaystyle" are dropped ("\\left(1,2\\right)" -> "(1,2)");
      2. thin spaces "\\!", "\\,", "\\;", "\\:", "\\ " are dropped;
      3. "$" and "\\$" are dropped;
      4. "\\dfrac" and "\\tfrac" become "\\frac";
      5. degrees "^\\circ", "^{\\circ}", "°" are dropped;
      6. percent signs "\\%", "%" are dropped;
      7. a trailing unit, \\text{...} or \\mbox{...} of words only after the answer, is dropped
         with any power ("40\\text{ cm}^2" -> "40");
      8. other \\text{X}, \\textbf{X}, \\textit{X}, \\mbox{X}, \\mathrm{X} become X;
      9. "x = 3" becomes "3" when the only "=" has a single variable (maybe subscripted) left of it;
     10. all whitespace is removed;
     11. "\\frac" and "\\sqrt" arguments get braces ("\\frac12" -> "\\frac{1}{2}", "\\sqrt2" -> "\\sqrt{2}");
     12. a decimal point with no digit before it gets a 0 (".5" -> "0.5");
     13. trailing dots are removed ("5." -> "5");
     14. a whole answer that is a plain number is written canonically (`canonical_number`:
         thousands commas and trailing decimal zeros go, "1,000.0" -> "1000");
         one that is integer/integer becomes a \\frac ("3/4" -> "\\frac{3}{4}").
    """
    text = _SIZING.sub("", answer)
    text = _THIN_SPACES.sub("", text)
    text = _DOLLARS.sub("", text)
    text = _FRAC_VARIANTS.sub(r"\\frac", text)
    text = _DEGREES.sub("", text)
    text = _PERCENT.sub("", text)
    text = _UNIT.sub("", text)
    text = _TEXT.sub(r"\1", text)
    if text.count("=") == 1:
        text = _ASSIGNMENT.sub("", text)
    text = "".join(text.split())
    text = _brace_arguments(_brace_arguments(text, "\\frac", 2), "\\sqrt", 1)
    text = _LEADING_DOT.sub("0.", text)
    text = text.rstrip(".")
    if _NUMBER_WITH_COMMAS.fullmatch(text):
        text = canonical_number(text) or text
    elif fraction := _SLASH_FRACTION.fullmatch(text):
        text = f"{fraction[1]}\\frac{{{fraction[2]}}}{{{fraction[3]}}}"
    return text


def math_answer(completion: str) -> str | None:
    """The normalised final answer of a MATH solution (`final_math_answer`, then
    `normalize_math_answer`); None if there is none or it normalises to nothing."""
    stated = final_math_answer(completion)
    return (normalize_math_answer(stated) or None) if stated is not None else None


# -- paired tests (compare.py): did a metric change between two runs of the same documents? --

def mcnemar_exact(lost: int, gained: int) -> float:
    """Two-sided exact McNemar p-value: P(a split of the discordant pairs at least this uneven).

    Under no change each of the n = lost + gained discordant documents goes either way with
    probability 1/2, so p = 2 * P(Binomial(n, 1/2) <= min(lost, gained)), capped at 1.
    Computed with exact integers: n can be in the thousands (MMLU has 14,042 questions).
    """
    n, k = lost + gained, min(lost, gained)
    tail, term = 0, 1  # term = C(n, i)
    for i in range(k + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, 2 * tail / 2**n)


def paired_bootstrap(x: Sequence[float], y: Sequence[float], seed: int = 0,
                     resamples: int = 10_000) -> tuple[float, float, float]:
    """(low, high) of the 95% percentile interval of mean(y - x), and a two-sided p-value."""
    d = np.asarray(y, dtype=float) - np.asarray(x, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // len(d))  # bounds memory at a few million indices per step
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = d[rng.integers(0, len(d), size=(stop - start, len(d)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    p = min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean()))
    return float(low), float(high), float(p)
