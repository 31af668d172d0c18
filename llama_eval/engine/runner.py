"""Engine: the scorer and the generator over one loaded model, behind the two calls the
evaluator makes (`iter_loglikelihood`, `iter_generate`) and its work counters."""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import parallel
from ..config import RunConfig


class Engine:
    """The scorer and the generator over one loaded model.

    The generator's KV cache (max_batch rows of the whole window) is allocated only when a run
    has generation requests, so scoring-only runs keep that memory for the scorer.
    """

    def __init__(self, model, tokenizer, config: RunConfig, tp: int = 1):
        from .scoring import Scorer

        self.model, self.tokenizer, self.config, self.tp = model, tokenizer, config, tp
        # A vocabulary-parallel output scores tokens without gathering whole logit rows.
        self.scorer = Scorer(model, tokenizer, config.batch_tokens, config.share_prefixes,
                             token_logprobs=parallel.vocab_parallel_logprobs if tp > 1 else None)
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
