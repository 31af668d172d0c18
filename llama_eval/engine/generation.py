"""Batched generation with a KV cache: greedy and sampled, stop strings, refilled rows.

How a run goes. Each request becomes work items, one per sample (one per request when
greedy: its n identical samples are produced once and repeated). A fixed batch of
`max_batch` cache rows decodes one token per row per step. A row that finishes (stop string,
EOS, max_new_tokens) takes the next waiting item before the next step, so short answers
never wait for long ones.

Prompts are run once. Before a step, the prompts of newly filled rows are loaded into the
cache together (right-padded, in batches of at most `prefill_tokens`), each only past the
longest prefix of it that some row already holds, which is then copied: the n samples of a
request share one prefill, a finished question of a few-shot task leaves the task's header
in its row for the next question, and prompts filled together run their shared header once.

A row's layout. Slot = rotary position = index in the sequence. The prompt's first L-1
tokens fill slots 0..L-2; its last token is the first input of the decode step, so every
token of a completion, the first included, is chosen by the same step function.

Sampling is reproducible with counter-based noise instead of a shared random stream. At
step t a sampled row takes the argmax, over the top-p nucleus, of logits / temperature plus
Gumbel noise (the Gumbel-max trick: an exact draw from the softmax), and the noise of token v
is a hash of (row key, t, v), where the row key hashes (seed, sample index, prompt text).
No state is shared between rows, so a completion does not depend on what else is in the
batch, on the batch size or on the order of requests (up to the float rounding of different
batch shapes); the hash is integer arithmetic, the same on every device.

Static shapes. A decode step runs the live rows only, in a power-of-two bucket of rows
(1, 2, 4, ... max_batch): live rows sit in the lowest cache rows (free rows are refilled
lowest first, and when the live rows fit a smaller bucket those above it move down), and a
bucket's idle rows write into the last slot, which no kept token ever reaches. It attends
over a power-of-two bucket of slots, not the whole cache. On CUDA each (row bucket, slot
bucket, greedy or sampling) step is captured once as a CUDA graph and replayed, one launch
per step instead of hundreds. Elsewhere the same step function runs eagerly.

Shared prefixes are read once. In few-shot generation every live row starts with the task's
header (GSM8K's 8 exemplars, NQ's 64 shots); `_load` computes it once and copies it into
each row, so whenever the live rows' `held` lists share their first P tokens, slots [0, P)
hold the same keys/values in all of them. A decode step then reads those P slots from one
live row for the whole bucket and only each row's own slots [P, P + own) per row
(`shared_prefix_attention` in model/llama.py): a step reads P + B * own slots instead of
B * (P + own). No cache layout changes. P is the live rows' common prefix rounded down to a
multiple of _SHARED_GRANULE, so the step's shapes (and CUDA graphs, keyed by row bucket, P,
slot bucket and sampling) stay few; the own part is bucketed more finely than kv_len
(`_own_bucket`: steps of 1.5x and 1.33x), since it is read once per row. The path is taken
where it saves enough slot reads to pay for its extra kernels (_MIN_SHARED_SAVING; never for
a lone row, where nothing is shared). Rows whose prompts were prefilled in different groups
hold the same tokens computed separately, equal up to float rounding; like a different batch
shape, reading them from one row can change results only by float rounding.
Generator(shared_prefix=False) keeps every step on the plain path.

A change here that can alter results beyond float rounding must bump ENGINE_VERSION
(engine/__init__.py): it keys the request cache.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..config import RunConfig
from ..errors import UserError
from ..model.llama import Transformer
from ..model.tokenizer import common_prefix
from ..requests import GenerationRequest, GenerationResult

_MASK32 = 0xFFFFFFFF
_MIN_BUCKET = 32  # smallest number of cache slots a decode step attends over
_SHARED_GRANULE = 64  # a shared prefix is used in whole multiples of this many slots
# The shared-prefix path runs about a dozen more small kernels per layer than one fused
# attention call, so a step takes it only where it reads at least this many fewer cache slots
# (per layer). Estimates, to be checked with benchmarks/bench_shared_prefix.py: at the 7B shape
# on an H100 (16 KB of keys/values per slot and layer, ~2 us per kernel in a graph) the extra
# kernels cost about what 5,000 slots take to read; on a CPU with the benchmarks' small model
# (2 KB per slot, ~10 us per op) about 750.
_MIN_SHARED_SAVING = {"cuda": 4096, "cpu": 512}


@dataclass
class GenerationStats:
    requests: int = 0
    prompt_tokens: int = 0  # prompt tokens run through the model (a prompt shared by n samples counts once)
    prompt_tokens_reused: int = 0  # prompt tokens whose keys/values were copied from the cache instead
    generated_tokens: int = 0  # tokens chosen by decode steps (EOS and tokens past a stop string included)
    decode_steps: int = 0  # batched decode steps
    decode_rows: int = 0  # rows run by decode steps (live rows plus the idle rows of their bucket)
    rows_moved: int = 0  # live rows moved to a lower cache row to shrink the step's bucket
    decode_kv_slots: int = 0  # cache slots whose keys/values decode steps read, per layer (a shared prefix once)
    decode_kv_live: int = 0  # of which live rows' tokens, a prefix all hold counted once: what a step must read
    shared_steps: int = 0  # decode steps that read a shared prefix once for all rows
    truncated: int = 0  # prompts cut from the left to fit the window


# ---------------------------------------------------------------------------------------------
# Token choice: greedy, or top-p sampling with counter-based noise.


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective hash of 32-bit values held in int64 (products stay below 2**59: no overflow)."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    return (x >> 16) ^ x


def _uniform(keys: torch.Tensor, steps: torch.Tensor, token_hash: torch.Tensor) -> torch.Tensor:
    """Noise in (0, 1), [B, V] float32: a hash of (row key [B], step [B], token).

    token_hash is _mix32 of the token ids [V], computed once. 23 bits are kept so that
    (h + 0.5) / 2**23 is exact in float32 and never 0 or 1.
    """
    row = _mix32(keys ^ _mix32(steps & _MASK32))  # [B]
    h = _mix32(token_hash[None, :] ^ row[:, None])  # [B, V]
    return ((h >> 9).float() + 0.5) * 2.0**-23


def _choose_tokens(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
                   uniform: torch.Tensor) -> torch.Tensor:
    """Next token per row [B] from float32 logits [B, V].

    Rows with temperature 0 take the argmax. Others draw from the smallest set of most likely
    tokens whose probability under softmax(logits / temperature) reaches top_p, using the
    noise `uniform` ([B, V] in (0, 1)) through the Gumbel-max trick.
    """
    greedy = logits.argmax(-1)
    scaled = logits / temperature.clamp_min(1e-6)[:, None]  # [B, V]
    p_sorted, order = scaled.softmax(-1).sort(-1, descending=True)
    mass_before = p_sorted.cumsum(-1) - p_sorted  # probability of the strictly more likely tokens
    # Without the top_p < 1 test, float rounding of the cumsum could drop tail tokens at top_p = 1.
    outside_sorted = (mass_before >= top_p[:, None]) & (top_p[:, None] < 1)
    outside = torch.empty_like(outside_sorted).scatter_(-1, order, outside_sorted)
    gumbel = -torch.log(-torch.log(uniform))
    sampled = (scaled + gumbel).masked_fill(outside, float("-inf")).argmax(-1)
    return torch.where(temperature > 0, sampled, greedy)


def _row_key(seed: int, sample: int, prompt: str) -> int:
    """The 32-bit noise key of one sample of one request."""
    digest = hashlib.blake2b(f"{seed}\0{sample}\0{prompt}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _row_bucket(n: int, max_batch: int) -> int:
    """Rows a decode step runs when the highest live row is n - 1: a power of two, at most max_batch."""
    size = 1
    while size < n:
        size *= 2
    return min(size, max_batch)


def _bucket(n: int, max_len: int) -> int:
    """Cache slots a step attends over when n are in use: a power of two, at most max_len."""
    size = _MIN_BUCKET
    while size < n:
        size *= 2
    return min(size, max_len)


def _own_bucket(n: int, limit: int) -> int:
    """Slots past a shared prefix a step reads per row when the longest row uses n of them:
    32 x 1, 1.5, 2, 3, 4, 6, ... (at most 1.5x the need, against 2x for powers of two: these
    slots are read once per row), at most limit."""
    size = _MIN_BUCKET
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3  # 32 -> 48 -> 64 -> 96 -> 128
    return min(size, limit)


# ---------------------------------------------------------------------------------------------
# Completion text and stop strings.


class _CompletionText:
    """The text a row's new tokens add after its prompt, decoded a token at a time.

    The contract: decode(prompt + new)[len(decode(prompt)):]. SentencePiece decodes a token
    list piece by piece with two exceptions: the first piece of a text loses its leading
    space, and byte pieces (<0xE2><0x82><0xAC>) become one character only once all have
    arrived. Decoding behind a plain piece ("a") handles the first: the space between prompt
    and completion is kept, as HumanEval's indentation needs; only a completion that starts
    the text (after a bare BOS) is decoded without it. Leaving undecoded the tokens of an
    unfinished character (`pending`) handles the second. So a step decodes a token or two,
    never the whole completion.
    """

    def __init__(self, tokenizer, prompt: list[int], stops: tuple[str, ...]):
        self.tokenizer, self.stops = tokenizer, stops
        self.anchor = tokenizer.encode("a")
        self.anchor_len = len(tokenizer.decode(self.anchor))
        self.at_start = tokenizer.decode(prompt) == ""
        self.overlap = max((len(s) for s in stops), default=1) - 1  # old characters a new match can use
        self.done = ""  # text of the tokens before `pending`; final
        self.pending: list[int] = []
        self.tail = ""  # text of `pending`, possibly ending in an unfinished character

    def push(self, token: int) -> bool:
        """Append a token; True when a stop string has appeared in the text."""
        self.pending.append(token)
        if self.at_start:
            self.tail = self.tokenizer.decode(self.pending)
        else:
            self.tail = self.tokenizer.decode(self.anchor + self.pending)[self.anchor_len:]
        # Only matches that end in the new text are new; earlier ones were seen earlier.
        recent = self.done[max(0, len(self.done) - self.overlap):] + self.tail
        stopped = any(s in recent for s in self.stops)
        if not self.tail.endswith("\ufffd"):
            if self.at_start:  # control tokens (BOS) decode to nothing anywhere: the text has not started
                self.at_start = self.tokenizer.decode(self.anchor + self.pending)[self.anchor_len:] == ""
            self.done, self.pending, self.tail = self.done + self.tail, [], ""
        return stopped

    def completion(self) -> str:
        """The text so far, cut before the first occurrence of any stop string."""
        text = self.done + self.tail
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return text[: min(found)] if found else text


# ---------------------------------------------------------------------------------------------
# The generator.


@dataclass
class _PrefillPlan:
    """One distinct token list to load into the cache: `tokens` into each of the cache rows
    `rows`, its first `reuse` tokens copied from cache row `source` instead of being run."""

    tokens: list[int]
    rows: list[int]
    source: int
    reuse: int


@dataclass
class _Row:
    """A cache row busy with one sample of one request."""

    request: int
    sample: int
    token: int  # next input
    position: int  # its slot and rotary position
    key: int  # noise key of (seed, sample, prompt)
    text: _CompletionText
    generated: int = 0  # tokens chosen so far


class Generator:
    """Answers GenerationRequests with one KV cache of `max_batch` rows of `max_len` slots.

    max_len (default: the model's window) bounds prompt + completion: a longer prompt is cut
    from the left, keeping its last max_len - max_new_tokens tokens. use_cuda_graphs (default:
    whether the model is on CUDA) replays the decode step as captured CUDA graphs.
    prefill_tokens bounds the tokens (padding included) of one batched prefill forward.
    shared_prefix: decode steps read the live rows' common prompt prefix once (see the module
    docstring); False reads every row in full (the reference path in tests).
    """

    def __init__(self, model: Transformer, tokenizer, max_batch: int = RunConfig.max_batch, max_len: int | None = None,
                 use_cuda_graphs: bool | None = None, prefill_tokens: int = 4096, shared_prefix: bool = True):
        window = model.args.max_seq_len
        max_len = window if max_len is None else max_len
        if not 2 <= max_len <= window:
            raise UserError(f"max_len {max_len} must be between 2 and the model's window {window}")
        if max_batch < 1:
            raise UserError(f"max_batch {max_batch} must be at least 1")
        self.device = model.tok_embeddings.weight.device
        on_cuda = self.device.type == "cuda"
        if use_cuda_graphs and not on_cuda:
            raise UserError(f"use_cuda_graphs needs a model on a CUDA device, not {self.device}; leave it unset")
        self.use_cuda_graphs = on_cuda if use_cuda_graphs is None else use_cuda_graphs
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_len, self.prefill_tokens = max_batch, max_len, prefill_tokens
        self.shared_prefix = shared_prefix
        self._min_shared_saving = _MIN_SHARED_SAVING.get(self.device.type, _MIN_SHARED_SAVING["cpu"])
        # ((row, held list) of each live row, lists by identity; their common prefix length)
        self._prefix_memo: tuple[list[tuple[int, list[int]]], int] = ([], 0)
        self.cache = model.new_cache(max_batch, max_len)
        self.stats = GenerationStats()
        # Logits past the tokenizer's vocabulary (a padded embedding) are never chosen.
        self.vocab = min(model.args.vocab_size, tokenizer.vocab_size)
        self._token_hash = _mix32(torch.arange(self.vocab, device=self.device))
        self._slots = torch.arange(max_len, device=self.device)
        self._views = {b: self.cache.rows(b) for b in {_row_bucket(n, max_batch) for n in range(1, max_batch + 1)}}
        # (row bucket, shared_len, kv_len, sampling) -> (graph, output); the graphs read their
        # inputs from the first columns of two fixed buffers.
        self._graphs: dict[tuple[int, int, int, bool], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._static_in: tuple[torch.Tensor, torch.Tensor] | None = None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        out: list[GenerationResult | None] = [None] * len(requests)
        for i, result in self.iter_generate(requests):
            out[i] = result
        return out  # type: ignore[return-value]

    def iter_generate(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, GenerationResult]]:
        """Yield (request index, result) as each request's last sample finishes."""
        prompts = [self._prompt(r) for r in requests]
        self.stats.requests += len(requests)
        self.stats.truncated += sum(cut for _, cut in prompts)
        queue = deque((q, s) for q, r in enumerate(requests) for s in range(r.n if r.temperature > 0 else 1))
        completions: list[list[str]] = [[] for _ in requests]
        left = [r.n if r.temperature > 0 else 1 for r in requests]
        rows: list[_Row | None] = [None] * self.max_batch
        held: list[list[int]] = [[] for _ in range(self.max_batch)]  # tokens in slots 0.. of each row
        while queue or any(rows):
            self._fill(rows, held, queue, requests, [ids for ids, _ in prompts])
            self._compact(rows, held)
            chosen = self._decode(rows, held, requests)
            for r, row in enumerate(rows):
                if row is None or not self._advance(row, chosen[r], requests[row.request]):
                    continue
                rows[r] = None
                q = row.request
                completions[q].append((row.sample, row.text.completion()))
                left[q] -= 1
                if left[q] == 0:
                    texts = tuple(text for _, text in sorted(completions[q]))
                    if requests[q].temperature == 0:  # greedy: one sample stands for all n
                        texts *= requests[q].n
                    yield q, GenerationResult(texts, truncated=prompts[q][1])

    # --- request intake --------------------------------------------------------------------

    def _prompt(self, request: GenerationRequest) -> tuple[list[int], bool]:
        """BOS + prompt tokens, cut from the left to leave room for max_new_tokens; was it cut."""
        r = request
        if not 1 <= r.max_new_tokens < self.max_len:
            raise UserError(f"max_new_tokens {r.max_new_tokens} must be at least 1 and below the window "
                            f"of {self.max_len} tokens")
        if not r.temperature >= 0:  # also rejects NaN
            raise UserError(f"temperature {r.temperature} must be 0 (greedy) or positive")
        if not 0 < r.top_p <= 1:
            raise UserError(f"top_p {r.top_p} must be in (0, 1]")
        if r.n < 1:
            raise UserError(f"n {r.n} must be at least 1")
        if isinstance(r.until, str) or any(not s for s in r.until):
            raise UserError(f"until {r.until!r} must be a list of non-empty stop strings")
        ids = self.tokenizer.encode(r.prompt, bos=True)
        room = self.max_len - r.max_new_tokens
        return (ids[-room:], True) if len(ids) > room else (ids, False)

    def _fill(self, rows: list[_Row | None], held: list[list[int]], queue: deque,
              requests: Sequence[GenerationRequest], prompts: list[list[int]]) -> None:
        """Give free rows, lowest first, the next waiting items and load their prompts into the cache."""
        wanted: dict[int, list[int]] = {}
        for r in range(self.max_batch):
            if rows[r] is not None or not queue:
                continue
            q, s = queue.popleft()
            ids, req = prompts[q], requests[q]
            wanted[r] = ids[:-1]  # the last prompt token is the first decode input
            text = _CompletionText(self.tokenizer, ids, tuple(req.until))
            rows[r] = _Row(q, s, ids[-1], len(ids) - 1, _row_key(req.seed, s, req.prompt), text)
        self._load(wanted, held)

    def _load(self, wanted: dict[int, list[int]], held: list[list[int]]) -> None:
        """Make each row r of `wanted` hold the keys/values of wanted[r] in its first slots.

        held[i] lists the tokens whose keys/values fill row i's first slots; it is updated.
        Each distinct token list is run once, and only past its longest prefix found in the
        cache: in a row not being refilled now, or in the refilled rows themselves (a finished
        sample leaves its prompt for the next sample; a finished question of a few-shot task
        leaves the task's header for the next question). Rows that already hold their tokens
        are left alone.
        """
        by_tokens: dict[tuple[int, ...], list[int]] = {}
        for r, tokens in wanted.items():
            if common_prefix(held[r], tokens) < len(tokens):
                by_tokens.setdefault(tuple(tokens), []).append(r)
        written = {r for rows in by_tokens.values() for r in rows}
        kept = [i for i in range(self.max_batch) if i not in written]

        def best_source(tokens: list[int], own: list[int]) -> tuple[int, int]:
            """(row, c): a row among `own` and `kept` whose first c tokens are tokens[:c], c largest."""
            src, c = max(((i, common_prefix(held[i], tokens)) for i in own), key=lambda ic: ic[1])
            for i in kept:
                h = held[i]  # a longer match must agree at index c: a test that usually fails at once
                if c < min(len(h), len(tokens)) and h[c] == tokens[c] and common_prefix(h, tokens) > c:
                    src, c = i, common_prefix(h, tokens)
            return src, c

        plans = [_PrefillPlan(list(key), targets, *best_source(list(key), targets))
                 for key, targets in by_tokens.items()]
        ran = 0
        if len(plans) > 1:
            # Prompts that share more than the cache holds (a few-shot header, when no row holds
            # it yet) get the shared part run once, into one target row r0, and copied from there.
            # r0's plan rewrites those slots with the same values, so any order of reads is safe.
            first = plans[0]
            header = first.tokens[: min(common_prefix(first.tokens, p.tokens) for p in plans[1:])]
            if len(header) > max(p.reuse for p in plans):
                r0 = first.rows[0]
                ran += self._prefill([_PrefillPlan(header, [r0], *best_source(header, [r0]))])
                held[r0] = header
                for plan in plans:
                    if len(header) > plan.reuse:
                        plan.source, plan.reuse = r0, len(header)
        # Longest first, in groups whose scratch cache stays within prefill_tokens slots.
        plans.sort(key=lambda p: -len(p.tokens))
        while plans:
            S = len(plans[0].tokens)
            k = max(1, min(len(plans), self.prefill_tokens // (S + 1)))
            ran += self._prefill(plans[:k])
            plans = plans[k:]
        self.stats.prompt_tokens += ran
        self.stats.prompt_tokens_reused += sum(len(tokens) for tokens in wanted.values()) - ran
        for r, tokens in wanted.items():
            held[r] = tokens

    @torch.no_grad()
    def _prefill(self, plans: list[_PrefillPlan]) -> int:
        """Run a group of plans through the model together; returns the number of tokens run
        (padding excluded).

        Row j of a scratch cache gets slots [0, c) from the source row (c = plan j's reuse), then
        the tokens past c run right-padded at positions c, c+1, ... while attending to all
        earlier slots; last,
        the scratch rows are copied into their target rows. A KVCache writes all of its rows,
        so scattered target rows need the scratch. Every read of the cache (the prefixes)
        happens before any write, and a plan reads only rows no other plan writes, so plans
        need no ordering. Padding writes to the extra slot S, which no real query sees.
        """
        k, S = len(plans), max(len(p.tokens) for p in plans)
        T = max(len(p.tokens) - p.reuse for p in plans)
        kv_len = -(-(S + 1) // 16) * 16  # fused masked kernels want key lengths aligned to 16
        scratch = self.model.new_cache(k, kv_len)
        ids = torch.zeros(k, max(T, 1), dtype=torch.long)
        positions = torch.zeros(k, max(T, 1), dtype=torch.long)
        slots = torch.full((k, max(T, 1)), S, dtype=torch.long)
        for j, plan in enumerate(plans):
            c = plan.reuse
            scratch.copy_rows(self.cache, plan.source, j, c)
            n = len(plan.tokens) - c
            ids[j, :n] = torch.tensor(plan.tokens[c:], dtype=torch.long)
            positions[j] = c + torch.arange(max(T, 1))
            slots[j, :n] = positions[j, :n]
        if T > 0:
            positions, slots = positions.to(self.device), slots.to(self.device)
            mask = (torch.arange(kv_len, device=self.device) <= positions[:, :, None])[:, None]  # [k, 1, T, kv_len]
            self.model.hidden(ids.to(self.device), positions, mask=mask, cache=scratch, slots=slots, kv_len=kv_len)
        targets = torch.tensor([r for p in plans for r in p.rows], device=self.device)
        scratch_rows = torch.tensor([j for j, p in enumerate(plans) for _ in p.rows], device=self.device)
        self.cache.copy_rows(scratch, scratch_rows, targets, S)
        return sum(len(p.tokens) - p.reuse for p in plans)

    # --- decoding ----------------------------------------------------------------------------

    def _advance(self, row: _Row, token: int, request: GenerationRequest) -> bool:
        """Take the chosen token into the row; True when the row is finished."""
        row.generated += 1
        self.stats.generated_tokens += 1
        if token in self.tokenizer.eos_ids:  # end of text, or (Llama 3) end of turn
            return True
        stopped = row.text.push(token)
        if stopped or row.generated == request.max_new_tokens:
            return True
        row.token, row.position = token, row.position + 1
        return False

    def _compact(self, rows: list[_Row | None], held: list[list[int]]) -> None:
        """Move live rows above the bucket their number fits into free rows below it.

        A moved row takes its keys/values (slots before its position) and what it holds; the
        row it leaves keeps its copy, still usable as a prefix source. Buckets halve at most
        log2(max_batch) times per drain, so at most max_batch rows move per drain.
        """
        live = [r for r, row in enumerate(rows) if row is not None]
        bucket = _row_bucket(len(live), self.max_batch)
        movers = [r for r in live if r >= bucket]
        if not movers:
            return
        free = [r for r in range(bucket) if rows[r] is None][: len(movers)]
        length = max(rows[r].position for r in movers)  # type: ignore[union-attr]
        index = lambda rs: torch.tensor(rs, device=self.device)  # noqa: E731
        self.cache.copy_rows(self.cache, index(movers), index(free), length)
        for src, dst in zip(movers, free):
            rows[dst], rows[src] = rows[src], None
            held[dst] = held[src]
        self.stats.rows_moved += len(movers)

    def _shared_prefix(self, rows: list[_Row | None], held: list[list[int]]) -> tuple[int, int]:
        """(n, r): the live rows' held lists all start with held[r][:n], r the lowest live row.

        Every live row's position is at least len(held) >= n, so each may see all n slots.
        Recomputed only when the live rows or their held lists change (fill, compaction, a
        finished row); lists are compared by identity, and the memo keeps them alive, so an id
        is never reused while it stands in the memo.
        """
        live = [(r, held[r]) for r, row in enumerate(rows) if row is not None]
        memo, n = self._prefix_memo
        if len(memo) == len(live) and all(a == c and b is d for (a, b), (c, d) in zip(memo, live)):
            return n, live[0][0]
        ref = min((h for _, h in live), key=len)
        n = len(ref)
        for _, h in live:
            if h[:n] != ref[:n]:
                n = common_prefix(ref, h)
        self._prefix_memo = (live, n)
        return n, live[0][0]

    def _decode(self, rows: list[_Row | None], held: list[list[int]],
                requests: Sequence[GenerationRequest]) -> list[int]:
        """One decode step over the live rows' bucket; the token chosen for each row of the
        bucket (garbage for idle rows)."""
        idle = self.max_len - 1  # a slot no kept token reaches (prompt + new tokens <= max_len)
        batch = _row_bucket(max(r for r, row in enumerate(rows) if row is not None) + 1, self.max_batch)
        shared, source = self._shared_prefix(rows, held)
        ints, floats = [], []
        for row in rows[:batch]:
            if row is None:
                ints.append((0, idle, 0, 0, source))
                floats.append((0.0, 1.0))
            else:
                req = requests[row.request]
                ints.append((row.token, row.position, row.key, row.generated, source))
                floats.append((req.temperature, req.top_p))
        inputs = torch.tensor(ints, dtype=torch.long).T  # [5, B]
        params = torch.tensor(floats, dtype=torch.float32).T  # [2, B]
        lengths = [row.position + 1 for row in rows if row is not None]
        used = max(lengths)
        kv_len = _bucket(used, self.max_len)
        shared_len = shared // _SHARED_GRANULE * _SHARED_GRANULE if self.shared_prefix else 0
        if shared_len and batch > 1:
            own = _own_bucket(used - shared_len, self.max_len - shared_len)
            if batch * kv_len - (shared_len + batch * own) >= self._min_shared_saving:
                kv_len = shared_len + own
            else:
                shared_len = 0
        else:  # a lone row shares nothing
            shared_len = 0
        sample = any(p[0] > 0 for p in floats)
        self.stats.decode_steps += 1
        self.stats.decode_rows += batch
        self.stats.decode_kv_slots += shared_len + batch * (kv_len - shared_len)
        self.stats.decode_kv_live += sum(lengths) - (len(lengths) - 1) * shared
        self.stats.shared_steps += shared_len > 0
        if self.use_cuda_graphs:
            return self._replay(inputs, params, shared_len, kv_len, sample)
        with torch.no_grad():
            return self._step(inputs.to(self.device), params.to(self.device), shared_len, kv_len, sample).tolist()

    def _step(self, inputs: torch.Tensor, params: torch.Tensor, shared_len: int, kv_len: int,
              sample: bool) -> torch.Tensor:
        """Feed every row of the bucket its next token and choose the one after: token ids [B].

        inputs: int64 [5, B] = token, position, noise key, tokens generated so far, and (the
        same in every column) the cache row slots [0, shared_len) are read from for all rows.
        params: float32 [2, B] = temperature (0: greedy), top_p. The bucket is cache rows
        [0, B); they attend over slots [0, kv_len), of which the first shared_len (0: none)
        hold the same keys/values in every live row. Shapes depend only on B, shared_len,
        kv_len and `sample`, and nothing syncs with the host, so a CUDA graph can hold it;
        without `sample` no sampling code runs (all rows greedy).
        """
        tokens, positions, keys, steps, source = inputs
        positions = positions[:, None]  # [B, 1]
        mask = (self._slots[shared_len:kv_len] <= positions)[:, None, None, :]  # [B, 1, 1, kv_len - shared_len]
        h = self.model.hidden(tokens[:, None], positions, mask=mask, cache=self._views[tokens.shape[0]],
                              slots=positions, kv_len=kv_len, shared_len=shared_len,
                              shared_row=source[:1])  # [B, 1, C]
        logits = self.model.head(h[:, 0])[:, : self.vocab]  # [B, V]
        if not sample:
            return logits.argmax(-1)
        return _choose_tokens(logits, params[0], params[1], _uniform(keys, steps, self._token_hash))

    @torch.no_grad()
    def _replay(self, inputs: torch.Tensor, params: torch.Tensor, shared_len: int, kv_len: int,
                sample: bool) -> list[int]:
        """The step as a CUDA graph for this (row bucket, shared_len, kv_len, sampling), captured
        on first use."""
        if self._static_in is None:
            self._static_in = (torch.zeros(5, self.max_batch, dtype=torch.long, device=self.device),
                               torch.ones(2, self.max_batch, dtype=torch.float32, device=self.device))
        batch = inputs.shape[1]
        static_inputs, static_params = (t[:, :batch] for t in self._static_in)
        static_inputs.copy_(inputs)
        static_params.copy_(params)
        key = (batch, shared_len, kv_len, sample)
        if key not in self._graphs:
            # Warm-up runs on the current inputs write the same keys/values the real step
            # writes, so they change nothing; they settle cuBLAS and the allocator before capture.
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._step(static_inputs, static_params, shared_len, kv_len, sample)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._step(static_inputs, static_params, shared_len, kv_len, sample)
            self._graphs[key] = (graph, out)
        graph, out = self._graphs[key]
        graph.replay()
        return out.tolist()
