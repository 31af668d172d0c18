"""MATH final answers as Minerva grades them (Lewkowycz et al. 2022, appendix D): normalise the
stated answer with the paper's rules, then ask SymPy whether the two answers are equal.

Pure functions, like metrics.py; the rule lists are the paper's, the code is ours.
"""

from __future__ import annotations

import re
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

# Minerva's normalisation, appendix D: these replacements in this order, then these
# expressions deleted wherever they occur (units, filler words, TeX spacing and decorations).
SUBSTITUTIONS = (
    ("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), ("\\ ", ""), (" ", ""), ("mbox", "text"),
    (",\\text{and}", ","), ("\\text{and}", ","), ("\\text{m}", "\\text{}"),
)
REMOVED_EXPRESSIONS = (
    "square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km", "units", "\\ldots",
    "sue", "points", "feet", "minutes", "digits", "cents", "degrees", "cm", "gm", "pounds", "meters",
    "meals", "edges", "students", "childrentickets", "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}",
    "\\text{}^2", "\\text{}^3", "\\text{\n}", "\\text{}", "\\mathrm{th}", "^\\circ", "^{\\circ}", "\\;",
    ",\\!", "{,}", '"', "\\dots",
)
_MATH_SPAN = re.compile(r"\$(.*?)\$")
_WRAPPERS = (re.compile(r"\\text\{(.*?)\}"), re.compile(r"\\textbf\{(.*?)\}"), re.compile(r"\\overline\{(.*?)\}"))
_BOXED = re.compile(r"\\boxed\{(.*)\}")  # greedy: the outermost box
_SHORT_FRAC = re.compile(r"frac([^{])(.)")  # "\frac12" -> "\frac{1}{2}"
_SHORT_SQRT = re.compile(r"sqrt([^{])")  # "\sqrt2" -> "\sqrt{2}"


def minerva_normalize(answer: str) -> str:
    """A final answer normalised by Minerva's rules (appendix D), in the paper's order:
    keep what follows the last "="; apply SUBSTITUTIONS, delete REMOVED_EXPRESSIONS; keep the
    first $...$ formula; unwrap \\text{}, \\textbf{}, \\overline{}, \\boxed{}; brace the
    shorthand \\fracab and \\sqrta; drop "$"; drop the commas of a whole number ("100,000")."""
    text = answer.split("=")[-1]
    for old, new in SUBSTITUTIONS:
        text = text.replace(old, new)
    for expression in REMOVED_EXPRESSIONS:
        text = text.replace(expression, "")
    if span := _MATH_SPAN.search(text):
        text = f"${span.group(1)}$"
    for wrapper in _WRAPPERS:
        text = wrapper.sub(r"\1", text)
    text = _BOXED.sub(r"\1", text)
    text = _SHORT_FRAC.sub(r"frac{\1}{\2}", text)
    text = _SHORT_SQRT.sub(r"sqrt{\1}", text)
    text = text.replace("$", "")
    if text.replace(",", "").isdigit():
        text = text.replace(",", "")
    return text


_STATED = re.compile(r"final answer is(.*?)\.? I hope it is correct", re.DOTALL)
_STATED_LINE = re.compile(r"final answer is(.*)")


def minerva_answer(completion: str) -> str | None:
    """The answer a completion states in Minerva's form, "Final Answer: The final answer is X.
    I hope it is correct.", not yet normalised; a completion cut off before "I hope it is
    correct" gives the rest of that line. None where the sentence is missing."""
    found = _STATED.search(completion) or _STATED_LINE.search(completion)
    if not found:
        return None
    stated = found.group(1).strip()
    return stated[:-1].strip() if stated.endswith(".") else stated


# -- equivalence --------------------------------------------------------------------------------

def _group(text: str, start: int) -> tuple[str, int]:
    """(content, index after) of the {...} group opening at text[start]."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i], i + 1
    raise ValueError("unbalanced braces")


def _argument(text: str, i: int) -> tuple[str, int]:
    if i < len(text) and text[i] == "{":
        return _group(text, i)
    if i < len(text):
        return text[i], i + 1
    raise ValueError("missing argument")


_TEX_WORDS = (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", ""), ("\\cdot", "*"), ("\\times", "*"), ("\\div", "/"),
              ("\\pi", " pi "), ("\\infty", " oo "), ("\\!", ""), ("\\,", ""))


def tex_to_python(tex: str) -> str:
    """A normalised LaTeX answer as a SymPy-parsable expression ("\\frac{1}{2}\\sqrt{3}" ->
    "((1)/(2))sqrt(3)"); ValueError for anything outside fractions, roots, powers, pi and
    arithmetic (a parse failure: the caller compares strings instead)."""
    out, i = [], 0
    for old, new in _TEX_WORDS:
        tex = tex.replace(old, new)
    while i < len(tex):
        if tex.startswith("\\frac", i):
            num, i = _argument(tex, i + 5)
            den, i = _argument(tex, i)
            out.append(f"(({tex_to_python(num)})/({tex_to_python(den)}))")
        elif tex.startswith("\\sqrt", i):
            i += 5
            root = "2"
            if i < len(tex) and tex[i] == "[":
                end = tex.index("]", i)
                root, i = tex_to_python(tex[i + 1 : end]), end + 1
            body, i = _argument(tex, i)
            out.append(f"(({tex_to_python(body)})**(1/({root})))")
        elif tex[i] == "^":
            power, i = _argument(tex, i + 1)
            out.append(f"**({tex_to_python(power)})")
        elif tex[i] == "{":
            body, i = _group(tex, i)
            out.append(f"({tex_to_python(body)})")
        elif tex[i] == "\\":
            raise ValueError(f"TeX command at {tex[i:i + 12]!r}")
        else:
            out.append(tex[i])
            i += 1
    return "".join(out)


def _sympy(tex: str):
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                            standard_transformations)

    if not re.fullmatch(r"[\w\s.+\-*/^()\[\]{}\\!,]*", tex) or re.search(r"[A-Za-z]{3,}", re.sub(r"\\[A-Za-z]+", "", tex)):
        raise ValueError("not an expression")  # words ("Monday") are compared as strings
    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    return parse_expr(tex_to_python(tex), transformations=transformations, evaluate=True)


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """TimeoutError after `seconds` (SIGALRM: only in the main thread; elsewhere no limit, and
    the caller keeps to cheap checks)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _elements(text: str) -> tuple[str, list[str]] | None:
    """(brackets, elements) of a tuple or interval "(1,2]" with top-level commas, else None."""
    if len(text) < 2 or text[0] not in "([" or text[-1] not in ")]":
        return None
    parts, depth, start = [], 0, 1
    for i, ch in enumerate(text[1:-1], 1):
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if not parts:
        return None
    return text[0] + text[-1], [*parts, text[start:-1]]


def answers_equivalent(a: str, b: str, seconds: float = 5.0) -> bool:
    """Whether two normalised answers are the same: equal strings; or tuples/intervals with the
    same brackets and equivalent elements; or expressions SymPy finds equal (their difference
    simplifies to 0 within `seconds`). An answer SymPy cannot parse is equal only to the same
    string; a comparison that runs out of time is "not equal"."""
    if a == b:
        return True
    if not a or not b:
        return False
    ea, eb = _elements(a), _elements(b)
    if ea or eb:
        return bool(ea and eb and ea[0] == eb[0] and len(ea[1]) == len(eb[1])
                    and all(answers_equivalent(x, y, seconds) for x, y in zip(ea[1], eb[1])))
    import sympy

    try:
        with _time_limit(seconds):
            x, y = _sympy(a), _sympy(b)
            if threading.current_thread() is not threading.main_thread():
                return bool(abs(complex(sympy.N(x - y))) < 1e-9)  # no time limit here: numbers only
            return sympy.simplify(x - y) == 0
    except TimeoutError:
        return False
    except Exception:  # noqa: BLE001 -- SymPy raises many types on odd input; all mean "cannot tell"
        return False
