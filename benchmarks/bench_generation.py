"""Generation: llama-eval's Generator against transformers' `generate()` on the same weights.

Each side runs in its own child process (so peak memory is its own), on a random model
built from the same seed and, for Hugging Face, converted with `workloads.to_hf`. One JSON
line per workload:

- gsm8k: 8-shot prompts (a shared header of eight solved questions, then the question),
  greedy, answers of different lengths (each request's max_new_tokens stands in for where
  its stop string would fall). Ours: rows of `batch` refilled as answers end. The Hugging
  Face recipe is the usual one: requests sorted by prompt length, left-padded batches of
  `batch`, each batch generating until its longest answer is done. tokens/s counts the
  answers' tokens only.
- nq: NQ-like 1-shot prompts ("Answer these questions:", one Q/A pair, the question), greedy,
  short answers of different lengths; same recipes as gsm8k. nq64: the same with 64 shots
  (about 1,300 tokens with the LLaMA tokenizer: a window of 2,048 tokens needed).
- single: one request generating `single_tokens` new tokens (256 on the CPU) with the same
  `batch` rows available: a decode step should run one row, not the whole batch.
- decode-b1, decode-b64: B short prompts, greedy; ms per decode step is the time difference
  between generating N2 and N1 tokens divided by N2 - N1, so prompt processing cancels out.
  decode-fewshot-b8, decode-fewshot-b64: the same with B gsm8k-like 8-shot prompts (one
  header): what reading a shared header once per step (Generator(shared_prefix=True)) saves.

Shapes (SHAPES) are small on the CPU and GSM8K-sized on CUDA. Times are the fastest of
--repeats runs, after a warm-up at the same shape (which also captures our CUDA graphs).
EOS is disabled on both sides so that every row generates exactly the tokens asked for.
`agree` is the fraction of answers whose text is identical on both sides.

--cold: each side runs every workload once, without warm-up, in a fresh process, and
`*_process_s` is the wall time of that whole process (interpreter, imports, model and
tokenizer load, Hugging Face conversion, the workloads): speed as a user meets it.
`*_process_cpu_s` is that process's CPU time, which other work on a shared machine disturbs
less than wall time (with --threads 1; more threads add their spin-waits).
--model PATH runs a real checkpoint (e.g. llama2.c's stories260K with --tokenizer
tok512.model) instead of a random model.

    python benchmarks/bench_generation.py                       # CPU, small model, < 1 minute
    python benchmarks/bench_generation.py --size 7b --device cuda --dtype bfloat16
    python benchmarks/bench_generation.py --model ../shared/data/model/stories260K/stories260K.bin \
        --tokenizer ../shared/data/model/stories260K/tok512.model --workloads single,gsm8k,nq --cold
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import multiprocessing as mp
import queue as queue_mod
import random
import resource
import time

import torch

import workloads  # beside this script, which Python puts first on the import path

from llama_eval.engine.generation import GenerationStats, Generator
from llama_eval.engine.runner import use_compile
from llama_eval.model.tokenizer import Tokenizer
from llama_eval.requests import GenerationRequest

SIZES = list(workloads.SIZES)

# Workload shapes per scale: CPU keeps the whole run under a minute; GPU is the real shape.
SHAPES = {
    "cpu": dict(shot_words=25, requests=16, batch=8, answer=(8, 24), steps=(8, 24), single_tokens=256,
                nq_requests=64, nq_answer=(2, 12)),
    "cuda": dict(shot_words=90, requests=128, batch=64, answer=(32, 256), steps=(32, 160), single_tokens=256,
                 nq_requests=512, nq_answer=(2, 12)),
}


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(workloads.WORDS) for _ in range(n))


def gsm8k_like(shape: dict, seed: int = 0) -> list[GenerationRequest]:
    """8-shot prompts with one shared header; answer lengths drawn from shape['answer']."""
    rng = random.Random(seed)
    n = shape["shot_words"]
    header = "".join(f"Question: {_words(rng, n // 3).capitalize()}?\n"
                     f"Answer: {_words(rng, 2 * n // 3).capitalize()}. The answer is {rng.randint(1, 99)}.\n\n"
                     for _ in range(8))
    lo, hi = shape["answer"]
    return [GenerationRequest(header + f"Question: {_words(rng, rng.randint(10, 40)).capitalize()}?\nAnswer:",
                              max_new_tokens=rng.randint(lo, hi)) for _ in range(shape["requests"])]


def nq_like(shape: dict, seed: int = 1, shots: int = 1) -> list[GenerationRequest]:
    """Open-domain QA prompts with `shots` Q/A pairs (one header for all); answer lengths drawn
    from shape['nq_answer']."""
    rng = random.Random(seed)
    lo, hi = shape["nq_answer"]
    header = "Answer these questions:\n" + "".join(f"Q: {_words(rng, 9)}?\nA: {_words(rng, 3)}\n" for _ in range(shots))
    return [GenerationRequest(header + f"Q: {_words(rng, rng.randint(6, 14))}?\nA:", max_new_tokens=rng.randint(lo, hi))
            for _ in range(shape["nq_requests"])]


def short_prompts(batch: int, new_tokens: int) -> list[GenerationRequest]:
    return [GenerationRequest(f"Question: who is the king of the river number {i}?\nAnswer:", max_new_tokens=new_tokens)
            for i in range(batch)]


def fewshot_prompts(shape: dict, batch: int, new_tokens: int) -> list[GenerationRequest]:
    """`batch` gsm8k-like 8-shot prompts (one header), each generating exactly new_tokens."""
    return [dataclasses.replace(r, max_new_tokens=new_tokens) for r in gsm8k_like(dict(shape, requests=batch))]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn, device: str, repeats: int):
    """(result, seconds, peak MB) of fn(): the fastest of `repeats` runs (a shared machine's
    noise only ever adds time); peak memory above the start on CUDA, or on the CPU the growth
    of the process's peak resident size (0 when it stays below an earlier peak)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return out, best, peak


