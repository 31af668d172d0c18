"""The engine: the only code that runs the model (scoring.py, generation.py).

ENGINE_VERSION names the engine's observable behaviour: what a request's result is, given the
weights and dtype. It is part of the request cache's key, so results computed by an engine that
behaves differently are never reused. Every change that can alter a result (a log-probability
beyond float tolerance, a generated token, tokenisation, truncation, stop handling, sampling)
must bump it.
"""

ENGINE_VERSION = 3  # 2: Llama 3 RoPE and end-of-turn stops; tokenizer kinds; encode_pairs by word tails; 3: shared-prefix decode
