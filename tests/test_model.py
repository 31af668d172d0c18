"""The network against Hugging Face transformers, cached decoding against a full forward, presets."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from llama_eval.model.checkpoint import load_checkpoint
from llama_eval.model.llama import ModelArgs, build, count_parameters, init_random
from llama_eval.model.presets import PRESETS, preset

transformers = pytest.importorskip("transformers")

# 320 SentencePiece pieces, made by make_tiny_tokenizer.py beside it.
from conftest import TINY_TOKENIZER  # noqa: E402
VOCAB = 320

LLAMA1_STYLE = dict(num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6)
GROUPED_QUERY = dict(num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=True)


def save_hf_model(folder: Path, **config) -> torch.nn.Module:
    """A random LlamaForCausalLM saved by transformers into `folder`, with the tiny tokenizer."""
    cfg = transformers.LlamaConfig(
        **{"vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 144, "num_hidden_layers": 2,
           "max_position_embeddings": 128, **config},
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            # transformers initialises with std 0.02, under which attention is nearly uniform and
            # a wrong rotary row order would barely show; these weights make attention sharp.
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape))
            else:
                p.copy_(2 * torch.randn(p.shape) / math.sqrt(p.shape[-1]))
    model.save_pretrained(folder)
    shutil.copy(TINY_TOKENIZER, folder / "tokenizer.model")
    return model


def random_tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("config", [LLAMA1_STYLE, GROUPED_QUERY], ids=["llama1-style", "grouped-query"])
def test_logits_equal_transformers(tmp_path, config):
    hf = save_hf_model(tmp_path, **config)
    loaded = load_checkpoint(tmp_path, device="cpu", dtype="float32")
    assert loaded.info.format == "hf"
    assert loaded.info.args.kv_heads == config["num_key_value_heads"]
    tokens = random_tokens(2, 24)
    with torch.no_grad():
        ours = loaded.model(tokens)
        theirs = hf(tokens).logits
    assert ours.shape == (2, 24, VOCAB)
    assert (ours - theirs).abs().max().item() <= 1e-4

    # The comparison can see the rotary row order: Hugging Face's q/k rows used as they are stored
    # (the permutation not undone) give clearly different logits.
    model = loaded.model
    with torch.no_grad():
        for i, layer in enumerate(hf.model.layers):
            model.layers[i].attention.wq.weight.copy_(layer.self_attn.q_proj.weight)
            model.layers[i].attention.wk.weight.copy_(layer.self_attn.k_proj.weight)
        assert (model(tokens) - theirs).abs().max().item() > 1e-2


def test_hf_sharded_layouts(tmp_path):
    """Sharded safetensors with an index, and the older pytorch_model-*.bin shards with theirs."""
    hf = save_hf_model(tmp_path / "one", **LLAMA1_STYLE)
    with torch.no_grad():
        expected = load_checkpoint(tmp_path / "one", device="cpu").model(random_tokens(1, 10))

    hf.save_pretrained(tmp_path / "sharded", max_shard_size="50KB")
    shutil.copy(TINY_TOKENIZER, tmp_path / "sharded" / "tokenizer.model")
    sharded = load_checkpoint(tmp_path / "sharded", device="cpu")
    assert len(sharded.info.files) > 4 and sharded.info.files[1].name == "model.safetensors.index.json"

    # Written by hand as transformers 4 did: two .bin shards, an index, and the rotary buffer
    # inv_freq that early versions saved with the weights.
    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(tmp_path / "one" / "config.json", folder)
    shutil.copy(TINY_TOKENIZER, folder / "tokenizer.model")
    state = {**hf.state_dict(), "model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    for file, keys in halves.items():
        torch.save({k: state[k] for k in keys}, folder / file)
    weight_map = {k: file for file, keys in halves.items() for k in keys}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    from_bin = load_checkpoint(folder, device="cpu")

    with torch.no_grad():
        for loaded in (sharded, from_bin):
            assert torch.equal(loaded.model(random_tokens(1, 10)), expected)


def test_tied_classifier_shares_the_embedding(tmp_path):
    save_hf_model(tmp_path, **GROUPED_QUERY)
    model = load_checkpoint(tmp_path, device="cpu").model
    assert model.output.weight is model.tok_embeddings.weight


def small_model(**overrides) -> torch.nn.Module:
    args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=100, multiple_of=32, **overrides)
    return init_random(build(args, "cpu"), seed=3).eval()


def test_cached_decoding_equals_full_forward():
    model = small_model()
    B, T, prefill = 2, 12, 5
    tokens = torch.randint(0, 100, (B, T), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(batch=B, max_len=T)
        causal = torch.ones(prefill, prefill, dtype=torch.bool).tril()[None, None]  # [1, 1, T, K]
        positions = torch.arange(prefill)
        h = model.hidden(tokens[:, :prefill], positions, mask=causal, cache=cache, slots=positions, kv_len=prefill)
        steps = [model.head(h)]
        for t in range(prefill, T):
            here = torch.tensor([t])
            everything = torch.ones(1, 1, 1, t + 1, dtype=torch.bool)  # the new token sees all before it
            h = model.hidden(tokens[:, t : t + 1], here, mask=everything, cache=cache, slots=here, kv_len=t + 1)
            steps.append(model.head(h))
    incremental = torch.cat(steps, dim=1)
    assert incremental.shape == full.shape
    assert (incremental - full).abs().max().item() <= 1e-5


def test_presets_are_looked_up_exactly():
    assert preset("7b") is PRESETS["7b"].args
    assert preset("llama2-70b").kv_heads == 8
    with pytest.raises(KeyError, match=r"unknown model preset '7B'\. Did you mean 7b"):
        preset("7B")
    with pytest.raises(KeyError, match=r"Did you mean llama2-7b"):
        preset("llama2_7b")
    with pytest.raises(KeyError, match=r"Presets: 7b, 13b, 33b, 65b, llama2-7b"):
        preset("gpt2")


# Parameter counts of the released checkpoints as printed by tools that load them: 13B, 30B and
# 65B in juncongmoo/pyllama docs/quant/README.md; 7B and Llama-2-70B in many model tables.
PUBLISHED_PARAMETERS = {
    "7b": 6_738_415_616,
    "13b": 13_015_864_320,
    "33b": 32_528_943_616,
    "65b": 65_285_660_672,
    "llama2-7b": 6_738_415_616,
    "llama2-70b": 68_976_648_192,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_preset_sizes_match_the_released_models(name):
    assert count_parameters(build(preset(name))) == PUBLISHED_PARAMETERS[name]


# ---------------------------------------------------------------------------- the Llama 3 family

# The shapes of Llama 3, 3.1 and 3.2 at toy sizes: RoPE base 500,000, grouped-query attention,
# 3.1's "llama3" RoPE scaling (factor 8), 3.2's (factor 32) with tied embeddings.
_LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192}
LLAMA3_SHAPES = {
    "llama3": dict(num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500000.0,
                   max_position_embeddings=8192),
    "llama3.1": dict(num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500000.0,
                     rope_scaling=_LLAMA31_ROPE, max_position_embeddings=131072),
    "llama3.2": dict(num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=500000.0,
                     rope_scaling={**_LLAMA31_ROPE, "factor": 32.0}, max_position_embeddings=131072,
                     tie_word_embeddings=True),
}


@pytest.mark.parametrize("shape", sorted(LLAMA3_SHAPES))
def test_llama3_family_logits_equal_transformers(tmp_path, shape):
    hf = save_hf_model(tmp_path, **LLAMA3_SHAPES[shape])
    loaded = load_checkpoint(tmp_path, device="cpu", dtype="float32")
    args = loaded.info.args
    assert args.rope_theta == 500000.0 and args.max_seq_len == 8192  # 3.1's 131,072 capped by default
    assert args.tie_embeddings == (shape == "llama3.2")
    tokens = random_tokens(2, 24)
    # Far positions: the scaled (long-wavelength) RoPE frequencies turn by a visible angle there.
    positions = torch.arange(9000, 9024)
    with torch.no_grad():
        ours = loaded.model(tokens, positions)
        theirs = hf(tokens, position_ids=positions.expand(2, -1)).logits
        assert (ours - theirs).abs().max().item() <= 1e-4
        if args.rope_scaling is not None:  # the comparison sees the scaling
            loaded.model.args = dataclasses.replace(args, rope_scaling=None)
            assert (loaded.model(tokens, positions) - theirs).abs().max().item() > 1e-2


def test_older_transformers_rope_keys_give_the_same_config(tmp_path):
    """transformers < 5 writes rope_theta top-level and the scaling under rope_scaling."""
    save_hf_model(tmp_path / "new", **LLAMA3_SHAPES["llama3.2"])
    new = load_checkpoint(tmp_path / "new", device="cpu").info.args
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = rope
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    assert load_checkpoint(tmp_path / "old", device="cpu").info.args == new
    assert new.rope_scaling.factor == 32.0 and new.rope_scaling.original_max_len == 8192


# Published shapes (config.json of meta-llama's repositories): hidden, layers, heads, kv heads,
# intermediate size, RoPE factor, tied; and the parameter counts transformers reports for them.
LLAMA3_PUBLISHED = {
    "llama3-8b": ((4096, 32, 32, 8, 14336, None, False), 8_030_261_248),
    "llama3-70b": ((8192, 80, 64, 8, 28672, None, False), 70_553_706_496),
    "llama3.1-8b": ((4096, 32, 32, 8, 14336, 8.0, False), 8_030_261_248),
    "llama3.1-70b": ((8192, 80, 64, 8, 28672, 8.0, False), 70_553_706_496),
    "llama3.2-1b": ((2048, 16, 32, 8, 8192, 32.0, True), 1_235_814_400),
    "llama3.2-3b": ((3072, 28, 24, 8, 8192, 32.0, True), 3_212_749_824),
}


@pytest.mark.parametrize("name", sorted(LLAMA3_PUBLISHED))
def test_llama3_presets_have_the_published_shapes(name):
    a = preset(name)
    scaling = a.rope_scaling.factor if a.rope_scaling else None
    shape, n_params = LLAMA3_PUBLISHED[name]
    assert (a.dim, a.n_layers, a.n_heads, a.kv_heads, a.ffn_dim, scaling, a.tie_embeddings) == shape
    assert (a.vocab_size, a.rope_theta, a.norm_eps) == (128256, 500000.0, 1e-5)
    assert count_parameters(build(a)) == n_params


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_complex_rotary_equals_the_pairwise_formula(dtype):
    """The eager path's complex product rotates exactly as the written-out pairs do (the
    compiled kernels use the latter)."""
    from llama_eval.model.llama import apply_rotary, rotary_qk_complex, rotary_tables

    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 7, h, 16, generator=gen).to(dtype) for h in (4, 2))
    for positions in (torch.arange(7), torch.randint(0, 2048, (2, 7), generator=gen)):
        cos, sin = rotary_tables(positions, 16, 10000.0)
        rq, rk = rotary_qk_complex(q, k, cos, sin)
        assert rq.dtype == dtype and rq.shape == q.shape
        torch.testing.assert_close(rq, apply_rotary(q, cos, sin), atol=1e-6, rtol=0)
        torch.testing.assert_close(rk, apply_rotary(k, cos, sin), atol=1e-6, rtol=0)
