"""`llama-eval plan`: the GPU memory one rank needs, from the model's config alone.

Per rank, for tensor parallelism over tp GPUs (the layout of parallel.py) and the engine's
buffers, in bytes:

    weights        the rank's parameters x bytes per parameter: 1/tp of every projection
                   (kv heads: Hkv/tp each, or one when tp > Hkv), the embedding and the
                   norms whole
    kv_scoring     the scorer's cache: 1 row x (window + batch_tokens) slots
    kv_generation  the generator's cache: max_batch rows x window slots, only when a task
                   generates (allocated at the first generation request, beside the
                   scorer's cache); the largest max_batch that fits is reported
    activations    one scoring forward of batch_tokens tokens N: WIDTH_BUFFERS float32
                   [N, dim] buffers (the residual stream, RMSNorm and rotary work in
                   float32), FFN_BUFFERS [N, ffn/tp] ones (w1, w3 and their product),
                   the boolean mask [N, window + N], and LOGIT_BUFFERS float32
                   [LOGIT_ROWS, V/tp] logit blocks (logits and their exponentials)
    overhead       OVERHEAD_BYTES: CUDA context, cuBLAS/NCCL workspaces, allocator slack

A KV slot holds keys and values of every layer: 2 x n_layers x kv_heads x head_dim values.
Nothing here reads weights.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Sequence

from .engine.scoring import LOGIT_ROWS, default_batch_tokens
from .config import RunConfig
from .errors import UserError
from .model.llama import ModelArgs
from .model.presets import PRESETS, preset
from .parallel import splits_evenly

GIB = 1 << 30
BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2}
WIDTH_BUFFERS = 6
FFN_BUFFERS = 3
LOGIT_BUFFERS = 2
OVERHEAD_BYTES = 3 * GIB // 2


def model_args(model: str | ModelArgs) -> tuple[str, ModelArgs]:
    """(label, config) for a preset name, random:<preset>, ModelArgs, or a checkpoint path.

    A checkpoint's config file (and tokenizer, for the vocabulary) is read; its weights are not.
    """
    if isinstance(model, ModelArgs):
        return "model", model
    name = model.removeprefix("random:")
    if name in PRESETS:
        return name, preset(name)
    from .model import checkpoint as ck

    if not os.path.exists(model):
        try:
            preset(name)
        except KeyError as e:
            raise UserError(f"--model {model!r}: {e.args[0]} Or pass a checkpoint's path.") from None
    path = ck.resolve_spec(model)
    fmt = ck.detect_format(path)
    from .model.formats import read_config
    from .model.tokenizer import load_tokenizer

    tok = load_tokenizer(ck.tokenizer_path(fmt, path, None))
    return str(path), read_config(fmt, path, tok.vocab_size)


def valid_tp(args: ModelArgs, gpus: int) -> list[int]:
    """Tensor-parallel sizes that divide `gpus` and split the model evenly."""
    return [t for t in range(1, gpus + 1) if gpus % t == 0 and splits_evenly(args, t)]


def rank_parameters(args: ModelArgs, tp: int) -> int:
    a, D = args, args.head_dim
    kv = max(a.kv_heads // tp, 1)
    per_layer = (a.dim * (a.n_heads // tp) * D * 2  # wq, wo
                 + a.dim * kv * D * 2  # wk, wv
                 + a.dim * (a.ffn_dim // tp) * 3  # w1, w2, w3
                 + 2 * a.dim)  # the two norms
    return a.vocab_size * a.dim + a.n_layers * per_layer + a.dim + (a.vocab_size // tp) * a.dim


def rank_memory(args: ModelArgs, tp: int, dtype: str, batch_tokens: int, window: int, max_batch: int,
                generation: bool = True) -> dict[str, int]:
    """Bytes per rank, by item (module docstring), and their total."""
    size = BYTES_PER_PARAM[dtype]
    slot = 2 * args.n_layers * max(args.kv_heads // tp, 1) * args.head_dim * size
    n = batch_tokens
    items = {
        "weights": rank_parameters(args, tp) * size,
        "kv_scoring": slot * (window + batch_tokens),
        "kv_generation": slot * max_batch * window if generation else 0,
        "activations": (WIDTH_BUFFERS * n * args.dim * 4 + FFN_BUFFERS * n * (args.ffn_dim // tp) * size
                        + n * (window + n) + LOGIT_BUFFERS * LOGIT_ROWS * (args.vocab_size // tp) * 4),
        "overhead": OVERHEAD_BYTES,
    }
    items["total"] = sum(items.values())
    return items


def generates(tasks: Sequence[str] | None) -> bool:
    """Whether any of `tasks` (None: unknown, so assume so) sends generation requests."""
    if tasks is None:
        return True
    from .tasks import get_task, names
    from .tasks.base import GenerationTask

    chosen = names() if tuple(tasks) == ("all",) else tasks
    return any(isinstance(get_task(t), GenerationTask) for t in chosen)


def plan_memory(model: str | ModelArgs, gpus: int, gpu_memory_gb: float, tp: int | None = None,
                batch_tokens: int | None = None, window: int | None = None, dtype: str = "bfloat16",
                max_batch: int = RunConfig.max_batch, tasks: Sequence[str] | None = None) -> dict:
    """The memory one rank needs and whether it fits in gpu_memory_gb (GiB, as nvidia-smi's
    80 GB H100 has 80 GiB); tp None chooses the smallest tensor-parallel size that fits.
    tasks: the run's tasks; the generation cache is counted only if one of them generates
    (None: assume one does). `max_batch_fits` is the largest --max-batch that fits at the
    chosen tp (None without generation; 0 when not even one row fits)."""
    label, args = model_args(model)
    generation = generates(tasks)
    batch_tokens = batch_tokens or default_batch_tokens(args)
    if gpus < 1 or gpu_memory_gb <= 0:
        raise UserError(f"--gpus {gpus} and --gpu-memory {gpu_memory_gb} must be positive")
    if dtype not in BYTES_PER_PARAM:
        raise UserError(f"--dtype {dtype!r}: use one of {', '.join(BYTES_PER_PARAM)}")
    if batch_tokens < 1 or max_batch < 1:
        raise UserError(f"--batch-tokens {batch_tokens} and --max-batch {max_batch} must be at least 1")
    window = window or args.max_seq_len
    args = replace(args, max_seq_len=window)
    sizes = valid_tp(args, gpus)
    if tp is not None and tp not in sizes:
        raise UserError(f"--tp {tp} must divide --gpus {gpus} and split the model evenly; "
                        f"use one of {', '.join(map(str, sizes))}")
    budget = gpu_memory_gb * GIB
    options = {t: rank_memory(args, t, dtype, batch_tokens, window, max_batch, generation) for t in sizes}
    if tp is not None:
        chosen, how = tp, "given"
    else:
        fitting = [t for t in sizes if options[t]["total"] <= budget]
        chosen, how = (fitting[0], "smallest that fits") if fitting else (sizes[-1], "largest possible; none fits")
    per_rank = options[chosen]
    max_batch_fits = None
    if generation:
        row = rank_memory(args, chosen, dtype, batch_tokens, window, 1)["kv_generation"]
        max_batch_fits = max(0, int((budget - (per_rank["total"] - per_rank["kv_generation"])) // row))
    return {
        "model": label, "parameters": rank_parameters(args, 1), "dtype": dtype, "gpus": gpus,
        "gpu_memory_gib": gpu_memory_gb, "tp": chosen, "dp": gpus // chosen, "chosen": how,
        "window": window, "batch_tokens": batch_tokens, "max_batch": max_batch,
        "per_rank": per_rank, "fits": per_rank["total"] <= budget, "generation": generation,
        "tasks": list(tasks) if tasks is not None else None, "max_batch_fits": max_batch_fits,
        "alternatives": [{"tp": t, "total": o["total"], "fits": o["total"] <= budget} for t, o in options.items()],
    }


def format_plan(report: dict) -> str:
    r, per = report, report["per_rank"]
    rows = [
        ("weights", per["weights"], ""),
        ("KV cache, scoring", per["kv_scoring"], f"1 row x {r['window'] + r['batch_tokens']} slots"),
        ("KV cache, generation", per["kv_generation"], f"{r['max_batch']} rows x {r['window']} slots" if r["generation"]
         else f"none: no generation task among {', '.join(r['tasks'] or [])}"),
        ("activations", per["activations"], f"{r['batch_tokens']} tokens per forward"),
        ("overhead", per["overhead"], "CUDA context, workspaces"),
        ("total", per["total"], f"of {r['gpu_memory_gib']:g} GiB: " + ("fits" if r["fits"] else "does NOT fit")),
    ]
    lines = [
        f"{r['model']}: {r['parameters'] / 1e9:.1f}B parameters in {r['dtype']}, "
        f"{r['gpus']} GPU{'s' * (r['gpus'] > 1)} of {r['gpu_memory_gib']:g} GiB",
        f"tensor parallel {r['tp']} ({r['chosen']}) x data parallel {r['dp']}",
        "per rank:",
        *(f"  {name:<22}{n / GIB:8.2f} GiB  {note}".rstrip() for name, n, note in rows),
    ]
    others = [f"tp {a['tp']}: {a['total'] / GIB:.1f} GiB{'' if a['fits'] else ' (does not fit)'}"
              for a in r["alternatives"] if a["tp"] != r["tp"]]
    if others:
        lines.append("other sizes: " + ", ".join(others))
    if r["tasks"] is None:
        lines.append("(no --tasks given: a generation task is assumed; e.g. --tasks mmlu plans a scoring-only run)")
    if r["max_batch_fits"] is not None:
        lines.append(f"largest --max-batch that fits: {r['max_batch_fits']}" if r["max_batch_fits"]
                     else "largest --max-batch that fits: none (not even one generation row)")
    if not r["fits"]:
        lines.append("to fit: more GPUs, " + ("a smaller --max-batch (generation's KV cache), " if r["generation"] else "")
                     + "or a smaller --batch-tokens")
    return "\n".join(lines)


def cmd_plan_text(model: str, gpus: int, gpu_memory: float, tp: int | None = None, batch_tokens: int | None = None,
                  max_batch: int = RunConfig.max_batch, window: int | None = None, dtype: str = "bfloat16",
                  tasks: Sequence[str] | None = None) -> str:
    """What `llama-eval plan` prints."""
    return format_plan(plan_memory(model, gpus, gpu_memory, tp, batch_tokens, window, dtype, max_batch, tasks))
