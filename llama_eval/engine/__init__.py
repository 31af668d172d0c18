"""The only code that runs the model: batched log-likelihood scoring and batched generation."""

# Every change that can alter the engine's outputs (log-probs, greedy flags, generated text)
# beyond float tolerance must bump this: it is part of the request cache key, so results
# cached by an older engine are never reused.
ENGINE_VERSION = 1
