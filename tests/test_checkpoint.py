"""Checkpoint loading: Meta's shards, llama2.c exports, random models, spec resolution, bad inputs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch

from llama_eval.errors import UserError
from llama_eval.model.checkpoint import (
    CACHE_DIR_ENV, HASH_MEMO_FILE, MODELS_ENV, TOKENIZER_ENV, describe, file_sha256, load_checkpoint, load_model,
    resolve_spec, stored_dtype,
)
from llama_eval.cli import main
from llama_eval.model.convert import convert
from llama_eval.model.formats import window
from llama_eval.model.llama import ModelArgs, RopeScaling, build, count_parameters, init_random, rotary_tables
from llama_eval.model.presets import preset, recognise

from conftest import TINY_TOKENIZER  # noqa: E402  (320 pieces)
VOCAB = 320
ARGS = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=VOCAB, multiple_of=32, norm_eps=1e-5)
TOKENS = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))


def random_model(args: ModelArgs = ARGS, seed: int = 0):
    return init_random(build(args, "cpu"), seed=seed).eval()


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS)


# ---------------------------------------------------------------------------- Meta's layout

# How Meta's model-parallel code (fairscale) splits each weight across shards: column-parallel
# layers split their output rows, row-parallel layers their input columns, LLaMA 1/2's
# ParallelEmbedding the embedding width; the RMSNorm weights are copied into every shard.
COLUMN_PARALLEL = {"wq", "wk", "wv", "w1", "w3", "output"}
ROW_PARALLEL = {"wo", "w2", "tok_embeddings"}


def split_like_meta(state: dict[str, torch.Tensor], n: int, vocab_parallel: bool = False) -> list[dict[str, torch.Tensor]]:
    """Meta's shards; vocab_parallel: the embedding split along the vocabulary, as Llama 3's code does."""
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(n)]
    for name, tensor in state.items():
        module = name.split(".")[-2]
        if module in COLUMN_PARALLEL or (vocab_parallel and module == "tok_embeddings"):
            parts = tensor.chunk(n, dim=0)
        elif module in ROW_PARALLEL:
            parts = tensor.chunk(n, dim=1)
        else:
            parts = [tensor] * n
        for shard, part in zip(shards, parts):
            shard[name] = part.clone()  # clone: save the slice, not the whole storage
    for shard in shards:
        shard["rope.freqs"] = torch.ones(ARGS.head_dim // 2)  # LLaMA 1 files carry this key
    return shards


def params_json(args: ModelArgs = ARGS, **changes) -> dict:
    """params.json as Meta writes it: vocab_size -1 means the tokenizer's."""
    params = dict(dim=args.dim, n_layers=args.n_layers, n_heads=args.n_heads, n_kv_heads=args.n_kv_heads,
                  multiple_of=args.multiple_of, norm_eps=args.norm_eps, vocab_size=-1)
    return {**params, **changes}


def write_meta(folder: Path, state: dict[str, torch.Tensor], n_shards: int = 1, vocab_parallel: bool = False,
               **params) -> Path:
    """A Meta checkpoint in `folder`, with tokenizer.model one folder up as Meta's download has it."""
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params_json(**params)))
    for i, shard in enumerate(split_like_meta(state, n_shards, vocab_parallel)):
        torch.save(shard, folder / f"consolidated.{i:02d}.pth")
    shutil.copy(TINY_TOKENIZER, folder.parent / "tokenizer.model")
    return folder


def test_meta_one_and_two_shards_give_the_same_logits(tmp_path):
    source = random_model()
    one = load_checkpoint(write_meta(tmp_path / "one", source.state_dict()), device="cpu")
    two = load_checkpoint(write_meta(tmp_path / "two", source.state_dict(), n_shards=2), device="cpu")
    assert one.info.format == two.info.format == "meta"
    # A config that states no window and is no published model gets LLaMA 1's 2,048 tokens.
    assert one.info.args == two.info.args == dataclasses.replace(ARGS, max_seq_len=2048)
    assert torch.equal(logits(one.model), logits(source))
    assert torch.equal(logits(two.model), logits(source))
    assert len(two.info.files) == 4  # params.json, two shards, tokenizer.model
    llama3_split = load_checkpoint(write_meta(tmp_path / "three", source.state_dict(), n_shards=2,
                                              vocab_parallel=True), device="cpu")
    assert torch.equal(logits(llama3_split.model), logits(source))


