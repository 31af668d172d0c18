"""Checkpoint loading: Meta's layout, Hugging Face's layout, llama2.c exports, random weights.

`load_checkpoint(spec)` turns a spec into a ready model, its tokenizer and a description:

    spec                        what is loaded
    "7b", "llama2-13b", ...     the preset's folder under $LLAMA_EVAL_MODELS (see PRESET_FOLDERS)
    "random:tiny"               preset "tiny" with random weights (seed 0) and a given tokenizer
    a folder                    Meta's layout (params.json) or Hugging Face's (config.json)
    a .bin file                 a llama2.c export, version 0

Every format is read in the same three steps. Its config becomes a `ModelArgs`. Its tensors
are renamed onto Meta's parameter names (one explicit table per format) and each is checked
against the network built on the meta device, then converted to the target device and dtype
as it is read from the memory-mapped file, so no second full copy of the weights is held.
The checked tensors are assigned with `load_state_dict(strict=True, assign=True)`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import pickle
import re
import struct
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import UserError
from .llama import PRESETS, ModelArgs, Transformer, build, count_parameters, init_random, preset
from .tokenizer import Tokenizer

MODELS_ENV = "LLAMA_EVAL_MODELS"  # folder that holds the checkpoints named by presets
TOKENIZER_ENV = "LLAMA_EVAL_TOKENIZER"  # tokenizer of "random:<preset>" models
RANDOM_PREFIX = "random:"
RANDOM_SEED = 0

# Where a preset name is looked for under $LLAMA_EVAL_MODELS, in this order: the folder name of
# Meta's download first, then the last part of the Hugging Face repository name
# (huggyllama/llama-7b for LLaMA 1, meta-llama/Llama-2-7b-hf for Llama 2). Meta called the
# paper's 33B model "30B", and so did the Hugging Face conversions.
PRESET_FOLDERS: dict[str, tuple[str, ...]] = {
    "7b": ("7B", "llama-7b"),
    "13b": ("13B", "llama-13b"),
    "33b": ("30B", "llama-30b"),
    "65b": ("65B", "llama-65b"),
    "llama2-7b": ("llama-2-7b", "Llama-2-7b-hf"),
    "llama2-13b": ("llama-2-13b", "Llama-2-13b-hf"),
    "llama2-70b": ("llama-2-70b", "Llama-2-70b-hf"),
}

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}

# Bytes hashed from each end of every weight file: enough to tell checkpoints apart (the ends
# hold the embedding and the last layers) while fingerprinting 130 GB in milliseconds.
FINGERPRINT_SAMPLE_BYTES = 2 << 20


@dataclass(frozen=True)
class CheckpointInfo:
    """What was loaded and from where. `fingerprint` names the weights and the tokenizer."""

    format: str  # "meta" | "hf" | "llama2c" | "random"
    args: ModelArgs
    files: list[Path]  # every file read: config, weights, tokenizer
    dtype: torch.dtype
    device: torch.device
    n_params: int
    fingerprint: str


@dataclass
class Loaded:
    model: Transformer
    tokenizer: Tokenizer
    info: CheckpointInfo


# (Meta parameter name, tensor, where it was read: the file, and the file's own key if renamed)
Tensors = Iterator[tuple[str, torch.Tensor, str]]


@dataclass
class Source:
    """A checkpoint on disk whose config has been read; `tensors` reads its weights lazily."""

    format: str
    args: ModelArgs
    config_files: list[Path]
    weight_files: list[Path]
    tensors: Tensors


# ---------------------------------------------------------------------------- public entry points


def load_model(spec: str | os.PathLike, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, tokenizer: str | os.PathLike | None = None,
               *, max_seq_len: int | None = None) -> tuple[Transformer, Tokenizer]:
    """(model, tokenizer) for `spec`; see `load_checkpoint`."""
    loaded = load_checkpoint(spec, device, dtype, tokenizer, max_seq_len=max_seq_len)
    return loaded.model, loaded.tokenizer


def load_checkpoint(spec: str | os.PathLike, device: str | torch.device | None = None,
                    dtype: str | torch.dtype | None = None, tokenizer: str | os.PathLike | None = None,
                    *, max_seq_len: int | None = None) -> Loaded:
    """Load the model that `spec` names (module docstring) in eval mode, without gradients.

    device: default cuda if available, else cpu. dtype: default bfloat16 on cuda, float32 on
    cpu; a torch dtype or one of DTYPES' names. tokenizer: a SentencePiece .model overriding
    the one found beside the weights. max_seq_len: overrides the context window that the
    config states or implies. Every problem a user can fix raises UserError.
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    text = str(spec)
    if text.startswith(RANDOM_PREFIX):
        return _load_random(text.removeprefix(RANDOM_PREFIX), device, dtype, tokenizer, max_seq_len)
    path = resolve_spec(text)
    fmt = detect_format(path)
    tok = Tokenizer(tokenizer_path(fmt, path, tokenizer))
    source = READERS[fmt](path, tok, max_seq_len)
    if text in PRESET_FOLDERS:
        check_preset(text, source.args, path)
    if source.args.vocab_size != tok.vocab_size:
        raise UserError(
            f"the model in {path} has a vocabulary of {source.args.vocab_size} tokens but the tokenizer "
            f"{tok.path} has {tok.vocab_size}; pass the tokenizer the model was trained with (--tokenizer)"
        )
    model = _assign(build(source.args), source, device, dtype)
    info = CheckpointInfo(
        format=fmt, args=source.args, files=[*source.config_files, *source.weight_files, tok.path],
        dtype=dtype, device=device, n_params=count_parameters(model),
        fingerprint=fingerprint(source.args, source.weight_files, tok.path),
    )
    return Loaded(model, tok, info)