def cache_len(tok, reqs: list[GenerationRequest], window: int) -> int:
    """Cache slots for a workload: its longest prompt + answer, rounded up to 64, within the window."""
    longest = max(len(tok.encode(r.prompt, bos=True)) + r.max_new_tokens for r in reqs)
    return min(window, -(-longest // 64) * 64)


# --- our side ---------------------------------------------------------------------------------


class Ours:
    """Our generator, one per (batch, cache length), kept across calls: its CUDA graphs are
    captured once, as in a real run, not once per timed call."""

    def __init__(self, model, tok, shared_prefix: bool = True):
        self.model, self.tok, self.generators, self.shared_prefix = model, tok, {}, shared_prefix
        self.stats = GenerationStats()  # of the last call

    def __call__(self, reqs: list[GenerationRequest], batch: int, max_len: int) -> list[str]:
        key = (batch, max_len)
        if key not in self.generators:
            self.generators[key] = Generator(self.model, self.tok, max_batch=batch, max_len=max_len,
                                             shared_prefix=self.shared_prefix)
        gen = self.generators[key]
        gen.stats = GenerationStats()
        texts = [r.completions[0] for r in gen.generate(reqs)]
        self.stats = gen.stats
        return texts


# --- Hugging Face side ------------------------------------------------------------------------


@torch.inference_mode()
def hf_generate(hf, tok, reqs: list[GenerationRequest], batch: int, device: str) -> list[str]:
    """The usual recipe: sorted by prompt length, left-padded batches, one generate() per batch
    until its longest answer is done; answers cut to each request's length afterwards."""
    prompts = [tok.encode(r.prompt, bos=True) for r in reqs]
    order = sorted(range(len(reqs)), key=lambda i: -len(prompts[i]))
    out = [""] * len(reqs)
    for b in range(0, len(order), batch):
        idx = order[b : b + batch]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), tok.pad_id, dtype=torch.long)
        att = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            att[row, width - len(prompts[i]):] = 1
        new = hf.generate(input_ids=ids.to(device), attention_mask=att.to(device), do_sample=False,
                          max_new_tokens=max(reqs[i].max_new_tokens for i in idx), pad_token_id=tok.pad_id,
                          eos_token_id=None)[:, width:].tolist()
        for row, i in enumerate(idx):
            gen = new[row][: reqs[i].max_new_tokens]
            out[i] = tok.decode(prompts[i] + gen)[len(tok.decode(prompts[i])):]
    return out


