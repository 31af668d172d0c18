"""The harness side of the sandbox: one folder and one launcher process per sample, pipes
drained under an output cap and a wall clock, and every outcome turned into an ExecResult.
What the launcher enforces is described in execution/__init__.py.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pwd
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

from ..config import SANDBOX_TIMEOUT_S
from ..errors import UserError
from .folders import remove_tree

log = logging.getLogger(__name__)

Status = Literal["passed", "failed", "timeout", "crashed"]

LAUNCHER = Path(__file__).with_name("launcher.py")
_DETAIL_CHARS = 300
_REPORT_BYTES = 1 << 16  # cap for the launcher's report
_GRACE = 2.0  # seconds the harness waits past the launcher's own alarm
_HIDDEN = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/root", "/home")  # emptied inside the sandbox
_SIGNAL_MEANING = {
    signal.SIGXCPU: "CPU-time limit",
    signal.SIGXFSZ: "file-size limit",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "abort",
}


@dataclass(frozen=True)
class Limits:
    """Per-sample resource limits (the defaults suit HumanEval and MBPP programs).

    cpu_seconds: RLIMIT_CPU soft limit of each process (SIGXCPU; SIGKILL one second later).
    memory_bytes: the sample's memory budget: each process gets RLIMIT_AS = memory_bytes /
        max_processes, so all of them together stay within it.
    file_size_bytes: RLIMIT_FSIZE, the largest file the program may write.
    max_processes: RLIMIT_NPROC, counted in the sample's own user namespace (see the module doc).
    output_bytes: the most the harness reads from stdout, and from stderr; more kills the program.
    disk_bytes: size of the sample's own tmpfs (its working folder) and of each fresh /tmp.
    open_files: RLIMIT_NOFILE.
    """

    cpu_seconds: int = 10
    memory_bytes: int = 2 << 30
    file_size_bytes: int = 16 << 20
    max_processes: int = 8
    output_bytes: int = 1 << 20
    disk_bytes: int = 64 << 20
    open_files: int = 64

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "memory_bytes", "file_size_bytes", "max_processes", "output_bytes",
                     "disk_bytes", "open_files"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(f"execution limit {name}={value!r} must be a positive integer")


@dataclass(frozen=True)
class ExecResult:
    """How one sample ended.

    status: "passed", "failed" (an exception, a failed test, a non-zero exit code, an exit
    before its end, a value that is not plain data), "timeout" (killed at the wall-clock limit)
    or "crashed" (killed by a signal or a limit, or the harness failed on this sample).
    detail: short; the exception line, "killed by SIGXCPU (CPU-time limit)", ...; "" when passed.
    """

    status: Status
    detail: str


@dataclass(frozen=True)
class Check:
    """One sample to grade.

    candidate: code run in the sandbox (the model's code and what it needs, e.g. MBPP's setup).
    test: None for a plain program, which passes when it runs to its end with exit code 0
        (a program that holds its own asserts can fake that: graders give a test). Otherwise
        trusted code run by the checker, outside the sandbox's reach, after `setup` (trusted too,
        e.g. HumanEval's prompt with its helper functions) and with each of `names` bound to the
        candidate's object of that name: a function is called through the channel with plain
        values both ways; another plain value is copied; any other object can only be passed
        back as an argument. The sample passes when the test code raises nothing.
    """

    candidate: str
    test: str | None = None
    setup: str = ""
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Isolation:
    """What confinement a run actually got (see the module docstring for each mode)."""

    mode: str  # "user" (user namespace), "root" (namespaces without one) or "none"
    uid: int  # the uid the candidate's processes have on this machine
    namespaces: bool  # mount + PID + network + IPC namespaces
    read_only_mounts: bool  # everything but the sample's own tmpfs and fresh /tmp read-only
    seccomp: bool
    notes: tuple[str, ...]  # why a layer is missing or incomplete

    def describe(self) -> str:
        """One line for users, e.g. "sandbox: user namespaces, uid 65534, seccomp, read-only mounts"."""
        if not self.namespaces:
            return f"sandbox: NO kernel isolation (resource limits and an audit hook only), uid {self.uid}"
        layers = ["user namespace" if self.mode == "user" else "namespaces as root",
                  "mount+PID+network+IPC namespaces", f"uid {self.uid}",
                  "seccomp" if self.seccomp else "no seccomp",
                  "read-only mounts" if self.read_only_mounts else "some mounts writable"]
        return "sandbox: " + ", ".join(layers)


class SandboxError(RuntimeError):
    """The sandbox could not start a program at all (a fault of this machine, not the program)."""


def require_permission(allowed: bool) -> None:
    """Raise UserError unless the user passed --allow-code-execution."""
    if not allowed:
        raise UserError(
            "this runs model-written Python code on this machine; pass --allow-code-execution "
            "to allow it (each program runs in a sandboxed child process with time, memory, "
            "file-size and process limits; see llama_eval/execution/__init__.py for what is enforced)"
        )


def require_isolation(allow_unsandboxed: bool) -> Isolation:
    """What this machine's sandbox gives; UserError when it has no kernel layer at all, unless
    the user passed --allow-unsandboxed."""
    isolation = probe_isolation(allow_unsandboxed=True)
    if not isolation.namespaces and not allow_unsandboxed:
        raise UserError(
            "no kernel isolation is available for model-written code here ("
            + "; ".join(isolation.notes) + "); run where unprivileged user namespaces are allowed "
            "(sysctl user.max_user_namespaces > 0, or a container started with them), or pass "
            "--allow-unsandboxed to run it with resource limits and an audit hook only")
    return isolation


def check_program(program: str | Check, timeout: float = SANDBOX_TIMEOUT_S, limits: Limits | None = None,
                  allow_unsandboxed: bool = False) -> ExecResult:
    """Run one sample in the sandbox (a plain program when given a string).

    A timeout, crash, hostile behaviour or a harness failure on this sample is a result, never
    an exception; only invalid arguments raise (UserError).
    """
    check = program if isinstance(program, Check) else Check(program)
    result, _ = run_sandboxed(check, timeout, limits or Limits(), allow_unsandboxed)
    return result


def check_many(programs: Sequence[str | Check], timeout: float = SANDBOX_TIMEOUT_S, workers: int | None = None,
               limits: Limits | None = None, allow_unsandboxed: bool = False) -> list[ExecResult]:
    """check_program over many samples in parallel workers; results in input order."""
    return list(iter_checks(programs, timeout, workers, limits or Limits(), allow_unsandboxed))


def probe_isolation(limits: Limits | None = None, allow_unsandboxed: bool = True) -> Isolation:
    """Run an empty program and report which confinement this machine gave it."""
    result, isolation = run_sandboxed(Check("pass\n"), 30.0, limits or Limits(), allow_unsandboxed)
    if isolation is None:
        raise SandboxError(f"an empty program did not start in 30 s: {result.detail}")
    return isolation


def iter_checks(programs: Sequence[str | Check], timeout: float, workers: int | None, limits: Limits,
                allow_unsandboxed: bool = False) -> Iterator[ExecResult]:
    """Yield results in input order as they become available (so callers can write as they go)."""
    if workers is None:
        workers = len(os.sched_getaffinity(0))  # the cores this process may use
    if workers < 1:
        raise UserError(f"workers={workers} must be at least 1")
    # Threads are enough: each worker waits on its launcher; no preexec_fn is used, so starting
    # children from several threads is safe.
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(programs)))) as pool:
        yield from pool.map(lambda p: check_program(p, timeout, limits, allow_unsandboxed), programs)


def run_sandboxed(check: Check, timeout: float, limits: Limits, allow_unsandboxed: bool, audit_guard: bool = True,
                  modes: tuple[str, ...] = ("user", "root")) -> tuple[ExecResult, Isolation | None]:
    """Run one sample; the Isolation is None when it ended before its setup finished.

    audit_guard=False leaves out the audit hook, so tests can check the kernel layers alone;
    `modes` are the namespace modes the launcher tries, in order ("none" when all fail), so tests
    can run the modes of machines that allow fewer (("root",): no user namespace; (): none).
    """
    if not sys.platform.startswith("linux"):
        raise UserError(f"running model-written code needs Linux (its sandbox uses Linux process controls); "
                        f"this is {sys.platform}")
    if not (isinstance(timeout, (int, float)) and 0 < timeout < math.inf):
        raise UserError(f"execution timeout must be a positive, finite number of seconds, got {timeout!r}")
    try:
        return _run(check, timeout, limits, allow_unsandboxed, audit_guard, modes)
    except Exception as error:  # this sample's failure, never the run's (e.g. ENOSPC, a folder we cannot remove)
        log.warning("sandbox harness failed on one sample: %s", error)
        return ExecResult("crashed", _short(f"harness: {type(error).__name__}: {error}")), None


def _run(check: Check, timeout: float, limits: Limits, allow_unsandboxed: bool, audit_guard: bool,
         modes: tuple[str, ...]) -> tuple[ExecResult, Isolation | None]:
    try:
        candidate = check.candidate.encode("utf-8")
    except UnicodeEncodeError as error:
        return ExecResult("failed", _short(f"the program is not valid Unicode text ({error.reason} "
                                           f"at character {error.start})")), None
    uid, gid = sandbox_ids()
    root = Path(tempfile.mkdtemp(prefix=f"llama-eval-sandbox-{os.getpid()}-"))
    try:
        root.chmod(0o711)  # the sandbox user may pass through to work/, not list or read here
        (root / "candidate.py").write_bytes(candidate)
        # ensure_ascii: test code never fails to encode; the candidate never sees this file.
        trusted = {"setup": check.setup, "names": list(check.names), "test": check.test}
        (root / "trusted.json").write_text(json.dumps(trusted, ensure_ascii=True), encoding="ascii")
        work = root / "work"
        work.mkdir(mode=0o700)
        if os.geteuid() == 0:
            os.chown(work, uid, gid)
        config = _config(root, work, timeout, limits, allow_unsandboxed, audit_guard, uid, gid)
        config["modes"] = list(modes)
        return _launch(config, work, timeout, limits)
    finally:
        remove_tree(root)


def sandbox_ids() -> tuple[int, int]:
    """(uid, gid) of `nobody` (the kernel's overflow ids when there is no such user)."""
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return (65534, 65534)
    return (entry.pw_uid, entry.pw_gid)


def _interpreter_paths() -> list[str]:
    """The folders the interpreter reads (its prefixes, its binary's folder), outermost only."""
    executable = os.path.realpath(sys.executable)
    folders = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix), os.path.dirname(executable)}
    return sorted(f for f in folders if not any(f.startswith(other + os.sep) for other in folders))


