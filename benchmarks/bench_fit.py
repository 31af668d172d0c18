"""Tokens the scorer runs for a task on the real release files, with over-long few-shot prompts
cut from the left by the engine (before) or shortened by dropping whole shots (after).

Uses the scorer's own planning (tokenisation of each pair, the window cut, the prefix trie);
no model runs, so the numbers are exact and model-independent. Prints one JSON line per mode:

    PYTHONPATH=$PWD python benchmarks/bench_fit.py --task mmlu --data-dir ../shared/data \\
        --tokenizer ../shared/data/tokenizer/tokenizer.model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from llama_eval.config import RunConfig
from llama_eval.engine.scoring import build_trie
from llama_eval.engine.window import WindowFit
from llama_eval.evaluator import fit_to_window, plan, settings_of
from llama_eval.model.tokenizer import Tokenizer
from llama_eval.requests import LoglikelihoodRequest


def scorer_plan(requests: list[LoglikelihoodRequest], tok: Tokenizer, window: int) -> dict:
    """What Scorer.iter_loglikelihood would run for `requests` (distinct ones, as the evaluator sends)."""
    unique = list(dict.fromkeys(requests))
    seqs, naive, cut = [], 0, 0
    for ctx, cont in tok.encode_pairs([(r.context, r.continuation) for r in unique]):
        full = ctx + cont
        if len(full) - 1 > window:
            full, cut = full[-(window + 1):], cut + 1
        seqs.append(full)
        naive += len(full) - 1
    trie, _ = build_trie(seqs)
    return {"requests": len(unique), "cut_from_left": cut, "tokens_one_row_per_request": naive,
            "tokens_run": int(trie.has_child.sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="mmlu")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--window", type=int, default=2048)
    args = p.parse_args()
    tok = Tokenizer(args.tokenizer)
    config = RunConfig(model="random:tiny", tasks=(args.task,), data_dir=args.data_dir)
    settings = settings_of(config)
    runs = plan(config, settings)
    for mode in ("cut_from_left", "drop_shots"):
        start = time.monotonic()
        if mode == "drop_shots":
            fit_to_window(runs, dataclasses.replace(settings, fits=WindowFit(tok, args.window)), None, args.window)
        reqs = [r for run in runs for reqs in run.requests for r in reqs if isinstance(r, LoglikelihoodRequest)]
        out = {"task": args.task, "mode": mode, "window": args.window, **scorer_plan(reqs, tok, args.window),
               "documents_with_fewer_shots": sum(u < run.shots for run in runs for u in run.shots_used),
               "seconds": round(time.monotonic() - start, 1)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
