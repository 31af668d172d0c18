"""Start-up: seconds from a fresh interpreter to the first forward of `llama-eval run` on a small
model, next to the seconds `import torch` alone takes (issue 14.7 asks for both figures).

    python benchmarks/bench_startup.py --data-dir ../shared/data --tokenizer ../shared/data/tokenizer/tokenizer.model

Each figure is the fastest of --repeats fresh processes (noise on a shared machine only adds).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

# Runs in the child: time `import torch`, then the CLI until the model's first forward.
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from llama_eval.model import llama

def first_forward(*a, **k):
    print(json.dumps({"import_torch_s": t1 - t0, "to_first_forward_s": time.perf_counter() - t0}), flush=True)
    raise SystemExit(0)

llama.Transformer.hidden = first_forward
from llama_eval import cli
cli.main(sys.argv[1:])
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--tokenizer", default="../shared/data/tokenizer/tokenizer.model")
    p.add_argument("--tasks", default="piqa")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cmd = [sys.executable, "-c", CHILD, "run", "--model", "random:tiny", "--tasks", args.tasks, "--limit", "8",
           "--data-dir", args.data_dir, "--tokenizer", args.tokenizer, "--no-cache", "--output", "/tmp/startup_run"]
    best: dict[str, float] = {}
    for _ in range(args.repeats):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        line = next((l for l in out.stdout.splitlines() if l.startswith("{")), None)
        if line is None:
            raise SystemExit(f"no figure from the child:\n{out.stdout}\n{out.stderr}")
        for k, v in json.loads(line).items():
            best[k] = min(best.get(k, float("inf")), v)
    best["beyond_torch_s"] = best["to_first_forward_s"] - best["import_torch_s"]
    print(json.dumps({"tasks": args.tasks, **{k: round(v, 2) for k, v in best.items()}}), flush=True)


if __name__ == "__main__":
    main()
