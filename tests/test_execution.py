"""The sandbox for model-written code: ordinary outcomes, hostile programs, verdicts that cannot
be forged, samples that break the harness, real HumanEval (`execute` end to end:
test_execute.py).

Hostile programs run twice where it matters: through `check_program` (all layers) and with the
audit hook left out (`run_sandboxed(..., audit_guard=False)`), which shows that the kernel
layers (namespaces, uid, seccomp, rlimits) hold on their own wherever this machine provides
them. test_sandbox_modes.py runs a battery of attacks as root, as root without CAP_SYS_ADMIN
and as an unprivileged user; test_sandbox_parts.py tests the helpers.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from llama_eval import execution
from llama_eval.errors import UserError
from llama_eval.execution import Check, ExecResult, Limits, check_many, check_program
from llama_eval.tasks import humaneval

NOBODY = 65534


@pytest.fixture(autouse=True)
def no_sandbox_folder_left():
    """Every test: the sandbox folders this process made are gone afterwards."""
    yield
    pattern = f"llama-eval-sandbox-{os.getpid()}-*"
    assert list(Path(tempfile.gettempdir()).glob(pattern)) == []


@pytest.fixture(scope="module")
def isolation() -> execution.Isolation:
    return execution.probe_isolation()


def kernel_namespaces_work() -> bool:
    """Independent of our code: can util-linux's unshare make the same namespaces here?"""
    if shutil.which("unshare") is None:
        return False
    command = ["unshare", "--user", "--map-root-user", "--net", "--mount", "--pid", "--ipc", "--fork", "true"]
    return subprocess.run(command, capture_output=True).returncode == 0


def run_without_guard(program: str | Check, timeout: float = 3.0, limits: Limits | None = None) -> ExecResult:
    check = program if isinstance(program, Check) else Check(program)
    result, _ = execution.run_sandboxed(check, timeout, limits or Limits(), allow_unsandboxed=False, audit_guard=False)
    return result


def timed(run, *args, **kwargs) -> tuple[ExecResult, float]:
    start = time.monotonic()
    result = run(*args, **kwargs)
    return result, time.monotonic() - start


# ---------------------------------------------------------------------------------------
# Ordinary outcomes


def test_outcomes_of_ordinary_programs():
    assert check_program("assert 1 + 1 == 2\n") == ExecResult("passed", "")
    assert check_program("assert 1 + 1 == 3\n") == ExecResult("failed", "AssertionError")
    assert check_program("raise ValueError('boom')\n") == ExecResult("failed", "ValueError: boom")
    assert check_program("def f(:\n").detail.startswith("SyntaxError")
    assert check_program("import sys\nsys.exit(3)\n") == ExecResult("failed", "exit code 3")


def test_exiting_before_the_checks_is_a_failure():
    for program in ("import sys\nsys.exit(0)\nassert False\n", "import os\nos._exit(0)\nassert False\n"):
        result = check_program(program)
        assert result.status == "failed"
        assert "exited before its end" in result.detail


def test_main_guard_of_a_completion_does_not_run():
    # As in OpenAI's harness: the program is not __main__, so a demo block reading stdin is inert.
    assert check_program("if __name__ == '__main__':\n    input()\n").status == "passed"


def test_check_many_keeps_input_order():
    programs = [
        "import time\ntime.sleep(0.4)\n",
        "assert False\n",
        "pass\n",
        "raise KeyError('k')\n",
        "import time\ntime.sleep(0.1)\nassert False\n",
    ]
    statuses = [result.status for result in check_many(programs, timeout=5, workers=3)]
    assert statuses == ["passed", "failed", "passed", "failed", "failed"]


def test_limits_and_permission_are_validated():
    with pytest.raises(UserError, match="cpu_seconds"):
        Limits(cpu_seconds=0)
    with pytest.raises(UserError, match="--allow-code-execution"):
        execution.require_permission(False)
    execution.require_permission(True)


# ---------------------------------------------------------------------------------------
# Hostile programs, all layers on: each ends as a non-passed result within its limit


