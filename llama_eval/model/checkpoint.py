"""Checkpoint loading: one pipeline for every format, one process or a tensor-parallel rank.

`load_checkpoint(spec)` turns a spec into a ready model, its tokenizer and a description:

    spec                        what is loaded
    "7b", "llama3.1-8b", ...    the preset's folder under $LLAMA_EVAL_MODELS (presets.PRESETS)
    "org/name[@revision]"       a Hugging Face hub repository (huggingface_hub's cache; offline
                                with HF_HUB_OFFLINE=1 once it is there)
    "random:tiny"               preset "tiny" with random weights (seed 0) and a given tokenizer
    a folder                    Meta's layout (params.json) or Hugging Face's (config.json)
    a .bin file                 a llama2.c export, version 0

The pipeline: resolve the spec to a path; detect the format; open the tokenizer; read the
config and name the tensors (formats.py, one reader per format); check the preset and the
vocabulary; then build the network on the meta device and give it its tensors: each is
checked against the network (name, shape, finiteness), read (whole, or only this rank's block
when a `Sharding` is given: tensor parallelism is this one step), converted to the target
device and dtype as it is read from the memory-mapped file, and assigned with
`load_state_dict(strict=True, assign=True)`. The model's `args` are always the whole model's.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch.overrides import TorchFunctionMode

from ..errors import UserError
from . import hub
from .formats import READERS, WINDOW_CAP, Source
from .llama import ModelArgs, Transformer, build, count_parameters, init_random
from .presets import PRESETS, lookup
from .tokenizer import Tokenizer, load_tokenizer

MODELS_ENV = "LLAMA_EVAL_MODELS"  # folder that holds the checkpoints named by presets
TOKENIZER_ENV = "LLAMA_EVAL_TOKENIZER"  # tokenizer of "random:<preset>" models
RANDOM_PREFIX = "random:"
RANDOM_SEED = 0

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


@dataclass(frozen=True)
class CheckpointInfo:
    """What was loaded and from where. `fingerprint` names the weights' bytes and the tokenizer."""

    format: str  # "meta" | "hf" | "llama2c" | "random"
    args: ModelArgs
    files: list[Path]  # every file read: config, weights, tokenizer
    dtype: torch.dtype
    device: torch.device
    n_params: int
    fingerprint: str
    revision: str | None = None  # the commit of a Hugging Face hub snapshot


@dataclass
class Loaded:
    model: Transformer
    tokenizer: Tokenizer
    info: CheckpointInfo


class Sharding(Protocol):
    """Which part of each weight this process holds (parallel.tensor.TensorParallel)."""

    def slice_of(self, name: str) -> tuple[int, int, int] | None:
        """(dimension, start, stop) of the whole tensor `name` held here; None: all of it."""

    def shard_modules(self, model: Transformer) -> Transformer:
        """The meta-device network with its layers replaced by this process's parts."""


# ---------------------------------------------------------------------------- public entry points


def load_model(spec: str | os.PathLike, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, tokenizer: str | os.PathLike | None = None,
               *, max_seq_len: int | None = None) -> tuple[Transformer, Tokenizer]:
    """(model, tokenizer) for `spec`; see `load_checkpoint`."""
    loaded = load_checkpoint(spec, device, dtype, tokenizer, max_seq_len=max_seq_len)
    return loaded.model, loaded.tokenizer