def test_meta_context_window_comes_from_the_config_or_the_published_model(tmp_path):
    state = random_model().state_dict()
    # A folder named like Llama 2's does not make its model Llama 2: only the config can.
    named = write_meta(tmp_path / "b" / "llama-2-7b", state)
    assert load_checkpoint(named, device="cpu").info.args.max_seq_len == 2048
    assert load_checkpoint(named, device="cpu", max_seq_len=512).info.args.max_seq_len == 512
    stated = write_meta(tmp_path / "c" / "m", state, max_seq_len=300)
    assert load_checkpoint(stated, device="cpu").info.args.max_seq_len == 300
    # Meta's params.json of LLaMA 1 and Llama 2 7B differ only in norm_eps; the whole config
    # identifies the published model, whose window it then takes.
    llama1 = ModelArgs(dim=4096, n_layers=32, n_heads=32, vocab_size=32000, norm_eps=1e-6)
    llama2 = dataclasses.replace(llama1, norm_eps=1e-5)
    assert (recognise(llama1), recognise(llama2), recognise(ARGS)) == ("7b", "llama2-7b", None)
    assert (window(None, llama1, None), window(None, llama2, None), window(None, ARGS, None)) == (2048, 4096, 2048)
    # Llama 3.1 states 131,072 tokens; the engine's window is capped unless --max-len says otherwise.
    assert window(131072, preset("llama3.1-8b"), None) == 8192
    assert window(131072, preset("llama3.1-8b"), 16384) == 16384


def test_dtype_conversion_and_describe(tmp_path):
    folder = write_meta(tmp_path / "m", random_model().state_dict())
    loaded = load_checkpoint(folder, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in loaded.model.parameters())
    info = describe(loaded)
    assert info["format"] == "meta" and info["dtype"] == "bfloat16" and info["device"] == "cpu"
    assert info["parameters"] == count_parameters(random_model()) == loaded.info.n_params
    assert info["config"]["dim"] == 64 and info["config"]["kv_heads"] == 2
    assert info["files"] == [str(folder / "params.json"), str(folder / "consolidated.00.pth"),
                             str(tmp_path / "tokenizer.model")]
    assert info["fingerprint"] == loaded.info.fingerprint
    json.dumps(info)  # printable as JSON by `llama-eval info`


def test_fingerprint_names_weights_not_places(tmp_path):
    folder = write_meta(tmp_path / "a" / "m", random_model().state_dict())
    copy = tmp_path / "b" / "m"
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    other = write_meta(tmp_path / "c" / "m", random_model(seed=1).state_dict())
    first = load_checkpoint(folder, device="cpu").info.fingerprint
    assert len(first) == 16 and int(first, 16) >= 0
    assert load_checkpoint(copy, device="cpu").info.fingerprint == first
    assert load_checkpoint(other, device="cpu").info.fingerprint != first
    assert load_checkpoint(folder, device="cpu", max_seq_len=64).info.fingerprint != first


# ---------------------------------------------------------------------------- llama2.c exports

