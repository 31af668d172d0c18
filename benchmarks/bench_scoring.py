"""Log-likelihood scoring: llama-eval's prefix-tree scorer against the Hugging Face recipe.

Both sides build the same random weights (same seed) and score the same token ids, each in a
fresh child process so that peak memory is its own. One JSON line per
workload: requests, tokens each side ran, seconds, tokens/s (of the naive token count, so the
two rates are comparable), speed ratio, peak memory, and the largest log-prob difference.

    python benchmarks/bench_scoring.py                       # CPU, small model
    python benchmarks/bench_scoring.py --size 7b --device cuda --scale 8
    python benchmarks/bench_scoring.py --workloads mmlu --attention dense   # the scorer's options

Our side also reports its model FLOP rate (2 x the transformer blocks' parameters per token
run, plus 2 x width x vocabulary per position whose logits were computed; attention scores
not counted) and that rate as a share of this device's own rate on a plain matrix product.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import time

import torch

import workloads  # beside this script, which Python puts first on the import path

from llama_eval.engine.runner import use_compile
from llama_eval.engine.scoring import Scorer
from llama_eval.model.tokenizer import Tokenizer



def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(fn, device: str):
    """(result, seconds, peak memory in MB above the start) of fn().

    On CPU the peak is the process's peak resident size, so each side runs in a fresh child.
    """
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    seconds = time.perf_counter() - t
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return out, seconds, peak


def matmul_tflops(device: str, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """The best rate of an n x n matrix product on this device, in TFLOP/s."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e12


def model_flops(model, stats) -> float:
    """FLOPs of the matrix products the scorer ran (see the module docstring)."""
    blocks = sum(p.numel() for p in model.layers.parameters())
    a = model.args
    return 2 * blocks * stats.tokens_run + 2 * a.dim * a.vocab_size * stats.logit_rows


def run_side(args, name: str, side: str) -> tuple[dict, list[float]]:
    """Build the model and the workload, run one side; (figures, log-probs)."""
    device, dtype = args.device, getattr(torch, args.dtype)
    tok = Tokenizer(args.tokenizer)
    model = workloads.random_model(args.size, max(args.vocab, tok.vocab_size), device, dtype)
    s = args.scale
    reqs = {"mmlu": lambda: workloads.mmlu(subjects=2, questions=8 * s),
            "hellaswag": lambda: workloads.hellaswag(questions=16 * s),
            "boolq": lambda: workloads.boolq(questions=8 * s),
            "long_context": lambda: workloads.long_context(questions=4 * s)}[name]()
    if side == "ours":
        model.compile_elementwise(use_compile(None, device))  # as `llama-eval run` would: on with CUDA
        options = dict(batch_tokens=args.batch_tokens, attention=args.attention)
        Scorer(model, tok, **options).loglikelihood(reqs[:8])  # warm-up
        scorer = Scorer(model, tok, **options)
        out, sec, peak = measure(lambda: scorer.loglikelihood(reqs), device)
        st = scorer.stats
        rate, matmul = model_flops(model, st) / sec / 1e12, matmul_tflops(device, dtype)
        return {"requests": len(reqs), "tokens_naive": st.tokens_naive, "ours_tokens_run": st.tokens_run,
                "ours_attention": scorer.attention, "ours_s": round(sec, 3), "ours_peak_mb": round(peak),
                "ours_model_tflops": round(rate, 4), "matmul_tflops": round(matmul, 4),
                "share_of_matmul": round(rate / matmul, 3)}, [r.logprob for r in out]
    hf = workloads.to_hf(model, device, dtype)
    workloads.hf_recipe(hf, tok, reqs[:8], args.hf_rows, device)
    (out, hf_tokens), sec, peak = measure(lambda: workloads.hf_recipe(hf, tok, reqs, args.hf_rows, device), device)
    return {"hf_tokens_run": hf_tokens, "hf_s": round(sec, 3), "hf_peak_mb": round(peak)}, out


def _child(args, name, side, queue) -> None:
    queue.put(run_side(args, name, side))


def run_workload(args, name: str) -> dict:
    row = {"workload": name, "size": args.size, "device": args.device, "dtype": args.dtype}
    ctx = mp.get_context("spawn")
    logprobs = {}
    for side in args.sides.split(","):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(args, name, side, queue))
        proc.start()
        figures, logprobs[side] = queue.get()
        proc.join()
        row.update(figures)
    row["ours_tok_s"] = round(row["tokens_naive"] / row["ours_s"])
    if "hf" in logprobs:
        row["hf_tok_s"] = round(row["tokens_naive"] / row["hf_s"])
        row["speedup"] = round(row["hf_s"] / row["ours_s"], 2)
        row["max_abs_logprob_diff"] = max(abs(a - b) for a, b in zip(logprobs["ours"], logprobs["hf"]))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small", choices=list(workloads.SIZES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--tokenizer", default=str(workloads.DEFAULT_TOKENIZER))
    p.add_argument("--vocab", type=int, default=32000, help="output size of the random model")
    p.add_argument("--workloads", default="mmlu,hellaswag,boolq,long_context")
    p.add_argument("--scale", type=int, default=1, help="multiply the number of questions")
    p.add_argument("--batch-tokens", type=int, default=None, help="default: the scorer's, twice the model width")
    p.add_argument("--sides", default="ours,hf", choices=["ours,hf", "ours"], help="ours alone skips the recipe")
    p.add_argument("--attention", default=None, help="the scorer's attention (flex, blocks, dense); default: its own")
    p.add_argument("--hf-rows", type=int, default=16, help="rows per batch in the Hugging Face recipe")
    args = p.parse_args()
    torch.manual_seed(0)
    for name in args.workloads.split(","):
        print(json.dumps(run_workload(args, name)), flush=True)


if __name__ == "__main__":
    main()
