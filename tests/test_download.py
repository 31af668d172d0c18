"""`llama-eval data download` against a local HTTP server on 127.0.0.1 (nothing leaves the machine)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llama_eval import download as dl
from llama_eval.cli import main
from llama_eval.errors import UserError
from llama_eval.tasks import TASKS
from llama_eval.tasks.data import manifest as bundled_manifest


class Server:
    """Serves `files` (path -> bytes) with HTTP Range support; `cut_after` bytes, when set, ends a
    response early by closing the connection; `requests` logs (path, Range header)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((path, rng))
                if path not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[path], 0
                if rng:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                chunk = body[start:]
                if server.cut_after is not None:
                    chunk = chunk[: server.cut_after]
                    self.close_connection = True
                self.wfile.write(chunk)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with Server() as s:
        yield s


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def table(rows: list[dict]) -> list[dl.Source]:
    return dl.load_sources(json.dumps({"sources": rows}))


PIQA = random.Random(0).randbytes(200_000)  # big enough to be cut mid-file
LABELS = b"0\n1\n1\n"


def piqa_sources():
    return table([{"tasks": ["piqa"], "url": "https://example.invalid/valid.jsonl", "file": "piqa/valid.jsonl"},
                  {"tasks": ["piqa"], "url": "https://example.invalid/labels", "file": "piqa/valid-labels.lst"}])


def test_fetches_verifies_and_skips_what_is_there(server, tmp_path):
    server.files = {"piqa/valid.jsonl": PIQA, "piqa/valid-labels.lst": LABELS}
    manifest = {"piqa/valid.jsonl": sha(PIQA), "piqa/valid-labels.lst": sha(LABELS)}
    written = dl.download(tmp_path, ("piqa",), server.url, False, piqa_sources(), manifest, log=lambda s: None)
    assert sorted(written) == ["piqa/valid-labels.lst", "piqa/valid.jsonl"]
    assert (tmp_path / "piqa/valid.jsonl").read_bytes() == PIQA and not list(tmp_path.rglob("*.part"))
    server.requests.clear()
    assert dl.download(tmp_path, None, server.url, False, piqa_sources(), manifest, log=lambda s: None) == []
    assert server.requests == []  # both files verified on disk: nothing fetched


def test_resumes_after_an_interrupted_download(server, tmp_path):
    server.files = {"piqa/valid.jsonl": PIQA}
    sources = piqa_sources()[:1]
    manifest = {"piqa/valid.jsonl": sha(PIQA)}
    server.cut_after = 70_000
    with pytest.raises(UserError, match="run the same command again to resume"):
        dl.download(tmp_path, None, server.url, False, sources, manifest, log=lambda s: None)
    part = tmp_path / "piqa/valid.jsonl.part"
    assert 0 < part.stat().st_size <= 70_000 and not (tmp_path / "piqa/valid.jsonl").exists()
    kept = part.stat().st_size
    server.cut_after = None
    dl.download(tmp_path, None, server.url, False, sources, manifest, log=lambda s: None)
    assert server.requests[-1] == ("piqa/valid.jsonl", f"bytes={kept}-")  # only the rest was asked for
    assert (tmp_path / "piqa/valid.jsonl").read_bytes() == PIQA and not part.exists()


def test_refuses_a_wrong_checksum(server, tmp_path):
    server.files = {"piqa/valid.jsonl": PIQA[:-1] + b"!"}  # one byte differs
    with pytest.raises(UserError, match="sha256 .* is not the manifest's"):
        dl.download(tmp_path, None, server.url, False, piqa_sources()[:1], {"piqa/valid.jsonl": sha(PIQA)},
                    log=lambda s: None)
    assert not list((tmp_path / "piqa").iterdir())  # neither the file nor a .part is kept


def test_missing_file_on_the_server_is_one_clear_error(server, tmp_path):
    with pytest.raises(UserError, match="HTTP 404.*--base-url"):
        dl.download(tmp_path, None, server.url, False, piqa_sources()[:1], {"piqa/valid.jsonl": sha(PIQA)},
                    log=lambda s: None)


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_unpacks_the_release_files_from_an_archive(server, tmp_path, fmt):
    members = {"data/dev/a_dev.csv": b"q,A,B,C,D,A\n", "data/test/a_test.csv": b"x,1,2,3,4,B\n",
               "data/auxiliary_train/big.csv": b"not wanted\n"}
    buf = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w") as z:
            for name, body in members.items():
                z.writestr(name, body)
    else:
        buf.write(dl.pack_reproducibly(members, 0))
    server.files = {f"archives/data.{fmt}": buf.getvalue()}
    sources = table([{"tasks": ["mmlu"], "url": "https://example.invalid/data", "mirror": f"archives/data.{fmt}",
                      "unpack": {"from": "data/", "into": "mmlu/"}}])
    manifest = {"mmlu/dev/a_dev.csv": sha(members["data/dev/a_dev.csv"]),
                "mmlu/test/a_test.csv": sha(members["data/test/a_test.csv"])}
    written = dl.download(tmp_path, ("mmlu",), server.url, False, sources, manifest, log=lambda s: None)
    assert sorted(written) == sorted(manifest)
    assert (tmp_path / "mmlu/test/a_test.csv").read_bytes() == members["data/test/a_test.csv"]
    assert not (tmp_path / "mmlu/auxiliary_train").exists() and not (tmp_path / dl.DOWNLOADS).exists()
    manifest["mmlu/val/a_val.csv"] = sha(b"")  # a release file the archive lacks
    (tmp_path / "mmlu/dev/a_dev.csv").unlink()
    with pytest.raises(UserError, match="the archive lacks 1 release file"):
        dl.download(tmp_path, ("mmlu",), server.url, False, sources, manifest, log=lambda s: None)


