"""Tensor-parallel layers: one model split across the `tp` ranks of a tensor-parallel group.

`load_tensor_parallel` is checkpoint.load_checkpoint with a `TensorParallel` sharding: the same
pipeline (spec, format, tokenizer, checks, strict assignment) for every format, in which this
rank builds the network on the meta device, replaces the projections by its slices and reads
only those slices (Meta's consolidated.NN.pth shards, whatever their number, or Hugging Face
safetensors by slice reads):

    wq, wk, wv, w1, w3   column parallel: this rank's heads / FFN rows; no communication
    wo, w2               row parallel (RowParallelLinear): partial sums, then an all-reduce
    output               vocabulary parallel (VocabParallelOutput): V/tp rows of the vocabulary
    tok_embeddings, norms   replicated (the embedding is V x C, <1 % of a 65B model)

Key/value heads are split like query heads when tp divides their number; when tp is a
multiple of it instead (Llama 2 70B's 8 kv heads on 16 ranks; the tiny preset's 2 on 4),
each rank keeps the one kv head its query heads read, duplicated across tp/Hkv ranks.
`vocab_parallel_logprobs` scores tokens with three small all-reduces over [P] vectors and
never gathers [P, V] logits; the model's `head()` (generation's sampling needs whole rows)
all-gathers the vocabulary slices. The model's `args` stay the whole model's; per-rank sizes
are the modules' (Attention.n_heads / kv_heads, the projections' shapes) or TPLayout's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as td
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..model import checkpoint as ck
from ..model.llama import ModelArgs, Transformer
from .groups import Dist, collective


class RowParallelLinear(nn.Module):
    """y = x W^T over this rank's input columns, summed across the tensor-parallel group."""

    def __init__(self, in_features: int, out_features: int, dist: Dist):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.dist = dist

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        collective(self.dist, td.all_reduce, y, group=self.dist.tp_group)
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
        collective(self.dist, td.all_gather, parts, mine, group=self.dist.tp_group)
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
    collective(d, td.all_reduce, peak, op=td.ReduceOp.MAX, group=d.tp_group)
    own = (tokens >= out.vocab_start) & (tokens < out.vocab_start + shard)
    target = torch.where(own, local[rows, (tokens - out.vocab_start).clamp(0, shard - 1)], 0.0)  # [K]
    sums = torch.cat([(local - peak[:, None]).exp().sum(dim=-1), target])  # [P + K]
    collective(d, td.all_reduce, sums, group=d.tp_group)
    sum_exp, target = sums[: len(peak)], sums[len(peak):]
    # The global argmax is the smallest index, over the ranks holding the maximum, of its position.
    vocab = shard * d.tp
    argmax = torch.where(local_max == peak, local_arg + out.vocab_start, vocab)
    collective(d, td.all_reduce, argmax, op=td.ReduceOp.MIN, group=d.tp_group)
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


class TensorParallel:
    """checkpoint.Sharding for tensor-parallel rank dist.tp_rank of dist.tp."""

    def __init__(self, args: ModelArgs, dist: Dist):
        TPLayout.check(args, dist.tp)
        self.layout = TPLayout(args, dist.tp, dist.tp_rank)
        self.dist = dist

    def slice_of(self, name: str) -> tuple[int, int, int] | None:
        return self.layout.slice_of(name)

    def shard_modules(self, model: Transformer) -> Transformer:
        return shard_modules(model, self.layout, self.dist)


def load_tensor_parallel(spec: str | os.PathLike, dist: Dist, device=None, dtype=None, tokenizer=None, *,
                         max_seq_len: int | None = None) -> ck.Loaded:
    """This rank's part of the model that `spec` names (any checkpoint format); checkpoint.Loaded.

    `loaded.model.args` is the whole model's config; `loaded.info` describes the whole
    checkpoint, with the fingerprint a single-process load gives (one cache serves both).
    Score with Scorer(..., token_logprobs=vocab_parallel_logprobs). With dist.tp == 1 this is
    load_checkpoint.
    """
    device = dist.device if device is None else device
    sharding = (lambda args: TensorParallel(args, dist)) if dist.tp > 1 else None
    return ck.load_checkpoint(spec, device, dtype, tokenizer, max_seq_len=max_seq_len, sharding=sharding)
