"""Tokenizers of the LLaMA family behind one interface, and the context/continuation split
every scorer relies on.

    SentencePieceTokenizer   LLaMA 1 and 2: SentencePiece `tokenizer.model`
    JsonTokenizer            Hugging Face `tokenizer.json` (the `tokenizers` library)
    TiktokenTokenizer        Llama 3: Meta's `tokenizer.model` in tiktoken's format (base64 token
                             bytes and rank per line), read with `tiktoken`

`load_tokenizer(path)` (also spelt `Tokenizer(path)`) picks the kind from the file. Every kind provides `encode_batch` (token
ids of each text, no BOS/EOS) and `decode`; encoding with BOS/EOS and the pair split are built
on them here, once, so the rule is the same for all three.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError


class Tokenizer:
    """What the engine uses. Subclasses set path, vocab_size, bos_id, eos_id, end_of_turn_ids,
    pad_id and implement encode_batch and decode. `Tokenizer(path)` opens the kind of tokenizer
    that the file is (see load_tokenizer).
    """

    kind = ""
    path: Path
    vocab_size: int
    bos_id: int
    eos_id: int  # the end of text, which `encode(eos=True)` appends
    end_of_turn_ids: tuple[int, ...] = ()  # Llama 3's <|eot_id|>, <|eom_id|>
    pad_id: int

    def __new__(cls, path: str | Path | None = None):
        if cls is Tokenizer:
            cls = tokenizer_class(_existing(path))
        return super().__new__(cls)

    @property
    def eos_ids(self) -> frozenset[int]:
        """Every token that ends a text or a turn; generation stops at any of them."""
        return frozenset((self.eos_id, *self.end_of_turn_ids))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self.encode_batch([text])[0]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_texts(self, texts: Sequence[str]) -> dict[str, list[int]]:
        """Token ids (no BOS/EOS) of each distinct text, exactly as encode_batch gives them; texts
        that share a header (a few-shot prompt's examples) cost one encoding of it
        (_encode_contexts)."""
        return _encode_contexts(self.encode_batch, list(dict.fromkeys(texts)), self._dummy_prefix())

    def _dummy_prefix(self) -> int:
        """1 where the tokenizer adds a dummy "▁" before a text (SentencePiece): a text cut at a
        word boundary must then be given without its leading space, or it would see two; else 0."""
        one, spaced = self.encode_batch(["a", " a"])
        return 1 if len(spaced) > len(one) else 0

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(BOS + context tokens, continuation tokens) for scoring `continuation` after `context`;
        see encode_pairs."""
        return self.encode_pairs([(context, continuation)])[0]

    def encode_pairs(self, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """(BOS + context tokens, continuation tokens) for each (context, continuation).

        Context and continuation are encoded together, because SentencePiece and BPE can merge
        characters across the boundary and the model saw the joint tokenisation in training;
        encoding them apart scores token sequences the model never produces. A trailing
        space of the context moves into the continuation, where LLaMA's pieces carry it
        ("▁word" in SentencePiece, " word" in Llama 3's BPE). The split point is the longest
        common prefix of the joint encoding and the context's own encoding, so a piece that
        straddles the boundary is scored as part of the continuation.

        Only the end of a context is encoded with each continuation. Each distinct context is
        encoded once (a few-shot header shared by many contexts once in all: _encode_contexts); its tail, from its last word boundary (a single space between two
        non-spaces) on, is encoded alone and with each continuation. Pieces never span a word
        boundary (SentencePiece splits on whitespace; tiktoken-style patterns attach a space to
        the word after it), so the joint encoding is the context's tokens before the boundary
        followed by the tail's joint encoding. Where the context's own tokens do not split at
        the boundary, or it has none, the pair is encoded whole. All texts of one stage go to
        the tokenizer in one encode_batch call (the libraries' own threads). Pairs with
        the same context and split share one context list: do not mutate the lists returned.
        """
        encode = self.encode_batch  # list[str] -> list[list[int]], every tokenizer kind's primitive
        lead = self._dummy_prefix()
        split = []
        for context, continuation in pairs:
            stripped = context.rstrip(" ")
            split.append((stripped, context[len(stripped):] + continuation))
        contexts = list(dict.fromkeys(stripped for stripped, _ in split if stripped))
        cut = {c: _word_boundary(c) for c in contexts}
        ctx_ids = _encode_contexts(encode, contexts, lead)
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


HEAD_MIN = 256  # characters a context must share with another before its shared head is encoded apart


def _encode_contexts(encode, contexts: list[str], lead: int) -> dict[str, list[int]]:
    """Token ids of each of the distinct `contexts`, a header that many of them share (a
    few-shot prompt's examples) encoded once instead of once per context.

    A context that shares at least HEAD_MIN characters with another is cut at the last word
    boundary inside the shared part; head and rest are encoded apart and joined, which is the
    whole context's encoding because pieces never span a word boundary (see encode_pairs;
    `lead` drops the boundary's space where the tokenizer adds its own). That rule is checked
    on one context of each distinct head, encoded whole: if it fails, all contexts of that
    head are encoded whole.
    """
    # Sorted, contexts sharing a header are adjacent; a run of neighbours sharing at least
    # HEAD_MIN characters is a group, and what all of a group share is the least shared by
    # two neighbours in it. Boundary space and the characters each side of it lie in that part.
    order = sorted(contexts)
    cut = dict.fromkeys(order, 0)
    lo = 0
    while lo < len(order):
        hi, least = lo + 1, len(order[lo])
        while hi < len(order) and (n := common_prefix(order[hi - 1], order[hi])) >= HEAD_MIN:
            hi, least = hi + 1, min(least, n)
        if hi - lo > 1:
            for c in order[lo:hi]:
                cut[c] = _word_boundary(c[: least + 1])
        lo = hi
    first_of_head = {c[:k]: c for c, k in cut.items() if k > 0}
    parts = list(dict.fromkeys([h for h in first_of_head] + [c[k + lead :] for c, k in cut.items() if k > 0]))
    whole = [c for c, k in cut.items() if k == 0] + list(first_of_head.values())
    texts = list(dict.fromkeys(parts + whole))
    ids = dict(zip(texts, encode(texts)))
    broken = {h for h, c in first_of_head.items() if ids[h] + ids[c[len(h) + lead :]] != ids[c]}
    again = [c for c, k in cut.items() if k > 0 and c[:k] in broken and c not in ids]
    ids.update(zip(again, encode(again)))
    return {c: ids[c] if k == 0 or c[:k] in broken else ids[c[:k]] + ids[c[k + lead :]]
            for c, k in cut.items()}


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


# ---------------------------------------------------------------------------- the three kinds


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, path: str | Path):
        import sentencepiece as spm

        self.path = _existing(path)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (RuntimeError, OSError) as e:
            raise UserError(f"cannot read {self.path} as a SentencePiece model: {str(e).splitlines()[0]}") from e
        self.vocab_size = self.sp.vocab_size()
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
        # LLaMA's model has no pad piece (pad_id -1); padding, where any, uses EOS.
        self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else self.eos_id

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(list(ids))


# Special tokens that start a text, end one, or end a turn, by their names in the LLaMA family.
_BOS_NAMES = ("<|begin_of_text|>", "<s>")
_EOS_NAMES = ("<|end_of_text|>", "</s>")
_END_OF_TURN_NAMES = ("<|eot_id|>", "<|eom_id|>")


class JsonTokenizer(Tokenizer):
    """A Hugging Face tokenizer.json. BOS and EOS are the family's names found in it (or those a
    tokenizer_config.json beside it names); added special tokens written in the text are
    encoded as those tokens, as the library does."""

    kind = "tokenizer.json"

    def __init__(self, path: str | Path):
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError as e:  # a declared dependency; absent only in a broken install
            raise UserError("reading tokenizer.json needs the tokenizers package: pip install tokenizers") from e
        self.path = _existing(path)
        try:
            self.tk = HFTokenizer.from_file(str(self.path))
        except Exception as e:  # the library raises a bare Exception for malformed files
            raise UserError(f"cannot read {self.path} as a tokenizer.json: {str(e).splitlines()[0]}") from e
        self.vocab_size = self.tk.get_vocab_size(with_added_tokens=True)
        named = _config_names(self.path.parent / "tokenizer_config.json")
        self.bos_id = self._id(named.get("bos_token"), _BOS_NAMES)
        self.eos_id = self._id(named.get("eos_token"), _EOS_NAMES)
        turn = [self.tk.token_to_id(n) for n in _END_OF_TURN_NAMES]
        self.end_of_turn_ids = tuple(i for i in turn if i is not None)
        self.pad_id = self.eos_id

    def _id(self, configured: str | None, names: tuple[str, ...]) -> int:
        for name in ((configured,) if configured else ()) + names:
            i = self.tk.token_to_id(name)
            if i is not None:
                return i
        raise UserError(f"{self.path} has none of the tokens {', '.join(names)}; it is not a LLaMA-family tokenizer")

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tk.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tk.decode(list(ids), skip_special_tokens=False)


# Llama 3's pre-tokenisation (Meta's llama3/tokenizer.py pat_str): contractions, words with one
# leading non-letter, numbers in groups of up to three digits, punctuation runs, newlines, spaces.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Llama 3.1's names of the 256 special tokens that follow the 128,000 ranks of the file.
LLAMA3_NAMED_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                         "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
                         "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>")
