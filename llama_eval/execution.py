"""The only module that runs model-written code: each program in a sandboxed child process.

Nothing here decides whether code may run: callers call `require_permission(flag)` first, with
the value of `--allow-code-execution`.

What one run looks like. The harness (this process) makes a fresh folder R (mode 755, owned by
root) holding `program.py` (read-only) and the working folder W = R/work, and starts
`python -I -S -B -c <launcher>` in a new session (its own process group), with stdin from
/dev/null, stdout/stderr on pipes, a scrubbed environment and cwd W. The launcher (trusted code,
below) forks once; the child sets up its confinement, then runs the program in-process with
`exec` and, only if the program ran to its end, writes a random token to a pipe only the harness
reads. A program passes iff that token arrives and the exit code is 0, so `sys.exit(0)` or
`os._exit(0)` before the tests ran counts as failed. To stop a run (timeout, output cap, or
when it is over) the harness asks the launcher with SIGTERM to SIGKILL and reap its child, then
SIGKILLs the whole process group, reaps the launcher and deletes R.

What is enforced, strongest first (`probe_isolation()` reports what a run actually got):

- Kernel namespaces, when the launcher may create them (root with CAP_SYS_ADMIN): a new
  network namespace (only a loopback that is down, so no connection to anything, 127.0.0.1
  included); a new PID namespace (the program is PID 1: when it ends, or when the launcher
  dies, the kernel kills everything it started, even processes that left the process group;
  as PID 1 it ignores SIGXCPU, so the CPU limit kills it with SIGKILL a second later, which
  the launcher reports as SIGXCPU); a private mount namespace in which every mount is
  remounted read-only except W, with a fresh /proc that shows only the program's processes.
- An unprivileged user: when the harness runs as root, the program runs as `nobody` with no
  supplementary groups, and W is chowned to it. Interpreters that live where `nobody` cannot
  walk (pyenv under /root, mode 700) are made reachable inside the mount namespace by hiding
  the unreachable folder under an empty tmpfs and binding the interpreter's prefix back at the
  same path. Without a mount namespace the launcher drops to `nobody` only when every needed
  path is reachable, and says so when it cannot.
- `PR_SET_NO_NEW_PRIVS` (set-uid binaries cannot give root back) and `PR_SET_PDEATHSIG`.
- Resource limits (`Limits`): RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_CORE=0.
  RLIMIT_NPROC counts every process of the real uid on the machine and does not apply to root:
  it bounds a fork bomb only when the program runs as `nobody` (it then also bounds all parallel
  workers together, so a fork bomb can make a concurrent sample fail to start a process).
- The harness's wall-clock timeout (the stop sequence above), and an output cap: a program
  that writes more than `Limits.output_bytes` to stdout or to stderr is killed.
- An audit hook (`sys.addaudithook`) installed just before the program runs, refusing process
  creation, signals, sockets, ctypes, rlimit changes, and writes, renames and deletions outside
  W. This is defence in depth and the only protection where the kernel layers are unavailable:
  as a non-root user, or as root without CAP_SYS_ADMIN and with an interpreter `nobody` cannot
  reach, the program keeps our uid, so without the hook it could signal the harness or write
  wherever we can. Audit hooks are NOT a security boundary (a determined program can get
  around them, e.g. through `dir_fd` arguments); the uid, namespaces and rlimits are.

Not bounded: the total bytes a program writes inside W (each file is capped, the time is
capped); programs run with the standard library only (`-S`: no site-packages).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import pwd
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

from llama_eval.errors import UserError
from llama_eval.metrics import pass_at_k

log = logging.getLogger(__name__)

Status = Literal["passed", "failed", "timeout", "crashed"]

_DETAIL_CHARS = 300
_REPORT_BYTES = 65536  # cap for the launcher's report and the done pipe (the program can write there)
_TOKEN_BYTES = 16
_SIGNAL_MEANING = {
    signal.SIGXCPU: "CPU-time limit",
    signal.SIGXFSZ: "file-size limit",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "abort",
}


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits (the defaults suit HumanEval-sized programs).

    cpu_seconds: RLIMIT_CPU soft limit (SIGXCPU; SIGKILL one second later).
    memory_bytes: RLIMIT_AS, the address space (a bigger allocation raises MemoryError).
    file_size_bytes: RLIMIT_FSIZE, the largest file the program may write.
    max_processes: RLIMIT_NPROC (processes and threads of the sandbox user; see module doc).
    output_bytes: the most the harness reads from stdout, and from stderr; more kills the program.
    """

    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30
    file_size_bytes: int = 16 << 20
    max_processes: int = 64
    output_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "memory_bytes", "file_size_bytes", "max_processes", "output_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserError(f"execution limit {name}={value!r} must be a positive integer")


