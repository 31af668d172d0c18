"""The checkpoint formats: each turns a folder or file into a `Source` (config + lazy tensors).

A format's reader does two things only: read its config into a `ModelArgs`, and name each of
its tensors by Meta's parameter names (one explicit key table per format), as a `Stored`
tensor that is read when the loader asks, whole or one block of it. Everything else (spec
resolution, tokenizer, checks, the strict assignment, tensor-parallel slicing) is the single
pipeline in checkpoint.py.

    meta      params.json + consolidated.NN.pth (model-parallel shards, merged lazily)
    hf        config.json + *.safetensors or pytorch_model*.bin (rotary permutation undone)
    llama2c   a llama2.c version-0 export (.bin with a 7-int header)
"""

from __future__ import annotations

import json
import math
import pickle
import re
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..errors import UserError
from .llama import ModelArgs, RopeScaling
from .presets import PRESETS, recognise

# When a config does not state the window and matches no published model: LLaMA 1's.
DEFAULT_WINDOW = 2048
# The window the engine allocates for by default, whatever longer one a config states (Llama
# 3.1's 131,072): every task of the paper fits, and the KV cache stays small. --max-len sets it.
WINDOW_CAP = 8192
# Meta's reference code for Llama 3.1 scales RoPE by 8 when params.json sets use_scaled_rope.
META_ROPE_FACTOR = 8.0


