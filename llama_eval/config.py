"""RunConfig: every default of a run, written once. The CLI's flags mirror its fields.

Kept apart from the evaluator so that `llama-eval --help` builds its parser without importing
torch or pandas.

Each field says whether it can change the numbers a run reports (`results(...)`) or only how
and where the run happens (`how(...)`): `results_fields()` lists the former, and the run's
config hash (run.json, summary.csv) is derived from exactly those, so a new field cannot be
left out of the hash by mistake.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import UserError

DTYPES = ("float32", "bfloat16", "float16")  # compute dtypes by name (model/checkpoint.py maps them)
SANDBOX_TIMEOUT_S = 10.0  # seconds one model-written program may run (NOT STATED by the paper)

# The scorer's packed rows carry a (tokens x tokens) attention mask: past this many tokens per
# forward the mask alone outgrows any GPU's memory, with nothing gained in speed.
MAX_BATCH_TOKENS = 16384


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
    tokenizer: str | None = results(None)  # tokenizer.model / tokenizer.json, when not beside the weights
    max_len: int | None = results(None)  # context window (KV cache size); None: the model's, at most 8,192
    share_prefixes: bool = how(True)
    # Fused kernels (torch.compile) for RMSNorm, residual add, rotary and the SiLU gate; None: on
    # with CUDA (where Triton is installed), off elsewhere. Kept out of the config hash like
    # batch_tokens: it moves log-probs only by float rounding, never by more.
    compile: bool | None = how(None)
    samples: int | None = results(None)  # generation samples per problem; None: task default
    temperature: float | None = results(None)  # override a generation task's sampling temperature
    max_new_tokens: int | None = results(None)  # every generation task's limit; None: each task's, clamped to the window
    options: tuple[str, ...] = results(())  # task options "name=value" (see `llama-eval tasks NAME`)
    allow_code_execution: bool = results(False)
    allow_unsandboxed: bool = how(False)  # run that code even where the sandbox has no kernel isolation
    include: tuple[str, ...] = results(())  # extra task files
    include_override: bool = how(False)  # an included task may replace a built-in one of the same name
    cache: str | None = how(None)  # request cache file; None: <output>/cache.sqlite
    use_cache: bool = how(True)
    overwrite: bool = how(False)  # replace the results of another run in the output folder
    append: bool = how(False)  # add tasks to a folder holding the same model and config
    paper_model: str | None = how(None)  # paper row to compare with; None: from the preset name
    progress: bool = how(True)
    tp: int = how(1)  # tensor-parallel ranks per model copy (under torchrun; the rest is data parallel)
    dist_timeout: float = how(1800.0)  # seconds a rank waits for the others before the run stops
    show_prompts: int | None = how(None)  # print the first N rendered prompts of each task and stop

    def __post_init__(self) -> None:
        """Refuse values no run can use, naming the flag (the API and the CLI meet here)."""
        def positive(flag: str, value: float | None, rule: str = "must be 1 or more") -> None:
            if value is not None and not value >= 1:
                raise UserError(f"--{flag} {value}: {rule}")

        positive("limit", self.limit, "must be 1 or more (leave it out to evaluate every document)")
        for flag, counts in (("shots", self.shots or ()), *(("task-shots", c) for _, c in self.task_shots)):
            if any(k < 0 for k in counts):
                raise UserError(f"--{flag} {','.join(map(str, counts))}: shot counts must be 0 or more")
        if self.batch_tokens is not None and not 1 <= self.batch_tokens <= MAX_BATCH_TOKENS:
            raise UserError(f"--batch-tokens {self.batch_tokens}: must be between 1 and {MAX_BATCH_TOKENS:,} "
                            "(the packed rows' attention mask grows with its square)")
        positive("max-batch", self.max_batch)
        positive("tp", self.tp)
        if self.samples is not None and self.samples < 0:
            raise UserError(f"--samples {self.samples}: must be 0 or more")
        if self.temperature is not None and not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise UserError(f"--temperature {self.temperature}: must be a finite number, 0 or more (0 is greedy)")
        if not (math.isfinite(self.dist_timeout) and self.dist_timeout > 0):
            raise UserError(f"--dist-timeout {self.dist_timeout}: must be a finite number of seconds above 0")
        if self.overwrite and self.append:
            raise UserError("--overwrite and --append contradict each other: give one")


def results_fields() -> list[str]:
    """The RunConfig fields that can change the reported numbers."""
    return [f.name for f in fields(RunConfig) if f.metadata["changes_results"]]
