"""Decode-step forward with a shared prompt prefix read once (cascade) against every row read in full.

One forward of the model's layers (`Transformer.hidden`, no output layer) for one new token in
each of B cache rows whose first P slots hold the same header (copied, as the generator
copies a few-shot header) followed by each row's own slots: GSM8K-like is P = 768 (the 8
exemplars, about 800 tokens with the LLaMA tokenizer) and up to `own` = 256 slots of question
and answer per row. The two paths run alternately in one process (a shared machine's load
hits both alike) and the fastest of --repeats counts. `kv_slots` is what a step reads per
layer (the shared part once); `max_abs_diff` compares the two outputs.

    python benchmarks/bench_shared_prefix.py                          # CPU, `small` model
    python benchmarks/bench_shared_prefix.py --size 7b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import workloads  # beside this script, which Python puts first on the import path


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small", choices=list(workloads.SIZES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batches", default="8,64")
    p.add_argument("--prefix", type=int, default=768, help="shared slots P")
    p.add_argument("--own", type=int, default=256, help="own slots per row past the prefix (the bucket)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = args.device, getattr(torch, args.dtype)
    model = workloads.random_model(args.size, 32000, device, dtype)
    P, S = args.prefix, args.prefix + args.own
    gen = torch.Generator(device="cpu").manual_seed(0)
    for B in (int(b) for b in args.batches.split(",")):
        cache = model.new_cache(B, S + 1)
        one = model.new_cache(1, S + 1)
        header = torch.randint(0, 32000, (1, P), generator=gen).to(device)
        pos = torch.arange(P, device=device)
        slots = torch.arange(S + 1, device=device)
        model.hidden(header, pos, mask=(slots <= pos[:, None])[None, None], cache=one, slots=pos, kv_len=S + 1)
        cache.copy_rows(one, torch.zeros(B, dtype=torch.long, device=device), torch.arange(B, device=device), P)
        # Own keys: random values stand in for each row's question and answer (the step's cost
        # does not depend on them); rows sit at positions spread over the own bucket.
        cache.k[:, :, :, P:] = torch.randn_like(cache.k[:, :, :, P:])
        cache.v[:, :, :, P:] = torch.randn_like(cache.v[:, :, :, P:])
        positions = torch.randint(P, S, (B, 1), generator=gen).to(device)
        tokens = torch.randint(0, 32000, (B, 1), generator=gen).to(device)
        row = torch.zeros(1, dtype=torch.long, device=device)

        def full():
            mask = (slots[:S] <= positions)[:, None, None]
            return model.hidden(tokens, positions, mask=mask, cache=cache, slots=positions, kv_len=S)

        def shared():
            mask = (slots[P:S] <= positions)[:, None, None]
            return model.hidden(tokens, positions, mask=mask, cache=cache, slots=positions, kv_len=S,
                                shared_len=P, shared_row=row)

        best = {"full": float("inf"), "shared": float("inf")}
        outs = {}
        for i in range(args.repeats + 1):
            for name, fn in (("full", full), ("shared", shared)):
                _sync(device)
                t = time.perf_counter()
                outs[name] = fn()
                _sync(device)
                if i:  # the first round warms up
                    best[name] = min(best[name], time.perf_counter() - t)
        diff = (outs["full"].float() - outs["shared"].float()).abs().max().item()
        print(json.dumps({"size": args.size, "device": device, "dtype": args.dtype, "threads": torch.get_num_threads(),
                          "batch": B, "prefix": P, "own": args.own,
                          "full_ms": round(1e3 * best["full"], 2), "shared_ms": round(1e3 * best["shared"], 2),
                          "speedup": round(best["full"] / best["shared"], 2),
                          "full_kv_slots": B * S, "shared_kv_slots": P + B * args.own,
                          "max_abs_diff": diff}), flush=True)


if __name__ == "__main__":
    main()