@dataclass(frozen=True)
class Stored:
    """One checkpoint tensor, not read yet. `read(dim, start, stop)` gives rows (or columns, ...)
    [start, stop) along `dim` of it, `read(None)` all of it, as a CPU tensor in the file's dtype
    (memory-mapped where the format allows). Read it before drawing the next tensor."""

    shape: torch.Size
    read: Callable[..., torch.Tensor]

    @staticmethod
    def of(tensor: torch.Tensor) -> "Stored":
        def read(dim=None, start=0, stop=0):
            return tensor if dim is None else tensor.narrow(dim, start, stop - start)
        return Stored(tensor.shape, read)

    def then(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Stored":
        """The same tensor with `fn` applied to whatever block is read (shape-preserving)."""
        return Stored(self.shape, lambda *block: fn(self.read(*block)))


# (Meta parameter name, stored tensor, where it is: the file, and the file's own key if renamed)
Tensors = Iterator[tuple[str, Stored, str]]


@dataclass
class Source:
    """A checkpoint on disk whose config has been read; `tensors` names its weights lazily."""

    format: str
    args: ModelArgs
    config_files: list[Path]
    weight_files: list[Path]
    tensors: Tensors


def window(stated: int | None, args: ModelArgs, max_seq_len: int | None) -> int:
    """The context window to run with: `max_seq_len` if given, else the config's (or, when it
    states none, that of the published model it is; else DEFAULT_WINDOW), capped at WINDOW_CAP."""
    if max_seq_len is not None:
        return max_seq_len
    if stated is None:
        name = recognise(args)
        stated = PRESETS[name].args.max_seq_len if name else DEFAULT_WINDOW
    return min(stated, WINDOW_CAP)


def validated(args: ModelArgs, config_file: Path) -> ModelArgs:
    try:
        return args.validate()
    except ValueError as e:
        raise UserError(f"{config_file}: {e}") from e


def read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{file} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise UserError(f"{file} should hold a JSON object")
    return data


def field(config: dict[str, Any], key: str, file: Path) -> Any:
    if key not in config:
        raise UserError(f"{file} lacks the field {key!r}")
    return config[key]


def torch_load(file: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as e:
        raise UserError(f"cannot read {file} as a PyTorch state dict: {e}") from e
    if not isinstance(state, dict):
        raise UserError(f"{file} holds a {type(state).__name__}, not a state dict of tensors")
    return state


# ---------------------------------------------------------------------------- Meta's layout

META_PARAMS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "ffn_dim_multiplier",
               "norm_eps", "rope_theta", "max_seq_len", "use_scaled_rope", "rope_scaling_factor")

# The one key of Meta's files that the network does not take: LLaMA 1 shards store the rotary
# frequencies, which the network recomputes from rope_theta. It is skipped by name.
META_IGNORED = "rope.freqs"


def meta_source(folder: Path, vocab_size: int, max_seq_len: int | None) -> Source:
    """Meta's layout. vocab_size: the tokenizer's, which params.json's -1 stands for (LLaMA 1, 2)."""
    params_file = folder / "params.json"
    params = _meta_params(params_file)
    shards = sorted(folder.glob("consolidated.*.pth"))
    if not shards:
        raise UserError(f"{folder} has params.json but no consolidated.NN.pth weight files")
    wanted = [f"consolidated.{i:02d}.pth" for i in range(len(shards))]
    if [s.name for s in shards] != wanted:
        raise UserError(f"{folder}: model-parallel shards must be named {wanted[0]} .. {wanted[-1]}; "
                        f"found {', '.join(s.name for s in shards)}")
    states = [torch_load(f) for f in shards]
    # Meta's files of tied models may store no output projection (those this tool writes do not).
    args = meta_args(params, params_file, vocab_size, max_seq_len, tied="output.weight" not in states[0])
    return Source("meta", args, [params_file], shards, _meta_tensors(shards, states, args))


def _meta_params(params_file: Path) -> dict[str, Any]:
    params = read_json(params_file)
    unknown = sorted(set(params) - set(META_PARAMS))
    if unknown:
        raise UserError(f"{params_file} has fields this loader does not know: {', '.join(unknown)} "
                        f"(known: {', '.join(META_PARAMS)})")
    return params


def meta_args(params: dict[str, Any], params_file: Path, vocab_size: int, max_seq_len: int | None,
              tied: bool = False) -> ModelArgs:
    """The config params.json states; the window and the RoPE factor where it does not state
    them come from the published model it is (presets.recognise)."""
    vocab = params.get("vocab_size", -1)
    scaled = params.get("use_scaled_rope", False)
    args = ModelArgs(
        dim=field(params, "dim", params_file), n_layers=field(params, "n_layers", params_file),
        n_heads=field(params, "n_heads", params_file), n_kv_heads=params.get("n_kv_heads"),
        vocab_size=vocab_size if vocab == -1 else vocab,
        multiple_of=params.get("multiple_of", 256), ffn_dim_multiplier=params.get("ffn_dim_multiplier"),
        norm_eps=params.get("norm_eps", 1e-5), rope_theta=params.get("rope_theta", 10000.0),
        rope_scaling=RopeScaling(params.get("rope_scaling_factor", META_ROPE_FACTOR), 1.0, 4.0, 8192) if scaled else None,
        tie_embeddings=tied,
    )
    known = recognise(args)
    if scaled and "rope_scaling_factor" not in params and known:
        # params.json of Llama 3.2 says use_scaled_rope but not its factor (32): the model's.
        args = replace(args, rope_scaling=PRESETS[known].args.rope_scaling)
    args = replace(args, max_seq_len=window(params.get("max_seq_len"), args, max_seq_len))
    return validated(args, params_file)


def read_config(fmt: str, path: Path, vocab_size: int) -> ModelArgs:
    """A checkpoint's config without reading any weights (`llama-eval plan`)."""
    if fmt == "meta":
        return meta_args(_meta_params(path / "params.json"), path / "params.json", vocab_size, None)
    return READERS[fmt](path, vocab_size, None).args  # the other readers read tensors only when drawn


# The dimension along which Meta's model-parallel shards split each weight (fairscale layers in
# Meta's model.py): ColumnParallelLinear splits output rows (0), RowParallelLinear input columns
# (1); LLaMA 1/2's ParallelEmbedding splits the embedding width (1), Llama 3's
# VocabParallelEmbedding the vocabulary (0). None: every shard holds all of it (the norms).
META_SPLIT_DIM: dict[str, int | None] = {
    "tok_embeddings.weight": 1,
    "output.weight": 0,
    "attention.wq.weight": 0, "attention.wk.weight": 0, "attention.wv.weight": 0,
    "feed_forward.w1.weight": 0, "feed_forward.w3.weight": 0,
    "attention.wo.weight": 1, "feed_forward.w2.weight": 1,
    "attention_norm.weight": None, "ffn_norm.weight": None, "norm.weight": None,
}


def _meta_tensors(shards: list[Path], states: list[dict], args: ModelArgs) -> Tensors:
    """Meta-named tensors, each the lazy concatenation of its model-parallel parts."""
    for file, state in zip(shards[1:], states[1:]):
        differ = set(state) ^ set(states[0])
        if differ:
            raise UserError(f"shards {shards[0]} and {file} hold different weights (e.g. {min(differ)!r}); "
                            "they are not parts of one checkpoint")
    where = str(shards[0]) if len(shards) == 1 else f"{shards[0].parent}/consolidated.*.pth"
    for name in states[0]:
        if name == META_IGNORED:
            continue
        parts = [state[name] for state in states]
        if len(parts) == 1:
            yield name, Stored.of(parts[0]), where
            continue
        if any(p.shape != parts[0].shape for p in parts):
            raise UserError(f"weight {name!r} in {where} has parts of shapes {[list(p.shape) for p in parts]}")
        kind = re.sub(r"^layers\.\d+\.", "", name)
        # An unknown name is joined along dimension 0; the strict check then reports it.
        dim = META_SPLIT_DIM.get(kind, 0)
        if kind == "tok_embeddings.weight" and parts[0].dim() == 2 and parts[0].shape[1] == args.dim:
            dim = 0  # whole rows in every shard: Llama 3's split of the vocabulary
        yield name, _concatenated(parts, dim), where


def _concatenated(parts: list[torch.Tensor], cat: int | None) -> Stored:
    """The tensor whose parts along `cat` are `parts` (None: every part holds it all). A block is
    read from the parts it overlaps only, so a tensor-parallel rank reads ~1/tp of the weights."""
    if cat is None:
        return Stored.of(parts[0])
    width = parts[0].shape[cat]
    shape = list(parts[0].shape)
    shape[cat] *= len(parts)

    def read(dim=None, start=0, stop=0):
        if dim is None:
            return torch.cat(parts, cat)
        if dim != cat:
            return torch.cat([p.narrow(dim, start, stop - start) for p in parts], cat)
        pieces = []
        for s, part in enumerate(parts):
            lo, hi = max(start, s * width), min(stop, (s + 1) * width)
            if lo < hi:
                pieces.append(part.narrow(dim, lo - s * width, hi - lo))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim)

    return Stored(torch.Size(shape), read)


