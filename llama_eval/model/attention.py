"""Attention kernels the network chooses between, by what one forward's `ForwardInputs` hold.

    dense SDPA            a boolean mask made additive, or plain causal (`sdpa_attention`)
    FlexAttention         a block mask: only blocks holding an allowed pair are computed (CUDA)
    KeyBlocks             query blocks, each over its own gathered cache slots (any device)
    shared prefix         cache slots shared by every row read once (`shared_prefix_attention`)

All compute the same numbers up to float rounding; tests hold each against dense SDPA.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .llama import ForwardInputs, LayerCache


@dataclass(frozen=True)
class KeyBlocks:
    """Block-sparse attention for any device: the T queries are cut into blocks of `block`
    consecutive tokens and block b attends only the cache slots index[b] ([nb, K]; nb blocks,
    the last padded), under mask[b] ([nb, 1, block, K] bool, True where allowed; every query
    row, padding included, must allow at least one key). Where most query/key pairs are
    masked out (a packed prefix tree) this computes a fraction of the dense scores with the
    ordinary SDPA kernels; the gathers cost one copy of the selected keys per layer.
    """

    block: int
    index: torch.Tensor
    mask: torch.Tensor

    def gather(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """q [1, H, T, D] -> [nb, H, block, D]; k, v [1, Hkv, S, D] -> [nb, Hkv, K, D]."""
        nb, K = self.index.shape
        H, T, D = q.shape[1:]
        q = F.pad(q[0], (0, 0, 0, nb * self.block - T)).view(H, nb, self.block, D).transpose(0, 1)
        flat = self.index.flatten()
        k, v = (x[0].index_select(1, flat).unflatten(1, (nb, K)).transpose(0, 1) for x in (k, v))
        return q, k, v

    def ungather(self, out: torch.Tensor, T: int) -> torch.Tensor:
        """Attention output [nb, H, block, D] -> [1, H, T, D]."""
        return out.transpose(0, 1).flatten(1, 2)[None, :, :T]


@functools.cache
def _compiled_flex():
    """FlexAttention compiled (fused, block-sparse kernels); built once per process, on first use."""
    from torch.nn.attention.flex_attention import flex_attention as flex

    return torch.compile(flex, dynamic=False)


def flex_attention(q, k, v, block_mask, grouped: bool) -> torch.Tensor:
    """FlexAttention: compiled on CUDA; on other devices PyTorch's eager reference, which
    computes the same numbers densely (tests compare it with SDPA)."""
    if q.is_cuda:
        return _compiled_flex()(q, k, v, block_mask=block_mask, enable_gqa=grouped)
    from torch.nn.attention.flex_attention import flex_attention as flex

    return flex(q, k, v, block_mask=block_mask, enable_gqa=grouped)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
               grouped: bool) -> torch.Tensor:
    """SDPA with the kernel pinned where a bias is passed on CUDA: the memory-efficient kernel
    takes any bias; left to choose, recent PyTorch sends masked bf16 calls to cuDNN, which
    builds a graph per new shape (scoring sees a hundred shapes)."""
    if bias is not None and q.is_cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=grouped)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=bias is None, enable_gqa=grouped)


@functools.cache
def _bmm_float32_output(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this PyTorch has bmm's float32-output overload for `dtype` inputs on `device`
    (CUDA builds of recent versions). Probed once, eagerly (a decode step's warm-up runs before
    any CUDA graph capture)."""
    try:
        x = torch.zeros(1, 1, 1, device=device, dtype=dtype)
        return torch.bmm(x, x, out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def _scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched a @ b ([N, M, K] @ [N, K, P]) in float32. On CUDA, half inputs keep float32
    products (cuBLAS's float32 output) instead of rounding scores to 8 mantissa bits; where
    that overload is missing, the inputs are widened first (more traffic, same numbers)."""
    if a.is_cuda and a.dtype in (torch.float16, torch.bfloat16):
        if _bmm_float32_output(a.device, a.dtype):
            return torch.bmm(a, b, out_dtype=torch.float32)
        return torch.bmm(a.float(), b.float())
    return torch.bmm(a, b).float()


def shared_prefix_attention(q: torch.Tensor, cache: LayerCache, inputs: ForwardInputs) -> torch.Tensor:
    """Attention of q [B, H, T, D] over cache slots [0, kv_len) when slots [0, P) (P =
    inputs.shared_len) hold the same keys/values in every row: [B, H, T, D].

    Why: in few-shot generation every row starts with the task's header (GSM8K's 8 exemplars,
    NQ's 64 shots), copied into each row from one computation. A plain decode step reads those
    P keys and values once per row; here they are read once, from row `inputs.shared_row`, as
    one matrix product with the queries of every row (grouped by key/value head), and only
    each row's own slots [P, kv_len) are read per row (under `inputs.bias`, [B or 1, 1, T,
    kv_len - P]). Both score sets go through one softmax, so the result is that of attending
    over the full rows, up to float rounding (the cascade / shared-prefix attention of
    FlashInfer and Hydragen, written with plain matrix products).

    The caller guarantees that every query may see every shared slot (its position is at
    least P) and that each query row allows at least one own slot or has P > 0, so no softmax
    row is empty. Scores and softmax are float32; probabilities are cast back to the values'
    dtype for the weighted sums, as fused kernels do.
    """
    P, S = inputs.shared_len, inputs.kv_len
    B, H, T, D = q.shape
    Hkv = cache.k.shape[1]
    G = H // Hkv  # query head h uses key/value head h // G (as repeat_interleave would)
    src = inputs.shared_row
    k_shared = cache.k[:, :, :P].index_select(0, src)[0]  # [Hkv, P, D]: the only read of these slots
    v_shared = cache.v[:, :, :P].index_select(0, src)[0]
    k_own = cache.k[:, :, P:S].reshape(B * Hkv, S - P, D)  # views: rows' own slots
    v_own = cache.v[:, :, P:S].reshape(B * Hkv, S - P, D)
    qg = q.reshape(B, Hkv, G * T, D)
    q_by_head = qg.transpose(0, 1).reshape(Hkv, B * G * T, D)  # every row's queries, per kv head
    scale = D ** -0.5
    shared = _scores(q_by_head, k_shared.transpose(1, 2)).view(Hkv, B, G, T, P).transpose(0, 1) * scale
    own = _scores(qg.reshape(B * Hkv, G * T, D), k_own.transpose(1, 2)).view(B, Hkv, G, T, S - P) * scale
    if inputs.bias is not None:
        own = own + inputs.bias[:, :, None]  # [B or 1, 1, 1, T, S - P]: the same mask for every head
    probs = torch.cat((shared, own), -1).softmax(-1).to(v_own.dtype)  # [B, Hkv, G, T, S]
    p_shared = probs[..., :P].transpose(0, 1).reshape(Hkv, B * G * T, P)
    p_own = probs[..., P:].reshape(B * Hkv, G * T, S - P)
    out = torch.bmm(p_shared, v_shared).view(Hkv, B, G * T, D).transpose(0, 1)  # [B, Hkv, G*T, D]
    out = out + torch.bmm(p_own, v_own).view(B, Hkv, G * T, D)
    return out.reshape(B, H, T, D)
