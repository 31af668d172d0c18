"""The only language between tasks and the engine: small frozen request and result types.

Tasks build requests from documents and read results; they never see the model. The engine
answers requests from every task in one pass and never sees a task.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score `continuation` given `context`.

    Tokenisation (engine's contract): BOS + encode(context + continuation), split where the
    context's own tokens end; a trailing space of the context moves into the continuation.
    """

    context: str
    continuation: str


@dataclass(frozen=True)
class LoglikelihoodResult:
    logprob: float  # sum of log-probabilities of the continuation tokens
    is_greedy: bool  # every continuation token is the argmax of its distribution
    n_tokens: int  # number of continuation tokens scored
    truncated: bool = False  # the context was cut from the left to fit the window


@dataclass(frozen=True)
class GenerationRequest:
    """Complete `prompt`: `n` samples, each cut before the first of `until`.

    temperature 0 means greedy (then n identical samples are produced once and repeated).
    Sampling is reproducible: the same request and seed give the same completions whatever
    else is in the batch.
    """

    prompt: str
    until: tuple[str, ...] = ()
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0


@dataclass(frozen=True)
class GenerationResult:
    completions: tuple[str, ...]
    truncated: bool = False  # the prompt was cut from the left to fit the window


Request = LoglikelihoodRequest | GenerationRequest
Result = LoglikelihoodResult | GenerationResult