def test_the_url_table_covers_every_release_file_and_task():
    sources = dl.load_sources()
    manifest = bundled_manifest()
    outputs = [p for s in sources for p in s.outputs(manifest)]
    assert len(outputs) == len(set(outputs))  # each file has one source
    benchmark_files = {p for p in manifest if not p.startswith(("tokenizer/", "model/"))}
    assert set(outputs) == benchmark_files
    assert {t for s in sources for t in s.tasks} == set(TASKS)
    assert all(s.url.startswith(("https://", "http://")) for s in sources)
    with pytest.raises(UserError, match="--tasks pica: .*Did you mean piqa"):
        dl.select(sources, ("pica",))
    with pytest.raises(ValueError, match="exactly one of"):
        table([{"tasks": ["x"], "url": "u", "file": "a", "repack": {}}])
    with pytest.raises(ValueError, match="unknown keys"):
        table([{"tasks": ["x"], "url": "u", "file": "a", "sha": "…"}])


# -- the real recipes, on the real files (skipped without ../shared/data) -----------------------

@pytest.mark.parametrize("task, release, extra", [("math", "math/MATH_test.tar.gz", "MATH/train/algebra/1.json"),
                                                  ("race_high", "race/RACE_test.tar.gz", "RACE/dev/high/1.txt")])
def test_repack_rebuilds_the_release_archive_byte_for_byte(server, shared_data, tmp_path, task, release, extra):
    """An archive laid out like the authors' (members in another order, other mtimes, modes and
    owners, plus train/dev files) repacks into exactly the archive of the manifest."""
    with tarfile.open(shared_data / release) as t:
        members = {m.name: t.extractfile(m).read() for m in t if m.isfile()}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        names = [*members, extra]
        random.Random(1).shuffle(names)
        for name in names:
            body = members.get(name, b"{}")
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.uname, info.mode = len(body), 1_600_000_000, "author", 0o600
            tar.addfile(info, io.BytesIO(body))
    src = next(s for s in dl.load_sources() if task in s.tasks)
    server.files = {src.mirror: buf.getvalue()}
    assert dl.download(tmp_path, (task,), server.url, False, log=lambda s: None) == [release]
    assert sha((tmp_path / release).read_bytes()) == bundled_manifest()[release]


def test_mmlu_is_unpacked_from_data_tar_into_the_release_layout(server, shared_data, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:  # data.tar: the folder data/ holds dev/, val/, test/, ...
        for path in sorted((shared_data / "mmlu").rglob("*")):
            if path.is_file():
                tar.add(path, arcname="data/" + path.relative_to(shared_data / "mmlu").as_posix())
    src = next(s for s in dl.load_sources() if "mmlu" in s.tasks)
    server.files = {src.mirror: buf.getvalue()}
    written = dl.download(tmp_path, ("mmlu",), server.url, False, log=lambda s: None)
    assert len(written) == len([p for p in bundled_manifest() if p.startswith("mmlu/")]) == 173
    assert (tmp_path / "mmlu/test/anatomy_test.csv").read_bytes() == (shared_data / "mmlu/test/anatomy_test.csv").read_bytes()


def test_hellaswag_jsonl_is_derived_from_the_text_dump(server, shared_data, tmp_path):
    rel = "hellaswag/hellaswag_val_full.txt.bz2"
    server.files = {rel: (shared_data / rel).read_bytes()}
    written = dl.download(tmp_path, ("hellaswag",), server.url, False, log=lambda s: None)
    assert written == [rel, "hellaswag/hellaswag_val.jsonl"]
    assert (tmp_path / "hellaswag/hellaswag_val.jsonl").read_bytes() == (shared_data / "hellaswag/hellaswag_val.jsonl").read_bytes()


def test_data_download_command_then_verify(server, shared_data, tmp_path, capsys):
    for rel in ("piqa/valid.jsonl", "piqa/valid-labels.lst", "boolq/val.jsonl"):
        server.files[rel] = (shared_data / rel).read_bytes()
    out_dir = tmp_path / "data"
    assert main(["data", "download", "--data-dir", str(out_dir), "--tasks", "piqa,boolq",
                 "--base-url", server.url + "/", "--no-progress"]) == 0
    assert "3 file(s) written" in capsys.readouterr().out
    from llama_eval.tasks.piqa import PIQA as PIQATask

    assert len(PIQATask().load(out_dir)) == 1838  # the task reads what was downloaded
    assert main(["data", "download", "--data-dir", str(out_dir), "--tasks", "pika", "--base-url", server.url]) == 2
    assert "Did you mean piqa" in capsys.readouterr().err