LLAMA2C_LAYER_ORDER = ["attention_norm", "attention.wq", "attention.wk", "attention.wv", "attention.wo",
                       "ffn_norm", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"]


def write_llama2c(file: Path, model, seq_len: int = 32) -> Path:
    """A version 0 llama2.c export of `model`, in the layout PROVENANCE.md describes."""
    a, sd = model.args, model.state_dict()
    vocab = a.vocab_size if a.tie_embeddings else -a.vocab_size  # negative: classifier stored at the end
    header = struct.pack("<7i", a.dim, a.ffn_dim, a.n_layers, a.n_heads, a.kv_heads, vocab, seq_len)
    blocks = [sd["tok_embeddings.weight"]]
    for key in LLAMA2C_LAYER_ORDER:
        blocks += [sd[f"layers.{i}.{key}.weight"] for i in range(a.n_layers)]
    blocks.append(sd["norm.weight"])
    blocks += rotary_tables(torch.arange(seq_len), a.head_dim, a.rope_theta)  # legacy cos, sin tables
    if not a.tie_embeddings:
        blocks.append(sd["output.weight"])
    body = torch.cat([b.reshape(-1).float() for b in blocks]).numpy().astype("<f4").tobytes()
    file.write_bytes(header + body)
    return file


LLAMA2C_ARGS = ModelArgs(dim=64, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=VOCAB, hidden_dim=100,
                         norm_eps=1e-5, max_seq_len=32)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_llama2c_export_round_trip(tmp_path, tied):
    source = random_model(dataclasses.replace(LLAMA2C_ARGS, tie_embeddings=tied))
    file = write_llama2c(tmp_path / "model.bin", source)
    loaded = load_checkpoint(file, device="cpu", tokenizer=TINY_TOKENIZER)
    assert loaded.info.format == "llama2c"
    assert loaded.info.args == source.args
    assert (loaded.model.output.weight is loaded.model.tok_embeddings.weight) == tied
    assert torch.equal(logits(loaded.model), logits(source))


def test_llama2c_tokenizer_is_found_beside_the_file(tmp_path):
    file = write_llama2c(tmp_path / "model.bin", random_model(LLAMA2C_ARGS))
    shutil.copy(TINY_TOKENIZER, tmp_path / "tok320.model")
    model, tok = load_model(file, device="cpu")
    assert tok.path == tmp_path / "tok320.model" and tok.vocab_size == VOCAB


def test_llama2c_size_and_version_are_checked(tmp_path):
    file = write_llama2c(tmp_path / "model.bin", random_model(LLAMA2C_ARGS))
    size = file.stat().st_size
    file.write_bytes(file.read_bytes()[:-4])
    with pytest.raises(UserError, match=rf"model\.bin has {size - 4} bytes but its header .* implies {size}"):
        load_checkpoint(file, device="cpu", tokenizer=TINY_TOKENIZER)
    file.write_bytes(struct.pack("<Ii", 0x616B3432, 1) + bytes(300))
    with pytest.raises(UserError, match="version 1 or 2 export; only version 0"):
        load_checkpoint(file, device="cpu", tokenizer=TINY_TOKENIZER)


@pytest.mark.slow
def test_stories260k_greedy_sample(shared_data):
    """llama2.c's doc/stories260K.md prints this temperature-0 sample from BOS."""
    folder = shared_data / "model" / "stories260K"
    if not (folder / "stories260K.bin").is_file():
        pytest.skip("stories260K is absent from ../shared/data")
    model, tok = load_model(folder / "stories260K.bin", device="cpu")
    ids = [tok.bos_id]
    with torch.no_grad():
        for _ in range(45):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    expected = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
                "One day, she saw a big, red ball.")
    assert tok.decode(ids).startswith(expected)


# ---------------------------------------------------------------------------- random models


def test_random_preset_is_deterministic(monkeypatch):
    monkeypatch.setenv(TOKENIZER_ENV, str(TINY_TOKENIZER))
    a = load_checkpoint("random:tiny", device="cpu")
    b = load_checkpoint("random:tiny", device="cpu")
    assert a.info.format == "random" and a.info.args.vocab_size == VOCAB
    assert a.info.fingerprint == b.info.fingerprint
    assert torch.equal(logits(a.model), logits(b.model))


def test_random_preset_needs_a_tokenizer(monkeypatch):
    monkeypatch.delenv(TOKENIZER_ENV, raising=False)
    with pytest.raises(UserError, match=rf"random:tiny needs a tokenizer: pass tokenizer=PATH "
                                        rf"\(--tokenizer\) or set {TOKENIZER_ENV}"):
        load_checkpoint("random:tiny", device="cpu")
    with pytest.raises(UserError, match="unknown model preset 'tinny'. Did you mean tiny"):
        load_checkpoint("random:tinny", device="cpu", tokenizer=TINY_TOKENIZER)


# ---------------------------------------------------------------------------- spec resolution


def test_preset_resolves_under_models_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    (tmp_path / "7B").mkdir()
    assert resolve_spec("7b") == tmp_path / "7B"
    (tmp_path / "Llama-2-13b-hf").mkdir()
    assert resolve_spec("llama2-13b") == tmp_path / "Llama-2-13b-hf"


