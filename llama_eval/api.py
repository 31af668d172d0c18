"""The Python entry point: `llama_eval.evaluate(model, tasks, **options)`.

`model` is what `--model` takes (a preset, a checkpoint folder or file, `random:<preset>`) or a
`(model, tokenizer)` pair already in memory, e.g. the module a training loop is optimising. The
options are RunConfig's fields (llama_eval/config.py), so the Python call and `llama-eval run`
share every default. The run folder is written exactly as by the CLI; the returned Evaluation
reads it back.

An in-memory model has no files to fingerprint, so its fingerprint is the sha256 of every byte
of its state dict (plus its config and its tokenizer): the request cache, keyed by fingerprint,
can never hand one checkpoint's answers to another, even when both go to the same cache file.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .config import RunConfig
from .errors import UserError

# Options whose RunConfig field is a tuple: a list, a single value or a comma-separated string
# is accepted for them and normalised here, so callers need not build tuples.
_TUPLE_OPTIONS = ("shots", "options", "include")
# Options that would move or convert an in-memory model: its device and dtype are the module's own.
_LOADER_OPTIONS = ("device", "dtype", "tokenizer", "tp")
MEMORY_PREFIX = "memory-"


@dataclass
class Evaluation:
    """What `evaluate` returns: the run folder and this run's results read from it."""

    run_dir: Path
    summary: Any  # pandas.DataFrame, the rows this run wrote to summary.csv (its columns)
    tasks: tuple[str, ...]
    stats: dict[str, Any]

    def samples(self, task: str):
        """The per-document rows of `task` (samples_<task>.csv: prompt data, prediction, gold, metrics)."""
        from . import reporting

        if task not in self.tasks:
            close = difflib.get_close_matches(task, self.tasks, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"this run has no task {task!r}.{hint} Its tasks: {', '.join(self.tasks)}")
        df = reporting.read_samples(self.run_dir / f"samples_{task}.csv")
        return df[df["task"] == task].reset_index(drop=True)


def evaluate(model, tasks: str | Sequence[str], **options) -> Evaluation | None:
    """Evaluate `model` on `tasks` and write the run folder; see the module docstring.

    model: a spec string (as `--model`) or a `(Transformer, Tokenizer)` pair in memory, such as
    `llama_eval.load_model` returns. An in-memory model is evaluated where it is (its device and
    dtype), in eval mode and without gradients; its training mode and its elementwise kernels
    (`compile`) are restored afterwards.
    tasks: task names, as a list or one comma-separated string.
    options: RunConfig fields by name (`data_dir`, `shots`, `limit`, `output`, ...); an unknown
    name is a UserError naming the close matches.
    Returns None on the ranks other than 0 under torchrun (rank 0 writes and returns the results).
    """
    from . import evaluator, reporting

    config = run_config(model, tasks, options)
    if isinstance(model, (str, Path)):
        outcome = evaluator.evaluate(config)
    else:
        loaded = loaded_from_memory(*_pair(model))
        config = dataclasses.replace(config, model=MEMORY_PREFIX + loaded.info.fingerprint[:8])
        was_training, was_compiled = loaded.model.training, loaded.model.elementwise_compiled
        loaded.model.eval()
        try:
            outcome = evaluator.evaluate(config, load=lambda *_, **__: loaded)
        finally:
            loaded.model.train(was_training)
            loaded.model.compile_elementwise(was_compiled)  # the run's `compile` setting ends with the run
    if outcome is None:
        return None
    import pandas as pd

    summary = pd.DataFrame(outcome.summary, columns=list(reporting.SUMMARY_COLUMNS))
    return Evaluation(Path(outcome.run_dir), summary, tuple(dict.fromkeys(r.task.name for r in outcome.runs)),
                      outcome.stats)


def run_config(model, tasks: str | Sequence[str], options: dict[str, Any]) -> RunConfig:
    """The RunConfig for an `evaluate` call, every option checked against RunConfig's fields."""
    fields = {f.name for f in dataclasses.fields(RunConfig)} - {"model", "tasks"}
    for name in options:
        if name not in fields:
            close = difflib.get_close_matches(name, sorted(fields), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"unknown option {name!r}{hint} (options are RunConfig's fields: {', '.join(sorted(fields))})")
    in_memory = not isinstance(model, (str, Path))
    if in_memory and (given := [n for n in _LOADER_OPTIONS if n in options]):
        raise UserError(f"option {given[0]!r} applies only when llama-eval loads the model; an in-memory model "
                        "is evaluated on its own device and dtype (move or convert it before calling evaluate)")
    values = dict(options)
    for name in _TUPLE_OPTIONS:
        if name in values and values[name] is not None:
            values[name] = _as_tuple(values[name], int if name == "shots" else str)
    if "task_shots" in values:
        ts = values["task_shots"]
        pairs = ts.items() if isinstance(ts, dict) else ts
        values["task_shots"] = tuple((str(k), _as_tuple(v, int)) for k, v in pairs)
    names = _as_tuple(tasks, str)
    if not names:
        raise UserError("evaluate needs at least one task, e.g. tasks=['piqa'] (see `llama-eval tasks`)")
    return RunConfig(model=str(model) if not in_memory else "", tasks=names, **values)


def _as_tuple(value, kind) -> tuple:
    if isinstance(value, str):
        value = [x.strip() for x in value.split(",") if x.strip()]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    return tuple(kind(x) for x in value)


def _pair(model) -> tuple[Any, Any]:
    from .model.llama import Transformer

    if not (isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], Transformer)):
        raise UserError(f"model must be a spec string or a (Transformer, Tokenizer) pair such as "
                        f"llama_eval.load_model returns; got {type(model).__name__}")
    return model


def loaded_from_memory(model, tokenizer):
    """A checkpoint.Loaded for a model already in memory, fingerprinted by its weights' bytes."""
    from .model.checkpoint import CheckpointInfo, Loaded
    from .model.llama import count_parameters

    param = next(model.parameters())
    info = CheckpointInfo(
        format="memory", args=model.args, files=[Path(p)] if (p := getattr(tokenizer, "path", None)) else [],
        dtype=param.dtype, device=param.device, n_params=count_parameters(model),
        fingerprint=weights_fingerprint(model, tokenizer),
    )
    return Loaded(model, tokenizer, info)


def weights_fingerprint(model, tokenizer) -> str:
    """16 hex digits: sha256 over the model's config, every state-dict tensor (name, dtype, shape
    and raw bytes) and the tokenizer's file. Any change to any weight changes it."""
    import torch

    h = hashlib.sha256(json.dumps(dataclasses.asdict(model.args), sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, t in model.state_dict().items():
            h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
            # Raw bytes of any dtype (bfloat16 has no numpy type): view the storage as uint8.
            flat = t.detach().contiguous().reshape(-1).view(torch.uint8)
            h.update(flat.cpu().numpy())
    path = getattr(tokenizer, "path", None)
    if path:
        h.update(hashlib.sha256(Path(path).read_bytes()).digest())
    else:  # a tokenizer built in memory: its vocabulary, piece by piece
        h.update(json.dumps([tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]).encode())
    return h.hexdigest()[:16]
