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
        """(BOS + context tokens, continuation tokens) for scoring `continuation` after `context`.

        Context and continuation are encoded together, because SentencePiece can merge
        characters across the boundary and the model saw the joint tokenisation in training;
        encoding them apart scores token sequences the model never produces. A trailing
        space of the context moves into the continuation, where LLaMA's pieces carry it
        ("▁word"). The split point is the longest common prefix of the joint encoding and
        the context's own encoding, so a piece that straddles the boundary is scored as
        part of the continuation.
        """
        stripped = context.rstrip(" ")
        continuation = context[len(stripped):] + continuation
        if not stripped:
            return [self.bos_id], self.encode(continuation)
        whole = self.encode(stripped + continuation)
        ctx = self.encode(stripped)
        n = 0
        while n < min(len(ctx), len(whole)) and ctx[n] == whole[n]:
            n += 1
        return [self.bos_id] + whole[:n], whole[n:]