def test_preset_folder_must_hold_that_model(tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    write_meta(tmp_path / "7B", random_model().state_dict())
    with pytest.raises(UserError, match=r"7B does not hold the 7b model: its dim is 64, the preset's is 4096"):
        load_checkpoint("7b", device="cpu")


def test_models_env_unset(monkeypatch):
    monkeypatch.delenv(MODELS_ENV, raising=False)
    with pytest.raises(UserError, match=rf"\${MODELS_ENV}, which is not set; set {MODELS_ENV} to the folder "
                                        r"that holds 30B or llama-30b, or pass the checkpoint's path"):
        load_checkpoint("33b", device="cpu")


def test_preset_not_found_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    with pytest.raises(UserError) as err:
        load_checkpoint("llama2-70b", device="cpu")
    message = str(err.value)
    assert f"looked in {tmp_path / 'llama-2-70b'}, {tmp_path / 'Llama-2-70b-hf'}." in message
    assert f"Set {MODELS_ENV}" in message and "pass the checkpoint's path" in message


def test_unknown_preset_suggests_close_matches():
    with pytest.raises(UserError, match=r"model '7B' is neither a file or folder nor a preset\. Did you mean 7b"):
        load_checkpoint("7B", device="cpu")
    with pytest.raises(UserError, match=r"Did you mean llama2-13b"):
        load_checkpoint("llama2-13", device="cpu")
    with pytest.raises(UserError, match=r"preset 'tiny' has no published checkpoint; use 'random:tiny'"):
        load_checkpoint("tiny", device="cpu")


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match=rf"model path {tmp_path / 'nowhere'} does not exist"):
        load_checkpoint(tmp_path / "nowhere", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"holds neither params\.json \(Meta's layout\) nor config\.json"):
        load_checkpoint(tmp_path / "empty", device="cpu")


# ---------------------------------------------------------------------------- strict loading


def test_missing_key_names_key_and_file(tmp_path):
    state = random_model().state_dict()
    del state["layers.1.ffn_norm.weight"]
    folder = write_meta(tmp_path / "m", state)
    with pytest.raises(UserError, match=rf"weight 'layers\.1\.ffn_norm\.weight' is missing from "
                                        rf"{folder / 'consolidated.00.pth'}"):
        load_checkpoint(folder, device="cpu")


def test_unexpected_key_names_key_and_file(tmp_path):
    state = {**random_model().state_dict(), "layers.0.attention.wq.bias": torch.zeros(64)}
    folder = write_meta(tmp_path / "m", state)
    with pytest.raises(UserError, match=rf"unexpected weight 'layers\.0\.attention\.wq\.bias' in "
                                        rf"{folder / 'consolidated.00.pth'}"):
        load_checkpoint(folder, device="cpu")


def test_shape_that_disagrees_with_the_config(tmp_path):
    # The weights were made with multiple_of 32 (FFN width 192); multiple_of 128 implies 256.
    state = random_model().state_dict()
    folder = write_meta(tmp_path / "m", state, multiple_of=128)
    with pytest.raises(UserError, match=rf"weight 'layers\.0\.feed_forward\.w1\.weight' in "
                                        rf"{folder / 'consolidated.00.pth'} has shape \[192, 64\] but the "
                                        r"config implies \[256, 64\]"):
        load_checkpoint(folder, device="cpu")


def test_vocabulary_mismatch_gives_both_numbers(tmp_path):
    folder = write_meta(tmp_path / "m", random_model().state_dict(), vocab_size=32000)
    with pytest.raises(UserError, match=rf"vocabulary of 32000 tokens but the tokenizer "
                                        rf"{tmp_path / 'tokenizer.model'} has 320"):
        load_checkpoint(folder, device="cpu")


def test_meta_refusals(tmp_path):
    state = random_model().state_dict()
    with pytest.raises(UserError, match="fields this loader does not know: flash"):
        load_checkpoint(write_meta(tmp_path / "b" / "m", state, flash=True), device="cpu")
    folder = write_meta(tmp_path / "c" / "m", state)
    (tmp_path / "c" / "tokenizer.model").unlink()
    with pytest.raises(UserError, match=rf"no tokenizer for {folder}; looked at "
                                        rf"{folder / 'tokenizer.model'}, {folder / 'tokenizer.json'}, "
                                        rf"{tmp_path / 'c' / 'tokenizer.model'}"):
        load_checkpoint(folder, device="cpu")


def test_bad_device_and_dtype(tmp_path):
    folder = write_meta(tmp_path / "m", random_model().state_dict())
    with pytest.raises(UserError, match=r"unknown dtype 'float8'; use one of float32, fp32, bfloat16"):
        load_checkpoint(folder, device="cpu", dtype="float8")
    with pytest.raises(UserError, match=r"unknown device 'gpu'"):
        load_checkpoint(folder, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            load_checkpoint(folder, device="cuda")


def test_hf_config_with_other_math_is_refused(tmp_path):
    config = dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=160, vocab_size=VOCAB, rms_norm_eps=1e-5,
                  rope_scaling={"rope_type": "yarn", "factor": 8.0}, hidden_act="gelu")
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(TINY_TOKENIZER, tmp_path / "tokenizer.model")
    with pytest.raises(UserError, match=r"cannot run: hidden_act 'gelu' \(only 'silu'\); RoPE scaling 'yarn'"):
        load_checkpoint(tmp_path, device="cpu")


