#!/usr/bin/env bash
# Everything GPU-related in one run (about 6-8 minutes on an H100):
#   1. CUDA against the CPU path (scoring float32/bfloat16, generation with and without CUDA graphs)
#      and the CUDA-graph test of the test suite;
#   2. the scoring and generation benchmarks on a LLaMA-7B-shaped random model in bfloat16,
#      ours against the Hugging Face recipe on the same weights;
#   3. a short table of the figures the engine issue sets targets for.
# JSON lines go to $OUT (or /tmp/gpu_check). Run from anywhere: bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || status=1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

echo "== correctness: CUDA against the CPU path"
python3 benchmarks/gpu_correctness.py | tee "$out/correctness.jsonl" || status=1
python3 -m pytest -q -p no:cacheprovider tests/test_generation.py -k cuda_graph || status=1

echo "== scoring benchmark (7B shape, bfloat16)"
python3 benchmarks/bench_scoring.py --size 7b --device cuda --dtype bfloat16 --scale 8 --hf-rows 16 \
    | tee "$out/scoring.jsonl" || status=1
echo "== generation benchmark (7B shape, bfloat16)"
python3 benchmarks/bench_generation.py --size 7b --device cuda --dtype bfloat16 --repeats 2 \
    | tee "$out/generation.jsonl" || status=1

echo "== summary"
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def rows(name):
    path = out / name
    return [json.loads(l) for l in path.read_text().splitlines() if l.startswith("{")] if path.exists() else []

peak = next((r["tflops"] for r in rows("correctness.jsonl") if r["check"] == "bf16 matmul rate"), None)
for r in rows("correctness.jsonl"):
    print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['check']}")
print(f"{'workload':<14}{'ours tok/s':>12}{'hf tok/s':>12}{'speedup':>9}{'TFLOP/s':>9}{'% of peak':>10}")
for r in rows("scoring.jsonl"):
    util = f"{100 * r['ours_model_tflops'] / peak:.0f}%" if peak else "-"
    print(f"{r['workload']:<14}{r['ours_tok_s']:>12}{r['hf_tok_s']:>12}{r['speedup']:>9}{r['ours_model_tflops']:>9}{util:>10}")
for r in rows("generation.jsonl"):
    step = f"  ms/step ours {r.get('ours_ms_per_step')} hf {r.get('hf_ms_per_step')}" if "ours_ms_per_step" in r else ""
    print(f"{r['workload']:<14}{r['ours_tok_s']:>12}{r['hf_tok_s']:>12}{r['speedup']:>9}{step}")
PY
exit $status