@dataclass(frozen=True)
class ExecResult:
    """How one program ended.

    status: "passed" (ran to its end, exit code 0), "failed" (an exception, a non-zero exit
    code, or an exit before its end), "timeout" (killed at the wall-clock limit) or "crashed"
    (killed by a signal or a limit).
    detail: short; the exception line, "killed by SIGXCPU (CPU-time limit)", ...; "" when passed.
    """

    status: Status
    detail: str


@dataclass(frozen=True)
class Isolation:
    """What confinement a run actually got (see the module docstring for each layer)."""

    uid: int
    namespaces: bool  # network + PID + private mount namespace
    read_only_mounts: bool  # everything but the working folder remounted read-only
    notes: tuple[str, ...]  # why a layer is missing or incomplete


class SandboxError(RuntimeError):
    """The sandbox could not start a program at all (a fault of this machine, not the program)."""


def require_permission(allowed: bool) -> None:
    """Raise UserError unless the user passed --allow-code-execution."""
    if not allowed:
        raise UserError(
            "this runs model-written Python code on this machine; pass --allow-code-execution "
            "to allow it (each program runs in a sandboxed child process with time, memory, "
            "file-size and process limits; see llama_eval/execution.py for what is enforced)"
        )


def check_program(program: str, timeout: float = 10.0, limits: Limits | None = None) -> ExecResult:
    """Run one program in the sandbox; passed iff it runs to its end with exit code 0.

    A timeout, crash or hostile behaviour is a result, never an exception; SandboxError means
    the sandbox itself could not start.
    """
    result, _ = _run_sandboxed(program, timeout, limits or Limits(), audit_guard=True)
    return result


def check_many(
    programs: Sequence[str],
    timeout: float = 10.0,
    workers: int | None = None,
    limits: Limits | None = None,
) -> list[ExecResult]:
    """check_program over many programs in parallel workers; results in input order."""
    return list(_iter_checks(programs, timeout, workers, limits or Limits()))


def probe_isolation(limits: Limits | None = None) -> Isolation:
    """Run an empty program and report which confinement layers this machine gave it."""
    result, isolation = _run_sandboxed("pass\n", 30.0, limits or Limits(), audit_guard=True)
    if isolation is None:
        raise SandboxError(f"an empty program did not start in 30 s: {result.detail}")
    return isolation


def _iter_checks(
    programs: Sequence[str], timeout: float, workers: int | None, limits: Limits
) -> Iterator[ExecResult]:
    """Yield results in input order as they become available (so callers can write as they go)."""
    if workers is None:
        workers = len(os.sched_getaffinity(0))  # the cores this process may use
    if workers < 1:
        raise UserError(f"workers={workers} must be at least 1")
    # Threads are enough: each worker waits on its child; no preexec_fn is used, so
    # starting children from several threads is safe.
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(programs)))) as pool:
        yield from pool.map(lambda program: check_program(program, timeout, limits), programs)


# ----------------------------------------------------------------------------------------
# HumanEval and `llama-eval execute`


