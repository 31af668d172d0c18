"""Shared fixtures: the real data beside the checkout (skipped when absent), tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


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