# ---------------------------------------------------------------------------- Hugging Face layout

# Hugging Face name -> Meta name. Layer entries are relative to "model.layers.N." / "layers.N.".
HF_KEYS: dict[str, str] = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
HF_LAYER_KEYS: dict[str, str] = {
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def hf_source(folder: Path, vocab_size: int, max_seq_len: int | None) -> Source:
    config_file = folder / "config.json"
    cfg = read_json(config_file)
    _check_hf_config(cfg, config_file)
    # transformers 5 nests rope_theta and the scaling under rope_parameters; earlier versions
    # keep rope_theta top-level and the scaling under rope_scaling.
    rope = {**(cfg.get("rope_scaling") or {}), **(cfg.get("rope_parameters") or {})}
    args = ModelArgs(
        dim=field(cfg, "hidden_size", config_file), n_layers=field(cfg, "num_hidden_layers", config_file),
        n_heads=field(cfg, "num_attention_heads", config_file), n_kv_heads=cfg.get("num_key_value_heads"),
        vocab_size=field(cfg, "vocab_size", config_file), hidden_dim=field(cfg, "intermediate_size", config_file),
        norm_eps=field(cfg, "rms_norm_eps", config_file),
        rope_theta=cfg.get("rope_theta", rope.get("rope_theta", 10000.0)),
        rope_scaling=_hf_rope_scaling(rope, config_file),
        tie_embeddings=cfg.get("tie_word_embeddings", False),
    )
    args = validated(replace(args, max_seq_len=window(cfg.get("max_position_embeddings"), args, max_seq_len)),
                     config_file)
    index, files = hf_weight_files(folder)
    config_files = [config_file] + ([index] if index else [])
    return Source("hf", args, config_files, files, _hf_tensors(files, args))


def _hf_rope_scaling(rope: dict[str, Any], file: Path) -> RopeScaling | None:
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind == "default":
        return None
    try:
        return RopeScaling(float(rope["factor"]), float(rope["low_freq_factor"]), float(rope["high_freq_factor"]),
                           int(rope["original_max_position_embeddings"]))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{file}: the llama3 RoPE scaling lacks or mistypes {e}") from e


def _check_hf_config(cfg: dict[str, Any], file: Path) -> None:
    """Refuse configs whose math differs from this network's; their weights would load but mean else."""
    wrong = []
    if cfg.get("model_type", "llama") != "llama":
        wrong.append(f"model_type {cfg['model_type']!r} (only 'llama')")
    if cfg.get("hidden_act", "silu") != "silu":
        wrong.append(f"hidden_act {cfg['hidden_act']!r} (only 'silu')")
    for bias in ("attention_bias", "mlp_bias"):
        if cfg.get(bias):
            wrong.append(f"{bias} true (the network has no biases)")
    for key in ("rope_scaling", "rope_parameters"):
        rope = cfg.get(key) or {}
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind not in ("default", "llama3"):
            wrong.append(f"RoPE scaling {kind!r} (only plain RoPE and 'llama3')")
    heads = cfg.get("num_attention_heads")
    if cfg.get("head_dim") and heads and cfg["head_dim"] * heads != cfg.get("hidden_size"):
        wrong.append(f"head_dim {cfg['head_dim']} (only hidden_size / num_attention_heads)")
    if wrong:
        raise UserError(f"{file} describes a model this network cannot run: {'; '.join(wrong)}")


def hf_weight_files(folder: Path) -> tuple[Path | None, list[Path]]:
    """(index file or None, weight files); safetensors preferred over pytorch_model*.bin."""
    for index_name, pattern in (("model.safetensors.index.json", "*.safetensors"),
                                ("pytorch_model.bin.index.json", "pytorch_model*.bin")):
        index = folder / index_name
        if index.is_file():
            weight_map = field(read_json(index), "weight_map", index)
            files = [folder / name for name in sorted(set(weight_map.values()))]
            for file in files:
                if not file.is_file():
                    raise UserError(f"{file}, listed in {index}, does not exist; the download is incomplete")
            return index, files
        files = sorted(folder.glob(pattern))
        if files:
            return None, files
    raise UserError(f"{folder} has config.json but no weights: looked for *.safetensors and "
                    "pytorch_model*.bin (with or without an index file)")


def _hf_tensors(files: list[Path], args: ModelArgs) -> Tensors:
    D = args.head_dim
    for file in files:
        for hf_name, stored in _read_hf_file(file):
            # Two keys are skipped by name: the rotary inverse frequencies that older transformers
            # versions saved as a buffer (recomputed here), and a tied model's classifier copy.
            if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight" and args.tie_embeddings):
                continue
            name = hf_to_meta(hf_name)
            if name is None:
                raise UserError(f"unexpected weight {hf_name!r} in {file}: not a LLaMA weight name")
            if name.endswith(("attention.wq.weight", "attention.wk.weight")):
                # Blocks are read in whole heads, and the permutation stays inside each head.
                stored = stored.then(lambda w: unpermute_rotary(w, max(w.shape[0] // D, 1)))
            yield name, stored, f"{file} ({hf_name})"


def hf_to_meta(hf_name: str) -> str | None:
    if hf_name in HF_KEYS:
        return HF_KEYS[hf_name]
    match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf_name)
    if match and match[2] in HF_LAYER_KEYS:
        return f"layers.{match[1]}.{HF_LAYER_KEYS[match[2]]}"
    return None


def _read_hf_file(file: Path) -> Iterator[tuple[str, Stored]]:
    if file.suffix != ".safetensors":
        for key, tensor in torch_load(file).items():
            yield key, Stored.of(tensor)
        return
    try:  # only Hugging Face checkpoints need it
        from safetensors import SafetensorError, safe_open
    except ImportError as e:
        raise UserError(f"reading {file} needs the safetensors package: pip install safetensors") from e
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():
                yield key, _safetensor(f, key)
    except SafetensorError as e:
        raise UserError(f"cannot read {file} as safetensors: {e}") from e


def _safetensor(handle, key: str) -> Stored:
    """A tensor of an open safetensors file; a block is a slice read of just those bytes."""
    view = handle.get_slice(key)

    def read(dim=None, start=0, stop=0):
        if dim is None:
            return handle.get_tensor(key)
        return view[(slice(None),) * dim + (slice(start, stop),)]

    return Stored(torch.Size(view.get_shape()), read)


def unpermute_rotary(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Meta's row order of a q or k projection ([heads * D, C]) from Hugging Face's.

    Meta rotates interleaved pairs (2i, 2i+1) of each head; Hugging Face's rotate_half pairs
    i with i + D/2. Its conversion therefore reorders each head's rows so that Meta row 2i + j
    (j in 0, 1) sits at row j * D/2 + i. Reading the head as [2, D/2] and transposing to
    [D/2, 2] puts every row back. A tensor of the wrong shape is returned as is, for the
    strict shape check to report.
    """
    if w.dim() != 2 or w.shape[0] % (2 * heads):
        return w
    rows, cols = w.shape
    return w.view(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def permute_rotary(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Hugging Face's row order from Meta's: the inverse of unpermute_rotary."""
    rows, cols = w.shape
    return w.view(heads, rows // heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


# ---------------------------------------------------------------------------- llama2.c exports

_LLAMA2C_HEADER = struct.Struct("<7i")  # dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len
_LLAMA2C_MAGIC = 0x616B3432  # "ak42": versions 1 and 2 begin with it; version 0 has no magic


def llama2c_source(file: Path, vocab_size: int, max_seq_len: int | None) -> Source:
    with open(file, "rb") as f:
        head = f.read(_LLAMA2C_HEADER.size)
    if len(head) < _LLAMA2C_HEADER.size:
        raise UserError(f"{file} is too short to be a llama2.c export")
    if struct.unpack("<I", head[:4])[0] == _LLAMA2C_MAGIC:
        raise UserError(f"{file} is a llama2.c version 1 or 2 export; only version 0 (legacy_export) is read")
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = _LLAMA2C_HEADER.unpack(head)
    if min(dim, hidden, n_layers, n_heads, n_kv_heads, seq_len) <= 0 or vocab == 0:
        raise UserError(f"{file} is not a llama2.c export: its header {_LLAMA2C_HEADER.unpack(head)} has "
                        "non-positive sizes")
    # llama2.c's model: RMSNorm eps 1e-5, RoPE base 10000; a negative vocab marks a separate classifier.
    args = validated(ModelArgs(
        dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, vocab_size=abs(vocab),
        hidden_dim=hidden, norm_eps=1e-5, rope_theta=10000.0, max_seq_len=max_seq_len or seq_len,
        tie_embeddings=vocab > 0,
    ), file)
    layout = _llama2c_layout(args, seq_len)
    n_floats = sum(math.prod(shape) for _, shape in layout)
    size, want = file.stat().st_size, _LLAMA2C_HEADER.size + 4 * n_floats
    if size != want:
        raise UserError(f"{file} has {size} bytes but its header {_LLAMA2C_HEADER.unpack(head)} implies {want}; "
                        "it is truncated or not a version 0 llama2.c export")
    return Source("llama2c", args, [], [file], _llama2c_tensors(file, layout, n_floats))


def _llama2c_layout(a: ModelArgs, seq_len: int) -> list[tuple[str | None, tuple[int, ...]]]:
    """(Meta name, shape) of each float32 block after the header, in file order.

    Per-layer weights are stored for all layers together ("{}" is the layer). Matrices are
    [out, in] like nn.Linear, and q/k rows keep Meta's interleaved rotary order (llama2.c
    uses Meta's convention), so nothing is permuted. None: the RoPE cos and sin tables,
    [seq_len, D/2] each, which the network recomputes; they are skipped.
    """
    L, C, F, V = a.n_layers, a.dim, a.ffn_dim, a.vocab_size
    kv = a.kv_heads * a.head_dim
    layout: list[tuple[str | None, tuple[int, ...]]] = [
        ("tok_embeddings.weight", (V, C)),
        ("layers.{}.attention_norm.weight", (L, C)),
        ("layers.{}.attention.wq.weight", (L, C, C)),
        ("layers.{}.attention.wk.weight", (L, kv, C)),
        ("layers.{}.attention.wv.weight", (L, kv, C)),
        ("layers.{}.attention.wo.weight", (L, C, C)),
        ("layers.{}.ffn_norm.weight", (L, C)),
        ("layers.{}.feed_forward.w1.weight", (L, F, C)),
        ("layers.{}.feed_forward.w2.weight", (L, C, F)),
        ("layers.{}.feed_forward.w3.weight", (L, F, C)),
        ("norm.weight", (C,)),
        (None, (2, seq_len, a.head_dim // 2)),
    ]
    if not a.tie_embeddings:
        layout.append(("output.weight", (V, C)))
    return layout


def _llama2c_tensors(file: Path, layout: list[tuple[str | None, tuple[int, ...]]], n_floats: int) -> Tensors:
    # Map the file privately as little-endian float32; the 28-byte header is 7 such words, dropped.
    flat = torch.from_file(str(file), shared=False, size=7 + n_floats, dtype=torch.float32)[7:]
    offset = 0
    for name, shape in layout:
        block = flat[offset : offset + math.prod(shape)].view(shape)
        offset += block.numel()
        if name is None:
            continue
        if "{}" in name:
            for layer in range(shape[0]):
                yield name.format(layer), Stored.of(block[layer]), str(file)
        else:
            yield name, Stored.of(block), str(file)


READERS: dict[str, Callable[[Path, int, int | None], Source]] = {
    "meta": meta_source, "hf": hf_source, "llama2c": llama2c_source,
}
