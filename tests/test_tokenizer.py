"""The SentencePiece wrapper against published LLaMA token ids, and the context/continuation split."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_eval.errors import UserError
from llama_eval.model.tokenizer import Tokenizer

from conftest import TINY_TOKENIZER  # noqa: E402

# Ids of LLaMA's tokenizer.model (without BOS) as published in llama.cpp's tokenizer test,
# ggerganov/llama.cpp tests/test-tokenizer-0-llama.cpp (commit 0fb40ae7), generated there
# with SentencePiece itself. "Hello world" -> [15043, 3186] is also the example in Meta's docs.
PUBLISHED_IDS = {
    "Hello world": [15043, 3186],
    " Hello world": [29871, 15043, 3186],
    "Hello World": [15043, 2787],
    " Hello World!": [29871, 15043, 2787, 29991],
    "Hello, world!": [15043, 29892, 3186, 29991],
    " this is 🦙.cpp": [29871, 445, 338, 29871, 243, 162, 169, 156, 29889, 8223],
    "w048 7tuijk dsdfhu": [281, 29900, 29946, 29947, 29871, 29955, 9161, 13535, 18031, 2176, 6905],
    "нещо на Български": [1538, 4851, 665, 1386, 29713, 1305],
    "   Hello": [1678, 15043],
    "    Hello\n    Hello": [268, 15043, 13, 1678, 15043],
    "\t\n": [29871, 12, 13],
}


@pytest.fixture
def llama(llama_tokenizer_path: Path) -> Tokenizer:
    return Tokenizer(llama_tokenizer_path)


@pytest.fixture
def tiny() -> Tokenizer:
    return Tokenizer(TINY_TOKENIZER)


def test_special_ids(llama):
    assert (llama.vocab_size, llama.bos_id, llama.eos_id) == (32000, 1, 2)
    assert llama.pad_id == llama.eos_id  # LLaMA's model has no pad piece


@pytest.mark.parametrize("text", sorted(PUBLISHED_IDS))
def test_published_ids_and_round_trip(llama, text):
    ids = PUBLISHED_IDS[text]
    assert llama.encode(text) == ids
    assert llama.encode(text, bos=True) == [1] + ids
    assert llama.encode(text, bos=True, eos=True) == [1] + ids + [2]
    assert llama.decode(ids) == text


def test_pair_moves_the_trailing_space_into_the_continuation(llama):
    context, continuation = llama.encode_pair("The capital of France is ", "Paris")
    assert (context, continuation) == llama.encode_pair("The capital of France is", " Paris")
    assert context == [1] + llama.encode("The capital of France is")
    assert [llama.sp.id_to_piece(i) for i in continuation] == ["▁Paris"]


def test_pair_is_the_joint_tokenisation(llama):
    # "hel" + "lo" encoded apart is two different pieces; jointly it is one, "▁hello".
    assert llama.encode("hel") + llama.encode("lo") != llama.encode("hello")
    context, continuation = llama.encode_pair("hel", "lo")
    assert context + continuation == [1] + llama.encode("hello")
    assert (context, continuation) == ([1], llama.encode("hello"))  # the straddling piece is scored


@pytest.mark.parametrize("context, continuation", [
    ("The cat likes ", "the red ball."), ("A small bird", " sees"), ("", "The river"), ("Some bread", "!"),
])
def test_pair_properties_on_the_tiny_tokenizer(tiny, context, continuation):
    ctx, cont = tiny.encode_pair(context, continuation)
    assert ctx[0] == tiny.bos_id and ctx.count(tiny.bos_id) == 1
    assert ctx + cont == [tiny.bos_id] + tiny.encode(context + continuation)
    assert cont, "a continuation always keeps at least one token"


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(UserError, match=rf"tokenizer file {tmp_path / 'none.model'} does not exist"):
        Tokenizer(tmp_path / "none.model")