HOSTILE = {
    "infinite loop": ("while True:\n    pass\n", 2.0, Limits(), "timeout", "still running"),
    "sleep forever": ("import time\ntime.sleep(60)\n", 2.0, Limits(), "timeout", "still running"),
    "CPU burn": ("while True:\n    pass\n", 15.0, Limits(cpu_seconds=1), "crashed", "SIGXCPU"),
    "fork bomb": ("import os\nwhile True:\n    os.fork()\n", 3.0, Limits(), "failed", "os.fork"),
    "memory bomb": (
        "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))\n",
        5.0,
        Limits(memory_bytes=1 << 30),
        "failed",
        "MemoryError",
    ),
    "huge file": (
        "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * (1 << 20))\n",
        5.0,
        Limits(file_size_bytes=1 << 20),
        "failed",
        "File too large",
    ),
    "stdout flood": ("while True:\n    print('x' * 1000)\n", 5.0, Limits(output_bytes=1 << 16), "crashed", "stdout"),
    "stderr flood": (
        "import sys\nwhile True:\n    sys.stderr.write('y' * 1000)\n",
        5.0,
        Limits(output_bytes=1 << 16),
        "crashed",
        "stderr",
    ),
    "kill parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nassert False\n", 3.0, Limits(), "failed",
                    "os.kill is not allowed"),
    "kill own group": ("import os, signal\nos.killpg(0, signal.SIGKILL)\nassert False\n", 3.0, Limits(), "failed",
                       "os.killpg is not allowed"),
    "sys.exit(0)": ("import sys\nsys.exit(0)\nassert False\n", 3.0, Limits(), "failed", "exited before"),
    "os._exit(0)": ("import os\nos._exit(0)\n", 3.0, Limits(), "failed", "exited before"),
    "ctypes": ("import ctypes\nctypes.CDLL(None).getpid()\n", 3.0, Limits(), "failed", "ctypes"),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "CPU burn" else n for n in HOSTILE])
def test_hostile_program_ends_as_a_result(name):
    program, timeout, limits, status, detail = HOSTILE[name]
    result, seconds = timed(check_program, program, timeout=timeout, limits=limits)
    assert result.status == status, result
    assert detail in result.detail
    assert seconds < timeout + 1.5


def test_killing_the_harness_fails_and_the_harness_lives(isolation):
    signals = [f"os.kill({os.getpid()}, signal.SIGKILL)", "os.killpg(os.getpgid(0), signal.SIGKILL)",
               f"signal.pidfd_send_signal(os.pidfd_open({os.getpid()}), signal.SIGKILL)", "os.kill(-1, signal.SIGKILL)"]
    for line in signals:
        program = f"import os, signal\n{line}\nassert False\n"
        assert check_program(program).status == "failed"  # and this test is still running
        # Without the hook, only another uid or a PID namespace protects us (else we would die).
        if isolation.namespaces or isolation.uid != os.geteuid():
            assert run_without_guard(program).status == "failed", line


# ---------------------------------------------------------------------------------------
# Files outside the sandbox folder


def snapshot(folder: Path) -> dict[str, tuple]:
    state = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() else None
        state[str(path.relative_to(folder))] = (info.st_mode, info.st_mtime_ns, content)
    return state


def file_attacks(folder: Path) -> dict[str, str]:
    sentinel = folder / "sentinel.txt"
    return {
        "remove": f"import os\nos.remove({str(sentinel)!r})\n",
        "overwrite": f"open({str(sentinel)!r}, 'w').write('pwned')\n",
        "append": f"open({str(sentinel)!r}, 'a').write('pwned')\n",
        "rename": f"import os\nos.rename({str(sentinel)!r}, {str(sentinel) + '.moved'!r})\n",
        "truncate": f"import os\nos.truncate({str(sentinel)!r}, 0)\n",
        "chmod": f"import os\nos.chmod({str(sentinel)!r}, 0o777)\n",
        "rmtree": f"import shutil\nshutil.rmtree({str(folder)!r})\n",
        "create beside": f"open({str(folder / 'new.txt')!r}, 'w').write('x')\n",
        "through a symlink": f"import os\nos.symlink({str(folder)!r}, 'link')\nopen('link/sentinel.txt', 'w').write('x')\n",
    }


def assert_attacks_fail(run, folder: Path) -> None:
    (folder / "sentinel.txt").write_text("precious")
    (folder / "sentinel.txt").chmod(0o666)
    (folder / "sub").mkdir()
    (folder / "sub" / "other.txt").write_text("also precious")
    before = snapshot(folder)
    for name, attack in file_attacks(folder).items():
        result = run(attack + "assert False, 'the attack was not stopped'\n")
        assert result.status == "failed", (name, result)
        assert "the attack was not stopped" not in result.detail, name
        assert snapshot(folder) == before, name


@pytest.fixture
def open_folder():
    """A world-writable folder beside the checkout: outside every folder the sandbox hides, so
    only read-only mounts (or the audit hook) protect it."""
    folder = Path(__file__).resolve().parents[1] / f".sandbox-target-{uuid.uuid4().hex}"
    folder.mkdir()
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder)


