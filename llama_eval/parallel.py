"""Running one evaluation on many processes: data parallel, tensor parallel, or both.

Launched by torchrun (`torchrun --nproc-per-node 8 -m llama_eval run --tp 4 ...`), every
process calls `init_from_env`, which joins the process group and cuts the ranks into
tensor-parallel groups of `tp` consecutive ranks (one model split across them) and
data-parallel groups (the ranks holding the same slice in every model copy).

Data parallel. Every rank plans the same requests; `split_requests` cuts them into
contiguous ranges of the scorer's own order (token sequences sorted lexicographically,
the order of its prefix trie) carrying equal numbers of tokens, with each cut moved to a
point where the context changes, so the choices of a question always share one rank and a
few-shot header rarely spans two. `iter_data_parallel` runs the ranges in ROUNDS rounds and
gathers each round's results on rank 0, which alone writes files: a crash loses at most one
round, and no rank waits longer on the others than one round's imbalance. Results are per
request, so they are exactly those of a single process; only the balance changes.

Tensor parallel (Meta's layout, as fairscale split it). `load_tensor_parallel` builds the
network on the meta device, replaces the projections by this rank's slices and reads only
those slices from the memory-mapped consolidated.NN.pth shards, whatever their number:

    wq, wk, wv, w1, w3   column parallel: this rank's heads / FFN rows; no communication
    wo, w2               row parallel (RowParallelLinear): partial sums, then an all-reduce
    output               vocabulary parallel (VocabParallelOutput): V/tp rows of the vocabulary
    tok_embeddings, norms   replicated (the embedding is V x C, <1 % of a 65B model)

Key/value heads are split like query heads when tp divides their number; when tp is a
multiple of it instead (Llama 2 70B's 8 kv heads on 16 ranks; the tiny preset's 2 on 4),
each rank keeps the one kv head its query heads read, duplicated across tp/Hkv ranks.
`vocab_parallel_logprobs` scores tokens with three small all-reduces over [P] vectors and
never gathers [P, V] logits; the model's `head()` (generation's sampling needs whole rows)
all-gathers the vocabulary slices.

Failure. A rank that raises records why in the rendezvous store before it exits
(`report_failure`); a collective that fails or waits longer than the timeout (default
DEFAULT_TIMEOUT_S, `--dist-timeout`) becomes RankStopped, a UserError that names the rank
when it is known and says to rerun the command, which resumes from the request cache.
Gloo raises such errors where they happen. NCCL reports a failed collective from its
watchdog thread after the same timeout and aborts the process; torchrun then stops the
remaining ranks and names the failed one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import pickle
import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as td
import torch.nn.functional as F
from torch import nn

from .errors import UserError
from .model import checkpoint as ck
from .model.llama import ModelArgs, build, count_parameters
from .model.tokenizer import Tokenizer
from .requests import GenerationRequest, LoglikelihoodRequest, Request, Result

DEFAULT_TIMEOUT_S = 1800.0  # longest wait in one collective before the run stops (--dist-timeout)
ROUNDS = 16  # data-parallel rounds: results reach rank 0 (and its cache) after each
BALANCE_SLACK = 0.05  # a cut may move this fraction of a range's tokens to avoid splitting a prefix group
_FAILURE_KEY = "llama_eval/failure"  # rendezvous-store key where the first failing rank says why


class RankStopped(UserError):
    """Another rank died or stopped answering; this rank stops too."""


# ---------------------------------------------------------------------------- process groups


@dataclass(frozen=True)
class Dist:
    """This process's place in the run. Ranks r..r+tp-1 (r a multiple of tp) hold one model."""

    rank: int
    world_size: int
    local_rank: int
    tp: int
    device: torch.device
    timeout_s: float
    tp_group: td.ProcessGroup | None  # the ranks sharing this model copy; None when tp == 1
    dp_group: td.ProcessGroup  # gloo: the ranks with this rank's tp_rank, one per model copy
    cpu_group: td.ProcessGroup  # gloo: every rank, for small Python objects
    store: td.Store  # the rendezvous store; a failing rank leaves its reason here

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp

    @property
    def dp_rank(self) -> int:
        return self.rank // self.tp

    @property
    def dp_size(self) -> int:
        return self.world_size // self.tp

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reads and writes the cache and the run folder and shows progress."""
        return self.rank == 0


def init_from_env(tp: int = 1, device: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Dist | None:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); None when not launched by torchrun.

    device None: CUDA when available. On CUDA the backend is NCCL and this process uses GPU
    LOCAL_RANK (an index in `device` is ignored: torchrun starts one process per GPU); on the
    CPU it is gloo. tp consecutive ranks share one model; the world size must be a multiple
    of tp. timeout_s bounds every collective's wait (see the module docstring).
    """
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        if tp > 1:
            raise UserError(f"--tp {tp} splits the model across {tp} processes: launch with "
                            f"torchrun --nproc-per-node {tp} -m llama_eval run ... --tp {tp}")
        return None
    rank, world, local_rank = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    if tp < 1 or world % tp:
        divisors = ", ".join(str(d) for d in range(1, world + 1) if world % d == 0)
        raise UserError(f"--tp {tp} must divide the number of processes ({world}): use one of {divisors}")
    if timeout_s <= 0:
        raise UserError(f"--dist-timeout {timeout_s} must be a positive number of seconds")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not env.get(var):
            raise UserError(f"RANK is set but {var} is not; launch with torchrun, which sets both")
    use_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise UserError(f"--device {device} was asked for but CUDA is not available here; use --device cpu")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs here; "
                            "start at most one process per GPU (--nproc-per-node)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    timeout = dt.timedelta(seconds=timeout_s)
    # The store is made here, not by init_process_group, so that a failing rank can leave its
    # reason in it. torchrun's agent hosts it when TORCHELASTIC_USE_AGENT_STORE says so (it then
    # outlives the ranks); otherwise rank 0 hosts it, as env:// rendezvous does.
    agent_store = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = td.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), world,
                        is_master=rank == 0 and not agent_store, timeout=timeout, multi_tenant=True)
    td.init_process_group("nccl" if use_cuda else "gloo", store=td.PrefixStore("llama_eval_pg", store),
                          rank=rank, world_size=world, timeout=timeout, device_id=dev if use_cuda else None)
    # Every rank creates every group, in the same order (new_group is collective).
    tp_groups = [td.new_group(list(range(s, s + tp)), timeout=timeout) for s in range(0, world, tp)] if tp > 1 else None
    dp_groups = [td.new_group(list(range(t, world, tp)), backend="gloo", timeout=timeout) for t in range(tp)]
    cpu_group = td.new_group(list(range(world)), backend="gloo", timeout=timeout)
    return Dist(rank, world, local_rank, tp, dev, timeout_s, tp_groups[rank // tp] if tp_groups else None,
                dp_groups[rank % tp], cpu_group, store)


def shutdown(dist: Dist | None) -> None:
    if dist is not None and td.is_initialized():
        td.destroy_process_group()


# ---------------------------------------------------------------------------- failures


@contextmanager
def report_failure(dist: Dist | None):
    """Around a rank's whole run: if it raises, leave the reason where the other ranks look
    when their next collective fails, then re-raise."""
    try:
        yield
    except RankStopped:
        raise
    except Exception as e:
        if dist is not None:
            _record_failure(dist, e)
        raise


def _record_failure(dist: Dist, error: BaseException) -> None:
    reason = f"rank {dist.rank} stopped with {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    try:  # the first failure wins: later ones are usually consequences of it
        dist.store.compare_set(_FAILURE_KEY, "", reason)
    except RuntimeError:
        pass  # the store's host is gone too; the other ranks will say the cause is unknown


def rank_stopped(dist: Dist, error: BaseException) -> RankStopped:
    """The error to raise when a collective of this rank failed (`error`)."""
    try:
        reason = dist.store.get(_FAILURE_KEY).decode() if dist.store.check([_FAILURE_KEY]) else None
    except RuntimeError:
        reason = None
    if reason is None:
        # Backends prefix their messages with a source location and add advice; keep the fact.
        text = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip()).split(". ")[0][:300] or type(error).__name__
        reason = (f"another rank died or did not answer within the {dist.timeout_s:g} s timeout "
                  f"(--dist-timeout): {text}")
    return RankStopped(f"{reason}; rank {dist.rank} stopped too. Rerun the same command to resume from the "
                       "cache (results already gathered are kept); the failed rank's log has the cause")


