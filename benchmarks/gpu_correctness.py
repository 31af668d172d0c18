"""CUDA against the CPU path, on the same random weights; one JSON line per check, exit 1 on failure.

- scoring: float32 on CUDA equals float32 on the CPU (log-probs within 1e-3, identical greedy
  flags); bfloat16 on CUDA picks the same choice as float32 on the CPU for nearly every question.
- generation: greedy completions on CUDA with CUDA graphs equal those without, and (float32)
  those of the CPU.
- the bf16 matrix-product rate of this GPU, the yardstick for the scorer's utilisation.

    python benchmarks/gpu_correctness.py            # needs a CUDA device
"""

from __future__ import annotations

import json
import sys

import torch

import workloads  # beside this script, which Python puts first on the import path

from llama_eval.engine.generation import Generator
from llama_eval.engine.scoring import Scorer
from llama_eval.model.tokenizer import Tokenizer
from llama_eval.requests import GenerationRequest

failures = 0


def report(check: str, ok: bool, **figures) -> None:
    global failures
    failures += not ok
    print(json.dumps({"check": check, "ok": ok, **figures}), flush=True)


def choices_agree(reqs, a, b, per_question: int = 4) -> float:
    """Fraction of questions whose best choice (by total log-prob) is the same under a and b."""
    same = 0
    for q in range(0, len(reqs), per_question):
        pick = [max(range(per_question), key=lambda i: r[q + i].logprob) for r in (a, b)]
        same += pick[0] == pick[1]
    return same / (len(reqs) // per_question)


def matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    x = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        x @ y
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        x @ y
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    tok = Tokenizer(workloads.DEFAULT_TOKENIZER)
    vocab = max(32000, tok.vocab_size)
    cpu = workloads.random_model("small", vocab, "cpu", torch.float32)
    gpu32 = workloads.random_model("small", vocab, "cpu", torch.float32).to("cuda")
    gpu16 = workloads.random_model("small", vocab, "cpu", torch.float32).to("cuda", torch.bfloat16)

    reqs = workloads.mmlu(subjects=2, questions=8) + workloads.hellaswag(questions=16)
    ref = Scorer(cpu, tok).loglikelihood(reqs)
    f32 = Scorer(gpu32, tok).loglikelihood(reqs)
    diff = max(abs(a.logprob - b.logprob) for a, b in zip(ref, f32))
    greedy_same = all(a.is_greedy == b.is_greedy for a, b in zip(ref, f32))
    report("scoring cuda float32 == cpu float32", diff < 1e-3 and greedy_same, max_abs_diff=diff)
    b16 = Scorer(gpu16, tok).loglikelihood(reqs)
    agree = choices_agree(reqs, ref, b16)
    report("scoring cuda bfloat16 picks the cpu's choices", agree >= 0.9, agreement=round(agree, 3),
           max_abs_diff=max(abs(a.logprob - b.logprob) for a, b in zip(ref, b16)))

    prompts = [GenerationRequest(r.context, ("\n",), max_new_tokens=24) for r in reqs[::16]]
    graphs = Generator(gpu32, tok, max_batch=8, use_cuda_graphs=True).generate(prompts)
    eager = Generator(gpu32, tok, max_batch=8, use_cuda_graphs=False).generate(prompts)
    on_cpu = Generator(cpu, tok, max_batch=8).generate(prompts)
    report("generation cuda graphs == eager", graphs == eager, requests=len(prompts))
    same = sum(a == b for a, b in zip(graphs, on_cpu)) / len(prompts)
    report("generation cuda float32 == cpu float32", same >= 0.9, agreement=round(same, 3))

    report("bf16 matmul rate", True, tflops=round(matmul_tflops(), 1), device=torch.cuda.get_device_name())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
