"""On-disk request cache (SQLite): a run killed at any moment resumes where it stopped.

Every engine result is stored under a key made of the model fingerprint (weights and
tokenizer), the compute dtype and the request itself, so a cache filled by one model is never
read for another. Results are committed in small transactions while the engine runs; a
`kill -9` loses at most the last uncommitted second of work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Iterable

from .requests import GenerationRequest, GenerationResult, LoglikelihoodRequest, LoglikelihoodResult, Request, Result

COMMIT_SECONDS = 0.25


def request_key(namespace: str, req: Request) -> str:
    """A stable key for `req` under `namespace` (model fingerprint + dtype)."""
    kind = "ll" if isinstance(req, LoglikelihoodRequest) else "gen"
    body = json.dumps([namespace, kind, dataclasses.astuple(req)], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def _encode(res: Result) -> str:
    return json.dumps(dataclasses.asdict(res), ensure_ascii=False)


def _decode(req: Request, text: str) -> Result:
    data = json.loads(text)
    if isinstance(req, GenerationRequest):
        return GenerationResult(tuple(data["completions"]), data["truncated"])
    return LoglikelihoodResult(**data)


class ResultCache:
    """get/put engine results; `hits` and `stored` count what was reused and added."""

    def __init__(self, path: str | Path, namespace: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.namespace = namespace
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.db.commit()
        self.hits = 0
        self.stored = 0
        self._last_commit = time.monotonic()

    def get_many(self, requests: Iterable[Request]) -> dict[Request, Result]:
        found: dict[Request, Result] = {}
        for req in requests:
            row = self.db.execute("SELECT value FROM results WHERE key = ?", (request_key(self.namespace, req),)).fetchone()
            if row is not None:
                found[req] = _decode(req, row[0])
        self.hits += len(found)
        return found

    def put(self, req: Request, res: Result) -> None:
        self.db.execute("INSERT OR REPLACE INTO results VALUES (?, ?)", (request_key(self.namespace, req), _encode(res)))
        self.stored += 1
        if time.monotonic() - self._last_commit > COMMIT_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.db.commit()
        self._last_commit = time.monotonic()

    def close(self) -> None:
        self.flush()
        self.db.close()