# --- one side, all workloads, in a child process ------------------------------------------------


def load_model(args, device: str, dtype: torch.dtype):
    if args.model:
        from llama_eval.model.checkpoint import load_model as load

        model, _ = load(args.model, device=device, tokenizer=args.tokenizer)
        return model.to(dtype)
    tok = Tokenizer(args.tokenizer)
    return workloads.random_model(args.size, max(args.vocab, tok.vocab_size), device, dtype)


def run_side(args, side: str) -> dict:
    device, dtype = args.device, getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = Tokenizer(args.tokenizer)
    model = load_model(args, device, dtype)
    shape = SHAPES["cuda" if device.startswith("cuda") else "cpu"]
    window = model.args.max_seq_len
    if side == "ours":
        tok = copy.copy(tok)
        tok.eos_id = -1  # no EOS: every row generates exactly max_new_tokens
        model.compile_elementwise(use_compile(None, device))  # as `llama-eval run` would: on with CUDA
        run = Ours(model, tok, shared_prefix=not args.no_shared_prefix)
    else:
        hf = workloads.to_hf(model, device, dtype)
        del model

        def run(reqs, batch, max_len):
            return hf_generate(hf, tok, reqs, batch, device)

    figures: dict = {}
    repeats = 1 if args.cold else args.repeats
    if window < 1024:  # a small model's window (stories260K: 512) holds shorter few-shot headers
        shape = dict(shape, shot_words=8, single_tokens=min(shape["single_tokens"], window // 2))
    makers = {"gsm8k": lambda: gsm8k_like(shape), "nq": lambda: nq_like(shape),
              "nq64": lambda: nq_like(shape, shots=64),
                 "single": lambda: short_prompts(1, shape["single_tokens"])}
    for name, make in makers.items():
        if name not in args.workloads.split(","):
            continue
        reqs = make()
        batch = shape["batch"]  # for `single` too: one live row must not cost a batch's step
        max_len = window if name == "single" else cache_len(tok, reqs, window)
        if not args.cold:
            run(reqs[:batch], batch, max_len)  # warm-up at this shape (ours: captures graphs)
        texts, sec, peak = measure(lambda: run(reqs, batch, max_len), device, repeats)
        figures[name] = dict(texts=texts, s=sec, peak_mb=peak,
                             tokens=sum(r.max_new_tokens for r in reqs), requests=len(reqs), batch=batch)
        if side == "ours":
            figures[name].update(_work(run.stats))
    if args.cold:
        return figures
    n1, n2 = shape["steps"]
    for batch, kind in ((1, "short"), (64, "short"), (8, "fewshot"), (64, "fewshot")):
        name = f"decode-b{batch}" if kind == "short" else f"decode-fewshot-b{batch}"
        if name not in args.workloads.split(","):
            continue
        prompts = short_prompts if kind == "short" else lambda b, n: fewshot_prompts(shape, b, n)
        max_len = cache_len(tok, prompts(batch, n2), window)
        run(prompts(batch, n2), batch, max_len)  # warm-up at this batch size, every cache bucket
        _, t1, _ = measure(lambda: run(prompts(batch, n1), batch, max_len), device, repeats)
        _, t2, peak = measure(lambda: run(prompts(batch, n2), batch, max_len), device, repeats)
        figures[name] = dict(s=t2, peak_mb=peak, ms_per_step=1000 * (t2 - t1) / (n2 - n1),
                             tokens=batch * n2, requests=batch, batch=batch)
        if side == "ours":
            figures[name].update(_work(run.stats))
    return figures


def _work(stats: GenerationStats) -> dict:
    """Machine-independent work of our last run: decode steps, and cache slots (per layer)
    whose keys/values the steps read, a shared prefix counted once."""
    return dict(decode_steps=stats.decode_steps, shared_steps=stats.shared_steps, kv_slots=stats.decode_kv_slots,
                kv_live=stats.decode_kv_live)


def _child(args, side: str, queue) -> None:
    try:
        queue.put(run_side(args, side))
    except BaseException as exc:  # the parent must hear of it, or it waits on the queue forever
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of the child processes that have ended so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small", choices=SIZES)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--tokenizer", default=str(workloads.DEFAULT_TOKENIZER))
    p.add_argument("--vocab", type=int, default=32000, help="output size of the random model")
    p.add_argument("--workloads", default="gsm8k,nq,single,decode-b1,decode-b64")
    p.add_argument("--model", default="", help="a checkpoint to run instead of a random model")
    p.add_argument("--cold", action="store_true", help="one run per workload, no warm-up; time whole processes")
    p.add_argument("--timeout", type=float, default=3600, help="seconds a side may take")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the fastest counts")
    p.add_argument("--no-shared-prefix", action="store_true",
                   help="our decode steps read every row's whole prompt (Generator(shared_prefix=False))")
    p.add_argument("--sides", default="ours,hf", choices=["ours,hf", "ours"],
                   help="'ours' skips Hugging Face (before/after comparisons of our engine)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads (0: torch's default; 1 gives steadier numbers on a shared machine)")
    args = p.parse_args()
    sides, process_s, process_cpu_s = {}, {}, {}
    ctx = mp.get_context("spawn")
    for side in args.sides.split(","):
        queue = ctx.Queue()
        start, cpu_start = time.perf_counter(), _children_cpu_s()
        proc = ctx.Process(target=_child, args=(args, side, queue))
        proc.start()
        try:
            sides[side] = queue.get(timeout=args.timeout)
        except queue_mod.Empty:
            sides[side] = {"error": f"no result within {args.timeout} s"}
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
        process_s[side] = time.perf_counter() - start
        process_cpu_s[side] = _children_cpu_s() - cpu_start
        if "error" in sides[side] or proc.exitcode != 0:
            print(json.dumps({"side": side, "error": sides[side].get("error", f"exit code {proc.exitcode}")}), flush=True)
            raise SystemExit(1)
    for name, ours in sides["ours"].items():
        row = {"workload": name, "size": args.model or args.size, "device": args.device, "dtype": args.dtype,
               "threads": args.threads or torch.get_num_threads(), "shared_prefix": not args.no_shared_prefix,
               "requests": ours["requests"], "batch": ours["batch"], "new_tokens": ours["tokens"]}
        row.update({f"ours_{k}": ours[k] for k in ("decode_steps", "shared_steps", "kv_slots")})
        row["ours_kv_slots_per_step"] = round(ours["kv_slots"] / max(ours["decode_steps"], 1), 1)
        row["ours_kv_read_over_live"] = round(ours["kv_slots"] / max(ours["kv_live"], 1), 2)  # 1.0: no slot wasted
        if "hf" not in sides:
            row["ours_s"] = round(ours["s"], 3)
            if "ms_per_step" in ours:
                row["ours_ms_per_step"] = round(ours["ms_per_step"], 2)
            else:  # the whole run (prompts included) per decode step
                row["ours_ms_per_step_with_prefill"] = round(1e3 * ours["s"] / ours["decode_steps"], 2)
            if "texts" in ours:  # equal digests: the same completions (e.g. with and without --no-shared-prefix)
                row["ours_texts_sha1"] = hashlib.sha1("\0".join(ours["texts"]).encode()).hexdigest()[:12]
            print(json.dumps(row), flush=True)
            continue
        hf = sides["hf"][name]
        for label, fig in (("ours", ours), ("hf", hf)):
            row[f"{label}_s"] = round(fig["s"], 3)
            row[f"{label}_tok_s"] = round(fig["tokens"] / fig["s"], 1)
            row[f"{label}_peak_mb"] = round(fig["peak_mb"])
            if "ms_per_step" in fig:
                row[f"{label}_ms_per_step"] = round(fig["ms_per_step"], 2)
        row["speedup"] = round(hf["s"] / ours["s"], 2)
        if args.cold:
            for label in ("ours", "hf"):
                row[f"{label}_process_s"] = round(process_s[label], 2)
                row[f"{label}_process_cpu_s"] = round(process_cpu_s[label], 2)
            row["speedup_with_startup"] = round(process_s["hf"] / process_s["ours"], 2)
        if "texts" in ours:
            row["agree"] = round(sum(a == b for a, b in zip(ours["texts"], hf["texts"])) / len(ours["texts"]), 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