def _hidden_folders() -> list[str]:
    """Folders an empty tmpfs covers inside the sandbox: temporary and home folders."""
    homes = {os.path.expanduser("~"), pwd.getpwuid(os.geteuid()).pw_dir}
    return list(_HIDDEN) + sorted(os.path.realpath(h) for h in homes if h not in ("", "/") and os.path.isdir(h))


def _config(root: Path, work: Path, timeout: float, limits: Limits, allow_unsandboxed: bool, audit_guard: bool,
            uid: int, gid: int) -> dict:
    return {
        "harness_pid": os.getpid(),
        "candidate": str(root / "candidate.py"),
        "trusted": str(root / "trusted.json"),
        "sample": str(root),
        "work": str(work),
        "expose": _interpreter_paths(),
        "hide": _hidden_folders(),
        "sandbox_uid": uid,
        "sandbox_gid": gid,
        "limits": {"cpu": limits.cpu_seconds, "memory": limits.memory_bytes, "file_size": limits.file_size_bytes,
                   "processes": limits.max_processes, "open_files": limits.open_files},
        "disk_bytes": limits.disk_bytes,
        "wall_seconds": max(1, math.ceil(timeout)),
        "allow_unsandboxed": allow_unsandboxed,
        "guard": audit_guard,
    }


