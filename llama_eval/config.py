"""RunConfig: every default of a run, written once. The CLI's flags mirror its fields.

Kept apart from the evaluator so that `llama-eval --help` builds its parser without importing
torch or pandas.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunConfig:
    """Every default of a run, written once; the CLI's flags mirror these fields."""

    model: str
    tasks: tuple[str, ...]
    shots: tuple[int, ...] | None = None  # None: each task's paper shot counts
    task_shots: tuple[tuple[str, tuple[int, ...]], ...] = ()  # per-task shot counts, over `shots`
    limit: int | None = None  # first N documents of each task (for quick checks)
    seed: int = 1234  # few-shot selection and sampling
    data_dir: str | None = None  # release files; None: the Hugging Face hub
    output: str | None = None  # run folder; None: runs/<model label>
    batch_tokens: int | None = None  # tokens per scoring forward; None: 2 x model width
    max_batch: int = 32  # rows decoded together in generation
    device: str | None = None  # None: cuda if available, else cpu
    dtype: str | None = None  # None: bfloat16 on cuda, float32 on cpu
    tokenizer: str | None = None  # SentencePiece model, when not beside the weights
    share_prefixes: bool = True
    samples: int | None = None  # generation samples per problem; None: task default
    temperature: float | None = None  # override a generation task's sampling temperature
    max_new_tokens: int | None = None  # every generation task's limit; None: each task's, clamped to the window
    options: tuple[str, ...] = ()  # task options "name=value" (see `llama-eval tasks`)
    allow_code_execution: bool = False
    include: tuple[str, ...] = ()  # extra task files
    include_override: bool = False  # an included task may replace a built-in one of the same name
    cache: str | None = None  # request cache file; None: <output>/cache.sqlite
    use_cache: bool = True
    paper_model: str | None = None  # paper row to compare with; None: from the preset name
    progress: bool = True
    tp: int = 1  # tensor-parallel ranks per model copy (under torchrun; the rest is data parallel)
    dist_timeout: float = 1800.0  # seconds a rank waits for the others before the run stops