def _collective(dist: Dist, fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except RuntimeError as e:  # gloo and NCCL raise RuntimeError (DistError) for lost peers and timeouts
        raise rank_stopped(dist, e) from e


def broadcast_object(obj, dist: Dist):
    """Rank 0's `obj` on every rank (e.g. which requests rank 0's cache already answers)."""
    box = [obj if dist.is_main else None]
    _collective(dist, td.broadcast_object_list, box, src=0, group=dist.cpu_group)
    return box[0]


# ---------------------------------------------------------------------------- data parallel


def _request_tokens(req: Request, tokenizer) -> tuple[list[int], tuple, int]:
    """(token sequence the engine runs, prefix-group key, tokens it will add beyond the sequence)."""
    if isinstance(req, LoglikelihoodRequest):
        ctx, cont = tokenizer.encode_pair(req.context, req.continuation)
        return ctx + cont, ("context", req.context), 0
    if isinstance(req, GenerationRequest):
        samples = req.n if req.temperature > 0 else 1
        return tokenizer.encode(req.prompt, bos=True), ("prompt", req.prompt), samples * req.max_new_tokens
    raise TypeError(f"not a request: {req!r}")


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
    items = [_request_tokens(r, tokenizer) for r in requests]
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
    _collective(dist, td.gather_object, obj, parts, dst=0, group=dist.dp_group)
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
    _collective(dist, td.all_gather_object, digests, digest, group=dist.cpu_group)
    if len(set(digests)) > 1:
        odd = [r for r, d in enumerate(digests) if d != digests[0]]
        raise UserError(f"ranks {odd} planned other requests than rank 0 (different code, data folder or "
                        "options on some node?); every rank must see the same files and flags")


# ---------------------------------------------------------------------------- tensor parallel


class RowParallelLinear(nn.Module):
    """y = x W^T over this rank's input columns, summed across the tensor-parallel group."""

    def __init__(self, in_features: int, out_features: int, dist: Dist):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.dist = dist

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        _collective(self.dist, td.all_reduce, y, group=self.dist.tp_group)
        return y


class VocabParallelOutput(nn.Module):
    """The output projection's rows [vocab_start, vocab_start + V/tp) on this rank.

    `local(x)` gives this rank's logits; calling the module all-gathers whole rows, for
    Transformer.head() and therefore generation.
    """

    def __init__(self, dim: int, vocab_size: int, dist: Dist):
        super().__init__()
        shard = vocab_size // dist.tp
        self.weight = nn.Parameter(torch.empty(shard, dim))
        self.vocab_start = dist.tp_rank * shard
        self.dist = dist

    def local(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)  # [..., V/tp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mine = self.local(x).contiguous()
        parts = [torch.empty_like(mine) for _ in range(self.dist.tp)]
        _collective(self.dist, td.all_gather, parts, mine, group=self.dist.tp_group)
        return torch.cat(parts, dim=-1)  # [..., V]


def vocab_parallel_logprobs(model, h: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor):
    """Scorer's token_logprobs for a tensor-parallel model: log p(tokens[k] | h[rows[k]]) and
    whether tokens[k] is the argmax (the smallest index of the maximum, as torch.argmax).

    Each rank holds logits [P, V/tp]; the row maximum, the sum of exponentials, the target
    logit (from the rank that owns it) and the argmax are combined by all-reduces of [P] or
    [K] vectors, so no rank ever holds a full [P, V] row.
    """
    out: VocabParallelOutput = model.output
    d = out.dist
    local = out.local(model.norm(h)).float()  # [P, V/tp]
    shard = local.shape[-1]
    local_max, local_arg = local.max(dim=-1)  # [P]: first index of the maximum on this rank
    peak = local_max.clone()
    _collective(d, td.all_reduce, peak, op=td.ReduceOp.MAX, group=d.tp_group)
    own = (tokens >= out.vocab_start) & (tokens < out.vocab_start + shard)
    target = torch.where(own, local[rows, (tokens - out.vocab_start).clamp(0, shard - 1)], 0.0)  # [K]
    sums = torch.cat([(local - peak[:, None]).exp().sum(dim=-1), target])  # [P + K]
    _collective(d, td.all_reduce, sums, group=d.tp_group)
    sum_exp, target = sums[: len(peak)], sums[len(peak):]
    # The global argmax is the smallest index, over the ranks holding the maximum, of its position.
    vocab = shard * d.tp
    argmax = torch.where(local_max == peak, local_arg + out.vocab_start, vocab)
    _collective(d, td.all_reduce, argmax, op=td.ReduceOp.MIN, group=d.tp_group)
    logprob = target - (peak + sum_exp.log())[rows]
    return logprob, argmax[rows] == tokens


def splits_evenly(args: ModelArgs, tp: int) -> bool:
    """Whether tp ranks can share the model under TPLayout's rules."""
    return not (args.n_heads % tp or args.ffn_dim % tp or args.vocab_size % tp
                or (args.kv_heads % tp and tp % args.kv_heads))


@dataclass(frozen=True)
class TPLayout:
    """Which part of each weight tensor-parallel rank `rank` of `tp` holds.

    Query heads, FFN rows and vocabulary rows are cut in tp equal contiguous blocks; kv heads
    too when tp divides their number, else (tp a multiple of it) each rank holds the single
    kv head that its query heads read.
    """

    args: ModelArgs  # the whole model's
    tp: int
    rank: int

    @staticmethod
    def check(args: ModelArgs, tp: int) -> None:
        """UserError unless the model splits evenly over tp ranks."""
        problems = [f"{what} {n}" for what, n in (("query heads", args.n_heads), ("FFN width", args.ffn_dim),
                                                   ("vocabulary", args.vocab_size)) if n % tp]
        if args.kv_heads % tp and tp % args.kv_heads:
            problems.append(f"key/value heads {args.kv_heads} (neither divides the other)")
        if problems:
            valid = [t for t in range(1, args.n_heads + 1) if splits_evenly(args, t)]
            raise UserError(f"--tp {tp} does not split this model evenly: {', '.join(problems)} "
                            f"not divisible by {tp}; use one of --tp {', '.join(map(str, valid))}")

    @property
    def heads(self) -> int:
        return self.args.n_heads // self.tp

    @property
    def kv_heads(self) -> int:
        return max(self.args.kv_heads // self.tp, 1)

    @property
    def first_kv_head(self) -> int:
        if self.args.kv_heads % self.tp == 0:
            return self.rank * self.kv_heads
        return self.rank // (self.tp // self.args.kv_heads)

    def local_args(self) -> ModelArgs:
        """The per-rank view that the KV cache and rotary tables are computed from: this
        rank's heads, and dim = heads x head size (the residual stream keeps the full width)."""
        a = self.args
        return replace(a, n_heads=self.heads, n_kv_heads=self.kv_heads, dim=self.heads * a.head_dim)

    def slice_of(self, name: str) -> tuple[int, int, int] | None:
        """(dimension, start, stop) of the whole tensor `name` that this rank holds; None: all of it."""
        a, D = self.args, self.args.head_dim
        kind = re.sub(r"^layers\.\d+\.", "", name)
        block = {
            "attention.wq.weight": (0, self.heads * D),
            "feed_forward.w1.weight": (0, a.ffn_dim // self.tp),
            "feed_forward.w3.weight": (0, a.ffn_dim // self.tp),
            "attention.wo.weight": (1, self.heads * D),
            "feed_forward.w2.weight": (1, a.ffn_dim // self.tp),
            "output.weight": (0, a.vocab_size // self.tp),
        }
        if kind in ("attention.wk.weight", "attention.wv.weight"):
            return 0, self.first_kv_head * D, (self.first_kv_head + self.kv_heads) * D
        if kind in block:
            dim, size = block[kind]
            return dim, self.rank * size, (self.rank + 1) * size
        return None


def shard_modules(model: nn.Module, layout: TPLayout, dist: Dist) -> nn.Module:
    """Replace the projections of a meta-device Transformer by this rank's (still on meta)."""
    a, D = layout.args, layout.args.head_dim
    ffn = a.ffn_dim // layout.tp
    with torch.device("meta"):
        for layer in model.layers:
            att, ff = layer.attention, layer.feed_forward
            att.wq = nn.Linear(a.dim, layout.heads * D, bias=False)
            att.wk = nn.Linear(a.dim, layout.kv_heads * D, bias=False)
            att.wv = nn.Linear(a.dim, layout.kv_heads * D, bias=False)
            att.wo = RowParallelLinear(layout.heads * D, a.dim, dist)
            att.n_heads, att.kv_heads = layout.heads, layout.kv_heads
            ff.w1 = nn.Linear(a.dim, ffn, bias=False)
            ff.w3 = nn.Linear(a.dim, ffn, bias=False)
            ff.w2 = RowParallelLinear(ffn, a.dim, dist)
        model.output = VocabParallelOutput(a.dim, a.vocab_size, dist)
    return model


def read_rank_state(shard_states: list[dict[str, torch.Tensor]], layout: TPLayout, full_shapes: dict[str, torch.Size],
                    split_dims: Callable[[str], int | None], device: torch.device, dtype: torch.dtype,
                    where: str) -> dict[str, torch.Tensor]:
    """This rank's tensors, copied out of Meta's shards (memory-mapped) into fresh tensors.

    shard_states: the n shards' state dicts, weight `name` split along split_dims(name) in n
    equal parts (None: every shard holds all of it). Only the parts overlapping this rank's
    slice are read, so each rank reads about 1/tp of the weights whatever n is.
    """
    state = {}
    for name, full in full_shapes.items():
        parts = [s[name] for s in shard_states]
        split = split_dims(name)
        merged = list(parts[0].shape)
        if split is not None:
            merged[split] = sum(p.shape[split] for p in parts)
        if any(p.shape != parts[0].shape for p in parts) or torch.Size(merged) != full:
            raise UserError(f"weight {name!r} in {where} has shards of shapes {[list(p.shape) for p in parts]}, "
                            f"which do not make the shape {list(full)} that the config implies")
        mine = layout.slice_of(name)
        if split is None:
            assert mine is None, f"{name} is sliced but Meta's shards replicate it"
            state[name] = parts[0].to(device=device, dtype=dtype, copy=True)
            continue
        dim, lo, hi = mine if mine is not None else (split, 0, full[split])
        assert dim == split, f"{name}: the rank's slice runs along another dimension than Meta's split"
        state[name] = _copy_range(parts, dim, lo, hi, device, dtype)
    return state


def _copy_range(parts: list[torch.Tensor], dim: int, lo: int, hi: int, device, dtype) -> torch.Tensor:
    """Rows (or columns) [lo, hi) along `dim` of the concatenation of `parts`, without building it."""
    width = parts[0].shape[dim]
    shape = list(parts[0].shape)
    shape[dim] = hi - lo
    out = torch.empty(shape, device=device, dtype=dtype)
    for s, part in enumerate(parts):
        a, b = max(lo, s * width), min(hi, (s + 1) * width)
        if a < b:
            out.narrow(dim, a - lo, b - a).copy_(part.narrow(dim, a - s * width, b - a))
    return out


def load_tensor_parallel(spec: str | os.PathLike, dist: Dist, device=None, dtype=None, tokenizer=None, *,
                         max_seq_len: int | None = None):
    """This rank's part of the Meta-layout model that `spec` names; returns checkpoint.Loaded.

    `loaded.model.args` is the per-rank view (TPLayout.local_args); `loaded.info` describes
    the whole checkpoint, with the fingerprint a single-process load gives (one cache
    serves both). Score with Scorer(..., token_logprobs=vocab_parallel_logprobs). With
    dist.tp == 1 this is load_checkpoint (any format).
    """
    if dist.tp == 1:
        return ck.load_checkpoint(spec, dist.device if device is None else device, dtype, tokenizer,
                                  max_seq_len=max_seq_len)
    device = dist.device if device is None else ck.resolve_device(device)
    dtype = ck.resolve_dtype(dtype, device)
    text = str(spec)
    path = ck.resolve_spec(text)
    fmt = ck.detect_format(path)
    if fmt != "meta":
        raise UserError(f"--tp {dist.tp} reads Meta's layout (params.json and consolidated.NN.pth); {path} is in "
                        f"{fmt} layout. Run it with --tp 1 (data parallel only), or use Meta's original files")
    tok = Tokenizer(ck.tokenizer_path(fmt, path, tokenizer))
    source = ck.meta_source(path, tok, max_seq_len)
    args = source.args
    if text in ck.PRESET_FOLDERS:
        ck.check_preset(text, args, path)
    if args.vocab_size != tok.vocab_size:
        raise UserError(f"the model in {path} has a vocabulary of {args.vocab_size} tokens but the tokenizer "
                        f"{tok.path} has {tok.vocab_size}; pass the tokenizer the model was trained with (--tokenizer)")
    TPLayout.check(args, dist.tp)
    layout = TPLayout(args, dist.tp, dist.tp_rank)

    model = build(args)  # meta
    full_shapes = {name: t.shape for name, t in model.state_dict().items()}
    n_params = count_parameters(model)
    shard_states = [ck.torch_load(f) for f in source.weight_files]
    where = f"{path}/consolidated.*.pth"
    for file, st in zip(source.weight_files, shard_states):
        keys = set(st) - {ck.META_IGNORED}
        if keys != set(full_shapes):
            odd = sorted(keys ^ set(full_shapes))[0]
            what = "unexpected" if odd in keys else "missing"
            raise UserError(f"weight {odd!r} is {what} in {file}: it does not hold the LLaMA network that "
                            f"{path}/params.json describes")

    def split_dim(name: str) -> int | None:
        return ck.META_SPLIT_DIM[re.sub(r"^layers\.\d+\.", "", name)]

    state = read_rank_state(shard_states, layout, full_shapes, split_dim, device, dtype, where)
    del shard_states  # unmap the files
    model = shard_modules(model, layout, dist)
    model.load_state_dict(state, strict=True, assign=True)
    model.args = layout.local_args()
    model = model.eval().requires_grad_(False)
    info = ck.CheckpointInfo(
        format="meta", args=args, files=[*source.config_files, *source.weight_files, tok.path],
        dtype=dtype, device=device, n_params=n_params,
        fingerprint=ck.fingerprint(args, source.weight_files, tok.path),
    )
    return ck.Loaded(model, tok, info)