def load_checkpoint(spec: str | os.PathLike, device: str | torch.device | None = None,
                    dtype: str | torch.dtype | None = None, tokenizer: str | os.PathLike | None = None,
                    *, max_seq_len: int | None = None,
                    sharding: Callable[[ModelArgs], Sharding] | None = None) -> Loaded:
    """Load the model that `spec` names (module docstring) in eval mode, without gradients.

    device: default cuda if available, else cpu. dtype: default bfloat16 on cuda, float32 on
    cpu; a torch dtype or one of DTYPES' names. tokenizer: a tokenizer file overriding the one
    found beside the weights. max_seq_len: the context window (default: the config's, at most
    formats.WINDOW_CAP). sharding: given the model's config, which part of each weight this
    process holds (tensor parallelism); None: all of it. Every problem a user can fix raises
    UserError.
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if max_seq_len is not None and (not isinstance(max_seq_len, int) or max_seq_len < 1):
        raise UserError(f"--max-len {max_seq_len} must be a positive number of tokens")
    text = str(spec)
    if text.startswith(RANDOM_PREFIX):
        if sharding is not None:
            raise UserError(f"{text} has random weights made in one process; tensor parallelism reads checkpoints")
        return _load_random(text.removeprefix(RANDOM_PREFIX), device, dtype, tokenizer, max_seq_len)
    path, revision = _resolve(text)
    fmt = detect_format(path)
    tok = load_tokenizer(tokenizer_path(fmt, path, tokenizer))
    source = READERS[fmt](path, tok.vocab_size, max_seq_len)
    if text in PRESETS:
        check_preset(text, source.args, path)
    if source.args.vocab_size != tok.vocab_size:
        raise UserError(
            f"the model in {path} has a vocabulary of {source.args.vocab_size} tokens but the tokenizer "
            f"{tok.path} has {tok.vocab_size}; pass the tokenizer the model was trained with (--tokenizer)"
        )
    model, n_params = materialise(source, device, dtype, sharding(source.args) if sharding else None)
    info = CheckpointInfo(
        format=fmt, args=source.args, files=[*source.config_files, *source.weight_files, tok.path],
        dtype=dtype, device=device, n_params=n_params,
        fingerprint=fingerprint(source.args, source.weight_files, tok.path), revision=revision,
    )
    return Loaded(model, tok, info)


def stored_dtype(spec: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> torch.dtype:
    """The dtype the weights of `spec` are stored in (that of its first tensor)."""
    path, _ = _resolve(str(spec))
    fmt = detect_format(path)
    source = READERS[fmt](path, load_tokenizer(tokenizer_path(fmt, path, tokenizer)).vocab_size, None)
    for _, stored, _ in source.tensors:
        return stored.read().dtype
    raise UserError(f"{path} holds no weights")


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
        "revision": info.revision,
        "tokenizer": loaded.tokenizer.kind,
    }


def resolve_spec(spec: str | os.PathLike) -> Path:
    """The folder or file that `spec` names: a preset's folder under $LLAMA_EVAL_MODELS, a hub
    repository's snapshot, or a path. Preset names win over a same-named folder in the working
    directory; an existing path wins over a hub id."""
    return _resolve(str(spec))[0]


def _resolve(text: str) -> tuple[Path, str | None]:
    """(path, hub revision or None) for a spec; see resolve_spec."""
    if text in PRESETS and PRESETS[text].folders:
        return _preset_folder(text), None
    path = Path(text).expanduser()
    if path.exists():
        return path, None
    if text in PRESETS:
        raise UserError(f"preset {text!r} has no published checkpoint; use {RANDOM_PREFIX + text!r} for random weights")
    if hub.is_hub_id(text):
        return hub.snapshot(text)
    if os.sep not in text and "/" not in text and not path.suffix:
        names = [*(p for p in PRESETS if PRESETS[p].folders), *(RANDOM_PREFIX + p for p in PRESETS)]
        close = difflib.get_close_matches(text, names, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(
            f"model {text!r} is neither a file or folder nor a preset.{hint} "
            f"Presets: {', '.join(names)}; or pass a checkpoint's path or a Hugging Face id (org/name)."
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


# ---------------------------------------------------------------------------- fingerprints

CACHE_DIR_ENV = "LLAMA_EVAL_CACHE_DIR"  # default: $XDG_CACHE_HOME/llama-eval, else ~/.cache/llama-eval
HASH_MEMO_FILE = "file-sha256.json"


def fingerprint(args: ModelArgs, weight_files: list[Path], tokenizer_path: Path, salt: str = "") -> str:
    """16 hex digits naming a model: its config, and each weight file's name and sha256 over every
    byte (a layer changed in the middle of a file changes it), and the tokenizer's sha256. Equal
    for copies of a checkpoint in other folders. A file's hash is computed once: it is memoised
    by path, size, mtime and inode in HASH_MEMO_FILE (under $LLAMA_EVAL_CACHE_DIR)."""
    h = hashlib.sha256(json.dumps(asdict(args), sort_keys=True).encode())
    h.update(salt.encode())
    for file in weight_files:
        h.update(f"\0{file.name}\0{file_sha256(file)}\0".encode())
    h.update(file_sha256(Path(tokenizer_path)).encode())
    return h.hexdigest()[:16]


def _memo_path() -> Path:
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]) / HASH_MEMO_FILE
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "llama-eval" / HASH_MEMO_FILE


def file_sha256(file: Path) -> str:
    """sha256 of every byte of `file`, memoised (see fingerprint)."""
    st = file.stat()
    key, stamp = str(file.resolve()), [st.st_size, st.st_mtime_ns, st.st_ino]
    memo_file = _memo_path()
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}  # absent or damaged: it is only a memo
    entry = memo.get(key) if isinstance(memo, dict) else None
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    h = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(16 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    memo = memo if isinstance(memo, dict) else {}
    memo[key] = {"stamp": stamp, "sha256": digest}
    try:  # write-then-rename, so a concurrent reader never sees half a file
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_name(f"{memo_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(memo))
        tmp.replace(memo_file)
    except OSError:
        pass  # a read-only cache folder costs the next run another pass over the file, nothing else
    return digest


# ---------------------------------------------------------------------------- spec and tokenizer


def _preset_folder(name: str) -> Path:
    root = os.environ.get(MODELS_ENV)
    p = PRESETS[name]
    hub_hint = f", or pass its Hugging Face id --model {p.hub}" if p.hub else ""
    if not root:
        raise UserError(
            f"model {name!r} is a preset, looked up under ${MODELS_ENV}, which is not set; set {MODELS_ENV} "
            f"to the folder that holds {' or '.join(p.folders)}, or pass the checkpoint's path{hub_hint}"
        )
    tried = [Path(root).expanduser() / folder for folder in p.folders]
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    raise UserError(
        f"no checkpoint found for preset {name!r}; looked in {', '.join(map(str, tried))}. "
        f"Set {MODELS_ENV} to the folder that holds it, or pass the checkpoint's path{hub_hint}"
    )


def check_preset(name: str, args: ModelArgs, path: Path) -> None:
    """A folder found for a preset must hold that model, not another one filed under its name."""
    want = lookup(name).args
    for key in ("dim", "n_layers", "n_heads", "kv_heads", "ffn_dim", "vocab_size", "norm_eps", "rope_theta"):
        if getattr(args, key) != getattr(want, key):
            raise UserError(
                f"{path} does not hold the {name} model: its {key} is {getattr(args, key)}, "
                f"the preset's is {getattr(want, key)}; pass the right folder's path instead"
            )


TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


def tokenizer_path(fmt: str, path: Path, given: str | os.PathLike | None) -> Path:
    """The tokenizer file: `given`, else where each format's distribution puts it.

    tokenizer.model (SentencePiece for LLaMA 1/2, tiktoken for Llama 3) is preferred to
    tokenizer.json when a folder has both (Hugging Face's Llama 2 folders): same tokens.
    """
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
    folders = [path] + ([path.parent] if fmt == "meta" else [])
    candidates = [folder / name for folder in folders for name in TOKENIZER_FILES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(
        f"no tokenizer for {path}; looked at {', '.join(map(str, candidates))}. Pass tokenizer=PATH (--tokenizer)"
    )


# ---------------------------------------------------------------------------- the strict load


def materialise(source: Source, device: torch.device, dtype: torch.dtype,
                sharding: Sharding | None) -> tuple[Transformer, int]:
    """(the network of `source.args` holding the source's tensors, its whole parameter count).
    The tensors are this process's parts of them when `sharding` is given, on `device` in
    `dtype`; strict: every weight exactly once, with the shape the config implies, finite."""
    args = source.args
    model = meta_network(args)
    n_params = count_parameters(model)
    tied = args.tie_embeddings
    # A tied model's state dict lists output.weight too; it is filled from the embedding below.
    expected = {name: t.shape for name, t in model.state_dict().items() if not (tied and name == "output.weight")}
    if sharding is not None:
        model = sharding.shard_modules(model)
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for name, stored, where in source.tensors:
        if name not in expected:
            raise UserError(f"unexpected weight {name!r} in {where}: the {source.format} checkpoint does not "
                            "match the LLaMA network (wrong format or a modified model)")
        if name in state:
            raise UserError(f"weight {name!r} appears twice: in {origin[name]} and in {where}")
        if stored.shape != expected[name]:
            raise UserError(f"weight {name!r} in {where} has shape {list(stored.shape)} but the config "
                            f"implies {list(expected[name])}; the config and the weights disagree")
        block = sharding.slice_of(name) if sharding is not None else None
        # A block is copied out of the mapped file, so the rank keeps no view of the whole tensor.
        tensor = stored.read(*block) if block else stored.read()
        state[name] = tensor.to(device=device, dtype=dtype, copy=block is not None)
        if not torch.isfinite(state[name]).all():
            raise UserError(f"weight {name!r} in {where} holds NaN or infinite values (in {dtype}); the checkpoint "
                            "is damaged or was saved from a diverged run")
        origin[name] = where
    missing = [name for name in expected if name not in state]
    if missing:
        files = ", ".join(str(f) for f in source.weight_files)
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"weight {missing[0]!r}{more} is missing from {files}")
    if tied:
        block = sharding.slice_of("output.weight") if sharding is not None else None
        embedding = state["tok_embeddings.weight"]
        state["output.weight"] = embedding.narrow(block[0], block[1], block[2] - block[1]) if block else embedding
    model.load_state_dict(state, strict=True, assign=True)
    if tied and sharding is None:
        # assign=True wraps each entry in its own Parameter; share one again, as built.
        model.output.weight = model.tok_embeddings.weight
    return model.eval().requires_grad_(False), n_params


def meta_network(args: ModelArgs) -> Transformer:
    """`build(args)` on the meta device (no memory, no values), without its random init."""
    with _NoNormalOnMeta():
        return build(args)


class _NoNormalOnMeta(TorchFunctionMode):
    """Skips `normal_` on meta tensors (nn.Embedding's init). A meta tensor holds no values to
    fill, and torch runs a meta normal_ through a Python decomposition whose first call imports
    torch._dynamo and sympy: 1.5 s of start-up on a 2-core CPU, for nothing."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.init.normal_ or func is torch.Tensor.normal_:
            tensor = args[0] if args else kwargs["tensor"]
            if tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


# ---------------------------------------------------------------------------- random weights


def _load_random(name: str, device: torch.device, dtype: torch.dtype, tokenizer: str | os.PathLike | None,
                 max_seq_len: int | None) -> Loaded:
    """A preset with init_random's weights (seed RANDOM_SEED), for tests, the demo and benchmarks."""
    try:
        args = lookup(name).args
    except KeyError as e:
        raise UserError(f"{RANDOM_PREFIX}{name}: {e.args[0]}") from e
    tok_path = tokenizer or os.environ.get(TOKENIZER_ENV)
    if not tok_path:
        raise UserError(f"{RANDOM_PREFIX}{name} needs a tokenizer: pass tokenizer=PATH "
                        f"(--tokenizer) or set {TOKENIZER_ENV}")
    tok = load_tokenizer(tok_path)
    args = replace(args, vocab_size=tok.vocab_size, max_seq_len=max_seq_len or min(args.max_seq_len, WINDOW_CAP))
    model = init_random(build(args, device, dtype), seed=RANDOM_SEED).eval().requires_grad_(False)
    info = CheckpointInfo(
        format="random", args=args, files=[tok.path], dtype=dtype, device=device,
        n_params=count_parameters(model),
        fingerprint=fingerprint(args, [], tok.path, salt=f"random seed {RANDOM_SEED}"),
    )
    return Loaded(model, tok, info)
