"""The attack battery (sandbox_battery.py) in every mode this machine allows: as root, as root
without CAP_SYS_ADMIN (a default container), and as an unprivileged user. Each attack must end
as a non-passed sample that reports no escape, with the harness alive, no file outside the
work folder changed, the planted secrets (a file in HOME, a variable in the environment) in no
output, and no process, IPC object or sample folder left behind."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from llama_eval.execution import harness

REPO = Path(__file__).resolve().parents[1]
BATTERY = Path(__file__).with_name("sandbox_battery.py")
ATTACKS = 14


def reachable_by_nobody(executable: str) -> bool:
    command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/bin/sh", "-c",
               f"{shlex.quote(executable)} -c 'import sys; assert sys.version_info >= (3, 10)'"]
    return subprocess.run(command, capture_output=True).returncode == 0


def mode_command(mode: str, command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        if mode != "unprivileged user":
            pytest.skip(f"{mode}: the tests do not run as root")
        return command
    if mode in ("root", "root, no user namespace"):
        return command
    if mode == "root without CAP_SYS_ADMIN":
        if shutil.which("capsh") is None:
            pytest.skip("capsh (libcap) is not installed")
        return ["capsh", "--drop=cap_sys_admin", "--", "-c", shlex.join(command)]
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    interpreter = next((p for p in (sys.executable, "/usr/bin/python3") if reachable_by_nobody(p)), None)
    if interpreter is None:
        pytest.skip(f"no Python >= 3.10 that `nobody` can run ({sys.executable} is under a folder it cannot enter)")
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", interpreter, *command[1:]]


def ipc_objects() -> dict[str, list[str]]:
    return {kind: Path(f"/proc/sysvipc/{kind}").read_text().splitlines()[1:] for kind in ("shm", "sem", "msg")}


def launcher_processes() -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and str(harness.LAUNCHER).encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(entry)
        except OSError:
            continue  # ended while we looked
    return found


def snapshot(folder: Path) -> dict[str, tuple]:
    return {str(p.relative_to(folder)): (p.lstat().st_mode, p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["root", "root, no user namespace", "root without CAP_SYS_ADMIN", "unprivileged user"])
def test_attack_battery(mode, tmp_path):
    user = pwd.getpwnam("nobody") if mode == "unprivileged user" else pwd.getpwuid(os.geteuid())
    secret = f"secret-{uuid.uuid4().hex}"
    base = Path(tempfile.mkdtemp(prefix="llama-eval-battery-"))
    base.chmod(0o755)
    home = base / "home"
    home.mkdir(mode=0o700)
    (home / ".secret").write_text(secret)
    (home / ".secret").chmod(0o600)
    os.chown(home, user.pw_uid, user.pw_gid)
    os.chown(home / ".secret", user.pw_uid, user.pw_gid)
    folder = REPO / f".sandbox-target-{uuid.uuid4().hex}"
    folder.mkdir()
    folder.chmod(0o777)
    (folder / "sentinel.txt").write_text("precious")
    (folder / "sentinel.txt").chmod(0o666)
    unix, abstract = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
    try:
        unix.bind(str(folder / "host.sock"))
        (folder / "host.sock").chmod(0o777)
        abstract.bind("\0llama-eval-test")
        for listener in (unix, abstract):
            listener.listen()
            listener.settimeout(0.1)
        before = (snapshot(folder), ipc_objects(), set(Path(tempfile.gettempdir()).glob("llama-eval-sandbox-*")))
        # "root, no user namespace": the mode of machines where user namespaces are disabled.
        modes = ["root"] if mode == "root, no user namespace" else ["user", "root"]
        config = {"secret_file": str(home / ".secret"), "open_folder": str(folder), "socket": str(folder / "host.sock"),
                  "modes": modes}
        command = mode_command(mode, [sys.executable, str(BATTERY), json.dumps(config)])
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": str(home), "LLAMA_EVAL_TEST_SECRET": secret}
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=base, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]  # the harness lived through every attack
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        results, isolation, load = lines[:-2], lines[-2]["isolation"], lines[-1]["load"]
        assert len(results) == 2 * ATTACKS
        for r in results:
            assert r["status"] != "passed" and "ESCAPED" not in r["detail"], r
        assert secret not in done.stdout + done.stderr
        assert isolation["mode"] == modes[0] and isolation["seccomp"] and isolation["read_only"], isolation
        assert isolation["uid"] == 65534
        assert load == ["passed"] * 20
        for listener in (unix, abstract):
            with pytest.raises(TimeoutError):
                listener.accept()
        assert (snapshot(folder), ipc_objects()) == before[:2]
        new_folders = set(Path(tempfile.gettempdir()).glob("llama-eval-sandbox-*")) - before[2]
        # Folders of processes still running are other sessions' samples in flight, not ours.
        assert [f for f in new_folders if not Path(f"/proc/{f.name.split('-')[3]}").exists()] == []
        assert launcher_processes() == []
    finally:
        unix.close()
        abstract.close()
        shutil.rmtree(folder)
        shutil.rmtree(base)