def test_files_outside_the_folder_stay_unchanged(tmp_path, open_folder):
    assert_attacks_fail(check_program, tmp_path)
    assert_attacks_fail(check_program, open_folder)


def test_files_outside_stay_unchanged_without_the_audit_hook(tmp_path, open_folder, isolation):
    if not isolation.read_only_mounts:
        pytest.skip(f"no read-only mounts on this machine: {isolation.notes}")
    assert_attacks_fail(run_without_guard, tmp_path)
    assert_attacks_fail(run_without_guard, open_folder)


def test_no_new_files_in_shared_temporary_folders(isolation):
    targets = [Path(tempfile.gettempdir()) / f"llama-eval-escape-{uuid.uuid4().hex}", Path("/dev/shm") / f"escape-{uuid.uuid4().hex}"]
    runs = [check_program] + ([run_without_guard] if isolation.namespaces else [])
    for run in runs:
        for target in targets:
            # Inside, /tmp and /dev/shm are fresh tmpfs: the write may work there, never here.
            run(f"open({str(target)!r}, 'w').write('x')\n")
            assert not target.exists()


# ---------------------------------------------------------------------------------------
# Network and processes


def assert_cannot_connect(run) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        result = run(program)
        assert result.status == "failed", result
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()


def test_no_connection_to_a_local_listener():
    assert_cannot_connect(check_program)


def test_no_connection_without_the_audit_hook(isolation):
    if not isolation.namespaces:
        pytest.skip(f"no network namespace on this machine: {isolation.notes}")
    assert_cannot_connect(run_without_guard)


def test_no_connection_to_a_world_writable_unix_socket(open_folder, isolation):
    if not isolation.seccomp:
        pytest.skip(f"no seccomp filter here: {isolation.notes}")
    path = open_folder / "host.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        path.chmod(0o777)
        listener.listen()
        program = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(path)!r})\n"
        assert run_without_guard(program).detail == "PermissionError: [Errno 1] Operation not permitted"
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()


def sandbox_processes(uid: int | None = None) -> int:
    """Processes of this checkout's sandbox (their command line names its launcher), of `uid` if given."""
    count = 0
    launcher = str(execution.harness.LAUNCHER).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue  # it ended while we looked
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        count += launcher in cmdline and (uid is None or uid_line.split()[1] == str(uid))
    return count


def test_fork_bomb_is_bounded_by_the_process_limit(isolation):
    """Without the audit hook, only RLIMIT_NPROC holds the bomb (counted in the sample's own user
    namespace; for `nobody` on the whole machine where there is none)."""
    if isolation.uid != NOBODY:
        pytest.skip(f"programs do not run as nobody here: {isolation.notes}")
    baseline = sandbox_processes()
    counts = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            counts.append(sandbox_processes(NOBODY))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    bomb = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n"
    try:
        result, seconds = timed(run_without_guard, bomb, timeout=2.0, limits=Limits(max_processes=16))
    finally:
        stop.set()
        watcher.join()
    assert result.status == "timeout"
    assert seconds < 3.5
    assert 2 <= max(counts) <= 16
    if not isolation.namespaces:  # killed processes wait for the machine's init to reap them
        deadline = time.monotonic() + 2
        while sandbox_processes() > baseline and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sandbox_processes() == baseline  # nothing of the bomb survives, not even a zombie


def test_isolation_layers_match_what_the_kernel_allows(isolation):
    if not kernel_namespaces_work():
        pytest.skip("util-linux unshare cannot make the same namespaces here")
    assert (isolation.mode, isolation.namespaces, isolation.read_only_mounts, isolation.seccomp) == ("user", True, True, True)
    assert isolation.uid == (NOBODY if os.geteuid() == 0 else os.geteuid())
    assert isolation.describe().startswith("sandbox: user namespace, mount+PID+network+IPC namespaces")
    # Seen from inside, without the audit hook.
    inside = (
        "import errno, os, threading\n"
        "assert os.getpid() == 1 and os.getuid() == 65534\n"
        "interfaces = [line.split(':')[0].strip() for line in open('/proc/self/net/dev').read().splitlines()[2:]]\n"
        "assert interfaces == ['lo'], interfaces\n"
        "assert [name for name in os.listdir('/proc') if name.isdigit()] == ['1']\n"
        "status = open('/proc/self/status').read()\n"
        "assert 'NoNewPrivs:\\t1' in status and 'Seccomp:\\t2' in status, status\n"
        "assert 'CapEff:\\t0000000000000000' in status and 'CapBnd:\\t0000000000000000' in status, status\n"
        "assert os.listdir('/home') == [] and os.listdir('/run') == []\n"
        "assert os.listdir('/dev/shm') == [] and os.listdir('/var/tmp') == []\n"
        "for path in ('/usr/llama-eval-probe', '/etc/llama-eval-probe', '/root/probe'):\n"
        "    try:\n"
        "        open(path, 'w')\n"
        "    except OSError as error:\n"
        "        assert error.errno == errno.EROFS, error\n"
        "    else:\n"
        "        raise AssertionError('wrote outside the sandbox')\n"
        "open('inside.txt', 'w').write('the working folder is writable')\n"
        "open('/tmp/x', 'w').write('so is a fresh /tmp')\n"
        "thread = threading.Thread(target=print)\n"
        "thread.start()\n"
        "thread.join()\n"
    )
    assert run_without_guard(inside) == ExecResult("passed", "")
    if os.geteuid() == 0:  # the mode of machines where user namespaces are disabled
        result, root_mode = execution.run_sandboxed(Check(inside), 5, Limits(), False, audit_guard=False, modes=("root",))
        assert result == ExecResult("passed", "") and (root_mode.mode, root_mode.uid) == ("root", NOBODY)


