"""The LLaMA network in one file: LLaMA 1, Llama 2 and the Llama 3 architecture.

Module and parameter names are those of Meta's checkpoints (`tok_embeddings`,
`layers.N.attention.wq`, `feed_forward.w1`, ...), so Meta's files load with
``strict=True``; other formats are renamed onto these names in `checkpoint.py`.

Shapes: B batch, T new tokens, S cache slots, H query heads, Hkv key/value heads,
D head size, V vocabulary, C model width.

Rotary embeddings follow Meta's convention (interleaved pairs 2i, 2i+1 of each head).
Positions are always explicit integers, so one forward can hold tokens of different
sequences at arbitrary positions: the scoring engine packs a prefix tree into one row,
the generator decodes rows that are at different lengths.

The elementwise work (RMSNorm, residual add + norm, rotary, SiLU gate) is written as pure
functions that a model runs either as written or as fused torch.compile kernels
(`Transformer.compile_elementwise`); matrix products and attention always run eagerly.
"""

from __future__ import annotations

import itertools
import math
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KeyBlocks, flex_attention, sdpa_attention, shared_prefix_attention


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1's RoPE frequency scaling: wavelengths longer than original_max_len /
    low_freq_factor are stretched by `factor`, shorter than original_max_len / high_freq_factor
    kept, and those between interpolated smoothly."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_len: int


@dataclass(frozen=True)
class ModelArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None: same as n_heads (no grouped-query attention)
    vocab_size: int = 32000
    multiple_of: int = 256  # FFN width is rounded up to a multiple of this ...
    ffn_dim_multiplier: float | None = None  # ... after scaling 8/3 * dim by this
    hidden_dim: int | None = None  # explicit FFN width; overrides the two rules above
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None  # None: plain RoPE (LLaMA 1, 2, 3)
    max_seq_len: int = 2048
    tie_embeddings: bool = False  # output projection shares tok_embeddings' weight

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def ffn_dim(self) -> int:
        if self.hidden_dim is not None:
            return self.hidden_dim
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def validate(self) -> "ModelArgs":
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head size {self.head_dim} must be even for rotary embeddings")
        return self


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension: x / rms(x) * weight."""
    # Normalise in float32 whatever the weights' dtype, as Meta's reference does.
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return xf.type_as(x) * weight


def add_rms_norm(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual sum h = x + y and rms_norm(h): one pass over h when compiled."""
    h = x + y
    return h, rms_norm(h, weight, eps)


def silu_gate(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The SwiGLU feed-forward's elementwise part: silu(gate) * up."""
    return F.silu(gate) * up


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.elementwise = EAGER

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.elementwise.rms_norm(x, self.weight, self.eps)


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float,
                  scaling: RopeScaling | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin for integer `positions` ([T] or [B, T]): [..., T, D/2] in float32."""
    # 1 / theta^(2i/D), written as Meta's reference and transformers write it: theta^(-2i/D) can
    # differ in the last bit, which far positions (Llama 3's long windows) turn into visible error.
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    if scaling is not None:
        inv_freq = scaled_frequencies(inv_freq, scaling)
    angles = positions.to(torch.float32)[..., None] * inv_freq
    return angles.cos(), angles.sin()


def scaled_frequencies(inv_freq: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    """Llama 3.1's frequency scaling (see RopeScaling), as Meta's reference applies it."""
    wavelength = 2 * math.pi / inv_freq
    # 0 where a wavelength is long (fully stretched), 1 where it is short (kept), linear between.
    keep = ((s.original_max_len / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)).clamp(0, 1)
    return (1 - keep) * inv_freq / s.factor + keep * inv_freq


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (2i, 2i+1) of each head. x: [B, T, H, D]; cos/sin: [T, D/2] or [B, T, D/2]."""
    xf = x.float().unflatten(-1, (-1, 2))  # [B, T, H, D/2, 2]
    x0, x1 = xf[..., 0], xf[..., 1]
    cos = cos.unsqueeze(-2)  # broadcast over heads
    sin = sin.unsqueeze(-2)
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2).type_as(x)


def rotary_qk(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """apply_rotary to queries and keys together (one compiled call for both)."""
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)