def describe(loaded: Loaded) -> dict[str, Any]:
    """What `llama-eval info` prints: format, config, parameter count, dtype, device, files."""
    info, a = loaded.info, loaded.info.args
    return {
        "format": info.format,
        "config": {**asdict(a), "head_dim": a.head_dim, "kv_heads": a.kv_heads, "ffn_dim": a.ffn_dim},
        "parameters": info.n_params,
        "dtype": str(info.dtype).removeprefix("torch."),
        "device": str(info.device),
        "files": [str(f) for f in info.files],
        "fingerprint": info.fingerprint,
    }


def resolve_spec(spec: str | os.PathLike) -> Path:
    """The folder or file that `spec` names: a preset's folder under $LLAMA_EVAL_MODELS, or a path.

    Preset names win over a same-named folder in the working directory.
    """
    text = str(spec)
    if text in PRESET_FOLDERS:
        return _preset_folder(text)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if text in PRESETS:
        raise UserError(f"preset {text!r} has no published checkpoint; use {RANDOM_PREFIX + text!r} for random weights")
    if os.sep not in text and "/" not in text and not path.suffix:
        names = [*PRESET_FOLDERS, *(RANDOM_PREFIX + p for p in PRESETS)]
        close = difflib.get_close_matches(text, names, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(
            f"model {text!r} is neither a file or folder nor a preset.{hint} "
            f"Presets: {', '.join(names)}; or pass a checkpoint's path."
        )
    raise UserError(f"model path {path} does not exist; pass a checkpoint folder or a llama2.c .bin file")


def detect_format(path: Path) -> str:
    """"meta", "hf" or "llama2c" for an existing checkpoint folder or file."""
    if path.is_file():
        if path.suffix == ".bin" and not path.name.startswith("pytorch_model"):
            return "llama2c"
        raise UserError(
            f"{path} is a file but not a llama2.c .bin export; for Meta or Hugging Face checkpoints "
            "pass the folder that holds it"
        )
    if (path / "params.json").is_file():
        return "meta"
    if (path / "config.json").is_file():
        return "hf"
    raise UserError(
        f"{path} holds neither params.json (Meta's layout) nor config.json (Hugging Face's layout); "
        "pass a checkpoint folder or a llama2.c .bin file"
    )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device asked for; None means cuda when available, else cpu."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"unknown device {device!r} ({e}); use cpu, cuda or cuda:N") from e
    if d.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
    return d


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The dtype asked for; None means bfloat16 on cuda, float32 elsewhere."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def fingerprint(args: ModelArgs, weight_files: list[Path], tokenizer_path: Path, salt: str = "") -> str:
    """16 hex digits naming a model: its config, each weight file's name, size and two ends, and the
    tokenizer's sha256. Cheap for any size; equal for copies of a checkpoint in other folders."""
    h = hashlib.sha256(json.dumps(asdict(args), sort_keys=True).encode())
    h.update(salt.encode())
    for file in weight_files:
        size = file.stat().st_size
        h.update(f"\0{file.name}\0{size}\0".encode())
        with open(file, "rb") as f:
            h.update(f.read(FINGERPRINT_SAMPLE_BYTES))
            if size > FINGERPRINT_SAMPLE_BYTES:
                f.seek(max(FINGERPRINT_SAMPLE_BYTES, size - FINGERPRINT_SAMPLE_BYTES))
                h.update(f.read())
    h.update(hashlib.sha256(Path(tokenizer_path).read_bytes()).digest())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------- spec and tokenizer


def _preset_folder(name: str) -> Path:
    root = os.environ.get(MODELS_ENV)
    folders = PRESET_FOLDERS[name]
    if not root:
        raise UserError(
            f"model {name!r} is a preset, looked up under ${MODELS_ENV}, which is not set; set {MODELS_ENV} "
            f"to the folder that holds {' or '.join(folders)}, or pass the checkpoint's path"
        )
    tried = [Path(root).expanduser() / folder for folder in folders]
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    raise UserError(
        f"no checkpoint found for preset {name!r}; looked in {', '.join(map(str, tried))}. "
        f"Set {MODELS_ENV} to the folder that holds it, or pass the checkpoint's path"
    )


def check_preset(name: str, args: ModelArgs, path: Path) -> None:
    """A folder found for a preset must hold that model, not another one filed under its name."""
    want = PRESETS[name]
    for field in ("dim", "n_layers", "n_heads", "kv_heads", "ffn_dim"):
        if getattr(args, field) != getattr(want, field):
            raise UserError(
                f"{path} does not hold the {name} model: its {field} is {getattr(args, field)}, "
                f"the preset's is {getattr(want, field)}; pass the right folder's path instead"
            )


def tokenizer_path(fmt: str, path: Path, given: str | os.PathLike | None) -> Path:
    """The SentencePiece model: `given`, else where each format's distribution puts it."""
    if given is not None:
        return Path(given)
    if fmt == "llama2c":
        # llama2.c ships custom tokenizers under their own names (tok512.model): take the only one.
        if (path.parent / "tokenizer.model").is_file():
            return path.parent / "tokenizer.model"
        found = sorted(path.parent.glob("*.model"))
        if len(found) == 1:
            return found[0]
        names = ", ".join(f.name for f in found) or "none"
        raise UserError(
            f"no unique SentencePiece .model beside {path} (found: {names}); pass tokenizer=PATH (--tokenizer)"
        )
    # Meta's download puts tokenizer.model one folder above the size folders (7B/, 13B/ ...).
    candidates = [path / "tokenizer.model"] + ([path.parent / "tokenizer.model"] if fmt == "meta" else [])
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(
        f"no tokenizer.model for {path}; looked at {', '.join(map(str, candidates))}. "
        "Pass tokenizer=PATH (--tokenizer)"
    )


# ---------------------------------------------------------------------------- the strict load


def _assign(model: Transformer, source: Source, device: torch.device, dtype: torch.dtype) -> Transformer:
    """Give the meta-device `model` the source's tensors, on `device` in `dtype`; strict."""
    tied = model.args.tie_embeddings
    # A tied model's state dict lists output.weight too; it is filled from the embedding below.
    expected = {name: t.shape for name, t in model.state_dict().items() if not (tied and name == "output.weight")}
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for name, tensor, where in source.tensors:
        if name not in expected:
            raise UserError(f"unexpected weight {name!r} in {where}: the {source.format} checkpoint does not "
                            "match the LLaMA network (wrong format or a modified model)")
        if name in state:
            raise UserError(f"weight {name!r} appears twice: in {origin[name]} and in {where}")
        if tensor.shape != expected[name]:
            raise UserError(f"weight {name!r} in {where} has shape {list(tensor.shape)} but the config "
                            f"implies {list(expected[name])}; the config and the weights disagree")
        state[name] = tensor.to(device=device, dtype=dtype)
        origin[name] = where
    missing = [name for name in expected if name not in state]
    if missing:
        files = ", ".join(str(f) for f in source.weight_files)
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"weight {missing[0]!r}{more} is missing from {files}")
    if tied:
        state["output.weight"] = state["tok_embeddings.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if tied:
        # assign=True wraps each entry in its own Parameter; share one again, as built.
        model.output.weight = model.tok_embeddings.weight
    return model.eval().requires_grad_(False)


def _validated(args: ModelArgs, config_file: Path) -> ModelArgs:
    try:
        return args.validate()
    except ValueError as e:
        raise UserError(f"{config_file}: {e}") from e


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{file} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise UserError(f"{file} should hold a JSON object")
    return data


def _field(config: dict[str, Any], key: str, file: Path) -> Any:
    if key not in config:
        raise UserError(f"{file} lacks the field {key!r}")
    return config[key]


def torch_load(file: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError) as e:
        raise UserError(f"cannot read {file} as a PyTorch state dict: {e}") from e
    if not isinstance(state, dict):
        raise UserError(f"{file} holds a {type(state).__name__}, not a state dict of tensors")
    return state


# ---------------------------------------------------------------------------- Meta's layout

_META_PARAMS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "ffn_dim_multiplier",
                "norm_eps", "rope_theta", "max_seq_len", "use_scaled_rope")

