#!/usr/bin/env bash
# Copy the real LLaMA tokenizer and the MMLU release files from ../shared/data into .gpu_carry/
# (git-ignored), the folder benchmarks/gpu_check.py reads on a machine where ../shared is absent.
# Carry it with the checkout: the device tool's `carry` takes [".gpu_carry"].
set -euo pipefail
cd "$(dirname "$0")/.."
src="${1:-../shared/data}"
[[ -f "$src/tokenizer/tokenizer.model" && -d "$src/mmlu/test" ]] || { echo "no tokenizer or MMLU files under $src" >&2; exit 2; }
mkdir -p .gpu_carry/data/mmlu
cp "$src/tokenizer/tokenizer.model" .gpu_carry/tokenizer.model
cp -r "$src/mmlu/dev" "$src/mmlu/test" .gpu_carry/data/mmlu/
du -sh .gpu_carry