# ---------------------------------------------------------------------------- fingerprints, finiteness


def test_fingerprint_sees_a_change_in_the_middle_of_a_weight_file(tmp_path):
    # A 6 MiB llama2.c export: raw float32 blocks, so one weight can be changed in place.
    args = dataclasses.replace(LLAMA2C_ARGS, dim=256, n_layers=4, hidden_dim=512)
    file = write_llama2c(tmp_path / "model.bin", random_model(args))
    before = load_checkpoint(file, device="cpu", tokenizer=TINY_TOKENIZER).info.fingerprint
    size = file.stat().st_size
    middle = size // 2  # inside the layers' FFN blocks, more than 2 MiB from either end
    assert 2 << 20 < middle < size - (2 << 20)
    with open(file, "r+b") as f:
        f.seek(middle - middle % 4)
        f.write(struct.pack("<f", 0.125))
    after = load_checkpoint(file, device="cpu", tokenizer=TINY_TOKENIZER)
    assert after.info.fingerprint != before


def test_file_hashes_are_memoised_by_path_size_mtime_and_inode(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    file = tmp_path / "weights.bin"
    file.write_bytes(b"a" * 1000)
    first = file_sha256(file)
    memo = json.loads((tmp_path / "cache" / HASH_MEMO_FILE).read_text())
    assert memo[str(file.resolve())]["sha256"] == first == hashlib.sha256(b"a" * 1000).hexdigest()
    # The memo is what answers while the file's stamp is unchanged (planted here to show it) ...
    memo[str(file.resolve())]["sha256"] = "planted"
    (tmp_path / "cache" / HASH_MEMO_FILE).write_text(json.dumps(memo))
    assert file_sha256(file) == "planted"
    # ... and a write that changes the mtime (same size) is hashed again.
    stat = file.stat()
    file.write_bytes(b"b" * 1000)
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert file_sha256(file) == hashlib.sha256(b"b" * 1000).hexdigest()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, bad):
    state = random_model().state_dict()
    state["layers.1.attention.wv.weight"][3, 5] = bad
    folder = write_meta(tmp_path / "m", state)
    with pytest.raises(UserError, match=r"weight 'layers\.1\.attention\.wv\.weight' in .*consolidated\.00\.pth "
                                        r"holds NaN or infinite values"):
        load_checkpoint(folder, device="cpu")


# ---------------------------------------------------------------------------- convert


def network(a: ModelArgs) -> tuple:
    """What a config means, whichever way it spells the FFN width (Meta's rule or an explicit one)."""
    return (a.dim, a.n_layers, a.n_heads, a.kv_heads, a.ffn_dim, a.vocab_size, a.norm_eps, a.rope_theta,
            a.rope_scaling, a.max_seq_len, a.tie_embeddings)


def test_convert_meta_to_hf_and_back_gives_identical_logits(tmp_path):
    source = random_model()
    meta = write_meta(tmp_path / "src" / "m", source.state_dict(), n_shards=2)
    assert main(["convert", str(meta), str(tmp_path / "hf"), "--to", "hf"]) == 0
    hf = load_checkpoint(tmp_path / "hf", device="cpu")
    convert(str(tmp_path / "hf"), tmp_path / "meta", "meta")
    back = load_checkpoint(tmp_path / "meta", device="cpu")
    assert (hf.info.format, back.info.format) == ("hf", "meta")
    assert network(hf.info.args) == network(back.info.args) == network(load_checkpoint(meta, device="cpu").info.args)
    for loaded in (hf, back):
        assert torch.equal(logits(loaded.model), logits(source))
    # The Hugging Face folder is what transformers reads: same logits (an independent check of
    # the rotary permutation that convert applies).
    transformers = pytest.importorskip("transformers")
    theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    with torch.no_grad():
        assert (theirs(TOKENS).logits - logits(source)).abs().max().item() <= 1e-4


