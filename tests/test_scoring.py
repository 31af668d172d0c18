"""The prefix-tree scorer against the plainest possible reference: one full forward per request."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from llama_eval.engine.scoring import Scorer, build_trie
from llama_eval.requests import LoglikelihoodRequest as R


def reference(model, tok, req: R) -> tuple[float, bool]:
    """Sum of log-probs of the continuation and greedy flag, from one unbatched full forward."""
    ctx, cont = tok.encode_pair(req.context, req.continuation)
    full = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(full)[0], dim=-1)
    total, greedy = 0.0, True
    for j in range(len(ctx), len(ctx) + len(cont)):
        total += logp[j - 1, full[0, j]].item()
        greedy = greedy and int(logp[j - 1].argmax()) == int(full[0, j])
    return total, greedy


def mmlu_like(n_questions: int = 6) -> list[R]:
    header = "The following are multiple choice questions (with answers).\n\n" + "".join(
        f"Question {i}: what is {i}+{i}?\nA. one\nB. two\nC. three\nD. four\nAnswer: B\n\n" for i in range(3))
    reqs = []
    for q in range(n_questions):
        ctx = header + f"Question: the quick brown fox number {q}?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
        reqs += [R(ctx, f" {letter}") for letter in "ABCD"]
    return reqs


def hellaswag_like() -> list[R]:
    rng = random.Random(0)
    words = "the quick brown fox jumps over lazy dog once upon a time there was a little girl".split()
    reqs = []
    for q in range(4):
        ctx = " ".join(rng.choice(words) for _ in range(15)).capitalize() + "."
        reqs += [R(ctx, " " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))) for _ in range(4)]
    return reqs


REQUESTS = mmlu_like() + hellaswag_like() + [R("", "Once upon a time"), R("Paris", ""), R("The dog ", "jumps")]


@pytest.fixture(scope="module")
def references(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    return [reference(model, tok, r) if r.continuation else None for r in REQUESTS]


@pytest.mark.parametrize("batch_tokens, share, attention", [
    (1, True, None), (5, True, None), (64, True, None), (4096, True, "blocks"), (4096, True, "dense"),
    (300, True, "blocks"), (64, False, None), (4096, False, None)])
def test_scores_equal_one_request_at_a_time(tiny_model_and_tokenizer, references, batch_tokens, share, attention):
    model, tok = tiny_model_and_tokenizer
    scorer = Scorer(model, tok, batch_tokens=batch_tokens, share_prefixes=share, attention=attention)
    results = scorer.loglikelihood(REQUESTS)
    for req, res, ref in zip(REQUESTS, results, references):
        if not req.continuation:
            assert (res.logprob, res.is_greedy, res.n_tokens) == (0.0, True, 0)
            continue
        assert not res.truncated  # the reference runs the whole sequence
        lp, greedy = ref
        assert res.logprob == pytest.approx(lp, abs=1e-4)
        assert res.is_greedy == greedy
        assert res.n_tokens == len(tok.encode_pair(req.context, req.continuation)[1])


def test_order_and_budget_do_not_change_results(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    base = Scorer(model, tok, batch_tokens=4096).loglikelihood(REQUESTS)
    perm = list(range(len(REQUESTS)))
    random.Random(1).shuffle(perm)
    shuffled = Scorer(model, tok, batch_tokens=37).loglikelihood([REQUESTS[i] for i in perm])
    for j, i in enumerate(perm):
        assert shuffled[j].logprob == pytest.approx(base[i].logprob, abs=1e-4)
        assert shuffled[j].is_greedy == base[i].is_greedy


def test_prefix_sharing_runs_fewer_tokens(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    reqs = mmlu_like(8)
    shared = Scorer(model, tok, share_prefixes=True)
    shared.loglikelihood(reqs)
    unshared = Scorer(model, tok, share_prefixes=False)
    unshared.loglikelihood(reqs)
    assert unshared.stats.tokens_run == unshared.stats.tokens_naive
    # Header once, each question once, letters never: far below a quarter of the naive count.
    assert shared.stats.tokens_run < unshared.stats.tokens_run / 4
    header_and_questions = len(tok.encode_pair(reqs[0].context, " A")[0])
    assert shared.stats.tokens_run < header_and_questions * 8


def test_streaming_yields_every_request_once(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    seen = [i for i, _ in Scorer(model, tok, batch_tokens=16).iter_loglikelihood(REQUESTS)]
    assert sorted(seen) == list(range(len(REQUESTS)))


def test_left_truncation_keeps_the_window(tiny_model_and_tokenizer):
    model, tok = tiny_model_and_tokenizer
    window = 24
    long_ctx = "The quick brown fox jumps over the lazy dog. " * 10
    req = R(long_ctx, " Paris")
    scorer = Scorer(model, tok, max_len=window)
    (res,) = scorer.loglikelihood([req])
    assert res.truncated and scorer.stats.truncated == 1
    ctx, cont = tok.encode_pair(req.context, req.continuation)
    kept = (ctx + cont)[-(window + 1):]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([kept[:-1]]))[0], dim=-1)
    expected = sum(logp[j - 1, kept[j]].item() for j in range(len(kept) - len(cont), len(kept)))
    assert res.logprob == pytest.approx(expected, abs=1e-4)
    (short,) = scorer.loglikelihood([R("The dog", " jumps")])
    assert not short.truncated and scorer.stats.truncated == 1


class CharTokenizer:
    """One token per character (id = code point): any id sequence is exactly some text."""

    bos_id = 1

    def encode_pairs(self, pairs):
        return [([self.bos_id] + [ord(c) for c in ctx], [ord(c) for c in cont]) for ctx, cont in pairs]


def test_is_greedy_exactly_when_every_token_is_the_argmax(tiny_model_and_tokenizer):
    model, _ = tiny_model_and_tokenizer
    tok = CharTokenizer()
    ctx = "Once upon a time"
    ids = [tok.bos_id] + [ord(c) for c in ctx]
    with torch.no_grad():
        for _ in range(4):  # greedy continuation of 4 tokens
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    greedy_text = "".join(chr(i) for i in ids[-4:])
    other = greedy_text[:2] + chr((ord(greedy_text[2]) + 1) % model.args.vocab_size) + greedy_text[3]
    scorer = Scorer(model, tok)
    best, changed = scorer.loglikelihood([R(ctx, greedy_text), R(ctx, other)])
    assert best.is_greedy and not changed.is_greedy
    assert best.logprob > changed.logprob


def brute_force_trie(seqs):
    """(token, parent, depth, end) lists by inserting sorted sequences into a dict trie, then
    numbering nodes in preorder by a recursive walk."""
    children: dict = {}
    for seq in seqs:
        level = children
        for t in seq:
            level = level.setdefault(t, {})
    out = []

    def walk(level, parent, depth):
        for t in sorted(level):
            me = len(out)
            out.append([t, parent, depth, None])
            walk(level[t], me, depth + 1)
            out[me][3] = len(out)

    walk(children, -1, 0)
    return [list(col) for col in zip(*out)]


def test_trie_equals_brute_force_on_random_sequences():
    import random

    rng = random.Random(0)
    for trial in range(30):
        seqs = [[rng.randrange(3) for _ in range(rng.randint(1, 7))] for _ in range(rng.randint(1, 25))]
        seqs += [list(s) for s in rng.sample(seqs, k=min(3, len(seqs)))]  # repeats
        trie, last = build_trie(seqs)
        token, parent, depth, end = brute_force_trie(seqs)
        assert [trie.token.tolist(), trie.parent.tolist(), trie.depth.tolist(), trie.end.tolist()] == \
            [token, parent, depth, end]
        for seq, v in zip(seqs, last.tolist()):  # the path to each sequence's last node spells it
            path = []
            while v >= 0:
                path.append(int(trie.token[v]))
                v = int(trie.parent[v])
            assert path[::-1] == seq
        unshared, _ = build_trie(seqs, share=False)
        assert len(unshared.token) == sum(map(len, seqs))


def test_trie_preorder_ranges():
    trie, last = build_trie([[1, 2, 3], [1, 2, 4], [1, 5], [1, 2, 3]])
    assert trie.token.tolist() == [1, 2, 3, 4, 5]
    assert trie.parent.tolist() == [-1, 0, 1, 1, 0]
    assert trie.end.tolist() == [5, 4, 3, 4, 5]
    assert last.tolist() == [2, 3, 4, 2]
    assert trie.has_child.tolist() == [True, True, False, False, False]


@pytest.mark.slow  # PyTorch's eager FlexAttention on the CPU: about a minute here
def test_flex_block_mask_equals_dense_mask(tiny_model_and_tokenizer):
    """FlexAttention (PyTorch's eager reference on the CPU) with the tree block mask gives the
    dense masked SDPA's scores; truncated requests (rooted at a token other than BOS) included."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    model, tok = tiny_model_and_tokenizer
    reqs = REQUESTS + [R("The quick brown fox jumps over the lazy dog. " * 6, " Paris")]
    dense = Scorer(model, tok, batch_tokens=96, max_len=48, attention="dense").loglikelihood(reqs)
    scorer = Scorer(model, tok, batch_tokens=96, max_len=48, attention="flex")
    flex = scorer.loglikelihood(reqs)
    assert scorer.stats.truncated >= 1 and scorer.stats.forwards > 1
    for d, f in zip(dense, flex):
        assert f.logprob == pytest.approx(d.logprob, abs=1e-5)
        assert (f.is_greedy, f.truncated) == (d.is_greedy, d.truncated)


def test_key_blocks_allow_exactly_the_dense_mask():
    """Each query of a gathered block may attend exactly the cache slots the dense tree mask
    allows it, whatever the block size; a chunk that would not save falls back (None)."""
    from llama_eval.engine.scoring import key_blocks

    rng = random.Random(3)
    seqs = [[rng.choice([7, 8]) for _ in range(rng.randint(1, 9))] for _ in range(60)]
    seqs += [[1, 2, 3, 4, 5, 6] + s for s in seqs[:20]] + [[9] * 12]
    trie, _ = build_trie(seqs)
    nodes = np.flatnonzero(trie.has_child)
    for n_stack, block in ((0, 4), (3, 8), (5, 16)):
        # A chunk of run nodes and, in the slots before it, the root path of its first node.
        chunk = nodes[n_stack + 2 :]
        first = chunk[0]
        stack = np.asarray([j for j in range(first) if first < trie.end[j]][-n_stack:] if n_stack else [], dtype=np.int64)
        keys = np.concatenate([stack, chunk])
        kv_len = -(-len(keys) // 16) * 16
        dense = Scorer._tree_mask(chunk, keys, trie.end[keys], kv_len, "cpu")[0, 0]
        blocks = key_blocks(chunk, keys, trie.end[keys], len(stack), kv_len, "cpu", block=block, worth=10.0)
        for i in range(len(chunk)):
            b, r = divmod(i, block)
            slots = blocks.index[b][blocks.mask[b, 0, r]].tolist()
            assert sorted(slots) == torch.nonzero(dense[i]).flatten().tolist(), (n_stack, block, i)
        assert blocks.mask.any(-1).all()  # padding queries attend something: no NaN rows
    assert key_blocks(chunk[:1], keys[: len(stack) + 1], trie.end[keys[: len(stack) + 1]], len(stack),
                      16, "cpu") is None


def test_tree_block_mask_blocks_follow_the_dense_mask():
    """The block mask's dense form is the ancestor rule, padding rows and keys masked."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    from llama_eval.engine.scoring import TreeBlockMasks

    trie, _ = build_trie([[1, 2, 3], [1, 2, 4], [1, 5], [7, 8]])
    nodes = np.arange(len(trie.token))
    masks = TreeBlockMasks(len(nodes) + 2, 512, "cpu")  # two padding queries
    for kv_len in (256, 128):  # the buffers are refilled: a second mask must not see the first
        block = masks(nodes[2:], nodes, trie.end, kv_len)
        queries = np.concatenate([nodes[2:], [-2] * 4])
        dense = Scorer._tree_mask(queries, nodes, trie.end, kv_len, "cpu")[0, 0]
        # mask_mod evaluated at every pair (to_dense() has block granularity only)
        q, k = torch.meshgrid(torch.arange(len(queries)), torch.arange(kv_len), indexing="ij")
        assert torch.equal(block.mask_mod(0, 0, q, k), dense)
        assert block.shape[-2:] == (len(nodes) + 2, kv_len)
        assert not dense[-4:].any() and dense[0, :3].tolist() == [True, True, True]


def test_requests_encoded_ahead_give_the_scorers_own_encoding(tiny_model_and_tokenizer, tiny_tokenizer_path):
    """EncodedAhead (tokenising while the weights load) hands the scorer what encode_requests
    would give, for requests encoded ahead, requests it never saw and any order; once taken,
    the scorer encodes for itself again."""
    from llama_eval.engine.scoring import EncodedAhead, encode_requests

    model, tok = tiny_model_and_tokenizer
    window = 48  # short enough that some requests are cut from the left
    asked = REQUESTS + [R("The quick brown fox jumps over the lazy dog. " * 6, " Paris")]
    later = list(reversed(asked[5:])) + [R("A context the thread never saw", " at all")]
    expected = encode_requests(tok, later, window)
    assert expected[2].count(True) >= 1
    assert EncodedAhead(tiny_tokenizer_path, asked, window).take(tok, later) == expected
    assert EncodedAhead(tiny_tokenizer_path, asked, window).take(tok, []) == ([], [], [], 0)
    broken = EncodedAhead(tiny_tokenizer_path.parent / "no-such-tokenizer.model", asked, window)
    assert broken.take(tok, later) == expected  # the thread failed: everything encoded by take

    plain = Scorer(model, tok, max_len=window).loglikelihood(later)
    scorer = Scorer(model, tok, max_len=window, ahead=EncodedAhead(tiny_tokenizer_path, asked, window))
    assert scorer.loglikelihood(later) == plain
    assert scorer.ahead is None
    again = scorer.loglikelihood(later[:3])  # packed differently: equal up to float rounding
    assert [r.logprob for r in again] == pytest.approx([r.logprob for r in plain[:3]], abs=1e-5)
    with pytest.raises(ValueError, match="window"):
        Scorer(model, tok, max_len=window, ahead=EncodedAhead(tiny_tokenizer_path, asked, 32))