LLAMA3_SPECIALS = 256
_TIKTOKEN_LINE = re.compile(rb"[A-Za-z0-9+/=]+ \d+")


def llama3_special_tokens(first_id: int) -> dict[str, int]:
    names = list(LLAMA3_NAMED_SPECIALS)
    names += [f"<|reserved_special_token_{i}|>" for i in range(3, 3 + LLAMA3_SPECIALS - len(names))]
    return {name: first_id + i for i, name in enumerate(names)}


class TiktokenTokenizer(Tokenizer):
    """Meta's Llama 3 tokenizer.model: ranks from the file, Llama 3's pattern and special tokens
    from id len(ranks) (128,000). Special-token names in the text are encoded as those tokens,
    as tokenizer.json does, so both files of one model give the same ids."""

    kind = "tiktoken"

    def __init__(self, path: str | Path):
        try:
            import tiktoken
        except ImportError as e:
            raise UserError("reading Llama 3's tokenizer.model needs the tiktoken package: pip install tiktoken") from e
        self.path = _existing(path)
        ranks = read_tiktoken_ranks(self.path)
        specials = llama3_special_tokens(len(ranks))
        self.enc = tiktoken.Encoding(name=self.path.name, pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks,
                                     special_tokens=specials)
        self.vocab_size = self.enc.n_vocab
        self.bos_id, self.eos_id = specials["<|begin_of_text|>"], specials["<|end_of_text|>"]
        self.end_of_turn_ids = (specials["<|eot_id|>"], specials["<|eom_id|>"])
        self.pad_id = self.eos_id

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.enc.encode_batch(texts, allowed_special="all")

    def decode(self, ids: list[int]) -> str:
        return self.enc.decode(list(ids), errors="replace")


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    lines = path.read_bytes().splitlines()
    for n, line in enumerate(lines, 1):
        if line and not _TIKTOKEN_LINE.fullmatch(line):
            raise UserError(f"{path}:{n}: not a tiktoken line (base64 token, space, rank)")
    # binascii directly (what base64.b64decode calls after its checks): 128,000 lines are read
    # at every start of a Llama 3 run, and the wrapper was a third of that time.
    ranks = {binascii.a2b_base64(token): int(rank) for token, rank in (line.split() for line in lines if line)}
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise UserError(f"{path}: the ranks are not 0..{len(ranks) - 1} each once")
    return ranks


def is_tiktoken_file(path: Path) -> bool:
    """Whether `path` is in tiktoken's text format (SentencePiece models are binary protobufs)."""
    with open(path, "rb") as f:
        first = f.readline(256).rstrip(b"\r\n")
    return bool(_TIKTOKEN_LINE.fullmatch(first))


def tokenizer_class(path: Path) -> type[Tokenizer]:
    """tokenizer.json by its suffix, else tiktoken or SentencePiece by the file's content."""
    if path.suffix == ".json":
        return JsonTokenizer
    return TiktokenTokenizer if is_tiktoken_file(path) else SentencePieceTokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer in `path`, of whichever kind the file is."""
    path = _existing(path)
    return tokenizer_class(path)(path)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer file {path} does not exist; pass the tokenizer.model or tokenizer.json "
                        "with --tokenizer")
    return path


def _config_names(file: Path) -> dict[str, str]:
    """bos_token / eos_token named by a tokenizer_config.json (a string or {"content": ...})."""
    if not file.is_file():
        return {}
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{file} is not valid JSON: {e}") from e
    out = {}
    for key in ("bos_token", "eos_token"):
        value = cfg.get(key) if isinstance(cfg, dict) else None
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str):
            out[key] = value
    return out
