#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py says what it measures). Never hangs: every stage runs
# in a child process with its own time limit, and the whole run is capped at 8 minutes here.
# JSON lines go to stdout and to $OUT/gpu_check.jsonl (or /tmp/gpu_check/).
#   bash benchmarks/prepare_gpu_carry.sh    # once, where ../shared/data exists: real tokenizer + MMLU
#   bash benchmarks/gpu_check.sh            # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run  # every stage on the CPU with a small model
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
if [[ " $* " != *" --dry-run "* ]]; then
    timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
timeout -k 10 480 python3 benchmarks/gpu_check.py "$@" | tee "$out/gpu_check.jsonl"
status=${PIPESTATUS[0]}
[[ $status == 124 ]] && echo '{"stage": "driver", "status": "timeout", "s": 480}'
exit $status