def rotary_qk_complex(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rotary_qk as one complex product per tensor: pair (2i, 2i+1) is the number x0 + i x1,
    rotated by cos + i sin. The same products and sums as apply_rotary, in one kernel instead
    of six (4-5x faster in eager mode on the CPU); the compiled kernels keep the real form,
    which Inductor fuses."""
    turn = torch.complex(cos, sin).unsqueeze(-2)  # broadcast over heads

    def rotate(x: torch.Tensor) -> torch.Tensor:
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
        return torch.view_as_real(pairs * turn).flatten(-2).type_as(x)

    return rotate(q), rotate(k)


@dataclass(frozen=True)
class Elementwise:
    """The elementwise and reduction work of a forward (everything but the matrix products
    and attention), as pure functions with the signatures of the functions above. EAGER runs
    them as written; `Elementwise.compiled_kernels()` runs the same functions as fused kernels.
    A model holds one of them (`Transformer.compile_elementwise`)."""

    rms_norm: Callable[..., torch.Tensor]
    add_rms_norm: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    rotary_qk: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    silu_gate: Callable[..., torch.Tensor]
    compiled: bool = False

    @classmethod
    def compiled_kernels(cls) -> "Elementwise":
        """The functions through torch.compile (Inductor): RMSNorm, the residual add with the
        next norm, rotary and the SiLU gate each become one or two fused kernels.

        Every function sees its inputs flattened to [N, ...] over the tokens (N = B x T), with
        N marked dynamic and the feature sizes static: one compile serves every batch and
        sequence length (scoring runs a hundred distinct T, decoding a few row buckets), plus
        one specialisation PyTorch always makes for N = 1, while the kernels stay specialised
        to the model's width and head size (dynamic=None, Dynamo's default, honours the
        marks and keeps unmarked sizes static). Plain `dynamic=False` would recompile for every
        new T until Dynamo's recompile limit sends the rest to eager; `dynamic=True` would make
        the widths symbolic too. Not mode="reduce-overhead": that captures CUDA graphs of its
        own, and the generator already captures the whole decode step, these kernels included.
        """
        copy = next(_COPIES)

        def fused(fn):
            # A copy of fn with its own code object: Dynamo keeps compiled code and counts
            # recompiles (8 at most, then eager) per code object, so each model gets its own
            # (a model compiles up to 4 variants: N dynamic or 1, inference tensors or not).
            code = fn.__code__.replace(co_name=f"{fn.__name__}_{copy}")
            own = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
            # Not fullgraph=True: past the recompile limit that raises; this way calls fall back
            # to eager with Dynamo's warning (tests check that these functions have no graph breaks).
            return torch.compile(own, dynamic=None)

        norm, add_norm, rot, gate = fused(rms_norm), fused(add_rms_norm), fused(rotary_qk), fused(silu_gate)

        def rms_norm_tokens(x, weight, eps):
            return norm(_tokens(x), weight, eps).view(x.shape)

        def add_rms_norm_tokens(x, y, weight, eps):
            h, normed = add_norm(_tokens(x), _tokens(y), weight, eps)
            return h.view(x.shape), normed.view(x.shape)

        def rotary_qk_tokens(q, k, cos, sin):
            B, T = q.shape[:2]
            table = lambda t: _tokens(t.expand(B, T, -1), 2)  # noqa: E731  [N, D/2]
            qr, kr = rot(_tokens(q, 2), _tokens(k, 2), table(cos), table(sin))
            return qr.view(q.shape), kr.view(k.shape)

        def silu_gate_tokens(gate_in, up):
            return gate(_tokens(gate_in), _tokens(up)).view(up.shape)

        return cls(rms_norm_tokens, add_rms_norm_tokens, rotary_qk_tokens, silu_gate_tokens, compiled=True)


def _tokens(x: torch.Tensor, lead: int | None = None) -> torch.Tensor:
    """x with its token dimensions (all but the last one, or the first `lead`) flattened into
    one, marked dynamic for torch.compile."""
    lead = x.dim() - 1 if lead is None else lead
    flat = x.reshape(-1, *x.shape[lead:])
    if not flat.requires_grad:
        # Outside inference_mode a view remembers its base, and Dynamo guards on the base's
        # shape (a recompile per shape of, say, the projection it was cut from); a detached
        # alias of the same memory has no base.
        flat = flat.detach()
    torch._dynamo.maybe_mark_dynamic(flat, 0)
    return flat


EAGER = Elementwise(rms_norm, add_rms_norm, rotary_qk_complex, silu_gate)
_COPIES = itertools.count()  # names the per-model copies of the compiled functions


class LayerCache:
    """One layer's keys and values, k/v: [B, Hkv, S, D] views into a KVCache's storage."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v = k, v

    def write(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k/v ([B, Hkv, T, D]) at `slots`: [T] (same for every row) or [B, T]."""
        if slots.dim() == 1:
            self.k.index_copy_(2, slots, k)
            self.v.index_copy_(2, slots, v)
        else:
            index = slots[:, None, :, None].expand_as(k)
            self.k.scatter_(2, index, k)
            self.v.scatter_(2, index, v)

    def read(self, kv_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of slots [0, kv_len): [B, Hkv, kv_len, D] each (views)."""
        return self.k[:, :, :kv_len], self.v[:, :, :kv_len]


class KVCache:
    """Keys and values of every layer for `batch` rows of `max_len` slots each.

    Allocated once, on one device and dtype, by `Transformer.new_cache`. A forward writes
    the new tokens' keys/values at the slots it is given and attends over slots [0, kv_len).
    Which slot a token sits in is the caller's business (the scoring engine keeps a path of
    a prefix tree there; the generator keeps each row's sequence); rotary positions are
    applied before writing, so slots and positions are independent.
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v = k, v  # [L, B, Hkv, S, D]
        self.layers = [LayerCache(k[i], v[i]) for i in range(k.shape[0])]

    @classmethod
    def allocate(cls, n_layers: int, batch: int, kv_heads: int, max_len: int, head_dim: int,
                 device: torch.device | str, dtype: torch.dtype) -> "KVCache":
        shape = (n_layers, batch, kv_heads, max_len, head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def rows(self, n: int) -> "KVCache":
        """A cache over rows [0, n) of this one, sharing its storage (a fixed address per n, so
        a CUDA graph captured on it stays valid)."""
        return KVCache(self.k[:, :n], self.v[:, :n])

    def keep(self, slots: torch.Tensor) -> None:
        """Move the entries at `slots` ([n]) of every row to slots [0, n), in that order."""
        n = slots.numel()
        self.k[:, :, :, :n] = self.k.index_select(3, slots)
        self.v[:, :, :, :n] = self.v.index_select(3, slots)

    def copy_rows(self, source: "KVCache", src_rows, dst_rows, length: int) -> None:
        """Copy slots [0, length) of `source`'s rows `src_rows` into this cache's rows `dst_rows`
        (row indices: ints or index tensors of equal length)."""
        self.k[:, dst_rows, :, :length] = source.k[:, src_rows, :, :length]
        self.v[:, dst_rows, :, :length] = source.v[:, src_rows, :, :length]


@dataclass(frozen=True)
class ForwardInputs:
    """What every layer of one forward needs besides the hidden states; built once per forward
    by `Transformer.hidden`, so nothing here is recomputed per layer.

    rope: cos, sin [T or B, T, D/2] float32. bias: additive attention bias [B or 1, 1, T, K] in
    the activations' dtype (0 where allowed, -inf elsewhere), or None for plain causal over the
    T new tokens. block_mask: instead of a bias, a FlexAttention BlockMask (block-sparse: only
    blocks with an allowed pair are computed). key_blocks: query blocks attending gathered
    cache slots (`KeyBlocks`); bias is then its mask made additive, [nb, 1, block, K].
    slots: where the new keys/values go in the cache ([T] or [B, T]); kv_len: the cache
    slots attended over. shared_len > 0: cache slots [0, shared_len) hold the same
    keys/values in every row and are read once, from cache row shared_row (int64 [1]), for
    all rows (`shared_prefix_attention`); bias then covers only slots [shared_len, kv_len).
    """

    rope: tuple[torch.Tensor, torch.Tensor]
    bias: torch.Tensor | None
    slots: torch.Tensor | None = None
    kv_len: int = 0
    block_mask: object | None = None  # torch.nn.attention.flex_attention.BlockMask
    key_blocks: KeyBlocks | None = None
    shared_len: int = 0
    shared_row: torch.Tensor | None = None


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.kv_heads, self.head_dim = args.n_heads, args.kv_heads, args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, args.kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * args.head_dim, args.dim, bias=False)
        self.elementwise = EAGER

    def forward(self, x: torch.Tensor, inputs: ForwardInputs, cache: LayerCache | None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, -1, self.head_dim)  # [B, T, H, D]
        k = self.wk(x).view(B, T, -1, self.head_dim)  # [B, T, Hkv, D]
        v = self.wv(x).view(B, T, -1, self.head_dim)
        q, k = self.elementwise.rotary_qk(q, k, *inputs.rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H|Hkv, T, D]
        if cache is not None:
            cache.write(inputs.slots, k, v)
            if inputs.shared_len:
                out = shared_prefix_attention(q, cache, inputs)  # [B, H, T, D]
                return self.wo(out.transpose(1, 2).reshape(B, T, -1))
            k, v = cache.read(inputs.kv_len)  # [B, Hkv, S, D]
        grouped = self.kv_heads != self.n_heads
        if inputs.block_mask is not None:
            out = flex_attention(q, k, v, inputs.block_mask, grouped)  # [B, H, T, D]
            return self.wo(out.transpose(1, 2).reshape(B, T, -1))
        if inputs.key_blocks is not None:
            q, k, v = inputs.key_blocks.gather(q, k, v)  # query blocks as the batch
        if grouped and inputs.bias is not None and q.is_cuda:
            # CUDA's fused kernels that take a mask do not broadcast grouped key/value heads (PyTorch
            # then runs its unfused kernel, O(T x S) memory per head), so give each query head its
            # own. The CPU's kernel broadcasts them itself, faster than copying.
            k = k.repeat_interleave(self.n_heads // self.kv_heads, dim=1)  # [B, H, S, D]
            v = v.repeat_interleave(self.n_heads // self.kv_heads, dim=1)
            grouped = False
        out = sdpa_attention(q, k, v, inputs.bias, grouped)  # [B, H, T, D]
        if inputs.key_blocks is not None:
            out = inputs.key_blocks.ungather(out, T)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.ffn_dim, bias=False)  # gate
        self.w2 = nn.Linear(args.ffn_dim, args.dim, bias=False)  # down
        self.w3 = nn.Linear(args.dim, args.ffn_dim, bias=False)  # up
        self.elementwise = EAGER

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.elementwise.silu_gate(self.w1(x), self.w3(x)))


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.elementwise = EAGER

    def forward(self, x: torch.Tensor, inputs: ForwardInputs, cache: LayerCache | None) -> torch.Tensor:
        attended = self.attention(self.attention_norm(x), inputs, cache)
        # The residual sum and the FFN's norm of it together: one pass over h when compiled.
        h, normed = self.elementwise.add_rms_norm(x, attended, self.ffn_norm.weight, self.ffn_norm.eps)
        return h + self.feed_forward(normed)


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args.validate()
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self._compiled: Elementwise | None = None  # this model's compiled kernels, once asked for

    def compile_elementwise(self, enabled: bool) -> "Transformer":
        """Run this model's elementwise work (RMSNorm, residual add + norm, rotary, SiLU gate)
        as torch.compile'd fused kernels (True) or eagerly (False, the default); matrix
        products and attention stay eager either way. Other models are not affected.

        Results equal the eager ones up to float rounding. Kernels compile on the first
        forward of each kind of shape (seconds; a C++ compiler is needed on the CPU, Triton on
        CUDA), so the generator's warm-up steps compile them before a CUDA graph captures them.
        """
        if enabled and self._compiled is None:
            self._compiled = Elementwise.compiled_kernels()  # kept: switching back on recompiles nothing
        kernels = self._compiled if enabled else EAGER
        for module in self.modules():
            if isinstance(module, (RMSNorm, Attention, FeedForward, TransformerBlock)):
                module.elementwise = kernels
        return self

    @property
    def elementwise_compiled(self) -> bool:
        return self.norm.elementwise.compiled

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """A KV cache on this model's device and dtype."""
        w = self.tok_embeddings.weight
        # Head counts come from the modules: a tensor-parallel rank holds only its own kv heads.
        a, kv_heads = self.args, self.layers[0].attention.kv_heads
        return KVCache.allocate(a.n_layers, batch, kv_heads, max_len, a.head_dim, w.device, w.dtype)

    def hidden(self, tokens: torch.Tensor, positions: torch.Tensor | None = None, *,
               mask: torch.Tensor | None = None, cache: KVCache | None = None,
               slots: torch.Tensor | None = None, kv_len: int | None = None, shared_len: int = 0,
               shared_row: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden states [B, T, C] (before the final norm).

        tokens: [B, T]. positions: rotary positions, [T] or [B, T]; default 0..T-1.
        mask: boolean [B or 1, 1, T, K], True where a query may attend to a key; K is T
        without a cache and kv_len with one. None means causal over the T new tokens. A
        FlexAttention BlockMask over (T, kv_len) may stand in for the boolean mask.
        cache/slots/kv_len: write the new keys/values at `slots` of `cache` ([T] or [B, T])
        and attend over cache slots [0, kv_len) instead of the new tokens alone. With a cache and
        one row, `KeyBlocks` may stand in for the mask too.
        shared_len/shared_row: cache slots [0, shared_len) hold the same keys/values in every
        row (the caller's guarantee) and every query may see them; they are read once, from
        cache row shared_row (int64 [1]), and the mask covers only slots [shared_len, kv_len)
        (K = kv_len - shared_len). See `shared_prefix_attention`.
        """
        B, T = tokens.shape
        if positions is None:
            positions = torch.arange(T, device=tokens.device)
        if cache is not None:
            if slots is None or kv_len is None or mask is None:
                raise ValueError("a forward with a cache needs slots, kv_len and an explicit mask")
        if shared_len and (cache is None or shared_row is None or not 0 < shared_len < kv_len
                           or not isinstance(mask, torch.Tensor)):
            raise ValueError(f"shared_len {shared_len} needs a cache, a shared_row, kv_len {kv_len} above it "
                             "and a boolean mask")
        h = self.tok_embeddings(tokens)
        bias = block_mask = key_blocks = None

        def additive(allowed: torch.Tensor) -> torch.Tensor:  # once here, not in every layer
            return torch.zeros(allowed.shape, dtype=h.dtype, device=h.device).masked_fill_(~allowed, float("-inf"))

        if isinstance(mask, torch.Tensor):
            bias = additive(mask)
        elif isinstance(mask, KeyBlocks):
            if B != 1 or cache is None:
                raise ValueError("KeyBlocks attend cache slots of a single row")
            key_blocks, bias = mask, additive(mask.mask)
        elif mask is not None:
            block_mask = mask
        rope = rotary_tables(positions, self.args.head_dim, self.args.rope_theta, self.args.rope_scaling)
        inputs = ForwardInputs(rope, bias, slots, kv_len or 0, block_mask, key_blocks, shared_len, shared_row)
        for i, layer in enumerate(self.layers):
            h = layer(h, inputs, None if cache is None else cache.layers[i])
        return h

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Float32 logits [..., V] from hidden states [..., C]."""
        return self.output(self.norm(h)).float()

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """Logits [B, T, V] (float32) for tokens [B, T]; keyword arguments as in `hidden`."""
        return self.head(self.hidden(tokens, positions, **kw))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build(args: ModelArgs, device: torch.device | str = "meta", dtype: torch.dtype = torch.float32) -> Transformer:
    """The network with uninitialised weights on `device` (meta by default: no memory)."""
    with torch.device(device):
        model = Transformer(args)
    return model.to(dtype)


def init_random(model: Transformer, seed: int = 0) -> Transformer:
    """Fill a materialised model with small random weights (tests, demo, benchmarks)."""
    gen = torch.Generator().manual_seed(seed)
    std = 1 / math.sqrt(model.args.dim)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))
    return model
