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

from ..requests import GenerationRequest, LoglikelihoodRequest, Request


class WindowFit:
    """`fits(request)`: whether the engine runs `request` whole, without cutting it."""

    def __init__(self, tokenizer, window: int):
        self.tokenizer, self.window = tokenizer, window
        self._context_tokens: dict[str, int] = {}  # the choices of a question share its context

    def __call__(self, request: Request) -> bool:
        if isinstance(request, GenerationRequest):
            return len(self.tokenizer.encode(request.prompt, bos=True)) <= self.window - request.max_new_tokens
        assert isinstance(request, LoglikelihoodRequest)
        context = self._count(request.context)
        # Fast path: the pair's joint encoding is never longer than the context's own tokens plus
        # one per byte of the continuation (tests/test_window.py checks this on real MMLU
        # prompts); only a pair near the limit is encoded jointly, as the scorer does.
        if context + len(request.continuation.encode("utf-8")) - 1 <= self.window:
            return True
        ctx, cont = self.tokenizer.encode_pair(request.context, request.continuation)
        return len(ctx) + len(cont) - 1 <= self.window

    def _count(self, context: str) -> int:
        if context not in self._context_tokens:
            if len(self._context_tokens) > 4096:
                self._context_tokens.clear()
            self._context_tokens[context] = len(self.tokenizer.encode(context, bos=True))
        return self._context_tokens[context]