def _scrubbed_env(work: Path) -> dict[str, str]:
    # None of our variables reaches the program: no HOME with secrets, no tokens, no proxies.
    return {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


@dataclass
class _Pipe:
    """One pipe the harness reads, with what it kept and whether it overflowed."""

    name: str
    fd: int
    cap: int
    data: bytearray
    overflowed: bool = False


def _launch(config: dict, work: Path, timeout: float, limits: Limits) -> tuple[ExecResult, Isolation | None]:
    report_read, report_write = os.pipe()
    config["report_fd"] = report_write
    try:
        process = subprocess.Popen(
            # -I: ignore PYTHON* variables, user site and cwd; -S: no site-packages;
            # -B: the launcher runs as us and must not write bytecode beside our files.
            [os.path.realpath(sys.executable), "-I", "-S", "-B", str(LAUNCHER), json.dumps(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=work,
            env=_scrubbed_env(work), start_new_session=True, pass_fds=(report_write,),
        )
    finally:
        os.close(report_write)
    pipes = [
        _Pipe("stdout", process.stdout.fileno(), limits.output_bytes, bytearray()),
        _Pipe("stderr", process.stderr.fileno(), limits.output_bytes, bytearray()),
        _Pipe("report", report_read, _REPORT_BYTES, bytearray()),
    ]
    try:
        timed_out = _drain(process, pipes, time.monotonic() + timeout + _GRACE)
    finally:
        returncode = _stop(process)
        process.stdout.close()
        process.stderr.close()
        os.close(report_read)
    return _outcome(pipes, timed_out, returncode, config, timeout, limits)


def _outcome(pipes: list[_Pipe], timed_out: bool, returncode: int, config: dict, timeout: float,
             limits: Limits) -> tuple[ExecResult, Isolation | None]:
    stdout, stderr, report = pipes
    setup, _, final = bytes(report.data).partition(b"\n")
    isolation = _isolation(setup, config)
    outcome = json.loads(final) if final else None
    overflow = next((pipe.name for pipe in (stdout, stderr) if pipe.overflowed), None)
    if overflow is not None:
        return ExecResult("crashed", f"output limit: more than {limits.output_bytes} bytes on {overflow}"), isolation
    if timed_out or (outcome is not None and outcome["timeout"]):
        return ExecResult("timeout", f"still running after {timeout:g} s (wall clock)"), isolation
    if setup and json.loads(setup).get("refused"):
        return ExecResult("crashed", "refused: no kernel isolation here and --allow-unsandboxed was not given"), isolation
    if outcome is None or (isolation is None and outcome["verdict"] is None):
        return ExecResult("crashed", _short(f"the sandbox launcher failed (exit {returncode}): "
                                            f"{_tail(stderr.data)}")), isolation
    return _classify(outcome, stderr.data), isolation


def _isolation(setup: bytes, config: dict) -> Isolation | None:
    if not setup:
        return None
    report = json.loads(setup)
    if report.get("refused"):
        return Isolation("none", os.geteuid(), False, False, False, tuple(report["notes"]))
    mode = report["mode"]
    # Inside a user namespace the candidate sees the sandbox id; on this machine it is nobody
    # when we are root, and our own uid otherwise (the only id an unprivileged user may map).
    uid = report["uid"] if mode != "user" or os.geteuid() == 0 else os.geteuid()
    notes = tuple(report["notes"])
    return Isolation(mode, uid, mode != "none", report["read_only"], report["seccomp"], notes)


def _classify(outcome: dict, stderr: bytearray) -> ExecResult:
    verdict = outcome["verdict"] or {"passed": False, "detail": "", "reached": False}
    if verdict["passed"]:
        return ExecResult("passed", "")
    signum = outcome["signal"]
    if signum is not None and (not verdict["reached"] or verdict.get("gone")):
        detail = f"killed by {_signal_name(signum)}"
        meaning = _SIGNAL_MEANING.get(signum)
        detail += f" ({meaning})" if meaning else ""
        tail = _tail(stderr)
        return ExecResult("crashed", detail + (f": {tail}" if tail else ""))
    if verdict["reached"] and not verdict.get("gone"):
        return ExecResult("failed", _short(verdict["detail"]))
    if outcome["exit"] == 0:
        return ExecResult("failed", "exited before its end (sys.exit or os._exit before the checks finished)")
    tail = _tail(stderr)
    return ExecResult("failed", tail or _short(verdict["detail"]) or f"exit code {outcome['exit']}")


def _drain(process: subprocess.Popen, pipes: list[_Pipe], deadline: float) -> bool:
    """Read all pipes until they close, one overflows, or the deadline passes (returns True)."""
    selector = selectors.DefaultSelector()
    for pipe in pipes:
        selector.register(pipe.fd, selectors.EVENT_READ, pipe)
    group_killed = False
    try:
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            for key, _ in selector.select(timeout=min(remaining, 0.05)):
                pipe = key.data
                chunk = os.read(pipe.fd, 65536)
                if not chunk:
                    selector.unregister(pipe.fd)
                    continue
                room = pipe.cap - len(pipe.data)
                pipe.data += chunk[:room]
                if len(chunk) > room and pipe.name in ("stdout", "stderr"):
                    pipe.overflowed = True
                    return False
            if not group_killed and _has_exited(process):
                # The launcher is done: anything still holding our pipes is a straggler it left.
                _kill_group(process.pid)
                group_killed = True
        return False
    finally:
        selector.close()


def _stop(process: subprocess.Popen, grace: float = 2.0) -> int:
    """End a run and reap the launcher; returns its exit status.

    SIGTERM asks the launcher to SIGKILL its children and reap them, so the PID namespace is
    torn down before we return. Then SIGKILL the whole group: stragglers, or the launcher
    itself if it did not finish in time.
    """
    if not _has_exited(process):
        os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not _has_exited(process) and time.monotonic() < deadline:
            time.sleep(0.005)
    _kill_group(process.pid)  # the launcher is not reaped yet, so its pid (the group id) is not reused
    return process.wait()


def _has_exited(process: subprocess.Popen) -> bool:
    """Whether the launcher has exited, without reaping it (so its pid cannot be reused yet)."""
    return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # every process of the group has already ended


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _short(text: str) -> str:
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


def _tail(data: bytes | bytearray) -> str:
    """The last non-empty line of a program's stderr, shortened: usually the exception."""
    lines = [line.strip() for line in bytes(data).decode("utf-8", "replace").splitlines() if line.strip()]
    return _short(lines[-1]) if lines else ""
