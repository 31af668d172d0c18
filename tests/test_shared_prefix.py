"""Shared-prefix (cascade) attention: equal to attention over the full rows, and the generator
that uses it equal to the one that does not (and to the naive loop)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from llama_eval.engine.generation import Generator, _own_bucket
from llama_eval.model.attention import shared_prefix_attention
from llama_eval.model.llama import ForwardInputs, KVCache, build, init_random
from llama_eval.requests import GenerationRequest as G

from test_generation import naive, without_eos


def _rows_sharing_a_prefix(B: int, Hkv: int, S: int, D: int, P: int, src: int, seed: int) -> KVCache:
    """A one-layer cache of random keys/values whose slots [0, P) are row src's in every row."""
    gen = torch.Generator().manual_seed(seed)
    cache = KVCache(torch.randn(1, B, Hkv, S + 7, D, generator=gen), torch.randn(1, B, Hkv, S + 7, D, generator=gen))
    cache.copy_rows(cache, torch.full((B,), src), torch.arange(B), P)
    return cache


@pytest.mark.parametrize("H,Hkv", [(4, 4), (8, 2)])  # plain multi-head, grouped-query
@pytest.mark.parametrize("B,T,P,own,src", [(1, 1, 64, 32, 0), (5, 1, 100, 64, 3), (3, 4, 7, 33, 1), (8, 1, 128, 1, 6)])
def test_equals_sdpa_over_full_rows(H, Hkv, B, T, P, own, src):
    D, S = 16, P + own
    cache = _rows_sharing_a_prefix(B, Hkv, S, D, P, src, seed=B * 100 + P)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(B, H, T, D, generator=gen)
    # Query t of row b sits at a position in [P, S + 3): every shared slot is visible, own slots
    # up to the position are; positions past S stand for idle rows that see every slot.
    positions = torch.randint(P, S + 3, (B, T), generator=gen)
    allowed = torch.arange(S) <= positions[:, :, None]  # [B, T, S]
    bias = torch.zeros(B, 1, T, S).masked_fill_(~allowed[:, None], float("-inf"))
    inputs = ForwardInputs(rope=(torch.zeros(1), torch.zeros(1)), bias=bias[..., P:], kv_len=S, shared_len=P,
                           shared_row=torch.tensor([src]))
    got = shared_prefix_attention(q, cache.layers[0], inputs)
    k, v = cache.layers[0].read(S)
    want = F.scaled_dot_product_attention(q, k.repeat_interleave(H // Hkv, 1), v.repeat_interleave(H // Hkv, 1),
                                          attn_mask=bias)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    # The shared slots are read from row src alone: the other rows' copies are never touched.
    others = torch.arange(B) != src
    cache.k[:, others, :, :P] = float("nan")
    cache.v[:, others, :, :P] = float("nan")
    assert torch.equal(shared_prefix_attention(q, cache.layers[0], inputs), got)


@pytest.mark.parametrize("n_kv_heads", [2, 4])
def test_model_forward_with_a_shared_prefix_equals_full_rows(n_kv_heads):
    args = replace(build_args(), n_kv_heads=n_kv_heads)
    model = init_random(build(args, "cpu"), seed=3)
    B, P, S = 4, 40, 96

    def run(cache, tokens, positions):
        mask = (torch.arange(S) <= positions[:, None])[None, None]
        model.hidden(tokens[None], positions, mask=mask, cache=cache, slots=positions, kv_len=S)

    cache = model.new_cache(B, S)
    with torch.no_grad():
        # A header run once and copied into every row, then 0, 3, 9 and 20 own tokens per row.
        one = model.new_cache(1, S)
        run(one, torch.randint(0, args.vocab_size, (P,), generator=torch.Generator().manual_seed(0)), torch.arange(P))
        cache.copy_rows(one, torch.zeros(B, dtype=torch.long), torch.arange(B), P)
        lengths = (0, 3, 9, 20)
        for r, n in enumerate(lengths):
            if n:
                run(_row(cache, r), torch.randint(0, args.vocab_size, (n,), generator=torch.Generator().manual_seed(r)),
                    P + torch.arange(n))
        tokens = torch.tensor([[5], [6], [7], [8]])
        positions = torch.tensor([[P + n] for n in lengths])
        full = copy.deepcopy(cache)
        kv_len = 96
        want = model(tokens, positions, mask=(torch.arange(kv_len) <= positions)[:, None, None], cache=full,
                     slots=positions, kv_len=kv_len)
        # Slots [0, 32) are shared (P rounded down); 32..39 of the header count as each row's own.
        got = model(tokens, positions, mask=(torch.arange(32, kv_len) <= positions)[:, None, None], cache=cache,
                    slots=positions, kv_len=kv_len, shared_len=32, shared_row=torch.tensor([2]))
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    assert torch.allclose(cache.k, full.k, atol=1e-5, rtol=0)  # both wrote the new keys at the same slots


def build_args():
    from llama_eval.model.presets import preset

    return replace(preset("tiny"), vocab_size=64, max_seq_len=128)


def _row(cache: KVCache, r: int) -> KVCache:
    """Row r of a cache as a one-row cache sharing its storage."""
    return KVCache(cache.k[:, r : r + 1], cache.v[:, r : r + 1])


def few_shot_requests(tok, sampled: bool = True) -> list[G]:
    """Six greedy questions after a few-shot header of more than two granules (128 slots), plus
    (sampled) one question sampled three times."""
    header = "".join(f"Q: what does the {w} see in the garden?\nA: the {w} sees a red ball and a tree.\n\n"
                     for w in ("cat", "dog", "bird", "fox", "frog", "hen"))
    assert len(tok.encode(header, bos=True)) > 2 * 64
    words = ("my friend", "the farmer", "a teacher", "the cat", "a dog", "the sun")
    reqs = [G(header + f"Q: what does {w} see?\nA:", until=("\n\n",), max_new_tokens=4 + 5 * (i % 3))
            for i, w in enumerate(words)]
    if sampled:
        reqs.append(G(header + "Q: what does the moon see?\nA:", temperature=0.9, n=3, seed=5, max_new_tokens=12))
    return reqs


def test_generation_with_shared_prefix_equals_without(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    tok = without_eos(tok)
    reqs = few_shot_requests(tok)
    on = Generator(model, tok, max_batch=8)  # 6 + 3 rows: a bucket of 8, then idle rows as rows finish
    off = Generator(model, tok, max_batch=8, shared_prefix=False)
    assert on.generate(reqs) == off.generate(reqs)
    assert on.stats.shared_steps > 0 and off.stats.shared_steps == 0
    assert on.stats.decode_steps == off.stats.decode_steps
    assert on.stats.rows_moved > 0  # compaction moved live rows (and the row the prefix is read from)
    # The header's 128 shared slots are read once per step instead of once per row.
    assert on.stats.decode_kv_slots < 0.6 * off.stats.decode_kv_slots, (on.stats, off.stats)


def test_shared_prefix_greedy_equals_naive_loop(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    reqs = few_shot_requests(tok, sampled=False)[:4]
    gen = Generator(model, tok, max_batch=4, prefill_tokens=1)  # prompts prefilled one group at a time
    res = gen.generate(reqs)
    assert gen.stats.shared_steps > 0
    for req, r in zip(reqs, res):
        assert r.completions == (naive(model, tok, req, model.args.max_seq_len)[1],)


def test_rows_without_a_common_header_take_the_plain_path(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    tok = without_eos(tok)
    reqs = few_shot_requests(tok, sampled=False)[:3] + [G("Once upon a time", max_new_tokens=30)]
    on = Generator(model, tok, max_batch=4)
    off = Generator(model, tok, max_batch=4, shared_prefix=False)
    assert on.generate(reqs) == off.generate(reqs)
    # While the story row lives the rows share only BOS; once it is alone, nothing is shared either.
    assert on.stats.shared_steps == 0
    assert on.stats.decode_kv_slots == off.stats.decode_kv_slots


def test_slot_counters_match_the_steps_shapes(tiny_model_and_tokenizer):
    """Two rows sharing a few-shot header, read in full (off) or with the header once (on)."""
    model, tok = tiny_model_and_tokenizer
    tok = without_eos(tok)
    reqs = few_shot_requests(tok, sampled=False)[:2]
    ids = [tok.encode(r.prompt, bos=True) for r in reqs]
    shared = next(i for i, (a, b) in enumerate(zip(*ids)) if a != b)
    reqs = [G(r.prompt, max_new_tokens=3) for r in reqs]
    for on in (True, False):
        gen = Generator(model, tok, max_batch=2, shared_prefix=on)
        gen._min_shared_saving = 0  # take the path whenever it reads fewer slots
        gen.generate(reqs)
        lengths = [[len(x) + t for x in ids] for t in range(3)]  # slots in use at each step, per row
        assert gen.stats.decode_kv_live == sum(sum(ls) - shared for ls in lengths)
        P = shared // 64 * 64
        pow2 = lambda n: max(32, 1 << (n - 1).bit_length())  # noqa: E731  (the plain path's slot bucket)
        own = lambda n: min(b for b in (32, 48, 64, 96, 128, 192, 256) if b >= n)  # noqa: E731
        expected = [P + 2 * own(max(ls) - P) if on else 2 * pow2(max(ls)) for ls in lengths]
        assert gen.stats.decode_kv_slots == sum(expected), (gen.stats, [max(ls) for ls in lengths], P)
        assert gen.stats.shared_steps == (3 if on else 0)


def test_own_bucket_steps():
    sizes = sorted({_own_bucket(n, 10**6) for n in range(1, 5000)})
    assert sizes[:8] == [32, 48, 64, 96, 128, 192, 256, 384]
    assert all(1.3 < b / a <= 1.5 for a, b in zip(sizes, sizes[1:]))
    assert all(_own_bucket(n, 10**6) >= n for n in range(1, 5000))
    assert _own_bucket(300, 100) == 100  # never past the cache
