"""Batched log-likelihood scoring over a prefix tree: every shared prefix runs once.

The benchmarks of the LLaMA paper repeat themselves: the choices of a question share its
context, the questions of a task share a few-shot header (MMLU's five dev examples per
subject), and single-token choices (MMLU's letters) differ only in the token being scored.
So all requests are merged into one token trie and each trie node runs through the model
once, wherever it sits in how many requests.

How the trie is run:
- Sorting the token sequences lexicographically and creating the nodes each sequence does
  not share with its predecessor numbers the nodes in preorder. In preorder the subtree of
  node j is the contiguous range [j, end[j]), so "key j is an ancestor of query i" is the
  vectorisable test  j <= i < end[j]  -- that is the whole attention mask.
- Only nodes with children are run: a leaf is a scored token whose log-probability comes
  from its parent's logits. MMLU's four letters therefore cost no forward at all.
- Consecutive preorder nodes are packed into one row of at most `batch_tokens` tokens:
  no padding anywhere, so no length sorting is needed either. Rotary positions are node
  depths, so tokens of many sequences share one row.
- A chunk's out-of-chunk ancestors all lie on the root path of its first node (a preorder
  property), so the KV cache only ever holds one root path (at most the window) plus the
  chunk. After a chunk the path to its last node is kept and the rest dropped.
- Logits are computed only at the parents of scored tokens, a few hundred rows at a time,
  so memory does not grow with vocabulary x context length.
- Only about a quarter of the 128 x 128 blocks of a packed row's mask hold an ancestor pair,
  so attention is computed block-sparse. On CUDA the mask is a FlexAttention block mask and
  empty blocks cost nothing. Elsewhere the chunk's queries are cut into blocks of
  KEY_BLOCK tokens and each block attends only the keys it may see, gathered: the root path
  of its first node (again the preorder property: an ancestor of a later node of the block
  that precedes the block is an ancestor of its first node) and the block itself. The dense
  boolean mask for SDPA remains as the reference in tests and for chunks where gathering
  would not save (a short root path, a single small block).

A change here that can alter results beyond float rounding must bump ENGINE_VERSION
(engine/__init__.py): it keys the request cache.
"""

from __future__ import annotations

import sys
import threading
from array import array
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from ..model.attention import KeyBlocks
from ..model.tokenizer import common_prefix
from ..requests import LoglikelihoodRequest, LoglikelihoodResult

LOGIT_ROWS = 512  # rows of full-vocabulary logits materialised at once
KEY_ALIGN = 16  # attention spans a multiple of this many cache slots: fused kernels want aligned masks
FLEX_KEY_BUCKET = 1024  # with FlexAttention, key lengths are padded to a multiple of this (few shapes to compile)
FLEX_BLOCK = 128  # FlexAttention's block size; query lengths are padded to a multiple of it
KEY_BLOCK = 64  # query block of gathered-key attention: a block costs (its root path + KEY_BLOCK) keys per query
ATTENTION = ("flex", "blocks", "dense")  # how a packed chunk attends; see Scorer


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401
    except ImportError:
        return False
    return True


def default_batch_tokens(args) -> int:
    """Tokens per packed forward when not given: twice the model width, within [256, 4096].

    A packed row of N tokens attends densely over itself (the tree mask only zeroes scores), so
    attention costs about N / (12 x width) of the projections' work: 2 x width keeps that near
    a sixth for small models, and from 7B up the cap of 4,096 tokens (a twelfth or less) still
    gives matrix products that fill a GPU.
    """
    return min(4096, max(256, 2 * args.dim))


@dataclass
class ScoringStats:
    requests: int = 0
    tokens_naive: int = 0  # tokens a one-row-per-request scorer would run (no padding counted)
    tokens_run: int = 0  # tokens actually run through the model
    truncated: int = 0  # requests cut from the left to fit the window
    forwards: int = 0
    logit_rows: int = 0  # positions whose full-vocabulary logits were computed


@dataclass
class _Trie:
    """Nodes in preorder: token, parent (-1 for roots), depth, end of subtree."""

    token: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    end: np.ndarray
    has_child: np.ndarray


