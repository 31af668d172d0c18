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

from ..errors import UserError
from .base import Task

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


def include(path: str | Path) -> list[str]:
    """Register every Task subclass defined in the Python file at `path`; return their names."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--include {path}: no such file; give the path of a Python file that defines a Task")
    spec = importlib.util.spec_from_file_location(f"llama_eval_plugin_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, Task) and v.__module__ == module.__name__ and "name" in vars(v)]
    if not found:
        raise UserError(f"--include {path}: the file defines no Task subclass with a `name`")
    for cls in found:
        _plugins[cls.name] = cls
    return [cls.name for cls in found]


def _entry_point_tasks() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="llama_eval.tasks")}


def names() -> list[str]:
    """Every task name known: built in, from entry points and from --include files."""
    return list(dict.fromkeys([*TASKS, *_entry_point_tasks(), *_plugins]))


def all_option_names() -> list[str]:
    """Every option declared by any known task (imports them all: for error messages)."""
    return list(dict.fromkeys(name for task in names() for name in get_task(task).options))


def get_task(name: str) -> Task:
    """An instance of the task called exactly `name`."""
    if name in _plugins:
        return _plugins[name]()
    target = TASKS.get(name) or _entry_point_tasks().get(name)
    if target is None:
        close = difflib.get_close_matches(name, names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown task {name!r}.{hint} Known tasks: {', '.join(names())} "
                        "(`llama-eval tasks` describes them; --include FILE.py adds your own).")
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)()