# The dimension along which Meta's model-parallel shards split each weight (fairscale layers in
# Meta's model.py): ColumnParallelLinear splits output rows (dim 0), RowParallelLinear input
# columns (dim 1), and LLaMA 1/2's ParallelEmbedding the embedding width (dim 1). None: every
# shard holds the whole tensor (the RMSNorm weights).
META_SPLIT_DIM: dict[str, int | None] = {
    "tok_embeddings.weight": 1,
    "output.weight": 0,
    "attention.wq.weight": 0, "attention.wk.weight": 0, "attention.wv.weight": 0,
    "feed_forward.w1.weight": 0, "feed_forward.w3.weight": 0,
    "attention.wo.weight": 1, "feed_forward.w2.weight": 1,
    "attention_norm.weight": None, "ffn_norm.weight": None, "norm.weight": None,
}

# The one key of Meta's files that the network does not take: LLaMA 1 shards store the rotary
# frequencies, which the network recomputes from rope_theta. It is skipped by name.
META_IGNORED = "rope.freqs"


def meta_source(folder: Path, tok: Tokenizer, max_seq_len: int | None) -> Source:
    params_file = folder / "params.json"
    params = _read_json(params_file)
    unknown = sorted(set(params) - set(_META_PARAMS))
    if unknown:
        raise UserError(f"{params_file} has fields this loader does not know: {', '.join(unknown)} "
                        f"(known: {', '.join(_META_PARAMS)})")
    if params.get("use_scaled_rope"):
        raise UserError(f"{params_file} sets use_scaled_rope (Llama 3.1's long-context RoPE scaling), "
                        "which this network does not implement")
    vocab = params.get("vocab_size", -1)
    args = ModelArgs(
        dim=_field(params, "dim", params_file), n_layers=_field(params, "n_layers", params_file),
        n_heads=_field(params, "n_heads", params_file), n_kv_heads=params.get("n_kv_heads"),
        vocab_size=tok.vocab_size if vocab == -1 else vocab,  # -1: the tokenizer's (LLaMA 1 and 2)
        multiple_of=params.get("multiple_of", 256), ffn_dim_multiplier=params.get("ffn_dim_multiplier"),
        norm_eps=params.get("norm_eps", 1e-5), rope_theta=params.get("rope_theta", 10000.0),
        max_seq_len=max_seq_len or _meta_window(params, folder),
    )
    shards = sorted(folder.glob("consolidated.*.pth"))
    if not shards:
        raise UserError(f"{folder} has params.json but no consolidated.NN.pth weight files")
    wanted = [f"consolidated.{i:02d}.pth" for i in range(len(shards))]
    if [s.name for s in shards] != wanted:
        raise UserError(f"{folder}: model-parallel shards must be named {wanted[0]} .. {wanted[-1]}; "
                        f"found {', '.join(s.name for s in shards)}")
    return Source("meta", _validated(args, params_file), [params_file], shards, _meta_tensors(shards))


