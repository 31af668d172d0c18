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

from .errors import UserError
from .requests import GenerationRequest, GenerationResult, LoglikelihoodRequest, LoglikelihoodResult, Request, Result

COMMIT_SECONDS = 0.25
BUSY_TIMEOUT_S = 120.0  # how long a write waits for another run sharing the cache file


class CacheDamaged(UserError):
    pass


def request_key(namespace: str, req: Request) -> str:
    """A stable key for `req` under `namespace` (model fingerprint + dtype + engine version)."""
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
    """get/put engine results; `hits` and `stored` count what was reused and added.

    Several runs may share one cache file: results are buffered in memory and written in one
    short transaction every COMMIT_SECONDS, so no write lock is held while the model computes,
    and a writer waits up to BUSY_TIMEOUT_S for another. A damaged file is one UserError.
    """

    def __init__(self, path: str | Path, namespace: str):
        self.path = Path(path)
        self.namespace = namespace
        self.hits = 0
        self.stored = 0
        self._pending: list[tuple[str, str]] = []
        self._last_commit = time.monotonic()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)  # autocommit
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.db.execute("SELECT count(*) FROM results WHERE key = ''").fetchone()
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from None
        except OSError as e:
            raise UserError(f"cannot open the request cache {self.path} ({e.strerror}); pass --cache PATH "
                            "somewhere writable, or --no-cache") from None

    def _damaged(self, error: Exception) -> UserError:
        if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
            return UserError(f"cache {self.path} stayed locked by another run for {BUSY_TIMEOUT_S:.0f} s; "
                             "wait for it, or pass --cache PATH / --no-cache")
        return CacheDamaged(f"cache {self.path} is damaged ({error}); delete it or pass --no-cache")

    def get_many(self, requests: Iterable[Request]) -> dict[Request, Result]:
        found: dict[Request, Result] = {}
        try:
            for req in requests:
                row = self.db.execute("SELECT value FROM results WHERE key = ?",
                                      (request_key(self.namespace, req),)).fetchone()
                if row is not None:
                    found[req] = _decode(req, row[0])
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from None
        self.hits += len(found)
        return found

    def put(self, req: Request, res: Result) -> None:
        self._pending.append((request_key(self.namespace, req), _encode(res)))
        self.stored += 1
        if time.monotonic() - self._last_commit > COMMIT_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered results in one short transaction."""
        if self._pending:
            try:
                with self.db:  # BEGIN ... COMMIT
                    self.db.execute("BEGIN IMMEDIATE")
                    self.db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)", self._pending)
            except sqlite3.DatabaseError as e:
                raise self._damaged(e) from None
            self._pending.clear()
        self._last_commit = time.monotonic()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.db.close()
