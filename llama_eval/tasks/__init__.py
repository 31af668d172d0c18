"""The task registry: a name -> "module:Class" table, plus plugins from elsewhere.

Adding a benchmark: write one file in this folder and add one line below. Tasks in other
packages register under the entry-point group "llama_eval.tasks" (name = "pkg.module:Class");
a local file is loaded with `--include FILE.py` (every Task subclass with a `name` in it).
Entries are import paths so that start-up imports only the tasks a run asks for.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from importlib.metadata import entry_points
from pathlib import Path
from typing import Mapping

from ..errors import UserError
from .base import GenerationTask, MultipleChoiceTask, Task
from .options import Option

TASKS: dict[str, str] = {
    # Table 3: common sense reasoning, zero-shot
    "boolq": "llama_eval.tasks.boolq:BoolQ",
    "piqa": "llama_eval.tasks.piqa:PIQA",
    "siqa": "llama_eval.tasks.siqa:SIQA",
    "hellaswag": "llama_eval.tasks.hellaswag:HellaSwag",
    "winogrande": "llama_eval.tasks.winogrande:WinoGrande",
    "arc_easy": "llama_eval.tasks.arc:ARCEasy",
    "arc_challenge": "llama_eval.tasks.arc:ARCChallenge",
    "openbookqa": "llama_eval.tasks.openbookqa:OpenBookQA",
    # Tables 4 and 5: closed-book question answering
    "nq_open": "llama_eval.tasks.nq_open:NaturalQuestions",
    "triviaqa": "llama_eval.tasks.triviaqa:TriviaQA",
    # Table 6: reading comprehension, zero-shot
    "race_middle": "llama_eval.tasks.race:RACEMiddle",
    "race_high": "llama_eval.tasks.race:RACEHigh",
    # Table 7: mathematical reasoning
    "gsm8k": "llama_eval.tasks.gsm8k:GSM8K",
    "math": "llama_eval.tasks.hendrycks_math:MATH",
    # Table 8: code generation
    "humaneval": "llama_eval.tasks.humaneval:HumanEval",
    "mbpp": "llama_eval.tasks.mbpp:MBPP",
    # Table 9: massive multitask language understanding
    "mmlu": "llama_eval.tasks.mmlu:MMLU",
}

_plugins: dict[str, type[Task]] = {}

# Hooks a task class must define (not inherit from the base classes) for its shape, and the
# data hooks of which it needs at least one.
_REQUIRED = {MultipleChoiceTask: ("context", "choices", "gold"), GenerationTask: ("prompt", "grade"),
             Task: ("requests", "score")}
_DATA_HOOKS = ("load", "from_release", "from_hf_row")


def check_task_class(cls: type, where: str) -> None:
    """Refuse a task class that cannot run: no string `name`, or a hook its shape needs left to
    the base class (which would fail mid-run with NotImplementedError)."""
    if not isinstance(vars(cls).get("name", getattr(cls, "name", None)), str) or not cls.name.strip():
        raise UserError(f"{where}: task class {cls.__name__} needs a `name` string (the name --tasks uses)")
    shape = next(base for base in (MultipleChoiceTask, GenerationTask, Task) if issubclass(cls, base))
    missing = [hook for hook in _REQUIRED[shape] if getattr(cls, hook) is getattr(shape, hook)]
    if all(getattr(cls, hook) is getattr(Task, hook) for hook in _DATA_HOOKS):
        missing.append(" or ".join(_DATA_HOOKS))
    if missing:
        raise UserError(f"{where}: task {cls.name!r} ({cls.__name__}, a {shape.__name__}) does not define "
                        f"{', '.join(missing)}; see llama_eval/tasks/base.py for what each hook returns")
    for attr in ("paper_name", "headline_metric"):
        if not isinstance(getattr(cls, attr, None), str):
            raise UserError(f"{where}: task {cls.name!r} needs a string `{attr}`")
    options = getattr(cls, "options", {})
    if not isinstance(options, Mapping):
        raise UserError(f"{where}: task {cls.name!r}: `options` must be a dict of name -> Option (tasks/options.py)")
    for name, option in options.items():
        if not isinstance(name, str) or not name.isidentifier() or not isinstance(option, Option):
            raise UserError(f"{where}: task {cls.name!r} declares option {name!r} as {option!r:.60}; "
                            "declare options as {\"name\": Option(default, help, ...)} (tasks/options.py)")
        try:
            option.value(name, None)  # the default must pass the option's own rule
        except UserError as e:
            raise UserError(f"{where}: task {cls.name!r}: the default of option {name!r} is refused by its rule ({e})") from e


def include(path: str | Path, override: bool = False) -> list[str]:
    """Register every Task subclass defined in the Python file at `path`; return their names.

    Each class is checked (`check_task_class`); a name that a built-in or entry-point task
    already has (in any letter case) is refused unless `override`.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--include {path}: no such file; give the path of a Python file that defines a Task")
    spec = importlib.util.spec_from_file_location(f"llama_eval_plugin_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except UserError:
        raise
    except Exception as e:  # the plugin's own bug: one line naming the file, traceback with --debug
        raise UserError(f"--include {path}: the file fails to load ({type(e).__name__}: {e})") from e
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, Task) and v.__module__ == module.__name__ and "name" in vars(v)]
    if not found:
        raise UserError(f"--include {path}: the file defines no Task subclass with a `name`")
    builtin = {n.casefold(): n for n in [*TASKS, *_entry_point_tasks()]}
    for cls in found:
        check_task_class(cls, f"--include {path}")
        if cls.name.casefold() in builtin and not override:
            raise UserError(f"--include {path}: task {cls.name!r} has the name of the built-in task "
                            f"{builtin[cls.name.casefold()]!r}; rename it, or pass --include-override to replace it")
    for cls in found:
        _plugins[cls.name] = cls
    return [cls.name for cls in found]


def _entry_point_tasks() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="llama_eval.tasks")}


def names() -> list[str]:
    """Every task name known: built in, from entry points and from --include files."""
    return list(dict.fromkeys([*TASKS, *_entry_point_tasks(), *_plugins]))


def canonical_name(name: str) -> str:
    """The registered name that `name` spells, ignoring letter case ("PIQA" -> "piqa");
    an unknown name is a UserError with close matches and the full list."""
    if name in TASKS or name in _plugins:  # no scan of every installed package's entry points
        return name
    known = names()
    if name in known:
        return name
    folded = {n.casefold(): n for n in known}
    if name.casefold() in folded:
        return folded[name.casefold()]
    close = difflib.get_close_matches(name.casefold(), list(folded), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(folded[c] for c in close)}?" if close else ""
    raise UserError(f"unknown task {name!r}.{hint} Known tasks: {', '.join(known)} "
                    "(`llama-eval tasks` describes them; --include FILE.py adds your own).")


def all_option_names() -> list[str]:
    """Every option declared by any known task (imports them all: for error messages)."""
    return list(dict.fromkeys(name for task in names() for name in get_task(task).options))


def get_task(name: str) -> Task:
    """An instance of the task called `name` (letter case ignored); included tasks win over
    built-in ones of the same name only when included with override."""
    name = canonical_name(name)
    if name in _plugins:
        return _plugins[name]()
    target = TASKS.get(name) or _entry_point_tasks()[name]
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if name not in TASKS:  # another package's task: checked like an --include file
        check_task_class(cls, f"entry point {name} = {target}")
    return cls()