def load_humaneval_problems(path: str | Path) -> dict[str, dict]:
    """Read HumanEval.jsonl(.gz): {task_id: {task_id, prompt, entry_point, canonical_solution, test}}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"HumanEval file {path} does not exist; expected HumanEval.jsonl.gz from openai/human-eval")
    opener = gzip.open if path.suffix == ".gz" else open
    problems = {}
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for line_number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                record = _json_line(path, line_number, line)
                for field in ("task_id", "prompt", "entry_point", "test"):
                    _require_str(record, field, path, line_number)
                if record["task_id"] in problems:
                    raise UserError(f"{path}:{line_number}: duplicate task_id {record['task_id']!r}")
                problems[record["task_id"]] = record
    except (OSError, EOFError, UnicodeDecodeError) as e:
        kind = "gzip-compressed " if path.suffix == ".gz" else ""
        raise UserError(f"{path}: not a {kind}JSON Lines file ({e}); the file is damaged") from None
    if not problems:
        raise UserError(f"HumanEval file {path} holds no problems")
    return problems


def humaneval_program(problem: dict, completion: str) -> str:
    """The program that checks one completion: prompt, completion, the tests, and the call."""
    return problem["prompt"] + completion + "\n" + problem["test"] + f"\ncheck({problem['entry_point']})\n"


def execute_samples(
    samples_path: str | Path,
    problems: dict[str, dict],
    output_path: str | Path,
    ks: Sequence[int] = (1, 10, 100),
    timeout: float = 10.0,
    workers: int | None = None,
) -> dict[str, float]:
    """Check every sample of a JSON-lines file through the sandbox and return pass@k in percent.

    Input lines: {"task_id", "completion"} (several per task allowed; other keys are ignored).
    Output: one line {task_id, completion, status, detail} per sample, in input order, written
    as results arrive. pass@k is the unbiased estimator averaged over the tasks present in the
    file, reported only for the k that every task has at least k samples for.
    """
    for k in ks:
        if not isinstance(k, int) or k < 1:
            raise UserError(f"pass@k needs positive integer k, got {k!r}")
    samples = _read_samples(Path(samples_path), problems)
    programs = [humaneval_program(problems[task_id], completion) for task_id, completion in samples]
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    passed: dict[str, list[bool]] = {}
    with open(output_path, "w", encoding="utf-8") as out:
        results = _iter_checks(programs, timeout, workers, Limits())
        for (task_id, completion), result in zip(samples, results):
            row = {"task_id": task_id, "completion": completion, "status": result.status, "detail": result.detail}
            out.write(json.dumps(row) + "\n")
            out.flush()
            passed.setdefault(task_id, []).append(result.status == "passed")
    scores = {}
    for k in ks:
        if all(len(outcomes) >= k for outcomes in passed.values()):
            per_task = [pass_at_k(len(outcomes), sum(outcomes), k) for outcomes in passed.values()]
            scores[f"pass@{k}"] = 100.0 * sum(per_task) / len(per_task)
    return scores


def _read_samples(path: Path, problems: dict[str, dict]) -> list[tuple[str, str]]:
    if not path.is_file():
        raise UserError(f"samples file {path} does not exist")
    samples = []
    with open(path, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            record = _json_line(path, line_number, line)
            task_id = _require_str(record, "task_id", path, line_number)
            completion = _require_str(record, "completion", path, line_number)
            if task_id not in problems:
                raise UserError(
                    f"{path}:{line_number}: task_id {task_id!r} is not a known problem "
                    f"(expected ids like {next(iter(problems))!r})"
                )
            samples.append((task_id, completion))
    if not samples:
        raise UserError(f"samples file {path} holds no samples; expected JSON lines with task_id and completion")
    return samples


def _json_line(path: Path, line_number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise UserError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
    return record


def _require_str(record: dict, field: str, path: Path, line_number: int) -> str:
    if field not in record:
        raise UserError(f"{path}:{line_number}: missing field {field!r}")
    if not isinstance(record[field], str):
        raise UserError(f"{path}:{line_number}: field {field!r} must be a string, got {type(record[field]).__name__}")
    return record[field]


# ----------------------------------------------------------------------------------------
# The harness side of one run


@dataclass
class _Pipe:
    """One pipe the harness reads, with what it kept and whether it ended or overflowed."""

    name: str
    fd: int
    cap: int
    data: bytearray
    overflowed: bool = False


def _run_sandboxed(
    program: str, timeout: float, limits: Limits, audit_guard: bool
) -> tuple[ExecResult, Isolation | None]:
    """Run one program; the Isolation is None when it was killed before its setup finished.

    audit_guard=False leaves out the audit hook, so tests can check the kernel layers alone.
    """
    if not sys.platform.startswith("linux"):
        raise UserError(
            f"running model-written code needs Linux (its sandbox uses Linux process controls); this is {sys.platform}"
        )
    if not timeout > 0:
        raise UserError(f"execution timeout must be a positive number of seconds, got {timeout!r}")
    user = _sandbox_user()
    root = Path(tempfile.mkdtemp(prefix=f"llama-eval-sandbox-{os.getpid()}-"))
    try:
        work = _prepare_folder(root, program, user)
        token = secrets.token_hex(_TOKEN_BYTES).encode()
        return _launch(root, work, token, timeout, limits, audit_guard, user)
    finally:
        _remove_folder(root)


def _sandbox_user() -> tuple[int, int] | None:
    """(uid, gid) to run programs as: `nobody` when we are root, else None (stay as we are)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return (65534, 65534)  # the kernel's overflow uid/gid, what `nobody` normally is
    return (entry.pw_uid, entry.pw_gid)


