"""RunConfig: every default of a run, written once. The CLI's flags mirror its fields.

Kept apart from the evaluator so that `llama-eval --help` builds its parser without importing
torch or pandas.

Each field says whether it can change the numbers a run reports (`results(...)`) or only how
and where the run happens (`how(...)`): `results_fields()` lists the former, and the run's
config hash (run.json, summary.csv) is derived from exactly those, so a new field cannot be
left out of the hash by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


def results(default: Any) -> Any:
    """A field whose value can change the reported numbers (part of the config hash)."""
    return field(default=default, metadata={"changes_results": True})


def how(default: Any) -> Any:
    """A field that changes only how, where or how fast a run happens, never its numbers."""
    return field(default=default, metadata={"changes_results": False})


@dataclass(frozen=True)
class RunConfig:
    """Every default of a run, written once; the CLI's flags mirror these fields."""

    model: str = field(metadata={"changes_results": False})  # the weights enter the hash by fingerprint
    tasks: tuple[str, ...] = field(metadata={"changes_results": True})
    shots: tuple[int, ...] | None = results(None)  # None: each task's paper shot counts
    task_shots: tuple[tuple[str, tuple[int, ...]], ...] = results(())  # per-task shot counts, over `shots`
    limit: int | None = results(None)  # first N documents of each task (for quick checks)
    seed: int = results(1234)  # few-shot selection and sampling
    data_dir: str | None = results(None)  # release files; None: the Hugging Face hub
    output: str | None = how(None)  # run folder; None: runs/<model label>
    batch_tokens: int | None = how(None)  # tokens per scoring forward; None: 2 x model width
    max_batch: int = how(32)  # rows decoded together in generation
    device: str | None = results(None)  # None: cuda if available, else cpu
    dtype: str | None = results(None)  # None: bfloat16 on cuda, float32 on cpu
    tokenizer: str | None = results(None)  # tokenizer file, when not beside the weights
    share_prefixes: bool = how(True)
    samples: int | None = results(None)  # generation samples per problem; None: task default
    temperature: float | None = results(None)  # override a generation task's sampling temperature
    options: tuple[str, ...] = results(())  # task options "name=value" (see `llama-eval tasks NAME`)
    allow_code_execution: bool = results(False)
    include: tuple[str, ...] = results(())  # extra task files
    cache: str | None = how(None)  # request cache file; None: <output>/cache.sqlite
    use_cache: bool = how(True)
    paper_model: str | None = how(None)  # paper row to compare with; None: from the preset name
    progress: bool = how(True)
    tp: int = how(1)  # tensor-parallel ranks per model copy (under torchrun; the rest is data parallel)
    dist_timeout: float = how(1800.0)  # seconds a rank waits for the others before the run stops
    show_prompts: int | None = how(None)  # print the first N rendered prompts of each task and stop


def results_fields() -> list[str]:
    """The RunConfig fields that can change the reported numbers."""
    return [f.name for f in fields(RunConfig) if f.metadata["changes_results"]]
