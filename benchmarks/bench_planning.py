"""Host work before the first scoring forward: load a task's documents and build its requests,
tokenise them, build the prefix trie. One JSON line per phase with seconds and the process's
peak resident memory so far; no model is built.

    python benchmarks/bench_planning.py --tasks mmlu --data-dir ../shared/data \
        --tokenizer ../shared/data/tokenizer/tokenizer.model [--dp-pieces 128]

Run it against another checkout with PYTHONPATH=that-checkout to compare before and after
(the tokenise phase is what that checkout's scorer does; the window is 2,048 tokens).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from llama_eval.config import RunConfig
from llama_eval.engine import scoring
from llama_eval.engine.scoring import build_trie
from llama_eval.evaluator import plan, settings_of
from llama_eval.model.tokenizer import Tokenizer
from llama_eval.requests import LoglikelihoodRequest


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="mmlu")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--tokenizer", default="../shared/data/tokenizer/tokenizer.model")
    p.add_argument("--dp-pieces", type=int, default=0,
                   help="also time the data-parallel split into this many pieces (ranks x rounds)")
    args = p.parse_args()
    print(json.dumps({"phase": "imports", "peak_rss_mb": peak_mb()}), flush=True)

    t = time.perf_counter()
    config = RunConfig(model="random:tiny", tasks=tuple(args.tasks.split(",")), data_dir=args.data_dir)
    runs = plan(config, settings_of(config))
    reqs = list(dict.fromkeys(r for run in runs for doc in run.requests for r in doc
                              if isinstance(r, LoglikelihoodRequest)))
    total = time.perf_counter() - t
    print(json.dumps({"phase": "load", "s": round(total, 2), "requests": len(reqs), "peak_rss_mb": peak_mb()}),
          flush=True)

    tok = Tokenizer(args.tokenizer)
    t = time.perf_counter()
    if hasattr(scoring, "encode_requests"):  # this checkout's scorer: chunked, compact byte keys
        seqs = scoring.encode_requests(tok, reqs, 2048)[0]
        tokens = sum(len(k) // 4 for k in seqs)
    else:  # the scorer before it: every pair's token lists at once
        seqs = [ctx + cont for ctx, cont in tok.encode_pairs([(r.context, r.continuation) for r in reqs])]
        tokens = sum(map(len, seqs))
    s = time.perf_counter() - t
    total += s
    print(json.dumps({"phase": "tokenise", "s": round(s, 2), "tokens": tokens, "peak_rss_mb": peak_mb()}), flush=True)

    t = time.perf_counter()
    trie, _ = build_trie(seqs)
    s = time.perf_counter() - t
    total += s
    print(json.dumps({"phase": "trie", "s": round(s, 2), "nodes": len(trie.token),
                      "nodes_with_children": int(trie.has_child.sum()), "peak_rss_mb": peak_mb()}), flush=True)
    print(json.dumps({"phase": "total", "s": round(total, 2), "peak_rss_mb": peak_mb()}), flush=True)

    if args.dp_pieces:  # what each torchrun rank does first: split the requests by token mass
        from llama_eval.parallel.data import split_requests

        del seqs, trie
        t, cpu = time.perf_counter(), time.process_time()
        split_requests(reqs, tok, args.dp_pieces)
        print(json.dumps({"phase": "data-parallel split", "pieces": args.dp_pieces, "s": round(time.perf_counter() - t, 2),
                          "cpu_s": round(time.process_time() - cpu, 2), "peak_rss_mb": peak_mb()}), flush=True)


if __name__ == "__main__":
    main()
