"""llama-eval: the LLaMA paper's benchmark tables for any LLaMA-family checkpoint."""

__version__ = "0.1.0"


def load_model(spec, device=None, dtype=None, tokenizer=None, max_seq_len=None, compile=None):
    """(model, tokenizer) for a preset name, folder or file; see model/checkpoint.py. compile:
    run the model's elementwise work as fused kernels; None decides as `llama-eval run` does
    (on with CUDA, off elsewhere: engine/runner.use_compile)."""
    from .engine.runner import use_compile
    from .model.checkpoint import load_model as _load

    model, tok = _load(spec, device=device, dtype=dtype, tokenizer=tokenizer, max_seq_len=max_seq_len)
    model.compile_elementwise(use_compile(compile, model.tok_embeddings.weight.device))
    return model, tok


def evaluate(model, tasks, **options):
    """Evaluate a spec string or an in-memory (model, tokenizer) pair on tasks; see api.py."""
    from .api import evaluate as _evaluate

    return _evaluate(model, tasks, **options)