# ---------------------------------------------------------------------------------------
# Verdicts: decided by the checker, on plain values


ADD = Check("def add(a, b):\n    return a + b\n", test="assert add(2, 3) == 5\nassert add((1,), (2,)) == (1, 2)\n",
            names=("add",))


def with_candidate(candidate: str) -> Check:
    return Check(candidate, test=ADD.test, names=ADD.names)


def test_checks_pass_and_fail_on_values():
    assert check_program(ADD) == ExecResult("passed", "")
    assert check_program(with_candidate("def add(a, b):\n    return a - b\n")) == ExecResult("failed", "AssertionError")
    raised = check_program(with_candidate("def add(a, b):\n    raise KeyError('k')\n"))
    assert raised == ExecResult("failed", "add raised KeyError: 'k'")
    missing = check_program(with_candidate("def plus(a, b):\n    return a + b\n"))
    assert missing == ExecResult("failed", "NameError: name 'add' is not defined")


ALWAYS_EQUAL = (
    "class Anything:\n"
    "    __eq__ = __le__ = __ge__ = lambda self, other: True\n"
    "    __ne__ = __lt__ = __gt__ = lambda self, other: False\n"
    "    __hash__ = lambda self: 0\n"
    "    __bool__ = lambda self: True\n"
    "def add(a, b):\n"
    "    return Anything()\n"
)
SNEAKY_INT = "class N(int):\n    __eq__ = lambda self, other: True\ndef add(a, b):\n    return N(0)\n"
# The forgery, aimed at this design too: write a ready message, answers and a verdict
# into every descriptor and every integer the caller's frames hold, then leave.
FORGED = (
    "import os, sys\n"
    "fds = set(range(3, 64))\n"
    "frame = sys._getframe(1)\n"
    "while frame is not None:\n"
    "    fds |= {v for v in frame.f_locals.values() if type(v) is int and 0 <= v < 1024}\n"
    "    frame = frame.f_back\n"
    "lies = (b'{\"ready\":true}\\n{\"names\":{\"add\":[\"value\",5]}}\\n'\n"
    "        b'{\"passed\":true,\"detail\":\"\",\"reached\":true}\\n')\n"
    "for fd in fds:\n"
    "    try:\n"
    "        os.write(fd, lies)\n"
    "    except OSError:\n"
    "        pass\n"
    "os._exit(0)\n"
)


@pytest.mark.parametrize("candidate", [ALWAYS_EQUAL, SNEAKY_INT, FORGED], ids=["always equal", "int subclass", "forged"])
def test_forged_verdicts_fail(candidate):
    for run in (check_program, run_without_guard):
        result = run(with_candidate(candidate))
        assert result.status == "failed", result


def test_builtins_in_a_test_stay_the_checkers_own():
    cheat = "def set(*args):\n    return 1\ndef f(x):\n    return x\n"
    check = Check(cheat, test="assert set(f([1, 2])) == set([3])\n", names=("f",))
    assert check_program(check).status == "failed"


def test_objects_that_are_not_values_stay_in_the_sandbox_and_are_passed_back_by_name():
    candidate = "class Box:\n    def __init__(self, v):\n        self.v = v\ndef unbox(b):\n    return b.v\nbox = Box(7)\n"
    assert check_program(Check(candidate, test="assert unbox(box) == 7\n", names=("unbox", "box"))).status == "passed"
    assert check_program(Check(candidate, test="assert box.v == 7\n", names=("box",))).status == "failed"


# ---------------------------------------------------------------------------------------
# A sample that breaks the harness is its own result


