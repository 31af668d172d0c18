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

        All distinct texts are encoded in one call on SentencePiece's own threads, and a
        context shared by several continuations (a question's choices) is encoded once.
        """
        split = []
        for context, continuation in pairs:
            stripped = context.rstrip(" ")
            split.append((stripped, context[len(stripped):] + continuation))
        texts = list(dict.fromkeys(t for stripped, cont in split for t in (stripped, stripped + cont)))
        ids = dict(zip(texts, self.sp.encode(texts)))
        out = []
        for stripped, cont in split:
            if not stripped:
                out.append(([self.bos_id], ids[cont]))
                continue
            whole, ctx = ids[stripped + cont], ids[stripped]
            n = common_prefix(ctx, whole)
            out.append(([self.bos_id] + whole[:n], whole[n:]))
        return out


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