def _prepare_folder(root: Path, program: str, user: tuple[int, int] | None) -> Path:
    root.chmod(0o755)  # the sandbox user must reach program.py and work/, but not write here
    (root / "program.py").write_text(program, encoding="utf-8")
    (root / "program.py").chmod(0o644)
    work = root / "work"
    work.mkdir(mode=0o700)
    if user is not None:
        os.chown(work, *user)
    return work


def _remove_folder(root: Path) -> None:
    if os.geteuid() != 0:
        _make_removable(root / "work")  # a program may have chmod-ed its folders to 000
    try:
        shutil.rmtree(root)
    except OSError as error:
        log.warning("could not remove sandbox folder %s: %s", root, error)


def _make_removable(work: Path) -> None:
    """Give the owner rwx on every directory under work (never following symlinks out)."""
    if work.is_symlink() or not work.is_dir():
        return
    work.chmod(0o700)
    for folder, subfolders, _ in os.walk(work):
        for name in subfolders:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o700)


def _interpreter_paths() -> tuple[str, list[str]]:
    """The interpreter to run and the folders it reads (its prefix, its binary's folder)."""
    executable = os.path.realpath(sys.executable)
    folders = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix), os.path.dirname(executable)}
    # A folder inside another one comes along with it.
    needed = [f for f in folders if not any(f.startswith(other + os.sep) for other in folders)]
    return executable, sorted(needed)