def test_text_that_is_not_unicode_is_a_failed_sample():
    result = check_program("x = '\ud800'\n")
    assert result.status == "failed" and "not valid Unicode" in result.detail
    assert check_program(Check("def f():\n    return 1\n", test="assert f() == '\ud800'\n", names=("f",))).status == "failed"


def test_harness_errors_become_crashed_results(monkeypatch):
    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    assert check_many(["pass\n", "pass\n"], workers=2) == [
        ExecResult("crashed", "harness: OSError: [Errno 28] No space left on device")] * 2


def test_a_missing_temporary_folder_is_a_crashed_result(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    result = check_program("pass\n")
    assert result.status == "crashed" and "FileNotFoundError" in result.detail


DEEP = ("import os\n"
        "for _ in range(1500):\n"
        "    os.mkdir('d')\n"
        "    os.chdir('d')\n"
        "open('f', 'w').write('x')\n")


@pytest.mark.slow
def test_a_deep_folder_is_removed_in_every_mode():
    assert run_without_guard(DEEP, timeout=20) == ExecResult("passed", "")
    result, isolation = execution.run_sandboxed(Check(DEEP), 20, Limits(), allow_unsandboxed=True, audit_guard=False,
                                                modes=())
    assert result == ExecResult("passed", "") and isolation.mode == "none"  # written to disk, then removed


def test_without_namespaces_code_runs_only_when_allowed(monkeypatch):
    result, isolation = execution.run_sandboxed(Check("pass\n"), 5, Limits(), allow_unsandboxed=False, modes=())
    assert result.status == "crashed" and "--allow-unsandboxed" in result.detail
    assert isolation.mode == "none" and not isolation.namespaces
    assert isolation.describe().startswith("sandbox: NO kernel isolation")
    monkeypatch.setattr(execution.harness, "probe_isolation", lambda **kwargs: isolation)
    with pytest.raises(UserError, match="no kernel isolation .* --allow-unsandboxed"):
        execution.require_isolation(False)
    assert execution.require_isolation(True) is isolation


# ---------------------------------------------------------------------------------------
# HumanEval


@pytest.fixture(scope="module")
def humaneval_problems() -> dict:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "humaneval" / "HumanEval.jsonl.gz"
    if not path.is_file():
        pytest.skip("../shared/data is absent")
    return humaneval.load_problems(path)


@pytest.mark.slow
def test_canonical_humaneval_solutions_pass(humaneval_problems):
    assert len(humaneval_problems) == 164
    checks = [humaneval.humaneval_check(p, p["canonical_solution"]) for p in humaneval_problems.values()]
    results = check_many(checks, timeout=20, workers=2)
    assert {task: r for task, r in zip(humaneval_problems, results) if r.status != "passed"} == {}


ALWAYS_EQUAL_BODY = (
    "    class Anything:\n"
    "        __eq__ = __le__ = __ge__ = lambda self, other: True\n"
    "        __ne__ = __lt__ = __gt__ = lambda self, other: False\n"
    "        __hash__ = lambda self: 0\n"
    "        __bool__ = lambda self: True\n"
    "        __float__ = lambda self: 0.0\n"
    "        __abs__ = __sub__ = __rsub__ = lambda self, *other: 0\n"
    "    return Anything()\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("body", ["    pass\n", ALWAYS_EQUAL_BODY, FORGED.replace("\n", "\n    ").replace("import", "    import", 1)],
                         ids=["body removed", "always equal", "forged"])
def test_humaneval_cheats_fail_every_problem(humaneval_problems, body):
    checks = [humaneval.humaneval_check(p, body) for p in humaneval_problems.values()]
    results = check_many(checks, timeout=20, workers=2)
    assert [task for task, r in zip(humaneval_problems, results) if r.status == "passed"] == []
    assert not [r for r in results if "Error: " in r.detail and "SyntaxError" in r.detail]  # each cheat really ran


def test_a_few_humaneval_problems_pass_and_resist_cheats(humaneval_problems):
    """The fast tier's sample of the slow tests above: problems whose tests use helper functions of
    the prompt (32: poly, 38: encode_cyclic), floats (2) and tuples (8)."""
    chosen = [humaneval_problems[f"HumanEval/{i}"] for i in (2, 8, 32, 38)]
    checks = [humaneval.humaneval_check(p, p["canonical_solution"]) for p in chosen]
    checks += [humaneval.humaneval_check(p, ALWAYS_EQUAL_BODY) for p in chosen]
    statuses = [r.status for r in check_many(checks, timeout=20, workers=2)]
    assert statuses == ["passed"] * 4 + ["failed"] * 4
