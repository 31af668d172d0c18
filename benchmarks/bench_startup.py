"""Start-up: seconds from a fresh interpreter to the first forward of `llama-eval run` on a small
model, next to the seconds `import torch` alone takes (issue 14.7 asks for both figures).

    python benchmarks/bench_startup.py --data-dir ../shared/data --tokenizer ../shared/data/tokenizer/tokenizer.model
    python benchmarks/bench_startup.py --model ../shared/data/model/stories260K/stories260K.bin \
        --tokenizer ../shared/data/model/stories260K/tok512.model

The first is random:tiny (built on the CPU, random weights); the second a real checkpoint,
built on the meta device and given its tensors, as every real model is. Each figure is the
fastest of --repeats fresh processes (noise on a shared machine only adds), each taken
on its own: beyond_torch_s is the least of the processes' differences. The *_cpu_s figures are
the same spans in CPU seconds of the process, which other work on a shared machine disturbs
less than wall time. `heavy` lists the
packages from HEAVY that were imported by the first forward (none is needed for it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

HEAVY = ("pandas", "datasets", "transformers", "sympy", "torch._dynamo", "safetensors", "matplotlib")

# Runs in the child: time `import torch`, then the CLI until the model's first forward.
CHILD = r"""
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import torch
t1, c1 = time.perf_counter(), time.process_time()
from llama_eval.model import llama

def first_forward(*a, **k):
    heavy = [m for m in HEAVY if m in sys.modules]
    print(json.dumps({"import_torch_s": t1 - t0, "to_first_forward_s": time.perf_counter() - t0,
                      "import_torch_cpu_s": c1 - c0, "beyond_torch_cpu_s": time.process_time() - c1, "heavy": heavy}),
          flush=True)
    raise SystemExit(0)

llama.Transformer.hidden = first_forward
from llama_eval import cli
cli.main(sys.argv[1:])
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="random:tiny")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--tokenizer", default="../shared/data/tokenizer/tokenizer.model")
    p.add_argument("--tasks", default="piqa")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    child = f"HEAVY = {HEAVY!r}\n{CHILD}"
    best: dict[str, float] = {}
    heavy: set[str] = set()
    with tempfile.TemporaryDirectory() as out_dir:
        cmd = [sys.executable, "-c", child, "run", "--model", args.model, "--tasks", args.tasks, "--limit", "8",
               "--data-dir", args.data_dir, "--tokenizer", args.tokenizer, "--no-cache", "--output", out_dir,
               "--overwrite"]
        for _ in range(args.repeats):
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            line = next((l for l in out.stdout.splitlines() if l.startswith("{")), None)
            if line is None:
                raise SystemExit(f"no figure from the child:\n{out.stdout}\n{out.stderr}")
            figures = json.loads(line)
            heavy.update(figures.pop("heavy"))
            figures["beyond_torch_s"] = figures["to_first_forward_s"] - figures["import_torch_s"]
            for k, v in figures.items():
                best[k] = min(best.get(k, float("inf")), v)
    print(json.dumps({"model": args.model, "tasks": args.tasks, **{k: round(v, 2) for k, v in best.items()},
                      "heavy": sorted(heavy)}), flush=True)


if __name__ == "__main__":
    main()
