"""`llama-eval data download`: each benchmark's release files, fetched and checked.

The URL table is llama_eval/data/sources.json (its "about" says how to read it). Each source
is one download: a file written where the tasks read it, or an archive whose members are
unpacked, or repacked into the one archive a task reads. Every file written is checked against
the sha256 manifest (llama_eval/data/manifest.json); a file whose bytes differ is refused and
not kept. Downloads go to `<name>.part` first and resume with an HTTP Range request when the
command is run again after an interruption. `base_url` replaces every source's location by
`<base_url>/<mirror path>`, for mirrors and for tests.
"""

from __future__ import annotations

import bz2
import difflib
import gzip
import hashlib
import http.client
import io
import json
import os
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import UserError

CHUNK = 1 << 16
TIMEOUT_S = 60
DOWNLOADS = ".downloads"  # archives being fetched, inside the data folder (removed once unpacked)
_KINDS = ("file", "unpack", "repack")
_KEYS = {"tasks", "url", "release", "mirror", "file", "unpack", "repack", "derive"}


@dataclass(frozen=True)
class Source:
    """One row of the URL table."""

    tasks: tuple[str, ...]
    url: str
    release: str
    kind: str  # "file" | "unpack" | "repack"
    mirror: str  # path under a --base-url
    file: str | None = None  # kind "file": where the download goes
    unpack: dict[str, str] | None = None  # {"from": member prefix, "into": data-folder prefix}
    repack: dict[str, Any] | None = None  # {"from": member prefix, "file": archive path, "mtime": int}
    derive: dict[str, str] | None = None  # {"recipe": name in RECIPES, "file": path}

    def outputs(self, manifest: dict[str, str]) -> list[str]:
        """The data-folder paths this source writes (for unpack: the manifest's files under `into`)."""
        if self.kind == "file":
            out = [self.file]
        elif self.kind == "repack":
            out = [self.repack["file"]]
        else:
            out = sorted(p for p in manifest if p.startswith(self.unpack["into"]))
        return out + ([self.derive["file"]] if self.derive else [])


def load_sources(text: str | None = None) -> list[Source]:
    """The URL table (default: the bundled sources.json), every row checked."""
    if text is None:
        text = resources.files("llama_eval").joinpath("data/sources.json").read_text(encoding="utf-8")
    rows = json.loads(text)["sources"]
    out = []
    for i, row in enumerate(rows):
        where = f"sources.json row {i} ({row.get('url', '?')})"
        if unknown := set(row) - _KEYS:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        kinds = [k for k in _KINDS if k in row]
        if len(kinds) != 1:
            raise ValueError(f"{where}: needs exactly one of {_KINDS}, has {kinds}")
        if "derive" in row and row["derive"]["recipe"] not in RECIPES:
            raise ValueError(f"{where}: unknown recipe {row['derive']['recipe']!r}; known: {sorted(RECIPES)}")
        mirror = row.get("mirror") or row.get("file")
        if not mirror:
            raise ValueError(f"{where}: an archive needs a mirror path")
        out.append(Source(tuple(row["tasks"]), row["url"], row.get("release", ""), kinds[0], mirror,
                          row.get("file"), row.get("unpack"), row.get("repack"), row.get("derive")))
    return out


def select(sources: list[Source], tasks: tuple[str, ...] | None) -> list[Source]:
    """The sources the given tasks read (all of them for None); an unknown task name is a UserError."""
    if not tasks:
        return sources
    known = sorted({t for s in sources for t in s.tasks})
    for name in tasks:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UserError(f"--tasks {name}: no release files are listed for it.{hint} Known: {', '.join(known)}")
    return [s for s in sources if set(s.tasks) & set(tasks)]