def _scrubbed_env(work: Path) -> dict[str, str]:
    # None of our variables reaches the program: no HOME with secrets, no tokens, no proxies.
    return {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _launch(
    root: Path,
    work: Path,
    token: bytes,
    timeout: float,
    limits: Limits,
    audit_guard: bool,
    user: tuple[int, int] | None,
) -> tuple[ExecResult, Isolation | None]:
    executable, needed = _interpreter_paths()
    token_read, token_write = os.pipe()
    done_read, done_write = os.pipe()
    report_read, report_write = os.pipe()
    os.write(token_write, token)
    os.close(token_write)
    config = {
        "program": str(root / "program.py"),
        "work": str(work),
        "expose": needed + [str(root)],
        "user": user,
        "limits": [limits.cpu_seconds, limits.memory_bytes, limits.file_size_bytes, limits.max_processes],
        "token_fd": token_read,
        "done_fd": done_write,
        "report_fd": report_write,
        "guard": audit_guard,
    }
    try:
        process = _start(executable, config, work)
    finally:
        for fd in (token_read, done_write, report_write):
            os.close(fd)
    pipes = [
        _Pipe("stdout", process.stdout.fileno(), limits.output_bytes, bytearray()),
        _Pipe("stderr", process.stderr.fileno(), limits.output_bytes, bytearray()),
        _Pipe("done", done_read, _REPORT_BYTES, bytearray()),
        _Pipe("report", report_read, _REPORT_BYTES, bytearray()),
    ]
    try:
        timed_out = _drain(process, pipes, time.monotonic() + timeout)
    finally:
        returncode = _stop(process)
        process.stdout.close()
        process.stderr.close()
        os.close(done_read)
        os.close(report_read)
    return _outcome(pipes, timed_out, returncode, token, timeout, limits)


def _start(executable: str, config: dict, work: Path) -> subprocess.Popen:
    return subprocess.Popen(
        # -I: ignore PYTHON* variables, user site and cwd; -S: no site-packages;
        # -B: the launcher runs as root and must not write bytecode beside the stdlib.
        [executable, "-I", "-S", "-B", "-c", _LAUNCHER, json.dumps(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=work,
        env=_scrubbed_env(work),
        start_new_session=True,
        pass_fds=(config["token_fd"], config["done_fd"], config["report_fd"]),
    )


def _outcome(
    pipes: list[_Pipe], timed_out: bool, returncode: int, token: bytes, timeout: float, limits: Limits
) -> tuple[ExecResult, Isolation | None]:
    stdout, stderr, done, report = pipes
    isolation = _parse_report(bytes(report.data))
    overflow = next((pipe.name for pipe in (stdout, stderr) if pipe.overflowed), None)
    if overflow is not None:
        return ExecResult("crashed", f"output limit: more than {limits.output_bytes} bytes on {overflow}"), isolation
    if timed_out:
        return ExecResult("timeout", f"still running after {timeout:g} s (wall clock)"), isolation
    if isolation is None:
        raise SandboxError(f"the sandbox launcher failed (exit {returncode}): {_tail(stderr.data)}")
    return _classify(returncode, bytes(done.data) == token, stderr.data), isolation


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

    SIGTERM asks the launcher to SIGKILL its child and reap it, so the PID namespace is torn
    down and reaped before we return (killed first, its zombies would wait for the machine's
    init and count against the sandbox user's process limit). Then SIGKILL the whole group:
    stragglers, or the launcher itself if it did not finish in time.
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


def _classify(returncode: int, ran_to_end: bool, stderr: bytearray) -> ExecResult:
    if returncode < 0:
        detail = f"killed by {_signal_name(-returncode)}"
        meaning = _SIGNAL_MEANING.get(-returncode)
        detail += f" ({meaning})" if meaning else ""
        tail = _tail(stderr)
        return ExecResult("crashed", detail + (f": {tail}" if tail else ""))
    if returncode == 0 and ran_to_end:
        return ExecResult("passed", "")
    if returncode == 0:
        return ExecResult("failed", "exited before its end (sys.exit or os._exit before the checks finished)")
    return ExecResult("failed", _tail(stderr) or f"exit code {returncode}")


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _tail(data: bytes | bytearray) -> str:
    """The last non-empty line of a program's stderr, shortened: usually the exception."""
    lines = [line.strip() for line in bytes(data).decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    return last if len(last) <= _DETAIL_CHARS else last[: _DETAIL_CHARS - 3] + "..."


def _parse_report(data: bytes) -> Isolation | None:
    if not data:
        return None
    report = json.loads(data)
    return Isolation(
        uid=report["uid"],
        namespaces=report["namespaces"],
        read_only_mounts=report["read_only"],
        notes=tuple(report["notes"]),
    )


# ----------------------------------------------------------------------------------------
# The launcher: trusted code run by the child interpreter (`python -I -S -B -c`), so it may
# import only the standard library. argv[1] is the JSON config built by `_launch`.

_LAUNCHER = r'''
import ctypes, errno, json, os, re, resource, signal, stat, sys

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 0x400, 0x800, 0x1000, 0x4000
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 0x40000, 0x200000, 0x1000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
# Per-mount flags a read-only remount must keep (mountinfo option -> mount flag).
KEPT = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
        "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}


def call(libc, name, *args):
    """Call a libc function; raise OSError with errno when it fails."""
    function = getattr(libc, name, None)
    if function is None:
        raise OSError(0, name + " is not available in this C library")
    if function(*args) != 0:
        error = ctypes.get_errno()
        raise OSError(error, name + ": " + os.strerror(error))


def mount(libc, source, target, fstype, flags, data=None):
    encode = lambda text: None if text is None else os.fsencode(text)
    call(libc, "mount", encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data))


def unshare_namespaces(libc, notes):
    """New network, mount and PID namespaces for our next child, or none at all."""
    try:
        call(libc, "unshare", CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID)
    except OSError as error:
        notes.append("no namespaces: " + str(error))
        return False
    return True


def ancestors(path):
    """path and every folder above it, from the top down."""
    parts = path.strip("/").split("/")
    return ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts)) if parts[0]]


def first_unreachable(path):
    """The topmost folder on the way to path that other users may not enter, or None."""
    for folder in ancestors(path):
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            return folder
    return None


def expose(libc, paths):
    """Inside our mount namespace, make paths reachable by anyone at the same place: hide an
    unreachable folder above them under an empty tmpfs and bind each path back."""
    blocked = {path: first_unreachable(path) for path in paths}
    blocked = {path: top for path, top in blocked.items() if top is not None and top != path}
    handles = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in blocked}
    hidden = set()
    for path, top in sorted(blocked.items()):
        if top not in hidden:
            mount(libc, "tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
            hidden.add(top)
        os.makedirs(path, mode=0o755, exist_ok=True)
        mount(libc, "/proc/self/fd/%d" % handles[path], path, None, MS_BIND | MS_REC)
        os.close(handles[path])


def remount_read_only(libc, keep, notes):
    """Remount every mount read-only (in our namespace only), except the folder keep."""
    with open("/proc/self/mountinfo") as info:
        lines = info.read().splitlines()
    unescape = lambda text: re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)
    options = {}
    for line in lines:  # later lines are mounted on top of earlier ones at the same place
        fields = line.split()
        options[unescape(fields[4])] = fields[5].split(",")
    complete = True
    for target, opts in options.items():
        if target == keep:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for option in opts:
            flags |= KEPT.get(option, 0)
        try:
            mount(libc, None, target, None, flags)
        except OSError as error:
            if error.errno == errno.ENOENT:
                continue  # hidden under a tmpfs by expose(): unreachable, nothing to protect
            notes.append("left writable: %s (%s)" % (target, error.strerror))
            complete = False
    return complete


def set_limits(cpu, memory, file_size, processes):
    def cap(kind, soft, hard):
        _, current = resource.getrlimit(kind)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(kind, (soft, hard))
    cap(resource.RLIMIT_CORE, 0, 0)
    cap(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU first, SIGKILL a second later
    cap(resource.RLIMIT_AS, memory, memory)
    cap(resource.RLIMIT_FSIZE, file_size, file_size)
    cap(resource.RLIMIT_NPROC, processes, processes)


def drop_user(user, paths, notes):
    """Become the sandbox user if every path the program needs is reachable by it."""
    if user is None:
        notes.append("not started as root: the program keeps uid %d" % os.getuid())
        return
    unreachable = [path for path in paths if first_unreachable(path) is not None]
    if unreachable:
        notes.append("kept uid 0: %s is not reachable by uid %d and there is no mount namespace to fix it"
                     % (unreachable[0], user[0]))
        return
    os.setgroups([])
    os.setgid(user[1])
    os.setuid(user[0])


def confine(config, libc, namespaces, notes):
    """Everything between fork and the program; returns the report for the harness."""
    parent = os.getppid()
    work = config["work"]
    read_only = False
    if namespaces:
        mount(libc, None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks out
        expose(libc, config["expose"])
        mount(libc, work, work, None, MS_BIND)  # its own mount, so it stays writable
        read_only = remount_read_only(libc, work, notes)
        mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(work)  # enter the new mount of work, not the old (now read-only) one
    set_limits(*config["limits"])
    drop_user(config["user"], config["expose"], notes)
    call(libc, "prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    # After the uid change, which clears it: die when the launcher dies.
    call(libc, "prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        raise OSError(0, "the launcher died during setup")
    return {"uid": os.getuid(), "namespaces": namespaces, "read_only": read_only, "notes": notes}


def guard(work):
    """An audit hook: defence in depth, not a security boundary (see execution.py)."""
    denied = frozenset((
        "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
        "subprocess.Popen", "os.kill", "os.killpg", "os.setns", "os.unshare",
        "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
        "socket.getaddrinfo", "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function",
        "resource.setrlimit", "resource.prlimit",
    ))
    # event -> (positions of path arguments, position of dir_fd or None)
    paths = {
        "os.remove": ((0,), 1), "os.rmdir": ((0,), 1), "os.rename": ((0, 1), None),
        "shutil.rmtree": ((0,), None), "os.chmod": ((0,), 2), "os.chown": ((0,), 3),
        "os.truncate": ((0,), None), "os.link": ((0, 1), None), "os.symlink": ((1,), 2),
        "os.mkdir": ((0,), 2), "os.utime": ((0,), 3), "os.setxattr": ((0,), None),
        "os.removexattr": ((0,), None), "os.chflags": ((0,), None),
    }
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    realpath, readlink, fsdecode = os.path.realpath, os.readlink, os.fsdecode

    def inside(path, dir_fd=None):
        if isinstance(path, int):
            return True  # an open descriptor: opening it was checked
        path = fsdecode(path)
        if dir_fd not in (None, -1) and not path.startswith("/"):
            path = readlink("/proc/self/fd/%d" % dir_fd) + "/" + path
        real = realpath(path)
        return real == work or real.startswith(work + "/") or real == "/dev/null"

    def hook(event, args):
        if event in denied:
            raise PermissionError("sandbox: %s is not allowed" % event)
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & writes)
            if writing and not inside(path):
                raise PermissionError("sandbox: writing outside the sandbox folder: %r" % (path,))
        elif event in paths:
            positions, dir_fd_at = paths[event]
            dir_fd = args[dir_fd_at] if dir_fd_at is not None and dir_fd_at < len(args) else None
            for position in positions:
                if not inside(args[position], dir_fd):
                    raise PermissionError("sandbox: %s outside the sandbox folder: %r" % (event, args[position]))

    return hook


def run_program(config, libc, namespaces, notes):
    """The forked child: confine, report, run the program, and write the token if it ended."""
    try:
        token = os.read(config["token_fd"], 64)
        os.close(config["token_fd"])
        with open(config["program"], encoding="utf-8") as file:
            source = file.read()
        report = confine(config, libc, namespaces, notes)
        os.write(config["report_fd"], json.dumps(report).encode())
        os.close(config["report_fd"])
    except Exception as error:  # a failed setup must end this forked copy here
        os.write(2, ("llama-eval sandbox: setup failed: %s\n" % error).encode())
        os._exit(125)
    done_fd, guard_on = config["done_fd"], config["guard"]
    del config, libc
    for name in [name for name in sys.modules if name.split(".")[0] == "ctypes"]:
        del sys.modules[name]  # so the program's own `import ctypes` meets the audit hook
    sys.argv = ["program.py"]
    code = compile(source, "program.py", "exec")
    if guard_on:
        sys.addaudithook(guard(os.getcwd()))
    # Like OpenAI's human-eval: not "__main__", so a completion's `if __name__ == "__main__":`
    # demo block (often reading stdin) does not run.
    exec(code, {"__name__": "__program__", "__builtins__": __builtins__})
    os.write(done_fd, token)
    raise SystemExit(0)


def finish_like(status, usage, cpu_limit):
    """Exit the way the child did, so the harness sees its exit code or signal."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum == signal.SIGKILL and usage.ru_utime + usage.ru_stime >= cpu_limit:
            # As PID 1 of its namespace the child ignores the kernel's SIGXCPU at the soft
            # limit and dies of SIGKILL at the hard one: report what it ran into.
            signum = signal.SIGXCPU
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        os._exit(128 + signum)
    os._exit(os.waitstatus_to_exitcode(status))


def main():
    config = json.loads(sys.argv[1])
    os.umask(0o022)
    libc = ctypes.CDLL(None, use_errno=True)
    notes = []
    namespaces = unshare_namespaces(libc, notes)
    child = os.fork()  # in a new PID namespace, the child is its PID 1
    if child == 0:
        run_program(config, libc, namespaces, notes)  # leaves by exiting, never returns
    def stop(signum, frame):
        """The harness's SIGTERM means "stop": kill the child, and still reap it below."""
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already reaped: we are about to exit anyway

    signal.signal(signal.SIGTERM, stop)
    for fd in (config["token_fd"], config["done_fd"], config["report_fd"]):
        os.close(fd)
    _, status, usage = os.wait4(child, 0)
    finish_like(status, usage, config["limits"][0])


main()
'''
