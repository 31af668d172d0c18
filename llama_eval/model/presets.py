"""The named models: one record per preset (network config, where its weights are filed, the
paper's name for it), looked up exactly.

`folders` are the names a preset's checkpoint is looked for under $LLAMA_EVAL_MODELS, in
order: Meta's download folder first, then the last part of the Hugging Face repository name.
`hub` is the Hugging Face repository that publishes the weights (gated by Meta's licence for
Llama 2 and 3; LLaMA 1 was released by request only, huggyllama mirrors the conversion).
Meta called the paper's 33B model "30B", and so did the Hugging Face conversions.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

from .llama import ModelArgs, RopeScaling


@dataclass(frozen=True)
class Preset:
    args: ModelArgs
    folders: tuple[str, ...] = ()  # under $LLAMA_EVAL_MODELS; empty: random weights only
    hub: str | None = None  # Hugging Face repository of the published weights
    paper_model: str | None = None  # the LLaMA paper's name for it (its tables' rows)


# Llama 3.1's long-context RoPE (factor 8 over an 8,192-token original window); 3.2 1B/3B use 32.
_LLAMA31_ROPE = RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_len=8192)
_LLAMA32_ROPE = replace(_LLAMA31_ROPE, factor=32.0)
_LLAMA3 = dict(vocab_size=128256, norm_eps=1e-5, rope_theta=500000.0, n_kv_heads=8)
_LLAMA3_8B = ModelArgs(dim=4096, n_layers=32, n_heads=32, multiple_of=1024, ffn_dim_multiplier=1.3,
                       max_seq_len=8192, **_LLAMA3)
_LLAMA3_70B = ModelArgs(dim=8192, n_layers=80, n_heads=64, multiple_of=4096, ffn_dim_multiplier=1.3,
                        max_seq_len=8192, **_LLAMA3)

# Meta's published configurations (params.json of each release; the Hugging Face config.json
# of the same model says the same). LLaMA 1: 2,048-token window, norm eps 1e-6; Llama 2: 4,096
# and 1e-5; Llama 3: 8,192, RoPE base 500,000, a 128,256-token vocabulary; 3.1 and 3.2 extend
# the window to 131,072 by RoPE scaling (the engine's default window stays capped: --max-len).
PRESETS: dict[str, Preset] = {
    "7b": Preset(ModelArgs(dim=4096, n_layers=32, n_heads=32), ("7B", "llama-7b"), "huggyllama/llama-7b", "LLaMA-7B"),
    "13b": Preset(ModelArgs(dim=5120, n_layers=40, n_heads=40), ("13B", "llama-13b"), "huggyllama/llama-13b",
                  "LLaMA-13B"),
    "33b": Preset(ModelArgs(dim=6656, n_layers=60, n_heads=52), ("30B", "llama-30b"), "huggyllama/llama-30b",
                  "LLaMA-33B"),
    "65b": Preset(ModelArgs(dim=8192, n_layers=80, n_heads=64), ("65B", "llama-65b"), "huggyllama/llama-65b",
                  "LLaMA-65B"),
    "llama2-7b": Preset(ModelArgs(dim=4096, n_layers=32, n_heads=32, norm_eps=1e-5, max_seq_len=4096),
                        ("llama-2-7b", "Llama-2-7b-hf"), "meta-llama/Llama-2-7b-hf"),
    "llama2-13b": Preset(ModelArgs(dim=5120, n_layers=40, n_heads=40, norm_eps=1e-5, max_seq_len=4096),
                         ("llama-2-13b", "Llama-2-13b-hf"), "meta-llama/Llama-2-13b-hf"),
    "llama2-70b": Preset(ModelArgs(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, multiple_of=4096,
                                   ffn_dim_multiplier=1.3, norm_eps=1e-5, max_seq_len=4096),
                         ("llama-2-70b", "Llama-2-70b-hf"), "meta-llama/Llama-2-70b-hf"),
    "llama3-8b": Preset(_LLAMA3_8B, ("Meta-Llama-3-8B",), "meta-llama/Meta-Llama-3-8B"),
    "llama3-70b": Preset(_LLAMA3_70B, ("Meta-Llama-3-70B",), "meta-llama/Meta-Llama-3-70B"),
    "llama3.1-8b": Preset(replace(_LLAMA3_8B, rope_scaling=_LLAMA31_ROPE, max_seq_len=131072),
                          ("Llama3.1-8B", "Meta-Llama-3.1-8B", "Llama-3.1-8B"), "meta-llama/Llama-3.1-8B"),
    "llama3.1-70b": Preset(replace(_LLAMA3_70B, rope_scaling=_LLAMA31_ROPE, max_seq_len=131072),
                           ("Llama3.1-70B", "Meta-Llama-3.1-70B", "Llama-3.1-70B"), "meta-llama/Llama-3.1-70B"),
    "llama3.2-1b": Preset(ModelArgs(dim=2048, n_layers=16, n_heads=32, multiple_of=256, ffn_dim_multiplier=1.5,
                                    rope_scaling=_LLAMA32_ROPE, max_seq_len=131072, tie_embeddings=True, **_LLAMA3),
                          ("Llama3.2-1B", "Llama-3.2-1B"), "meta-llama/Llama-3.2-1B"),
    "llama3.2-3b": Preset(ModelArgs(dim=3072, n_layers=28, n_heads=24, multiple_of=256, ffn_dim_multiplier=1.0,
                                    rope_scaling=_LLAMA32_ROPE, max_seq_len=131072, tie_embeddings=True, **_LLAMA3),
                          ("Llama3.2-3B", "Llama-3.2-3B"), "meta-llama/Llama-3.2-3B"),
    # A random-weight model for tests and the demo: the real vocabulary, a toy body.
    "tiny": Preset(ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, norm_eps=1e-5)),
}

# The paper's row name for each preset it evaluated (reporting.PAPER_MODELS derives from this).
PAPER_MODELS: dict[str, str] = {name: p.paper_model for name, p in PRESETS.items() if p.paper_model}


def lookup(name: str) -> Preset:
    """The preset called exactly `name`; an unknown name raises KeyError with close matches."""
    if name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(name, PRESETS, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown model preset {name!r}.{hint} Presets: {', '.join(PRESETS)}.")


def preset(name: str) -> ModelArgs:
    """The network config of the preset called exactly `name` (see `lookup`)."""
    return lookup(name).args


def same_network(a: ModelArgs, b: ModelArgs) -> bool:
    """Whether two configs describe the same network, whatever window each states or how the
    output is stored (tied or not) and whatever the RoPE scaling's factor."""
    def key(x: ModelArgs):
        scaled = x.rope_scaling is not None
        return (x.dim, x.n_layers, x.n_heads, x.kv_heads, x.ffn_dim, x.vocab_size, x.norm_eps, x.rope_theta, scaled)
    return key(a) == key(b)


def recognise(args: ModelArgs) -> str | None:
    """The published preset whose network `args` describes, or None. Configs that do not state
    their window or RoPE factor (Meta's params.json) take them from this."""
    for name, p in PRESETS.items():
        if p.folders and same_network(p.args, args):
            return name
    return None
