"""The LLaMA family: the network (llama.py), named models (presets.py), tokenizers (tokenizer.py),
checkpoint formats (formats.py) and the one loading pipeline (checkpoint.py), hub ids (hub.py),
layout conversion (convert.py)."""
