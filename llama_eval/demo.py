"""`llama-eval demo`: every task end to end, offline, on a tiny random-weight model.

The bundled documents (llama_eval/data/demo, a few made-up documents per task in each
benchmark's release format) and the bundled 320-piece tokenizer stand in for the real data
and weights, so the whole pipeline runs (requests, prefix-tree scoring, generation, grading,
result files, paper tables) in seconds with no download. The scores are chance level.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from . import reporting
from .cli import print_results
from .evaluator import RunConfig, evaluate
from .tasks import TASKS, get_task

DEMO_DATA = Path(__file__).resolve().parent / "data" / "demo"
DEMO_TOKENIZER = DEMO_DATA / "tokenizer.model"


def demo_config(output: Path, allow_code_execution: bool = False) -> RunConfig:
    tasks = tuple(n for n in TASKS if allow_code_execution or not get_task(n).needs_code_execution)
    return RunConfig(
        model="random:tiny", tokenizer=str(DEMO_TOKENIZER), tasks=tasks, data_dir=str(DEMO_DATA),
        output=str(output), device="cpu", dtype="float32", allow_code_execution=allow_code_execution,
        # Few samples keep it quick: maj1@4 for GSM8K, pass@1 from 4 samples for the code tasks.
        samples=4, options=("humaneval_k=1", "mbpp_k=1"),
        use_cache=False,
        # The demo's question-answering pools are too small for the paper's 5 and 64 shots.
        task_shots=(("nq_open", (0, 1)), ("triviaqa", (0, 1))),
    )


def run_demo(output: Path, allow_code_execution: bool = False) -> int:
    start = time.monotonic()
    with warnings.catch_warnings():
        # The bundled documents are not the release files, and MMLU has only a few subjects.
        warnings.simplefilter("ignore")
        outcome = evaluate(demo_config(output, allow_code_execution))
    print_results(reporting.load_run(outcome.run_dir))
    skipped = "" if allow_code_execution else (
        "HumanEval and MBPP were left out: they run model-written code; add --allow-code-execution to include them.\n")
    print(
        f"Demo finished in {time.monotonic() - start:.1f} s; files in {outcome.run_dir}.\n"
        "These numbers come from a random-weight model on a handful of made-up documents: they are\n"
        "chance level and say nothing about any real model. They show that every step runs.\n"
        f"{skipped}"
        "Next: put Meta's checkpoints under $LLAMA_EVAL_MODELS (7B, 13B, ...) and run, for example,\n"
        "  llama-eval run --model 7b --tasks mmlu,piqa --data-dir ../shared/data\n"
        "(without --data-dir the datasets come from the Hugging Face hub)."
    )
    return 0
