"""The three tokenizer kinds against published token ids (LLaMA's SentencePiece model, Llama 3's
tokenizer.json and tiktoken files), and the context/continuation split on real task data."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from llama_eval.errors import UserError
from llama_eval.model.tokenizer import (
    JsonTokenizer, SentencePieceTokenizer, TiktokenTokenizer, Tokenizer, load_tokenizer,
)

from conftest import REPO, TINY_TOKENIZER  # noqa: E402

LLAMA3 = REPO.parent / "shared" / "tokenizers" / "llama3"

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


def test_a_corrupt_tokenizer_is_one_clear_error(tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(UserError, match=r"cannot read .*tokenizer\.model as a SentencePiece model"):
        Tokenizer(bad)
    bad.write_text("aGVsbG8= 0\nd29ybGQ= oops\n")
    with pytest.raises(UserError, match=r"tokenizer\.model:2: not a tiktoken line"):
        Tokenizer(bad)


# ---------------------------------------------------------------------------- Llama 3


@pytest.fixture(scope="module")
def llama3() -> dict[str, Tokenizer]:
    """Llama 3.1's tokenizer in both published formats (../shared/tokenizers/llama3)."""
    if not (LLAMA3 / "tokenizer.json").is_file():
        pytest.skip("../shared/tokenizers/llama3 is absent")
    return {"json": load_tokenizer(LLAMA3 / "tokenizer.json"), "tiktoken": load_tokenizer(LLAMA3 / "tokenizer.model")}


def published_cases() -> list[dict]:
    file = LLAMA3 / "test_vectors.json"
    return json.loads(file.read_text())["cases"] if file.is_file() else []


def test_llama3_files_open_as_their_kinds_with_llama3_specials(llama3):
    assert isinstance(llama3["json"], JsonTokenizer) and isinstance(llama3["tiktoken"], TiktokenTokenizer)
    for tok in llama3.values():
        assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (128256, 128000, 128001)
        assert tok.eos_ids == {128001, 128009, 128008}  # <|end_of_text|>, <|eot_id|>, <|eom_id|>
        assert tok.decode([128009]) == "<|eot_id|>"


@pytest.mark.parametrize("kind", ["json", "tiktoken"])
def test_llama3_published_test_vectors(llama3, kind):
    """llama3-tokenizer-js 1.2.0's own test cases (README in ../shared/tokenizers/llama3):
    encode with its BOS/EOS options, and decode back to the text."""
    tok = llama3[kind]
    cases = [c for c in published_cases() if c["kind"] != "optimistic_count"]  # a JS-only heuristic
    assert len(cases) == 27
    for case in cases:
        if case["kind"] in ("encode", "encode_decode"):
            bos, eos = (case["bos"], case["eos"]) if case["options_passed"] else (True, True)
            assert tok.encode(case["text"], bos=bos, eos=eos) == case["ids"], case["id"]
        if case["kind"] in ("decode", "encode_decode"):
            assert tok.decode(case["ids"]) == case["text"], case["id"]


# ---------------------------------------------------------------------------- the split rule


def real_pairs(shared_data: Path, n: int = 150) -> list[tuple[str, str]]:
    """(context, continuation) pairs the way the tasks build them, from the real release files:
    PIQA's goal and solutions, HellaSwag's context and endings (a word continued mid-sentence),
    and contexts that end in a space."""
    pairs = []
    with open(shared_data / "piqa" / "valid.jsonl", encoding="utf-8") as f:
        for line in itertools.islice(f, n):
            doc = json.loads(line)
            pairs += [(f"Question: {doc['goal']}\nAnswer:", f" {doc['sol1']}"), (f"{doc['goal']} ", doc["sol2"])]
    with open(shared_data / "hellaswag" / "hellaswag_val.jsonl", encoding="utf-8") as f:
        for line in itertools.islice(f, n):
            doc = json.loads(line)
            pairs += [(doc["ctx"], " " + ending) for ending in doc["endings"]]
    return pairs


def brute_force_split(tok: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The documented rule, written out plainly: move the context's trailing spaces into the
    continuation, encode the whole text, and cut it where the context's own tokens stop agreeing."""
    stripped = context.rstrip(" ")
    whole = tok.encode(stripped + context[len(stripped):] + continuation)
    own = tok.encode(stripped) if stripped else []
    n = 0
    while n < min(len(own), len(whole)) and own[n] == whole[n]:
        n += 1
    return [tok.bos_id] + whole[:n], whole[n:]


def test_every_kind_splits_pairs_by_the_same_rule_on_real_data(shared_data, llama_tokenizer_path, llama3):
    pairs = real_pairs(shared_data)
    kinds = {"sentencepiece": SentencePieceTokenizer(llama_tokenizer_path), **llama3}
    splits = {}
    for name, tok in kinds.items():
        splits[name] = tok.encode_pairs(pairs)
        assert splits[name] == [brute_force_split(tok, c, x) for c, x in pairs], name
        assert all(cont for _, cont in splits[name]), name
    # The two files of Llama 3 are one tokenizer: identical splits, token for token.
    assert splits["json"] == splits["tiktoken"]