def test_convert_keeps_dtype_rope_scaling_and_tied_embeddings(tmp_path):
    args = dataclasses.replace(ARGS, tie_embeddings=True, rope_theta=500000.0,
                               rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192), max_seq_len=300)
    source = random_model(args).to(torch.bfloat16)
    meta = write_meta(tmp_path / "src" / "m", {k: v for k, v in source.state_dict().items() if k != "output.weight"},
                      rope_theta=500000.0, use_scaled_rope=True, rope_scaling_factor=32.0, max_seq_len=300)
    first = load_checkpoint(meta, device="cpu", dtype="bfloat16")
    assert first.info.args == args
    convert(str(meta), tmp_path / "hf", "hf")
    convert(str(tmp_path / "hf"), tmp_path / "meta", "meta")
    params = json.loads((tmp_path / "meta" / "params.json").read_text())
    assert (params["use_scaled_rope"], params["rope_scaling_factor"], params["max_seq_len"]) == (True, 32.0, 300)
    for folder in (tmp_path / "hf", tmp_path / "meta"):
        assert stored_dtype(folder) == torch.bfloat16
        loaded = load_checkpoint(folder, device="cpu", dtype="bfloat16")
        assert network(loaded.info.args) == network(args)
        assert loaded.model.output.weight is loaded.model.tok_embeddings.weight
        assert torch.equal(logits(loaded.model), logits(first.model))
    with pytest.raises(UserError, match="is not empty"):
        convert(str(meta), tmp_path / "hf", "meta")


# ---------------------------------------------------------------------------- Hugging Face hub ids


def hub_cache(root: Path, repo: str, folder: Path, commit: str) -> Path:
    """A Hugging Face cache holding `folder` as the snapshot `commit` of `repo` (branch main), laid
    out as huggingface_hub writes it (plain files in place of its links into blobs/)."""
    entry = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, entry / "snapshots" / commit)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(commit)
    return root


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_hub_id_resolves_to_a_cached_snapshot_offline(tmp_path, offline_hub):
    source = random_model()
    convert(str(write_meta(tmp_path / "src" / "m", source.state_dict())), tmp_path / "hf", "hf")
    commit = "0123456789abcdef0123456789abcdef01234567"
    hub_cache(offline_hub, "someone/tiny-llama", tmp_path / "hf", commit)
    for spec in ("someone/tiny-llama", f"someone/tiny-llama@{commit}"):
        loaded = load_checkpoint(spec, device="cpu")
        assert loaded.info.revision == commit and loaded.info.format == "hf"
        assert loaded.info.files[0] == offline_hub / "models--someone--tiny-llama" / "snapshots" / commit / "config.json"
        assert torch.equal(logits(loaded.model), logits(source))
    assert describe(loaded)["revision"] == commit
    with pytest.raises(UserError, match=r"someone/other is not in the Hugging Face cache and the hub cannot be "
                                        r"reached \(HF_HUB_OFFLINE is set"):
        load_checkpoint("someone/other", device="cpu")


@pytest.mark.parametrize("error, message", [
    ("GatedRepoError", r"meta-llama/Llama-3\.1-8B is gated: accept its licence on https://huggingface\.co/"
                       r"meta-llama/Llama-3\.1-8B and log in"),
    ("RepositoryNotFoundError", r"no Hugging Face repository meta-llama/Llama-3\.1-8B \(or it is private"),
    ("RevisionNotFoundError", r"meta-llama/Llama-3\.1-8B has no revision 'v9'"),
])
def test_hub_failures_are_one_line(monkeypatch, error, message):
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub import errors

    def refuse(*args, **kwargs):
        # The hub's errors carry an HTTP response; what the loader reads is only their type.
        e = getattr(errors, error).__new__(getattr(errors, error))
        Exception.__init__(e, "from the hub")
        raise e

    monkeypatch.setattr(hub, "snapshot_download", refuse)
    with pytest.raises(UserError, match=message):
        load_checkpoint("meta-llama/Llama-3.1-8B@v9", device="cpu")


def test_max_len_sets_the_window_from_the_command_line(tmp_path, capsys):
    folder = write_meta(tmp_path / "m", random_model().state_dict())
    assert main(["info", "--model", str(folder), "--device", "cpu", "--max-len", "96"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["max_seq_len"] == 96
    assert main(["info", "--model", str(folder), "--device", "cpu", "--max-len", "0"]) == 2
    assert "--max-len 0" in capsys.readouterr().err