def build_trie(seqs: Sequence[Sequence[int]], share: bool = True) -> tuple[_Trie, np.ndarray]:
    """A trie over `seqs` (token lists, or their `_key` bytes); returns it and, per sequence,
    the node of its last token.

    With share=False every sequence gets its own nodes (the engine without prefix sharing,
    used to check that sharing changes nothing). Python loops run per sequence, never per
    node: sorted sequence j adds the nodes of its tokens past its common prefix with j - 1,
    a contiguous run of preorder ids.
    """
    n = len(seqs)
    # Each sequence as big-endian int32 bytes: byte order is token order, so sorting and common
    # prefixes run as memcmp instead of comparing Python ints one by one.
    keys = [_key(seq) for seq in seqs]
    order = sorted(range(n), key=keys.__getitem__) if share else range(n)
    ordered = [keys[i] for i in order]
    del keys
    length = np.fromiter(map(len, ordered), dtype=np.int64, count=n) // 4
    common = np.zeros(n, dtype=np.int64)
    if share and n > 1:
        common[1:] = [common_prefix(a, b) // 4 for a, b in zip(ordered, ordered[1:])]
    count = length - common  # new nodes per sorted sequence; 0 for a repeat of the one before
    first = np.cumsum(count) - count  # id of each sequence's first new node
    total = int(count.sum())
    token = np.frombuffer(b"".join(k[4 * c :] for k, c in zip(ordered, common.tolist())), dtype=">i4")
    token = token.astype(np.int64)
    seg = np.repeat(np.arange(n), count)  # the sorted sequence that added each node
    depth = np.arange(total) - first[seg] + common[seg]
    parent = np.arange(-1, total - 1, dtype=np.int64)  # within a run, the node before
    # A run's first node hangs at depth common-1 of the path it shares: the one of the latest
    # earlier sequence whose own run starts above that depth (a strictly smaller `common`).
    owner = np.full(n, -1, dtype=np.int64)
    stack: list[int] = []
    for j, c in enumerate(common.tolist()):
        while stack and common[stack[-1]] >= c:
            stack.pop()
        owner[j] = stack[-1] if stack else -1
        stack.append(j)
    runs = np.flatnonzero(count > 0)
    o = owner[runs]
    parent[first[runs]] = np.where(common[runs] > 0, first[np.maximum(o, 0)] + common[runs] - 1 - common[np.maximum(o, 0)], -1)
    # A subtree is contiguous in preorder and ends where its last child's ends: settle `end`
    # one depth level at a time, deepest first (children of one parent are adjacent in a level).
    end = np.arange(1, total + 1, dtype=np.int64)
    by_depth = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[by_depth], np.arange(int(depth.max(initial=0)) + 2))
    for d in range(len(bounds) - 2, 0, -1):
        nodes = by_depth[bounds[d] : bounds[d + 1]]
        par = parent[nodes]
        last = np.append(par[1:] != par[:-1], True)
        end[par[last]] = end[nodes[last]]
    has_child = np.zeros(total, dtype=bool)
    has_child[parent[parent >= 0]] = True
    # A repeated sequence ends where the latest sequence with nodes of its own ends.
    latest = np.maximum.accumulate(np.where(count > 0, np.arange(n), 0))
    last_sorted = first[latest] + count[latest] - 1
    last_node = np.empty(n, dtype=np.int64)
    last_node[np.fromiter(order, dtype=np.int64, count=n)] = last_sorted
    return _Trie(token, parent, depth, end, has_child), last_node


def _key(seq: Sequence[int] | bytes) -> bytes:
    """Token ids as big-endian int32 bytes (bytes pass through unchanged)."""
    if isinstance(seq, bytes):
        return seq
    a = array("i", seq)
    if sys.byteorder == "little":
        a.byteswap()
    return a.tobytes()


ENCODE_CHUNK = 4096  # requests tokenised at once: bounds the Python token lists alive together