def _meta_window(params: dict[str, Any], folder: Path) -> int:
    """The training context: params.json does not record it for LLaMA 1 or 2.

    Llama 2 (4,096 tokens) is told from LLaMA 1 (2,048) by its norm_eps of 1e-5 (LLaMA 1:
    1e-6) or by "llama-2" in the folder name (Meta's download names). Other models: pass
    max_seq_len.
    """
    if "max_seq_len" in params:
        return params["max_seq_len"]
    if params.get("norm_eps") == 1e-5 or "llama-2" in folder.name.lower():
        return 4096
    return 2048


def _meta_tensors(shards: list[Path]) -> Tensors:
    """Meta-named tensors, merging model-parallel shards along each weight's split dimension."""
    states = [torch_load(f) for f in shards]
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
        # An unknown name yields its first part unmerged; the strict check then reports it.
        dim = META_SPLIT_DIM.get(re.sub(r"^layers\.\d+\.", "", name))
        yield name, (parts[0] if dim is None or len(parts) == 1 else torch.cat(parts, dim)), where


# ---------------------------------------------------------------------------- Hugging Face layout

# Hugging Face name -> Meta name. Layer entries are relative to "model.layers.N." / "layers.N.".
_HF_KEYS: dict[str, str] = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
_HF_LAYER_KEYS: dict[str, str] = {
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


def _hf_source(folder: Path, tok: Tokenizer, max_seq_len: int | None) -> Source:
    config_file = folder / "config.json"
    cfg = _read_json(config_file)
    _check_hf_config(cfg, config_file)
    # transformers 5 nests rope_theta under rope_parameters; earlier versions keep it top-level.
    rope_theta = cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    args = ModelArgs(
        dim=_field(cfg, "hidden_size", config_file), n_layers=_field(cfg, "num_hidden_layers", config_file),
        n_heads=_field(cfg, "num_attention_heads", config_file), n_kv_heads=cfg.get("num_key_value_heads"),
        vocab_size=_field(cfg, "vocab_size", config_file), hidden_dim=_field(cfg, "intermediate_size", config_file),
        norm_eps=_field(cfg, "rms_norm_eps", config_file), rope_theta=rope_theta,
        max_seq_len=max_seq_len or cfg.get("max_position_embeddings", 2048),
        tie_embeddings=cfg.get("tie_word_embeddings", False),
    )
    args = _validated(args, config_file)
    index, files = _hf_weight_files(folder)
    config_files = [config_file] + ([index] if index else [])
    return Source("hf", args, config_files, files, _hf_tensors(files, args))


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
    if cfg.get("rope_scaling") or (cfg.get("rope_parameters") or {}).get("rope_type", "default") != "default":
        wrong.append("RoPE scaling (only plain RoPE)")
    heads = cfg.get("num_attention_heads")
    if cfg.get("head_dim") and heads and cfg["head_dim"] * heads != cfg.get("hidden_size"):
        wrong.append(f"head_dim {cfg['head_dim']} (only hidden_size / num_attention_heads)")
    if wrong:
        raise UserError(f"{file} describes a model this network cannot run: {'; '.join(wrong)}")


def _hf_weight_files(folder: Path) -> tuple[Path | None, list[Path]]:
    """(index file or None, weight files); safetensors preferred over pytorch_model*.bin."""
    for index_name, pattern in (("model.safetensors.index.json", "*.safetensors"),
                                ("pytorch_model.bin.index.json", "pytorch_model*.bin")):
        index = folder / index_name
        if index.is_file():
            weight_map = _field(_read_json(index), "weight_map", index)
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
    for file in files:
        for hf_name, tensor in _read_hf_file(file):
            # Two keys are skipped by name: the rotary inverse frequencies that older transformers
            # versions saved as a buffer (recomputed here), and a tied model's classifier copy.
            if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight" and args.tie_embeddings):
                continue
            name = _hf_to_meta(hf_name)
            if name is None:
                raise UserError(f"unexpected weight {hf_name!r} in {file}: not a LLaMA weight name")
            if name.endswith("attention.wq.weight"):
                tensor = unpermute_rotary(tensor, args.n_heads)
            elif name.endswith("attention.wk.weight"):
                tensor = unpermute_rotary(tensor, args.kv_heads)
            yield name, tensor, f"{file} ({hf_name})"


def _hf_to_meta(hf_name: str) -> str | None:
    if hf_name in _HF_KEYS:
        return _HF_KEYS[hf_name]
    match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf_name)
    if match and match[2] in _HF_LAYER_KEYS:
        return f"layers.{match[1]}.{_HF_LAYER_KEYS[match[2]]}"
    return None


