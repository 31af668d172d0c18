"""Declared task options: what `--option name=value` may set, each with its default and help.

A task lists its options on the class (`options = {"race_scoring": Option(...)}`). The
evaluator refuses a name no selected task declares and parses every given value once, before
any data is read or any model is loaded; a task reads an option's parsed value with
`Task.option(settings, name)`. Values travel as text (in RunConfig and run.json) and are
parsed by the option's `parse` function (which raises ValueError with the rule) or checked
against its `choices`.

Option names are global, not per task: tasks that share a protocol share its options
(NaturalQuestions and TriviaQA the qa_* options, both RACE levels race_*).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from ..errors import UserError


@dataclass(frozen=True)
class Option:
    """One named choice a task leaves to the user: its default (as text), the rule, the help."""

    default: str
    help: str
    choices: tuple[str, ...] = ()  # allowed values; empty: any text `parse` accepts
    parse: Callable[[str], Any] = str  # text -> value; raises ValueError naming the rule

    def value(self, name: str, text: str | None) -> Any:
        """The parsed value of `text` (the default when None); a bad value is a UserError."""
        text = self.default if text is None else text
        if self.choices and text not in self.choices:
            raise UserError(f"--option {name}={text}: must be one of {', '.join(self.choices)}")
        try:
            return self.parse(text)
        except ValueError as error:
            raise UserError(f"--option {name}={text}: {error}") from None


# -- parsers ---------------------------------------------------------------------------
def number_in(low: float, high: float) -> Callable[[str], float]:
    """A parser for a number in the interval (low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low < value <= high:
            raise ValueError(f"must be a number in ({low:g}, {high:g}]")
        return value

    return parse


def pass_ks(text: str) -> tuple[int, ...]:
    """Positive whole numbers separated by commas, 1 among them (the k of pass@k)."""
    parts = text.split(",")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts) or 1 not in {int(p) for p in parts}:
        raise ValueError("give positive whole numbers separated by commas, including 1 (e.g. 1,10,100)")
    return tuple(sorted({int(p) for p in parts}))


def calibration_context(task: str) -> Option:
    """The option holding the bare context a calibrated task scores each answer after."""
    return Option("Answer:", f"the bare context {task}'s calibration scores each answer after "
                  "(log P(answer | prompt) - log P(answer | this))")


# -- checking what the user gave ---------------------------------------------------------
def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """{"name": "value"} from `--option name=value` items (the last of a repeated name wins)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--option {item!r} is not of the form name=value (e.g. --option qa_separator=blank)")
        out[name.strip()] = value  # kept verbatim: a bare context may end in a space ("A: ")
    return out


def declared(tasks: Iterable[Any]) -> dict[str, Option]:
    """Every option the given task instances declare, by name."""
    out: dict[str, Option] = {}
    for task in tasks:
        for name, option in task.options.items():
            # Tasks sharing an option share the Option object (one default, one rule).
            assert out.setdefault(name, option) is option, f"option {name} declared twice with different rules"
    return out


def check_given(given: Mapping[str, str], tasks: list[Any], all_names: Callable[[], Iterable[str]] = tuple) -> None:
    """Refuse an option no selected task declares and parse every value given.

    The refusal names the selected tasks and close matches among every option known
    (`all_names()`, called only then: it imports every task)."""
    options = declared(tasks)
    for name, text in given.items():
        if name not in options:
            close = difflib.get_close_matches(name, list(dict.fromkeys([*options, *all_names()])), n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            selected = ", ".join(t.name for t in tasks) or "none"
            raise UserError(f"--option {name}: no selected task declares it (tasks: {selected}).{hint} "
                            "`llama-eval tasks NAME` lists a task's options.")
        options[name].value(name, text)