def encode_requests(tokenizer, requests: Sequence[LoglikelihoodRequest], window: int):
    """(sequences as `_key` bytes, continuation tokens scored, truncated flags, tokens a
    one-row-per-request scorer would run) for `requests`.

    A sequence is BOS + context + continuation, cut from the left to its last window + 1
    tokens. Requests are tokenised a chunk at a time and kept as compact byte keys (4 bytes a
    token instead of a Python int and a pointer), a shared context's converted once.
    """
    seqs, n_cont, truncated, naive = [], [], [], 0
    for lo in range(0, len(requests), ENCODE_CHUNK):
        chunk = requests[lo : lo + ENCODE_CHUNK]
        pairs = tokenizer.encode_pairs([(r.context, r.continuation) for r in chunk])
        ctx_keys: dict[int, bytes] = {}  # id of a context list (alive in `pairs`) -> its key
        for ctx, cont in pairs:
            if id(ctx) not in ctx_keys:
                ctx_keys[id(ctx)] = _key(ctx)
            full, length = ctx_keys[id(ctx)] + _key(cont), len(ctx) + len(cont)
            cut = length - 1 > window
            if cut:  # keep the last window+1 tokens: the window's inputs plus the last target
                full, length = full[-4 * (window + 1) :], window + 1
            seqs.append(full)
            n_cont.append(min(len(cont), length - 1))
            truncated.append(cut)
            naive += (length - 1) if cont else 0
    return seqs, n_cont, truncated, naive


