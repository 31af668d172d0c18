"""encode_pairs encodes only the context's end with each continuation: token ids must equal
those of encoding each pair whole (the contract in DESIGN.md), on made-up edge cases and on
every log-likelihood request the real release files produce."""

from __future__ import annotations

import pytest

from llama_eval.model.tokenizer import Tokenizer, common_prefix


def joint_reference(tok: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The plain rule: encode context and context+continuation whole, split at their common prefix."""
    stripped = context.rstrip(" ")
    cont = context[len(stripped):] + continuation
    if not stripped:
        return [tok.bos_id], tok.encode(cont)
    whole, ctx = tok.encode(stripped + cont), tok.encode(stripped)
    n = common_prefix(ctx, whole)
    return [tok.bos_id] + whole[:n], whole[n:]


EDGE_PAIRS = [
    ("The cat sat on the", " mat"), ("The cat sat on the ", "mat"), ("Answer:", " yes"), ("", "hello"),
    ("x", " y"), ("a  b  c", " d"), ("def f():\n    return", " 1"), ("1 2 3", "4"), ("1 2 3", " 4"),
    ("Question: what?  Answer: the  ", " big  dog"), ("naïve café 日本", "語 text"), ("word", "s and more"),
    ("The sum is 12", "34"), ("emoji 🙂 and", " 🙃"), ("trailing\n", "next"), ("a b", ""), (" lead", " x"),
]


@pytest.mark.parametrize("which", ["tiny", "llama"])
def test_boundary_encoding_equals_joint_encoding_on_edge_cases(request, which):
    path = request.getfixturevalue("tiny_tokenizer_path" if which == "tiny" else "llama_tokenizer_path")
    tok = Tokenizer(path)
    got = tok.encode_pairs(EDGE_PAIRS)
    assert got == [joint_reference(tok, c, x) for c, x in EDGE_PAIRS]


@pytest.mark.slow
def test_boundary_encoding_equals_joint_encoding_on_all_real_requests(shared_data, llama_tokenizer_path):
    """Every log-likelihood request of every multiple-choice task built from ../shared/data."""
    from llama_eval import tasks as registry
    from llama_eval.config import RunConfig
    from llama_eval.evaluator import plan, settings_of
    from llama_eval.requests import LoglikelihoodRequest

    names = [n for n in registry.names() if not registry.get_task(n).needs_code_execution]
    config = RunConfig(model="random:tiny", tasks=tuple(names), data_dir=str(shared_data))
    reqs = list(dict.fromkeys(r for run in plan(config, settings_of(config)) for doc in run.requests for r in doc
                              if isinstance(r, LoglikelihoodRequest)))
    assert len(reqs) > 100_000
    tok = Tokenizer(llama_tokenizer_path)
    got = tok.encode_pairs([(r.context, r.continuation) for r in reqs])
    # The reference encodes every pair whole, with the same batch call, in chunks to bound memory.
    for lo in range(0, len(reqs), 5000):
        chunk = reqs[lo : lo + 5000]
        stripped = [r.context.rstrip(" ") for r in chunk]
        conts = [r.context[len(s):] + r.continuation for s, r in zip(stripped, chunk)]
        ctx_ids = tok.sp.encode(stripped)
        whole_ids = tok.sp.encode([s + c for s, c in zip(stripped, conts)])
        for i, (s, ctx, whole) in enumerate(zip(stripped, ctx_ids, whole_ids)):
            if not s:
                expected = ([tok.bos_id], whole)
            else:
                n = common_prefix(ctx, whole)
                expected = ([tok.bos_id] + whole[:n], whole[n:])
            assert got[lo + i] == expected, chunk[i]


def few_shot_pairs() -> list[tuple[str, str]]:
    """Two MMLU-like headers (several hundred characters each) shared by many questions."""
    pairs = []
    for subject in ("anatomy", "world religions"):
        header = f"The following are multiple choice questions (with answers) about {subject}.\n\n" + "".join(
            f"Which of these is number {i} of the list?\nA. the first one\nB. the second\nC. a third\n"
            f"D. the fourth  and last\nAnswer: {'ABCD'[i % 4]}\n\n" for i in range(5))
        for q in range(6):
            ctx = header + f"Question {q}: which one is it?\nA. x{q}\nB. y\nC. z\nD. w\nAnswer:"
            pairs += [(ctx, f" {letter}") for letter in "ABCD"]
    return pairs


class Recording(Tokenizer):
    """A tokenizer whose encode_batch records how many characters it was given."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, inner: Tokenizer, merge: str = ""):
        self.inner, self.merge, self.chars = inner, merge, 0
        self.bos_id, self.eos_id = inner.bos_id, inner.eos_id

    def encode_batch(self, texts):
        self.chars += sum(map(len, texts))
        out = self.inner.encode_batch(texts)
        if self.merge:  # a made-up rule that joins a piece across a space: the head split must not be trusted
            out = [[-1] if self.merge in t else ids for t, ids in zip(texts, out)]
        return out


@pytest.mark.parametrize("which", ["tiny", "llama"])
def test_a_shared_header_is_encoded_once(request, which):
    path = request.getfixturevalue("tiny_tokenizer_path" if which == "tiny" else "llama_tokenizer_path")
    pairs = few_shot_pairs()
    tok = Recording(Tokenizer(path))
    assert tok.encode_pairs(pairs) == [joint_reference(tok.inner, c, x) for c, x in pairs]
    contexts = {c for c, _ in pairs}
    assert tok.chars < sum(map(len, contexts)) / 2  # each header once, not once per question


def test_a_tokenizer_that_breaks_the_boundary_rule_gets_whole_contexts(llama_tokenizer_path):
    pairs = few_shot_pairs()
    inner = Tokenizer(llama_tokenizer_path)
    tok = Recording(inner, merge="which one")  # every question's whole context differs from head + rest
    got = tok.encode_pairs(pairs)
    assert all(ctx == [inner.bos_id, -1] for ctx, _ in got)  # each context's whole encoding, not head + rest
