"""The GPU check: one run that cannot hang and always prints what it has.

    python benchmarks/gpu_check.py              # on a CUDA machine, LLaMA-7B shape, bfloat16 (< 8 minutes on an H100)
    python benchmarks/gpu_check.py --dry-run    # every stage on the CPU with a small model (the test suite runs this)

The driver runs each stage in its own child process under a time limit, streams the child's
JSON lines, checks its exit code, and prints one {"stage", "status", "s"} line per stage
(status ok, failed or timeout), so a stage that raises or hangs costs its own budget and no
more. Stages (each prints JSON lines; "ok" is false where a check fails):

- env: torch / CUDA / cuDNN versions, the device, and the attention kernels each call site
  launches (scoring's packed forward, generation's prefill, the decode step, plain causal).
- correctness: scores of real MMLU requests packed into a prefix tree vs one row per request
  unshared vs one plain causal forward per request; the default attention (FlexAttention on
  CUDA) vs gathered key blocks and dense SDPA; greedy generation with CUDA graphs vs eager.
- forward: GPU time per scoring forward at the real MMLU shape (CUDA events, warm shapes),
  the model FLOP rate on tokens run (2 x non-embedding parameters per token) and its share
  of the device's measured matrix-product rate and of the nominal H100 peak (MFU); first
  with the elementwise work compiled (the CUDA default; in the dry run where a C++ compiler
  exists), then eager if the stage's time box has room, one line each.
- decode: ms per decode step at batch 1 and 64, short and few-shot prompts, with the floor of
  reading the weights and the live KV cache once per step at the measured copy bandwidth (a
  prompt prefix every row holds counted once, as the shared-prefix step reads it), and the
  cache slots the steps did read (their buckets included).
- mmlu: the whole real MMLU (every subject, 5-shot) end to end: host phases (load and plan,
  tokenise, trie) and the scoring run timed apart.

Every stage runs the model as `llama-eval run` would by default: the elementwise work compiled
on CUDA (so the decode stage's CUDA graphs hold the compiled kernels), eager on the CPU.

The real LLaMA tokenizer and MMLU files are read from .gpu_carry/ in the checkout (made by
benchmarks/prepare_gpu_carry.sh; git-ignored, carried to the device machine) or from
../shared/data; a 7B-shaped run refuses a tokenizer of fewer than 32,000 pieces (a demo
tokenizer makes every workload shorter and wrong). The dry run may fall back to the demo data.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / ".gpu_carry"
SHARED = REPO.parent / "shared" / "data"
DEMO = REPO / "llama_eval" / "data" / "demo"

# stage -> seconds it may take on the GPU (the sum stays under 8 minutes) and in the dry run
# (the first scoring call of each stage compiles FlexAttention's kernels: tens of seconds on CUDA)
STAGES = {"env": (50, 120), "correctness": (90, 120), "forward": (90, 120), "decode": (70, 120),
          "mmlu": (170, 180)}
H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM (NVIDIA's data sheet)


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


# --- inputs ------------------------------------------------------------------------------------


def data_root(dry: bool) -> Path:
    """A folder holding mmlu/{dev,test}/*.csv."""
    for root in (CARRY / "data", SHARED):
        if (root / "mmlu" / "test").is_dir():
            return root
    if dry:
        return DEMO
    raise SystemExit("no real MMLU files: run benchmarks/prepare_gpu_carry.sh first (copies them from ../shared/data)")


def tokenizer_path(dry: bool) -> Path:
    for path in (CARRY / "tokenizer.model", SHARED / "tokenizer" / "tokenizer.model"):
        if path.is_file():
            return path
    if dry:
        return DEMO / "tokenizer.model"
    raise SystemExit("no LLaMA tokenizer: run benchmarks/prepare_gpu_carry.sh first")


class Setup:
    """Device, dtype, model shape and inputs of this run."""

    def __init__(self, dry: bool):
        import torch

        from llama_eval.model.tokenizer import Tokenizer

        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        self.dtype = torch.float32 if dry else torch.bfloat16
        self.size = "tiny" if dry else "7b"
        self.tok = Tokenizer(tokenizer_path(dry))
        if not dry and self.tok.vocab_size < 32000:
            raise SystemExit(f"tokenizer {self.tok.path} has {self.tok.vocab_size} pieces; a 7B-shaped run needs "
                             "the real 32,000-piece LLaMA tokenizer (benchmarks/prepare_gpu_carry.sh)")
        self.data = data_root(dry)

    def model(self, **overrides):
        import workloads  # beside this script, which Python puts first on the import path
        from llama_eval.engine.runner import use_compile

        model = workloads.random_model(self.size, max(32000, self.tok.vocab_size), self.device, self.dtype,
                                       **overrides)
        return model.compile_elementwise(use_compile(None, self.device))  # the run's default

    def mmlu_requests(self, limit: int | None):
        from llama_eval.config import RunConfig
        from llama_eval.evaluator import plan, settings_of
        from llama_eval.requests import LoglikelihoodRequest

        config = RunConfig(model="random:tiny", tasks=("mmlu",), data_dir=str(self.data), limit=limit)
        runs = plan(config, settings_of(config))
        return list(dict.fromkeys(r for run in runs for doc in run.requests for r in doc
                                  if isinstance(r, LoglikelihoodRequest)))

    def sync(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()

    def peak_mb(self) -> float:
        import torch

        if self.device == "cuda":
            return round(torch.cuda.max_memory_allocated() / 2**20)
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def nonembedding_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("tok_embeddings", "output")))


def matmul_rate(s: Setup) -> float:
    """FLOP/s of a square matrix product in the run's dtype on its device."""
    import torch

    n = 1024 if s.dry else 8192
    x = torch.randn(n, n, device=s.device, dtype=s.dtype)
    for _ in range(2):
        x @ x
    s.sync()
    t = time.perf_counter()
    reps = 3 if s.dry else 20
    for _ in range(reps):
        x @ x
    s.sync()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def copy_bandwidth(s: Setup) -> float:
    """Bytes/s read by a device-to-device copy (read + write counted as two passes)."""
    import torch

    n = (64 if s.dry else 1024) * 2**20
    a = torch.empty(n, dtype=torch.uint8, device=s.device)
    b = torch.empty_like(a)
    b.copy_(a)
    s.sync()
    t = time.perf_counter()
    for _ in range(5):
        b.copy_(a)
    s.sync()
    return 2 * n * 5 / (time.perf_counter() - t)


# --- stages ------------------------------------------------------------------------------------


def stage_env(s: Setup) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from llama_eval.engine.generation import Generator
    from llama_eval.engine.scoring import Scorer
    from llama_eval.requests import GenerationRequest

    cuda = torch.cuda.is_available()
    emit(check="versions", ok=True, torch=torch.__version__, cuda=torch.version.cuda,
         cudnn=torch.backends.cudnn.version() if cuda else None,
         device=torch.cuda.get_device_name() if cuda else "cpu", tokenizer=str(s.tok.path),
         tokenizer_pieces=s.tok.vocab_size, data=str(s.data))
    model = s.model(n_layers=1) if not s.dry else s.model()
    model.compile_elementwise(False)  # attention kernels only: no compile time in this short stage
    reqs = s.mmlu_requests(2)[:4]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if s.device == "cuda" else [])
    words = ("attention", "fmha", "flash", "cudnn", "attn", "softmax")

    def kernels(fn) -> list[str]:
        fn()  # warm: first calls may pick other paths while autotuning
        s.sync()
        with profile(activities=activities) as prof:
            fn()
            s.sync()
        names = {e.key for e in prof.key_averages() if any(w in e.key.lower() for w in words)}
        return sorted(names)[:12]

    gen = Generator(model, s.tok, max_batch=2, use_cuda_graphs=False)
    sites = {
        "scoring packed forward (tree mask)": lambda: Scorer(model, s.tok).loglikelihood(reqs),
        "generation prefill + decode steps": lambda: gen.generate([GenerationRequest(reqs[0].context, max_new_tokens=4)]),
        "plain causal forward (no mask)": lambda: model(torch.zeros(1, 64, dtype=torch.long, device=s.device)),
    }
    for site, fn in sites.items():
        with torch.inference_mode():
            emit(check="attention kernels", ok=True, site=site, kernels=kernels(fn))


def stage_correctness(s: Setup) -> None:
    import torch

    from llama_eval.engine.generation import Generator
    from llama_eval.engine.scoring import Scorer
    from llama_eval.requests import GenerationRequest

    model = s.model()
    reqs = s.mmlu_requests(4)[: 8 if s.dry else 16]
    packed = Scorer(model, s.tok).loglikelihood(reqs)
    unshared = Scorer(model, s.tok, share_prefixes=False).loglikelihood(reqs)
    causal = []
    with torch.inference_mode():
        for r in reqs:  # one plain causal forward per request, no cache, no mask
            ctx, cont = s.tok.encode_pair(r.context, r.continuation)
            ids = torch.tensor([ctx + cont], device=s.device)
            logp = model(ids[:, :-1])[0].log_softmax(-1)
            pos = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1, device=s.device)
            causal.append(logp[pos, torch.tensor(cont, device=s.device)].sum().item())
    tol = 1e-3 if s.dtype == torch.float32 else 0.5  # bf16 keeps 8 bits: log-probs of ~-10 move by ~0.1

    def compare(name, a, b):
        diff = max(abs(x - y) for x, y in zip(a, b))
        picks = [max(range(q, q + 4), key=lambda i: v[i]) for v in (a, b) for q in range(0, len(reqs), 4)]
        half = len(picks) // 2
        agree = sum(x == y for x, y in zip(picks[:half], picks[half:])) / half
        emit(check=name, ok=diff <= tol, max_abs_diff=round(diff, 5), choice_agreement=agree, requests=len(reqs))

    compare("packed vs unshared", [r.logprob for r in packed], [r.logprob for r in unshared])
    default = Scorer(model, s.tok).attention  # flex on CUDA, gathered key blocks on the CPU
    for other in (a for a in ("blocks", "dense") if a != default):
        alt = Scorer(model, s.tok, attention=other).loglikelihood(reqs)
        compare(f"attention: {default} vs {other}", [r.logprob for r in packed], [r.logprob for r in alt])
    if can_compile(s):
        was = model.elementwise_compiled  # the run's default: compiled on CUDA, eager in the dry run
        other = Scorer(model.compile_elementwise(not was), s.tok).loglikelihood(reqs)
        model.compile_elementwise(was)
        compiled, eager = (packed, other) if was else (other, packed)
        compare("compiled vs eager elementwise", [r.logprob for r in compiled], [r.logprob for r in eager])
    compare("packed vs per-request causal", [r.logprob for r in packed], causal)
    prompts = [GenerationRequest(r.context, max_new_tokens=12) for r in reqs[::4]]
    eager = Generator(model, s.tok, max_batch=4, use_cuda_graphs=False).generate(prompts)
    if s.device == "cuda":
        graphs = Generator(model, s.tok, max_batch=4, use_cuda_graphs=True).generate(prompts)
        emit(check="greedy: cuda graphs vs eager", ok=graphs == eager, requests=len(prompts))
    else:
        alone = [Generator(model, s.tok, max_batch=1).generate([p])[0] for p in prompts]
        emit(check="greedy: batched vs one at a time (no graphs on cpu)", ok=alone == eager, requests=len(prompts))
    emit(check="peak memory", ok=True, peak_mb=s.peak_mb())


def can_compile(s: Setup) -> bool:
    """Whether this run can compile the elementwise work: on CUDA with Triton; in the dry run
    where a C++ compiler exists."""
    from llama_eval.engine.runner import cpp_compiler, use_compile

    return use_compile(None, s.device) or bool(s.dry and cpp_compiler())


def stage_forward(s: Setup) -> None:
    start = time.perf_counter()
    budget = STAGES["forward"][1 if s.dry else 0]
    model = s.model()
    # The dry run keeps 256 requests (the real files give 1,800 here): room for both modes on a slow CPU.
    reqs = s.mmlu_requests(8)[:256] if s.dry else s.mmlu_requests(600)
    rate = matmul_rate(s)
    modes = [True, False] if can_compile(s) else [False]
    last_wall = 0.0
    for compiled in modes:
        left = budget - (time.perf_counter() - start)
        if not compiled and modes[0] and left < 3 * last_wall + 15:  # warm pass + timed pass + margin
            emit(check="scoring forward at the MMLU shape", ok=True, elementwise="eager", skipped=True,
                 reason=f"{left:.0f} s left of the stage's {budget} s")
            break
        model.compile_elementwise(compiled)
        last_wall = time_forwards(s, model, reqs, rate, "compiled" if compiled else "eager")


def time_forwards(s: Setup, model, reqs, rate: float, label: str) -> float:
    """Score `reqs` twice (the first pass warms every shape: compiles, autotunes) and emit the
    second pass's per-forward device time; returns its wall seconds."""
    import torch

    from llama_eval.engine.scoring import Scorer

    scorer = Scorer(model, s.tok)
    times: list[float] = []
    inner = model.hidden

    def timed(*a, **k):  # GPU time of each forward, from CUDA events (wall time on the CPU)
        if s.device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = inner(*a, **k)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            out = inner(*a, **k)
            times.append(time.perf_counter() - t)
        return out

    t = time.perf_counter()
    scorer.loglikelihood(reqs)  # warm: every shape of this workload seen once
    s.sync()
    warm = time.perf_counter() - t
    model.hidden = timed
    before = scorer.stats.tokens_run
    t = time.perf_counter()
    scorer.loglikelihood(reqs)
    s.sync()
    wall = time.perf_counter() - t
    del model.hidden
    tokens = scorer.stats.tokens_run - before
    gpu = sum(times)
    flops = 2 * nonembedding_params(model) * tokens
    emit(check="scoring forward at the MMLU shape", ok=True, elementwise=label, forwards=len(times),
         tokens_run=tokens, batch_tokens=scorer.batch_tokens, ms_per_forward=round(1e3 * gpu / len(times), 2),
         device_s=round(gpu, 3), wall_s=round(wall, 3), warm_pass_s=round(warm, 2),
         model_tflops=round(flops / gpu / 1e12, 2), matmul_tflops=round(rate / 1e12, 1),
         share_of_matmul=round(flops / gpu / rate, 3),
         mfu_h100=round(flops / gpu / H100_BF16_PEAK, 3) if not s.dry else None, peak_mb=s.peak_mb())
    return wall


def stage_decode(s: Setup) -> None:
    import copy

    import torch

    from bench_generation import gsm8k_like, short_prompts, SHAPES
    from llama_eval.engine.generation import Generator
    from llama_eval.model.tokenizer import common_prefix
    from llama_eval.requests import GenerationRequest

    model = s.model()
    tok = copy.copy(s.tok)
    tok.eos_id = -1  # every row runs exactly the steps asked for
    n1, n2 = (2, 6) if s.dry else (16, 48)
    header = gsm8k_like(dict(SHAPES["cpu" if s.dry else "cuda"], requests=1))[0].prompt
    bandwidth = copy_bandwidth(s)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    a = model.args
    for batch in (1, 4) if s.dry else (1, 64):
        for kind in ("short", "few-shot"):
            def reqs(n):
                base = short_prompts(batch, n)
                if kind == "short":
                    return base
                return [GenerationRequest(header + f" {i}", max_new_tokens=n) for i in range(batch)]

            prompt_len = max(len(tok.encode(r.prompt, bos=True)) for r in reqs(n2))
            # Tokens every row holds alike (the few-shot header): the floor reads their keys once.
            ids = [tok.encode(r.prompt, bos=True)[:-1] for r in reqs(n2)]
            shared = min(common_prefix(ids[0], x) for x in ids) if batch > 1 else 0
            gen = Generator(model, tok, max_batch=batch, max_len=min(a.max_seq_len, prompt_len + n2 + 64))
            gen.generate(reqs(n2))  # warm-up: captures every graph these runs use
            t = [float("inf")] * 2
            for _ in range(1 if s.dry else 2):  # the faster of two runs: noise only adds time
                for j, n in enumerate((n1, n2)):
                    s.sync()
                    start = time.perf_counter()
                    gen.generate(reqs(n))
                    s.sync()
                    t[j] = min(t[j], time.perf_counter() - start)
            ms = 1e3 * (t[1] - t[0]) / (n2 - n1)
            slot_bytes = 2 * a.n_layers * a.kv_heads * a.head_dim * s.dtype.itemsize
            kv = slot_bytes * (shared + batch * (prompt_len - shared + n2))
            floor = 1e3 * (weights + kv) / bandwidth
            read = gen.stats.decode_kv_slots / max(gen.stats.decode_steps, 1)  # slots the steps read (buckets)
            # On a shared CPU (the dry run) timings can even come out negative: only the GPU's count.
            emit(check="decode step", ok=s.dry or ms > 0, batch=batch, prompt=kind, prompt_tokens=prompt_len,
                 ms_per_step=round(ms, 2), floor_ms=round(floor, 2), ratio_to_floor=round(ms / floor, 2),
                 shared_prompt_tokens=shared, kv_slots_per_step=round(read),
                 kv_gb_per_step=round(read * slot_bytes / 1e9, 3), shared_steps=gen.stats.shared_steps,
                 copy_gb_s=round(bandwidth / 1e9), peak_mb=s.peak_mb())
            del gen
            if s.device == "cuda":
                torch.cuda.empty_cache()


def stage_mmlu(s: Setup) -> None:
    from llama_eval.engine.scoring import Scorer, build_trie

    model = s.model()
    t = time.perf_counter()
    reqs = s.mmlu_requests(8 if s.dry else None)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    pairs = s.tok.encode_pairs([(r.context, r.continuation) for r in reqs])
    tokenise_s = time.perf_counter() - t
    t = time.perf_counter()
    build_trie([c + x for c, x in pairs])
    trie_s = time.perf_counter() - t
    del pairs
    scorer = Scorer(model, s.tok)
    s.sync()
    t = time.perf_counter()
    results = scorer.loglikelihood(reqs)
    s.sync()
    score_s = time.perf_counter() - t
    st = scorer.stats
    emit(check="full MMLU end to end", ok=len(results) == len(reqs), requests=len(reqs), tokens_run=st.tokens_run,
         forwards=st.forwards, truncated=st.truncated, load_and_plan_s=round(load_s, 2),
         tokenise_s=round(tokenise_s, 2), trie_s=round(trie_s, 2), scoring_s=round(score_s, 2),
         scoring_minus_host_s=round(score_s - tokenise_s - trie_s, 2),
         total_s=round(load_s + score_s, 2), peak_mb=s.peak_mb())


# --- driver ------------------------------------------------------------------------------------


def run_stage(name: str, dry: bool, limit: float) -> dict:
    """Run one stage in a child process under `limit` seconds, echoing its JSON lines."""
    cmd = [sys.executable, __file__, "--stage", name] + (["--dry-run"] if dry else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "benchmarks"),
                                                         os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda: [print(l, end="", flush=True) or lines.append(l) for l in proc.stdout]),
               threading.Thread(target=lambda: err.extend(proc.stderr))]
    for r in readers:
        r.start()
    try:
        code = proc.wait(timeout=limit)
        status = "ok" if code == 0 else "failed"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code, status = None, "timeout"
    for r in readers:
        r.join(timeout=10)
    failed_checks = sum(1 for l in lines if l.startswith("{") and json.loads(l).get("ok") is False)
    if status == "ok" and failed_checks:
        status = "failed"
    result = {"stage": name, "status": status, "exit_code": code, "s": round(time.perf_counter() - start, 1),
              "failed_checks": failed_checks}
    if status != "ok":
        result["stderr_tail"] = "".join(err)[-1500:]
    emit(**result)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="every stage on the CPU with a small model")
    p.add_argument("--stage", choices=list(STAGES), help="run one stage in this process (the driver's child)")
    p.add_argument("--stages", default=",".join(STAGES), help="stages the driver runs, in order")
    args = p.parse_args()
    if args.stage:
        globals()[f"stage_{args.stage}"](Setup(args.dry_run))
        return 0
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            emit(stage="driver", status="failed", error="no CUDA device; use --dry-run on a CPU")
            return 2
    results = [run_stage(name, args.dry_run, STAGES[name][1 if args.dry_run else 0])
               for name in args.stages.split(",")]
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