class EncodedAhead:
    """Requests tokenised ahead of the scorer, in a background thread: started before the
    weights load, so that the host's tokenising (seconds for MMLU) overlaps the reading of
    gigabytes of weights instead of following it.

    `take(requests)` waits for the thread and gives `encode_requests`' output for the given
    requests: those encoded ahead are looked up, the rest (changed since, e.g. shots dropped to
    fit the window, or never given) are encoded then. The thread opens its own tokenizer from
    `tokenizer_path` (the file the scorer's reads: nothing is shared with the run going on);
    the window must be the scorer's. A failure in the thread only means everything is encoded
    by `take`.
    """

    def __init__(self, tokenizer_path, requests: Sequence[LoglikelihoodRequest], window: int):
        self.tokenizer_path, self.window = tokenizer_path, window
        self._ready: dict[LoglikelihoodRequest, tuple[bytes, int, bool]] = {}
        self._thread = threading.Thread(target=self._encode, args=(list(requests),), daemon=True,
                                        name="llama-eval-encode-ahead")
        self._thread.start()

    def _encode(self, requests: list[LoglikelihoodRequest]) -> None:
        from ..model.tokenizer import Tokenizer

        try:
            seqs, n_cont, truncated, _ = encode_requests(Tokenizer(self.tokenizer_path), requests, self.window)
        except Exception:  # noqa: BLE001 -- the scorer encodes these itself; nothing is lost
            return
        self._ready = dict(zip(requests, zip(seqs, n_cont, truncated)))

    def take(self, tokenizer, requests: Sequence[LoglikelihoodRequest]):
        """encode_requests(tokenizer, requests, window), from what was encoded ahead where it can."""
        self._thread.join()
        ready, self._ready = self._ready, {}  # each request is scored once: free the rest with it
        missing = [r for r in requests if r not in ready]
        if missing:
            for r, *encoded in zip(missing, *encode_requests(tokenizer, missing, self.window)[:3]):
                ready[r] = tuple(encoded)
        seqs, n_cont, truncated = (list(column) for column in zip(*(ready[r] for r in requests))) if requests else ([], [], [])
        # What a one-row-per-request scorer would run: each sequence less its last token.
        naive = sum(len(seq) // 4 - 1 for seq, n in zip(seqs, n_cont) if n > 0)
        return seqs, n_cont, truncated, naive


class Scorer:
    """Answers LoglikelihoodRequests with one pass over their prefix trie."""

    def __init__(self, model, tokenizer, batch_tokens: int | None = None, share_prefixes: bool = True,
                 max_len: int | None = None, token_logprobs=None, attention: str | None = None,
                 ahead: EncodedAhead | None = None):
        """token_logprobs(model, h [P, C], rows [K], tokens [K]) -> (log-probs [K], is-argmax [K])
        computes the scored tokens' log-probs from hidden rows; the default materialises the
        logits of P rows; a vocabulary-parallel model passes one that never gathers them.

        attention: how a packed chunk attends, one of ATTENTION. "flex": a FlexAttention block
        mask (only blocks with an ancestor pair are computed); shapes are padded (queries to
        batch_tokens, keys to a multiple of FLEX_KEY_BUCKET) so that its kernels compile for a
        handful of shapes only. "blocks": gathered keys per query block (`KeyBlocks`), falling
        back to "dense" for a chunk where that would not save. "dense": SDPA with the whole
        boolean mask. Default: "flex" on CUDA where PyTorch has FlexAttention, else "blocks".
        All three compute the same numbers up to float rounding.

        ahead: requests already being tokenised (`EncodedAhead`, same window); the first call
        takes from it."""
        self.model = model
        self.token_logprobs = token_logprobs or full_vocab_logprobs
        self.tokenizer = tokenizer
        self.batch_tokens = batch_tokens or default_batch_tokens(model.args)
        self.share_prefixes = share_prefixes
        self.window = max_len or model.args.max_seq_len
        self.stats = ScoringStats()
        on_cuda = model.tok_embeddings.weight.device.type == "cuda"
        if attention is None:
            attention = "flex" if on_cuda and flex_available() else "blocks"
        if attention not in ATTENTION:
            raise ValueError(f"attention {attention!r} is not one of {ATTENTION}")
        self.attention = attention
        if ahead is not None and ahead.window != self.window:
            raise ValueError(f"requests encoded ahead for a window of {ahead.window}, not {self.window}")
        self.ahead = ahead

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        out: list[LoglikelihoodResult | None] = [None] * len(requests)
        for i, r in self.iter_loglikelihood(requests):
            out[i] = r
        return out  # type: ignore[return-value]

    def iter_loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> Iterator[tuple[int, LoglikelihoodResult]]:
        """Yield (request index, result) as each request's last scored token is computed."""
        if self.ahead is not None:
            ahead, self.ahead = self.ahead, None
            seqs, n_cont, truncated, naive = ahead.take(self.tokenizer, requests)
        else:
            seqs, n_cont, truncated, naive = encode_requests(self.tokenizer, requests, self.window)
        self.stats.tokens_naive += naive
        self.stats.requests += len(requests)
        self.stats.truncated += sum(truncated)

        def result(i: int, logprob: float, greedy: bool) -> LoglikelihoodResult:
            return LoglikelihoodResult(logprob, greedy, n_cont[i], truncated[i])

        for i in range(len(requests)):
            if n_cont[i] == 0:  # an empty continuation has probability one
                yield i, result(i, 0.0, True)
        live = [i for i in range(len(requests)) if n_cont[i] > 0]
        if not live:
            return
        trie, last = build_trie([seqs[i] for i in live], self.share_prefixes)

        # Scored targets: the last n_cont nodes of each request's path, read at their parent;
        # walked up one level at a time for all requests together.
        req_ids = np.asarray(live, dtype=np.int64)
        left = np.asarray([n_cont[i] for i in live], dtype=np.int64)
        node, nodes, reqs = last, [], []
        while len(node):
            nodes.append(node)
            reqs.append(req_ids)
            left = left - 1
            more = left > 0
            node, req_ids, left = trie.parent[node[more]], req_ids[more], left[more]
        tnode, treq = np.concatenate(nodes), np.concatenate(reqs)
        tparent = trie.parent[tnode]
        by_parent = np.argsort(tparent, kind="stable")
        tnode, treq, tparent = tnode[by_parent], treq[by_parent], tparent[by_parent]

        remaining = dict(zip(*np.unique(treq, return_counts=True)))
        logprob = dict.fromkeys(live, 0.0)
        greedy = dict.fromkeys(live, True)
        for lp, gr, reqs in self._run(trie, tnode, tparent, treq):
            for x, g, i in zip(lp.tolist(), gr.tolist(), reqs.tolist()):
                logprob[i] += x
                greedy[i] = greedy[i] and g
                remaining[i] -= 1
                if remaining[i] == 0:
                    yield i, result(i, logprob[i], greedy[i])

    @torch.inference_mode()
    def _run(self, trie: _Trie, tnode: np.ndarray, tparent: np.ndarray, treq: np.ndarray):
        """Run the trie's inner nodes chunk by chunk; yield (logprobs, is_greedy, request) per chunk."""
        model = self.model
        device = model.tok_embeddings.weight.device
        run_nodes = np.flatnonzero(trie.has_child)  # preorder
        flex = self.attention == "flex"
        q_pad = _round_up(self.batch_tokens, FLEX_BLOCK)  # the query length of every flex forward
        cache_len = _round_up(self.window + (q_pad if flex else self.batch_tokens),
                              FLEX_KEY_BUCKET if flex else KEY_ALIGN)
        cache = model.new_cache(1, cache_len)
        block_masks = TreeBlockMasks(q_pad, cache_len, device) if flex else None
        stack = np.zeros(0, dtype=np.int64)  # node ids whose keys/values sit in cache slots [0, len)
        t_lo = 0  # targets are sorted by parent, and parents come in preorder
        for c0 in range(0, len(run_nodes), self.batch_tokens):
            chunk = run_nodes[c0 : c0 + self.batch_tokens]
            # Keep only the stack entries that are ancestors of the chunk's first node.
            first = chunk[0]
            anc = (stack <= first) & (first < trie.end[stack])
            if not anc.all():
                cache.keep(torch.as_tensor(np.flatnonzero(anc), device=device))
                stack = stack[anc]
            keys = np.concatenate([stack, chunk])
            n_stack, n = len(stack), len(chunk)
            tokens, depths = trie.token[chunk], trie.depth[chunk]
            if flex:
                # Padding queries attend nothing; their keys, written past the real ones, are
                # nobody's ancestors.
                t = q_pad
                kv_len = min(_round_up(n_stack + t, FLEX_KEY_BUCKET), cache_len)
                tokens, depths = (np.concatenate([a, np.zeros(t - n, dtype=np.int64)]) for a in (tokens, depths))
                mask = block_masks(chunk, keys, trie.end[keys], kv_len)
            else:
                t = n
                kv_len = _round_up(n_stack + n, KEY_ALIGN)  # slots past the keys are masked out
                mask = None
                if self.attention == "blocks":
                    mask = key_blocks(chunk, keys, trie.end[keys], n_stack, kv_len, device)
                if mask is None:
                    mask = self._tree_mask(chunk, keys, trie.end[keys], kv_len, device)
            h = model.hidden(
                torch.as_tensor(tokens, device=device)[None],
                torch.as_tensor(depths, device=device),
                mask=mask,
                cache=cache,
                slots=torch.arange(n_stack, n_stack + t, device=device),
                kv_len=kv_len,
            )[0, :n]  # [N, C]
            self.stats.tokens_run += n
            self.stats.forwards += 1
            stack = keys

            t_hi = t_lo + int(np.searchsorted(tparent[t_lo:], chunk[-1], side="right"))
            if t_hi > t_lo:
                rows = np.searchsorted(chunk, tparent[t_lo:t_hi])  # chunk row of each target's parent
                yield (*self._gather(h, rows, trie.token[tnode[t_lo:t_hi]]), treq[t_lo:t_hi])
            t_lo = t_hi

    @staticmethod
    def _tree_mask(queries: np.ndarray, keys: np.ndarray, key_ends: np.ndarray, kv_len: int, device) -> torch.Tensor:
        """[1, 1, N, kv_len] bool: query node i may attend key node j iff j <= i < end[j] (j is
        an ancestor of i, or i itself). Built on the device from the node ids, so only those
        cross the bus, not the N x kv_len mask."""
        q = torch.as_tensor(queries, device=device)[:, None]
        k = torch.full((kv_len,), -1, dtype=torch.long, device=device)  # -1: a padding slot,
        e = torch.full((kv_len,), -1, dtype=torch.long, device=device)  # never an ancestor
        k[: len(keys)] = torch.as_tensor(keys, device=device)
        e[: len(keys)] = torch.as_tensor(key_ends, device=device)
        return ((k[None, :] <= q) & (q < e[None, :]))[None, None]

    def _gather(self, h: torch.Tensor, rows: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log-prob of tokens[k] and whether it is the argmax, under the logits at h[rows[k]].

        `rows` is sorted, so each block of LOGIT_ROWS distinct rows is a contiguous run of targets.
        """
        uniq, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        first = np.append(first, len(rows))
        lps, hits = [], []
        self.stats.logit_rows += len(uniq)
        for s in range(0, len(uniq), LOGIT_ROWS):
            e = min(s + LOGIT_ROWS, len(uniq))
            lp, hit = self.token_logprobs(
                self.model, h[torch.as_tensor(uniq[s:e], device=h.device)],
                torch.as_tensor(inverse[first[s] : first[e]] - s, device=h.device),
                torch.as_tensor(tokens[first[s] : first[e]], device=h.device),
            )
            lps.append(lp)
            hits.append(hit)
        return torch.cat(lps).double().cpu().numpy(), torch.cat(hits).cpu().numpy()


def key_blocks(queries: np.ndarray, keys: np.ndarray, key_ends: np.ndarray, n_stack: int, kv_len: int,
               device, block: int = KEY_BLOCK, worth: float = 0.7) -> KeyBlocks | None:
    """The tree mask of `Scorer._tree_mask` as `KeyBlocks`: query block b (queries[b*block:
    (b+1)*block], in cache slots from n_stack + b*block on) attends the slots of the keys that
    are ancestors of its first query, then its own slots. None where the blocks would compute
    more than `worth` of the dense scores.

    keys are the node ids in cache slots 0.. (ascending: the root path, then the queries);
    queries are keys[n_stack:].
    """
    n = len(queries)
    nb = -(-n // block)
    starts = np.arange(nb) * block
    first = queries[starts]
    before = (keys[None, :] < first[:, None]) & (first[:, None] < key_ends[None, :])  # [nb, keys]
    own = np.minimum(starts + block, n) - starts
    counts = before.sum(1) + own
    K = _round_up(int(counts.max()), KEY_ALIGN)
    if nb * block * K > worth * n * kv_len:
        return None
    index = np.zeros((nb, K), dtype=np.int64)  # padding entries point at slot 0, masked out below
    valid = np.arange(K)[None, :] < counts[:, None]
    for b in range(nb):
        row = np.flatnonzero(before[b])
        index[b, : len(row)] = row
        index[b, len(row) : counts[b]] = n_stack + starts[b] + np.arange(own[b])
    q = np.concatenate([queries, np.full(nb * block - n, queries[-1])]).reshape(nb, block)  # padding repeats the last query
    k = np.where(valid, keys[index], -1)  # -1: never an ancestor
    e = np.where(valid, key_ends[index], -1)
    q, k, e = (torch.as_tensor(a, device=device) for a in (q, k, e))
    allowed = (k[:, None, :] <= q[:, :, None]) & (q[:, :, None] < e[:, None, :])
    return KeyBlocks(block, torch.as_tensor(index, device=device), allowed[:, None])


class TreeBlockMasks:
    """FlexAttention BlockMasks with the rule of `Scorer._tree_mask` (query node i may attend key
    node j iff j <= i < end[j]), for queries of q_len and keys of up to max_kv slots.

    One mask function for the whole run, reading node ids from buffers refilled in place, so
    the compiled kernels see the same function every call. Key slots past the keys hold node -1
    with end -1 (never allowed); padding queries hold node -2 (they attend nothing).
    """

    def __init__(self, q_len: int, max_kv: int, device):
        self.q_len, self.device = q_len, device
        self.q = torch.full((q_len,), -2, dtype=torch.long, device=device)
        self.k = torch.full((max_kv,), -1, dtype=torch.long, device=device)
        self.e = torch.full((max_kv,), -1, dtype=torch.long, device=device)
        q, k, e = self.q, self.k, self.e

        def ancestor(b, h, q_idx, kv_idx):
            return (k[kv_idx] <= q[q_idx]) & (q[q_idx] < e[kv_idx])

        self.mask_mod = ancestor

    def __call__(self, queries: np.ndarray, keys: np.ndarray, key_ends: np.ndarray, kv_len: int):
        from torch.nn.attention.flex_attention import create_block_mask

        self.q.fill_(-2)
        self.k.fill_(-1)
        self.e.fill_(-1)
        self.q[: len(queries)] = torch.as_tensor(queries, device=self.device)
        self.k[: len(keys)] = torch.as_tensor(keys, device=self.device)
        self.e[: len(keys)] = torch.as_tensor(key_ends, device=self.device)
        return create_block_mask(self.mask_mod, None, None, self.q_len, kv_len, device=self.device,
                                 BLOCK_SIZE=FLEX_BLOCK)


def full_vocab_logprobs(model, h: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor):
    """Log-softmax of the logits at h[rows[k]] read at tokens[k], and whether tokens[k] is the argmax."""
    logits = model.head(h)  # [P, V] float32
    return logits[rows, tokens] - torch.logsumexp(logits, dim=-1)[rows], logits.argmax(dim=-1)[rows] == tokens
