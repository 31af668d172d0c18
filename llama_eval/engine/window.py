"""Does a request fit the model's window? The engine's own rule, for tasks to drop shots by.

A task cannot tokenise (tasks never touch the model or its tokenizer), yet only it knows how to
shorten a few-shot prompt without cutting an example in half. So the evaluator hands each task
this check, through Settings.fits, once the model is loaded; the task drops whole shots until
every request of a document passes. The rule is the one the engine truncates by, so a request
that passes is never cut from the left:
  log-likelihood: BOS + context + continuation, less the last token (never an input), within
                  the window (engine/scoring.py);
  generation:     BOS + prompt within the window less max_new_tokens (engine/generation.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..requests import GenerationRequest, LoglikelihoodRequest, Request

COUNT_CHUNK = 4096  # texts encoded at once by TokenCounts.add: bounds the token lists alive together


class TokenCounts:
    """Token counts (no BOS) of texts under one tokenizer, each distinct text encoded once.

    `add` counts many texts in batched calls, where a header shared by many of them is encoded
    once (Tokenizer.encode_texts): a run's five-shot MMLU prompts cost their questions, not
    fourteen thousand copies of their subjects' examples. The window check and the start-of-run
    estimate share one.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._n: dict[str, int] = {}

    def add(self, texts: Iterable[str]) -> None:
        missing = [t for t in dict.fromkeys(texts) if t not in self._n]
        for lo in range(0, len(missing), COUNT_CHUNK):
            ids = self.tokenizer.encode_texts(missing[lo : lo + COUNT_CHUNK])
            self._n.update((text, len(tokens)) for text, tokens in ids.items())

    def __call__(self, text: str) -> int:
        if text not in self._n:
            self.add([text])
        return self._n[text]


def texts_of(requests: Iterable[Request]) -> list[str]:
    """The texts whose counts the window check and the estimate need: contexts,
    continuations and prompts."""
    out: list[str] = []
    for r in requests:
        if isinstance(r, LoglikelihoodRequest):
            out += (r.context, r.continuation)
        else:
            out.append(r.prompt)
    return out


class WindowFit:
    """`fits(request)`: whether the engine runs `request` whole, without cutting it. `counts`
    may be shared with the start-of-run estimate (same tokenizer); `prime` counts many
    requests' texts at once."""

    def __init__(self, tokenizer, window: int, counts: TokenCounts | None = None):
        self.tokenizer, self.window = tokenizer, window
        self.counts = counts or TokenCounts(tokenizer)

    def prime(self, requests: Iterable[Request]) -> None:
        self.counts.add(texts_of(requests))

    def __call__(self, request: Request) -> bool:
        if isinstance(request, GenerationRequest):
            return 1 + self.counts(request.prompt) <= self.window - request.max_new_tokens
        assert isinstance(request, LoglikelihoodRequest)
        context = 1 + self.counts(request.context)  # BOS + context
        # Fast path: the pair's joint encoding is never longer than the context's own tokens plus
        # one per byte of the continuation (tests/test_window.py checks this on real MMLU
        # prompts); only a pair near the limit is encoded jointly, as the scorer does.
        if context + len(request.continuation.encode("utf-8")) - 1 <= self.window:
            return True
        ctx, cont = self.tokenizer.encode_pair(request.context, request.continuation)
        return len(ctx) + len(cont) - 1 <= self.window
