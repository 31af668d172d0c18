"""llama-eval: the LLaMA paper's benchmark tables for any LLaMA-family checkpoint."""

__version__ = "0.1.0"


def load_model(spec, device=None, dtype=None, tokenizer=None, max_seq_len=None):
    """(model, tokenizer) for a preset name, folder or file; see model/checkpoint.py."""
    from .model.checkpoint import load_model as _load

    return _load(spec, device=device, dtype=dtype, tokenizer=tokenizer, max_seq_len=max_seq_len)