def download(data_dir: str | Path, tasks: tuple[str, ...] | None = None, base_url: str | None = None,
             progress: bool = True, sources: list[Source] | None = None,
             manifest: dict[str, str] | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Fetch what `tasks` read into data_dir; returns the paths written (already correct ones are skipped)."""
    from .tasks.data import manifest as bundled_manifest

    manifest = bundled_manifest() if manifest is None else manifest
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for src in select(sources if sources is not None else load_sources(), tasks):
        outputs = src.outputs(manifest)
        if not outputs:
            raise ValueError(f"{src.url}: the manifest lists no file under {src.unpack['into']}")
        if all(_matches(data_dir / p, manifest[p]) for p in outputs):
            log(f"ok       {_describe(outputs)}")
            continue
        url = f"{base_url.rstrip('/')}/{src.mirror}" if base_url else src.url
        if src.kind == "file":
            target = data_dir / src.file
            if not _matches(target, manifest[src.file]):
                fetch(url, target, manifest[src.file], progress)
                written.append(src.file)
        else:
            archive = fetch(url, data_dir / DOWNLOADS / Path(src.mirror).name, None, progress)
            written += (_unpack if src.kind == "unpack" else _repack)(src, archive, data_dir, manifest)
            archive.unlink()
            if not any(archive.parent.iterdir()):
                archive.parent.rmdir()
        if src.derive:
            d = src.derive
            body = RECIPES[d["recipe"]]((data_dir / src.file).read_bytes())
            _write_checked(data_dir / d["file"], body, manifest[d["file"]], f"made by {d['recipe']} from {src.file}")
            written.append(d["file"])
        log(f"fetched  {_describe(outputs)}  ({src.release})")
    return written


# -- one resumable download --------------------------------------------------------------------

def fetch(url: str, target: Path, sha256: str | None, progress: bool = True) -> Path:
    """Download url to target through target.part, resuming a .part left by an interruption.

    With sha256 the bytes must match it, else they are deleted and a UserError names both hashes.
    """
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part already holds the whole file
            response = None
        else:
            raise UserError(f"{url}: HTTP {e.code} {e.reason}; check the address, or pass --base-url with a mirror "
                            "that holds the file") from None
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"{url}: cannot connect ({getattr(e, 'reason', e)}); check the network, or pass --base-url "
                        "with a reachable mirror") from None
    if response is not None:
        with response:
            resumed = response.status == 206
            mode = "ab" if resumed else "wb"  # a server that ignores Range sends the whole file again
            length = response.headers.get("Content-Length")
            total = (have if resumed else 0) + int(length) if length else None
            done = have if resumed else 0
            with open(part, mode) as out, tqdm(total=total, initial=done, unit="B", unit_scale=True,
                                               desc=target.name, disable=not progress, leave=False) as bar:
                try:
                    for block in _blocks(response):
                        out.write(block)
                        bar.update(len(block))
                        done += len(block)
                except (OSError, http.client.HTTPException) as e:
                    raise UserError(f"{url}: the download stopped after {done:,} bytes ({type(e).__name__}); run the "
                                    "same command again to resume it") from None
            if total is not None and done < total:
                raise UserError(f"{url}: the connection closed after {done:,} of {total:,} bytes; run the same command "
                                "again to resume it")
    if sha256 is not None:
        got = _file_sha256(part)
        if got != sha256:
            part.unlink()
            raise UserError(f"{url}: sha256 {got} is not the manifest's {sha256} for {target.name}: the server sent "
                            "other bytes than the release file; nothing was kept (check the address or the mirror)")
    os.replace(part, target)
    return target


def _blocks(response) -> Iterator[bytes]:
    while block := response.read(CHUNK):
        yield block


# -- archives --------------------------------------------------------------------------------------

def _members(archive: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, reader) for each regular file of a zip or tar (any compression) archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if not info.is_dir():
                    yield info.filename, (lambda i=info: z.read(i))
        return
    try:
        with tarfile.open(archive, "r:*") as t:
            for m in t:
                if m.isfile():
                    yield m.name, (lambda m=m: t.extractfile(m).read())
    except tarfile.TarError as e:
        raise UserError(f"{archive}: not a zip or tar archive ({e}); delete it and download again") from None


def _unpack(src: Source, archive: Path, data_dir: Path, manifest: dict[str, str]) -> list[str]:
    prefix, into = src.unpack["from"], src.unpack["into"]
    wanted = set(src.outputs(manifest))
    written = []
    for name, read in _members(archive):
        dest = into + name.removeprefix(prefix) if name.startswith(prefix) else None
        if dest in wanted:
            _write_checked(data_dir / dest, read(), manifest[dest], f"member {name} of {src.url}")
            written.append(dest)
    if missing := sorted(wanted - set(written)):
        raise UserError(f"{src.url}: the archive lacks {len(missing)} release file(s), e.g. {prefix}"
                        f"{missing[0].removeprefix(into)}; it is not the expected release")
    return written


def _repack(src: Source, archive: Path, data_dir: Path, manifest: dict[str, str]) -> list[str]:
    spec = src.repack
    members = {name: read() for name, read in _members(archive) if name.startswith(spec["from"])}
    if not members:
        raise UserError(f"{src.url}: no member under {spec['from']} in the archive; it is not the expected release")
    body = pack_reproducibly(members, spec["mtime"])
    _write_checked(data_dir / spec["file"], body, manifest[spec["file"]], f"{spec['from']} of {src.url}, repacked")
    return [spec["file"]]


def pack_reproducibly(members: dict[str, bytes], mtime: int) -> bytes:
    """A .tar.gz whose bytes depend only on the members' names and contents (and mtime):
    ustar, names sorted, mode 0644, uid/gid 0, no owner names, gzip level 9 with header mtime 0."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name in sorted(members):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(members[name]), 0o644, mtime
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(members[name]))
    return buf.getvalue()


# -- derived files -----------------------------------------------------------------------------

def hellaswag_blocks(dump: bytes) -> bytes:
    """The HellaSwag text dump (bzip2; per example 6 lines: "<activity>: <ctx>", gold label, 4
    endings) as JSON lines {ind, activity_label, ctx, endings, label}, ind counting from 0."""
    lines = bz2.decompress(dump).decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise UserError(f"the HellaSwag dump has {len(lines)} lines, not a multiple of 6; it is not the expected file")
    out = []
    for i in range(0, len(lines), 6):
        label, _, ctx = lines[i].partition(": ")
        out.append(json.dumps({"ind": i // 6, "activity_label": label, "ctx": ctx, "endings": lines[i + 2 : i + 6],
                               "label": int(lines[i + 1])}, ensure_ascii=False) + "\n")
    return "".join(out).encode("utf-8")


RECIPES: dict[str, Callable[[bytes], bytes]] = {"hellaswag_blocks": hellaswag_blocks}


# -- checking ----------------------------------------------------------------------------------

def _write_checked(path: Path, body: bytes, sha256: str, what: str) -> None:
    got = hashlib.sha256(body).hexdigest()
    if got != sha256:
        raise UserError(f"{path.name} ({what}): sha256 {got} is not the manifest's {sha256}; it was not written "
                        "(the download is not the expected release)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(body)
    os.replace(tmp, path)


def _matches(path: Path, sha256: str) -> bool:
    return path.is_file() and _file_sha256(path) == sha256


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _describe(paths: list[str]) -> str:
    return ", ".join(paths) if len(paths) < 4 else f"{len(paths)} files under {paths[0].split('/')[0]}/"