def _read_hf_file(file: Path) -> Iterator[tuple[str, torch.Tensor]]:
    if file.suffix == ".safetensors":
        try:  # an optional dependency: only Hugging Face checkpoints need it
            from safetensors import SafetensorError, safe_open
        except ImportError as e:
            raise UserError(f"reading {file} needs the safetensors package: pip install safetensors") from e
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)
        except SafetensorError as e:
            raise UserError(f"cannot read {file} as safetensors: {e}") from e
    else:
        yield from torch_load(file).items()


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


# ---------------------------------------------------------------------------- llama2.c exports

_LLAMA2C_HEADER = struct.Struct("<7i")  # dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, seq_len
_LLAMA2C_MAGIC = 0x616B3432  # "ak42": versions 1 and 2 begin with it; version 0 has no magic


def _llama2c_source(file: Path, tok: Tokenizer, max_seq_len: int | None) -> Source:
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
    args = _validated(ModelArgs(
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
                yield name.format(layer), block[layer], str(file)
        else:
            yield name, block, str(file)


# ---------------------------------------------------------------------------- random weights


def _load_random(name: str, device: torch.device, dtype: torch.dtype, tokenizer: str | os.PathLike | None,
                 max_seq_len: int | None) -> Loaded:
    """A preset with init_random's weights (seed RANDOM_SEED), for tests, the demo and benchmarks."""
    try:
        args = preset(name)
    except KeyError as e:
        raise UserError(f"{RANDOM_PREFIX}{name}: {e.args[0]}") from e
    tok_path = tokenizer or os.environ.get(TOKENIZER_ENV)
    if not tok_path:
        raise UserError(f"{RANDOM_PREFIX}{name} needs a SentencePiece tokenizer: pass tokenizer=PATH "
                        f"(--tokenizer) or set {TOKENIZER_ENV}")
    tok = Tokenizer(tok_path)
    args = replace(args, vocab_size=tok.vocab_size, max_seq_len=max_seq_len or args.max_seq_len)
    model = init_random(build(args, device, dtype), seed=RANDOM_SEED).eval().requires_grad_(False)
    info = CheckpointInfo(
        format="random", args=args, files=[tok.path], dtype=dtype, device=device,
        n_params=count_parameters(model),
        fingerprint=fingerprint(args, [], tok.path, salt=f"random seed {RANDOM_SEED}"),
    )
    return Loaded(model, tok, info)


READERS = {"meta": meta_source, "hf": _hf_source, "llama2c": _llama2c_source}
