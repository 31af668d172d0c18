# Bumped by every change that can alter engine outputs (log-probs, generated text): part of the cache key.
ENGINE_VERSION = 1
