"""`llama-eval convert SRC DST --to hf|meta`: write a checkpoint in the other layout.

Any checkpoint the loader reads (a preset, hub id, Meta or Hugging Face folder, llama2.c
export) is read through the loading pipeline on the CPU, in the dtype its weights are stored in
(unless one is given), and written as:

    hf     config.json, model.safetensors (q/k rows in Hugging Face's rotate-half order),
           the tokenizer file
    meta   params.json, consolidated.00.pth (one shard, Meta's names and row order),
           the tokenizer file

The weights' values are copied bit for bit, so a round trip gives identical logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..errors import UserError
from .checkpoint import CheckpointInfo, load_checkpoint, resolve_spec, stored_dtype
from .formats import HF_KEYS, HF_LAYER_KEYS, META_ROPE_FACTOR, permute_rotary, window
from .llama import ModelArgs
from .presets import PRESETS, recognise

TARGETS = ("hf", "meta")
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def convert(src: str, dst: str | Path, to: str, dtype: str | None = None, tokenizer: str | None = None) -> Path:
    """Write the checkpoint `src` names into the new folder `dst` in layout `to`; returns dst."""
    if to not in TARGETS:
        raise UserError(f"--to {to!r}: write one of {', '.join(TARGETS)}")
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise UserError(f"{dst} exists and is not empty; pass a new folder")
    if not str(src).startswith("random:"):
        resolve_spec(src)  # a wrong name fails before anything is read
    stored = stored_dtype(src, tokenizer) if dtype is None and not str(src).startswith("random:") else None
    loaded = load_checkpoint(src, "cpu", dtype or stored or "float32", tokenizer)
    state = {k: v.contiguous() for k, v in loaded.model.state_dict().items()}
    args, info = loaded.info.args, loaded.info
    dst.mkdir(parents=True, exist_ok=True)
    if to == "hf":
        _write_hf(dst, args, info, state)
    else:
        _write_meta(dst, args, state)
    shutil.copy(loaded.tokenizer.path, dst / _tokenizer_name(loaded.tokenizer.path))
    return dst


def _tokenizer_name(path: Path) -> str:
    return "tokenizer.json" if path.suffix == ".json" else "tokenizer.model"


def _write_hf(dst: Path, a: ModelArgs, info: CheckpointInfo, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    to_hf = {meta: hf for hf, meta in HF_KEYS.items()}
    layer_to_hf = {meta: hf for hf, meta in HF_LAYER_KEYS.items()}
    out = {}
    for name, tensor in state.items():
        if name == "output.weight" and a.tie_embeddings:
            continue  # transformers re-ties lm_head to the embedding
        if name.startswith("layers."):
            _, layer, rest = name.split(".", 2)
            hf_name = f"model.layers.{layer}.{layer_to_hf[rest]}"
        else:
            hf_name = to_hf[name]
        if rest_is(name, "attention.wq.weight"):
            tensor = permute_rotary(tensor, a.n_heads)
        elif rest_is(name, "attention.wk.weight"):
            tensor = permute_rotary(tensor, a.kv_heads)
        out[hf_name] = tensor.contiguous()
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": a.dim, "intermediate_size": a.ffn_dim, "num_hidden_layers": a.n_layers,
        "num_attention_heads": a.n_heads, "num_key_value_heads": a.kv_heads, "head_dim": a.head_dim,
        "vocab_size": a.vocab_size, "rms_norm_eps": a.norm_eps, "rope_theta": a.rope_theta,
        "max_position_embeddings": _trained_window(a), "tie_word_embeddings": a.tie_embeddings,
        "attention_bias": False, "mlp_bias": False, "torch_dtype": _DTYPE_NAMES[info.dtype],
    }
    if a.rope_scaling is not None:
        s = a.rope_scaling
        config["rope_scaling"] = {"rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
                                  "high_freq_factor": s.high_freq_factor,
                                  "original_max_position_embeddings": s.original_max_len}
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def rest_is(name: str, suffix: str) -> bool:
    return name.endswith("." + suffix)


def _write_meta(dst: Path, a: ModelArgs, state: dict[str, torch.Tensor]) -> None:
    if a.tie_embeddings:
        state = {k: v for k, v in state.items() if k != "output.weight"}  # the loader ties it again
    torch.save(state, dst / "consolidated.00.pth")
    params = {"dim": a.dim, "n_layers": a.n_layers, "n_heads": a.n_heads, "n_kv_heads": a.kv_heads,
              "vocab_size": a.vocab_size, **_meta_ffn(a), "norm_eps": a.norm_eps, "rope_theta": a.rope_theta}
    # Meta's own code takes max_seq_len as an argument and knows no rope_scaling_factor: they are
    # written only where this loader could not infer them from the rest (see formats.meta_source).
    if window(None, a, None) != a.max_seq_len:
        params["max_seq_len"] = a.max_seq_len
    if a.rope_scaling is not None:
        params["use_scaled_rope"] = True
        known = recognise(a)
        inferred = PRESETS[known].args.rope_scaling.factor if known else META_ROPE_FACTOR
        if a.rope_scaling.factor != inferred:
            params["rope_scaling_factor"] = a.rope_scaling.factor
        s = a.rope_scaling
        if (s.low_freq_factor, s.high_freq_factor, s.original_max_len) != (1.0, 4.0, 8192):
            raise UserError(f"Meta's params.json cannot state RoPE scaling {s}; only Llama 3.1's (low 1, "
                            "high 4, original 8192) with a factor. Convert to hf instead")
    (dst / "params.json").write_text(json.dumps(params, indent=2) + "\n")


def _meta_ffn(a: ModelArgs) -> dict:
    """multiple_of / ffn_dim_multiplier that make Meta's rule give this FFN width."""
    known = recognise(a)
    if known and PRESETS[known].args.ffn_dim == a.ffn_dim and PRESETS[known].args.hidden_dim is None:
        p = PRESETS[known].args
        return {"multiple_of": p.multiple_of, "ffn_dim_multiplier": p.ffn_dim_multiplier}
    # Rounding up to a multiple of the width itself gives the width, once the multiplier brings
    # 8/3 x dim to at most it.
    base = int(2 * (4 * a.dim) / 3)
    rule = {"multiple_of": a.ffn_dim, "ffn_dim_multiplier": a.ffn_dim / base if base > a.ffn_dim else None}
    check = ModelArgs(dim=a.dim, n_heads=a.n_heads, **rule)
    if check.ffn_dim != a.ffn_dim:
        raise UserError(f"Meta's params.json cannot express an FFN width of {a.ffn_dim} for dim {a.dim}; "
                        "convert to hf instead")
    return rule


def _trained_window(a: ModelArgs) -> int:
    """The window to record: the published model's where it is one, else the loaded one."""
    known = recognise(a)
    return max(PRESETS[known].args.max_seq_len, a.max_seq_len) if known else a.max_seq_len
