"""Reading benchmark documents: release files under --data-dir, or the Hugging Face hub.

Every reader names file, line and field when a row is malformed, and checks known release
files against the manifest (a mismatch is a warning: the numbers may not be comparable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from ..errors import UserError


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for each non-empty line of a JSON Lines file."""
    if not path.is_file():
        raise UserError(f"data file {path} does not exist; check --data-dir (it should hold the release files)")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}, line {lineno}: not valid JSON ({e.msg}); the file is damaged or not JSON Lines") from None


def field(row: dict[str, Any], name: str, path: Path, lineno: int, kind: type | tuple[type, ...] = str) -> Any:
    """row[name], checked to be of `kind`; otherwise an error naming file, line and field."""
    if name not in row:
        raise UserError(f"{path}, line {lineno}: field {name!r} is missing (fields present: {', '.join(row)})")
    value = row[name]
    if not isinstance(value, kind):
        raise UserError(f"{path}, line {lineno}: field {name!r} should be {getattr(kind, '__name__', kind)}, got {value!r:.60}")
    return value
