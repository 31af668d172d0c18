"""Scoring with the elementwise work compiled (`--compile`) against eager, same model, same requests.

One JSON line per workload: the best of --repeats passes each way (wall and process CPU
seconds; passes alternate between the two so drift on a shared machine hits both), the
speed-up, the largest log-prob difference, and the compile time, measured apart: the first
compiled pass minus the best one. Inductor's on-disk caches are switched off in this process
(unless --warm-caches), so that figure is a cold compile.

    python benchmarks/bench_compile.py                      # CPU, small model
    python benchmarks/bench_compile.py --device cuda --size 7b --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--vocab", type=int, default=32000, help="output size of the random model")
    p.add_argument("--workloads", default="mmlu,hellaswag,boolq,long_context")
    p.add_argument("--scale", type=int, default=1, help="multiply the number of questions")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's, one per core)")
    p.add_argument("--warm-caches", action="store_true", help="let Inductor reuse its on-disk caches")
    args = p.parse_args()
    if not args.warm_caches:
        os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"  # read when Inductor is first imported

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import workloads  # beside this script, which Python puts first on the import path
    from llama_eval.engine.scoring import Scorer
    from llama_eval.model.tokenizer import Tokenizer

    tok = Tokenizer(workloads.DEFAULT_TOKENIZER)
    model = workloads.random_model(args.size, max(args.vocab, tok.vocab_size), args.device, getattr(torch, args.dtype))
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    s = args.scale
    for name in args.workloads.split(","):
        reqs = {"mmlu": lambda: workloads.mmlu(subjects=2, questions=8 * s),
                "hellaswag": lambda: workloads.hellaswag(questions=16 * s),
                "boolq": lambda: workloads.boolq(questions=8 * s),
                "long_context": lambda: workloads.long_context(questions=4 * s)}[name]()

        def timed(compiled: bool):
            model.compile_elementwise(compiled)
            scorer = Scorer(model, tok)
            sync()
            wall, cpu = time.perf_counter(), time.process_time()
            out = scorer.loglikelihood(reqs)
            sync()
            return out, time.perf_counter() - wall, time.process_time() - cpu, scorer

        timed(False)  # warm-up (allocator, thread pool)
        _, first, _, _ = timed(True)
        best = {False: (float("inf"), 0.0), True: (float("inf"), 0.0)}
        results = {}
        for _ in range(args.repeats):
            for compiled in (False, True):
                results[compiled], wall, cpu, scorer = timed(compiled)
                best[compiled] = min(best[compiled], (wall, cpu))
        diff = max(abs(a.logprob - b.logprob) for a, b in zip(results[False], results[True]))
        (eager_s, eager_cpu), (comp_s, comp_cpu) = best[False], best[True]
        print(json.dumps({
            "workload": name, "size": args.size, "device": args.device, "dtype": args.dtype,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "requests": len(reqs), "tokens_run": scorer.stats.tokens_run, "forwards": scorer.stats.forwards,
            "eager_s": round(eager_s, 3), "compiled_s": round(comp_s, 3), "speedup": round(eager_s / comp_s, 2),
            "eager_cpu_s": round(eager_cpu, 3), "compiled_cpu_s": round(comp_cpu, 3),
            "compile_s": round(first - comp_s, 2), "max_abs_logprob_diff": diff,
            "inductor_caches": "warm" if args.warm_caches else "off",
        }), flush=True)


if __name__ == "__main__":
    main()
