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
