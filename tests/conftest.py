"""Shared fixtures: the real data beside the checkout (skipped when absent), tiny models."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Nothing may download at test time: make the Hugging Face libraries fail fast instead.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# Memoised weight-file hashes go to a folder of this session, not the user's cache.
os.environ["LLAMA_EVAL_CACHE_DIR"] = tempfile.mkdtemp(prefix="llama-eval-test-cache-")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# A few made-up documents per benchmark in the release files' layout: the demo's data, and the
# tests' stand-in for ../shared/data.
SAMPLE_DATA = REPO / "llama_eval" / "data" / "demo"
TINY_TOKENIZER = SAMPLE_DATA / "tokenizer.model"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, the real release files; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture
def llama_tokenizer_path(shared_data: Path) -> Path:
    path = shared_data / "tokenizer" / "tokenizer.model"
    if not path.is_file():
        pytest.skip("the LLaMA tokenizer is absent from ../shared/data")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_path() -> Path:
    """The 320-piece SentencePiece model bundled with the demo (tests/fixtures/make_tiny_tokenizer.py
    wrote it): for tests that need a tokenizer but not the real one."""
    return TINY_TOKENIZER


@pytest.fixture(scope="session")
def tiny_model_and_tokenizer(tiny_tokenizer_path):
    """A random-weight 2-layer grouped-query LLaMA over the tiny tokenizer, float32 on CPU."""
    from dataclasses import replace

    from llama_eval.model.llama import build, init_random
    from llama_eval.model.presets import preset
    from llama_eval.model.tokenizer import Tokenizer

    tok = Tokenizer(tiny_tokenizer_path)
    args = replace(preset("tiny"), vocab_size=tok.vocab_size, max_seq_len=1024)
    return init_random(build(args, "cpu"), seed=1), tok


def make_settings(*, options: tuple[tuple[str, str], ...] = (), fits=None, **fields) -> "Settings":
    """Task settings as a run with these RunConfig fields gets them (Settings has no defaults);
    `fits` stands in for the engine's window check a loaded model provides (None: none yet)."""
    from dataclasses import replace

    from llama_eval.config import RunConfig
    from llama_eval.evaluator import settings_of

    config = RunConfig(model="random:tiny", tasks=(), options=tuple(f"{n}={v}" for n, v in options), **fields)
    return replace(settings_of(config), fits=fits)
