"""SentencePiece tokenizer wrapper, and the context/continuation split every scorer relies on."""

from __future__ import annotations

from pathlib import Path

import sentencepiece as spm

from ..errors import UserError


class Tokenizer:
    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"tokenizer file {path} does not exist; pass the SentencePiece .model file with --tokenizer")
        self.path = path
        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        self.vocab_size: int = self.sp.vocab_size()
        self.bos_id: int = self.sp.bos_id()
        self.eos_id: int = self.sp.eos_id()
        # LLaMA's model has no pad piece (pad_id -1); padding, where any, uses EOS.
        self.pad_id: int = self.sp.pad_id() if self.sp.pad_id() >= 0 else self.eos_id

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self.sp.encode(text)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(list(ids))

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(BOS + context tokens, continuation tokens) for scoring `continuation` after `context`;
        see encode_pairs."""
        return self.encode_pairs([(context, continuation)])[0]

    def encode_pairs(self, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """(BOS + context tokens, continuation tokens) for each (context, continuation).

        Context and continuation are encoded together, because SentencePiece can merge
        characters across the boundary and the model saw the joint tokenisation in training;
        encoding them apart scores token sequences the model never produces. A trailing
        space of the context moves into the continuation, where LLaMA's pieces carry it
        ("▁word"). The split point is the longest common prefix of the joint encoding and
        the context's own encoding, so a piece that straddles the boundary is scored as
        part of the continuation.

        Only the end of a context is encoded with each continuation. Each distinct context is
        encoded once; its tail, from its last word boundary (a single space between two
        non-spaces) on, is encoded alone and with each continuation. Pieces never span a word
        boundary (SentencePiece splits on whitespace; tiktoken-style patterns attach a space to
        the word after it), so the joint encoding is the context's tokens before the boundary
        followed by the tail's joint encoding. Where the context's own tokens do not split at
        the boundary, or it has none, the pair is encoded whole. All texts of one stage go to
        the tokenizer in one batch call (SentencePiece runs it on its own threads). Pairs with
        the same context and split share one context list: do not mutate the lists returned.
        """
        encode = self.sp.encode  # the batch-encode primitive: list[str] -> list[list[int]]
        # A tokenizer that adds a dummy "▁" before a text (SentencePiece) must be given the
        # tail without its leading space, or it would see two.
        one, spaced = encode(["a", " a"])
        lead = 1 if len(spaced) > len(one) else 0
        split = []
        for context, continuation in pairs:
            stripped = context.rstrip(" ")
            split.append((stripped, context[len(stripped):] + continuation))
        contexts = list(dict.fromkeys(stripped for stripped, _ in split if stripped))
        cut = {c: _word_boundary(c) for c in contexts}
        ctx_ids = dict(zip(contexts, encode(contexts)))
        tails = list(dict.fromkeys(c[cut[c] + lead:] for c in contexts if cut[c] > 0))
        tail_ids = dict(zip(tails, encode(tails)))
        # m[c]: how many of c's tokens lie before its boundary; None: c does not split there.
        m: dict[str, int | None] = {}
        for c in contexts:
            m[c] = None
            if cut[c] > 0:
                ids, tail = ctx_ids[c], tail_ids[c[cut[c] + lead:]]
                if len(tail) <= len(ids) and ids[len(ids) - len(tail):] == tail:
                    m[c] = len(ids) - len(tail)
        joint = [(stripped, cont) for stripped, cont in split if stripped and m[stripped] is not None]
        joint_tails = list(dict.fromkeys(s_[cut[s_] + lead:] + cont for s_, cont in joint))
        whole = [s_ + cont for s_, cont in split if not s_ or m[s_] is None]
        texts = list(dict.fromkeys(joint_tails + whole))
        ids = dict(zip(texts, encode(texts)))
        out = []
        prefixes: dict[tuple[str, int], list[int]] = {}  # one list per (context, split): choices share it
        for stripped, cont in split:
            if not stripped:
                out.append(([self.bos_id], ids[cont]))
                continue
            ctx = ctx_ids[stripped]
            if m[stripped] is None:
                full = ids[stripped + cont]
                n = common_prefix(ctx, full)
                out.append(([self.bos_id] + full[:n], full[n:]))
                continue
            k, tail = m[stripped], ids[stripped[cut[stripped] + lead:] + cont]
            n = k + common_prefix(ctx[k:], tail)
            if (stripped, n) not in prefixes:
                prefixes[stripped, n] = [self.bos_id] + ctx[:n]
            out.append((prefixes[stripped, n], tail[n - k:]))
        return out


def _word_boundary(text: str) -> int:
    """Index of the last space in `text` with a non-space on each side (not at 0); 0 if none."""
    k = text.rfind(" ")
    while k > 0 and (text[k - 1] == " " or k + 1 >= len(text) or text[k + 1] == " "):
        k = text.rfind(" ", 0, k)
    return max(k, 0)


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists (slice comparisons run in C)."""
    hi = min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    lo = 0  # invariant: a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo
