"""Engine: the scorer and the generator over one loaded model, behind the two calls the
evaluator makes (`iter_loglikelihood`, `iter_generate`) and its work counters."""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import parallel
from ..config import RunConfig
from ..errors import UserError


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend (Inductor) would use, or None; found as
    Inductor finds it (torch._inductor.config.cpp.cxx: $CXX, else g++)."""
    from torch._inductor import cpp_builder, exc

    try:
        return cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        return None


def use_compile(requested: bool | None, device) -> bool:
    """RunConfig.compile resolved for a model on `device`: whether its elementwise work runs
    as torch.compile'd kernels. None (auto): on CUDA where Triton is installed, off elsewhere
    (on the CPU compiling costs tens of seconds and measured no gain: benchmarks/README.md). True where the compiler
    it needs is missing, or on another device type, is a UserError."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if requested and not has_triton():
            raise UserError("--compile: torch.compile needs Triton on CUDA and it is not installed; "
                            "install the `triton` package matching your PyTorch, or pass --no-compile")
        return has_triton() if requested is None else requested
    if not requested:
        return False
    if device.type != "cpu":
        raise UserError(f"--compile: fused kernels are built for cuda and cpu devices, not {device.type}; "
                        "leave --compile out")
    if cpp_compiler() is None:
        raise UserError("--compile on the CPU needs a C++ compiler (g++, or the one $CXX names) and none was "
                        "found; install one or leave --compile out")
    return True


class Engine:
    """The scorer and the generator over one loaded model.

    The generator's KV cache (max_batch rows of the whole window) is allocated only when a run
    has generation requests, so scoring-only runs keep that memory for the scorer.
    """

    def __init__(self, model, tokenizer, config: RunConfig, tp: int = 1, ahead=None):
        """ahead: the scoring requests being tokenised already (scoring.EncodedAhead)."""
        from .scoring import Scorer

        self.model, self.tokenizer, self.config, self.tp = model, tokenizer, config, tp
        # Set on the model either way, so a model compiled by an earlier engine runs as asked.
        model.compile_elementwise(use_compile(config.compile, model.tok_embeddings.weight.device))
        # A vocabulary-parallel output scores tokens without gathering whole logit rows.
        self.scorer = Scorer(model, tokenizer, config.batch_tokens, config.share_prefixes,
                             token_logprobs=parallel.vocab_parallel_logprobs if tp > 1 else None, ahead=ahead)
        self.generator = None

    def iter_loglikelihood(self, requests):
        return self.scorer.iter_loglikelihood(requests)

    def iter_generate(self, requests):
        if self.generator is None:
            from .generation import Generator

            # CUDA graphs are left out under tensor parallelism: collectives inside a captured
            # graph have not been checked on several GPUs.
            self.generator = Generator(self.model, self.tokenizer, max_batch=self.config.max_batch,
                                       use_cuda_graphs=False if self.tp > 1 else None)
        return self.generator.iter_generate(requests)

    def tokens(self) -> int:
        """Tokens run through the model so far (scoring + generation), for throughput."""
        g = self.generator.stats if self.generator else None
        return self.scorer.stats.tokens_run + (g.prompt_tokens + g.generated_tokens if g else 0)

    def stats(self) -> dict[str, Any]:
        return {"scoring": dataclasses.asdict(self.scorer.stats),
                "generation": dataclasses.asdict(self.generator.stats) if self.generator else None}
