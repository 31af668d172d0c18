"""The data-parallel split: every model copy answers its share of the requests.

Every rank plans the same requests; `split_requests` cuts them into contiguous ranges of the
scorer's own order (token sequences sorted lexicographically, the order of its prefix trie)
carrying equal numbers of tokens, with each cut moved to a point where the context changes,
so the choices of a question always share one rank and a few-shot header rarely spans two.
`iter_data_parallel` runs the ranges in ROUNDS rounds and gathers each round's results on
rank 0, which alone writes files: a crash loses at most one round, and no rank waits longer
on the others than one round's imbalance. Results are per request, so they are exactly
those of a single process; only the balance changes.
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch.distributed as td

from ..errors import UserError
from ..requests import GenerationRequest, LoglikelihoodRequest, Request, Result
from .groups import Dist, collective

ROUNDS = 16  # data-parallel rounds: results reach rank 0 (and its cache) after each
BALANCE_SLACK = 0.05  # a cut may move this fraction of a range's tokens to avoid splitting a prefix group


def _request_tokens(requests: Sequence[Request], tokenizer) -> list[tuple[list[int], tuple, int]]:
    """Per request: (token sequence the engine runs, prefix-group key, tokens it will add beyond
    the sequence). All pairs are encoded in one `encode_pairs` call, as the scorer encodes them
    (a shared few-shot header once)."""
    pairs = [(r.context, r.continuation) for r in requests if isinstance(r, LoglikelihoodRequest)]
    encoded = iter(tokenizer.encode_pairs(pairs))
    out = []
    for req in requests:
        if isinstance(req, LoglikelihoodRequest):
            ctx, cont = next(encoded)
            out.append((ctx + cont, ("context", req.context), 0))
        elif isinstance(req, GenerationRequest):
            samples = req.n if req.temperature > 0 else 1
            out.append((tokenizer.encode(req.prompt, bos=True), ("prompt", req.prompt), samples * req.max_new_tokens))
        else:
            raise TypeError(f"not a request: {req!r}")
    return out


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


def split_requests(requests: Sequence[Request], tokenizer, n_ranks: int,
                   slack: float = BALANCE_SLACK) -> list[list[int]]:
    """Indices of `requests` for each of `n_ranks` ranks: contiguous ranges of equal token mass.

    Order: requests with one context (one prompt) form a group; groups are ordered by their
    smallest token sequence and members by their own, which is the scorer's trie order with
    each group kept contiguous. Mass: the tokens a request does not share with its
    predecessor (what the trie runs), plus the tokens a generation request may add; a range
    also pays again for the prefix its first request shares across the cut. Cuts fall only
    between groups and are placed left to right, each aiming at an equal share of what is
    left: within `slack` of that share, where the fewest shared tokens are lost (a few-shot
    header's boundary), else as close to it as the groups allow. The same input gives the
    same split on every rank.
    """
    if n_ranks < 1:
        raise ValueError(f"n_ranks {n_ranks} must be at least 1")
    items = _request_tokens(requests, tokenizer)
    seqs = [np.asarray(s, dtype=np.int64) for s, _, _ in items]
    groups: dict[tuple, list[int]] = {}
    for i, (_, key, _) in enumerate(items):
        groups.setdefault(key, []).append(i)
    members = [sorted(g, key=lambda i: (items[i][0], i)) for g in groups.values()]
    members.sort(key=lambda g: (items[g[0]][0], g[0]))
    order = [i for g in members for i in g]
    n = len(order)

    mass = np.zeros(n, dtype=np.int64)
    shared = np.zeros(n + 1, dtype=np.int64)  # tokens position k shares with position k-1
    for k, i in enumerate(order):
        shared[k] = _common_prefix(seqs[order[k - 1]], seqs[i]) if k else 0
        mass[k] = max(len(seqs[i]) - shared[k], 1) + items[i][2]
    cum = np.concatenate([[0], np.cumsum(mass)])  # cum[k]: mass before position k
    bounds = np.cumsum([0] + [len(g) for g in members])  # positions where a group starts (and n)

    cuts = [0]
    for j in range(1, n_ranks):
        prev = cuts[-1]
        # A range re-runs the prefix its first request shares with the one before the cut.
        target = (cum[n] - cum[prev] + shared[prev]) / (n_ranks - j + 1)
        ok = bounds[bounds >= prev]
        off = np.abs(cum[ok] - cum[prev] + shared[prev] - target)
        near = ok[off <= slack * target]
        if len(near):  # fewest shared tokens lost, then closest to the target, then first
            best = min(near, key=lambda b: (shared[b], abs(cum[b] - cum[prev] + shared[prev] - target), b))
        else:
            best = ok[int(np.argmin(off))]
        cuts.append(int(best))
    cuts.append(n)
    return [order[cuts[j] : cuts[j + 1]] for j in range(n_ranks)]


def gather_to_main(obj, dist: Dist) -> list | None:
    """[obj of every model copy] on rank 0, in data-parallel rank order; None elsewhere.

    Only each copy's first rank (tp_rank 0) takes part: the others hold the same results.
    """
    if dist.tp_rank != 0:
        return None
    if dist.dp_size == 1:
        return [obj]
    parts = [None] * dist.dp_size if dist.is_main else None
    collective(dist, td.gather_object, obj, parts, dst=0, group=dist.dp_group)
    return parts if dist.is_main else None


def gather_results(local: dict[int, Result], dist: Dist) -> dict[int, Result]:
    """Every data-parallel rank's results on rank 0 ({} elsewhere)."""
    merged: dict[int, Result] = {}
    for part in gather_to_main(local, dist) or []:
        overlap = merged.keys() & part.keys()
        assert not overlap, f"two ranks answered request {min(overlap)}"
        merged.update(part)
    return merged


def iter_data_parallel(requests: Sequence[Request], run: Callable[[Sequence[Request]], Iterable[tuple[int, Result]]],
                       tokenizer, dist: Dist, rounds: int = ROUNDS) -> Iterator[tuple[int, Result]]:
    """Answer `requests` with `run` (the engine's iter_loglikelihood or iter_generate)
    spread over the data-parallel ranks; yields (index, result) on rank 0 only.

    `requests` must be the same list on every rank (checked). Rank 0 yields its own results
    as they come and the other ranks' after each round; the other ranks yield nothing but
    must drive the iterator to its end like rank 0.
    """
    _check_same(requests, dist)
    rounds = rounds if dist.dp_size > 1 else 1  # one model copy: rank 0 already sees every result
    pieces = split_requests(requests, tokenizer, dist.dp_size * rounds)
    for r in range(rounds):
        idx = pieces[dist.dp_rank * rounds + r]
        local: dict[int, Result] = {}
        if idx:
            for j, res in run([requests[i] for i in idx]):
                local[idx[j]] = res
                if dist.is_main:
                    yield idx[j], res
        for i, res in sorted(gather_results(local, dist).items()):
            if i not in local:
                yield i, res


def _check_same(requests: Sequence[Request], dist: Dist) -> None:
    digest = hashlib.sha256(pickle.dumps(list(requests), protocol=4)).hexdigest()
    digests = [None] * dist.world_size
    collective(dist, td.all_gather_object, digests, digest, group=dist.cpu_group)
    if len(set(digests)) > 1:
        odd = [r for r, d in enumerate(digests) if d != digests[0]]
        raise UserError(f"ranks {odd} planned other requests than rank 0 (different code, data folder or "
                        "options on some node?); every rank must see the same files and flags")
