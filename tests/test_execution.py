"""The sandbox for model-written code: real HumanEval, hostile programs, `execute` end to end.

Hostile programs run twice where it matters: through `check_program` (all layers) and with the
audit hook left out (`_run_sandboxed(..., audit_guard=False)`), which shows that the kernel
layers (uid, namespaces, rlimits) hold on their own wherever this machine provides them.
"""

from __future__ import annotations

import gzip
import itertools
import json
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
from llama_eval.execution import ExecResult, Limits, check_many, check_program

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
    command = ["unshare", "--net", "--mount", "--pid", "--fork", "true"]
    return subprocess.run(command, capture_output=True).returncode == 0


def run_without_guard(program: str, timeout: float = 3.0, limits: Limits | None = None) -> ExecResult:
    result, _ = execution._run_sandboxed(program, timeout, limits or Limits(), audit_guard=False)
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
    "CPU burn": ("while True:\n    pass\n", 6.0, Limits(cpu_seconds=1), "crashed", "SIGXCPU"),
    "fork bomb": ("import os\nwhile True:\n    os.fork()\n", 3.0, Limits(), "failed", "os.fork"),
    "memory bomb": (
        "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))\n",
        5.0,
        Limits(memory_bytes=256 << 20),
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
    "kill parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nassert False\n", 3.0, Limits(), "failed", ""),
    "kill own group": ("import os, signal\nos.killpg(0, signal.SIGKILL)\nassert False\n", 3.0, Limits(), "failed", ""),
    "sys.exit(0)": ("import sys\nsys.exit(0)\nassert False\n", 3.0, Limits(), "failed", "exited before"),
    "os._exit(0)": ("import os\nos._exit(0)\n", 3.0, Limits(), "failed", "exited before"),
    "ctypes": ("import ctypes\nctypes.CDLL(None).getpid()\n", 3.0, Limits(), "failed", "ctypes"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_program_ends_as_a_result(name):
    program, timeout, limits, status, detail = HOSTILE[name]
    result, seconds = timed(check_program, program, timeout=timeout, limits=limits)
    assert result.status == status, result
    assert detail in result.detail
    assert seconds < timeout + 1.5


def test_killing_the_harness_fails_and_the_harness_lives(isolation):
    program = f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)\nassert False\n"
    assert check_program(program).status == "failed"  # and this test is still running
    # Without the hook, only another uid or a PID namespace protects us (else we would die).
    if isolation.namespaces or isolation.uid != os.geteuid():
        assert run_without_guard(program).status == "failed"


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
    (folder / "sub").mkdir()
    (folder / "sub" / "other.txt").write_text("also precious")
    before = snapshot(folder)
    for name, attack in file_attacks(folder).items():
        result = run(attack + "assert False, 'the attack was not stopped'\n")
        assert result.status == "failed", (name, result)
        assert "the attack was not stopped" not in result.detail, name
        assert snapshot(folder) == before, name


def test_files_outside_the_folder_stay_unchanged(tmp_path):
    assert_attacks_fail(check_program, tmp_path)


def test_files_outside_stay_unchanged_without_the_audit_hook(tmp_path, isolation):
    if isolation.uid == 0 and not isolation.read_only_mounts:
        pytest.skip(f"no kernel file protection on this machine: {isolation.notes}")
    assert_attacks_fail(run_without_guard, tmp_path)


def test_no_new_files_in_shared_temporary_folders(isolation):
    targets = [Path(tempfile.gettempdir()) / f"llama-eval-escape-{uuid.uuid4().hex}", Path("/dev/shm") / f"escape-{uuid.uuid4().hex}"]
    runs = [check_program] + ([run_without_guard] if isolation.read_only_mounts else [])
    for run in runs:
        for target in targets:
            assert run(f"open({str(target)!r}, 'w').write('x')\n").status == "failed"
            assert not target.exists()


def test_cleanup_reopens_locked_folders_but_never_follows_links(tmp_path):
    """Without root, a program's chmod 000 would make its folder undeletable."""
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o555)
    work = tmp_path / "work"
    (work / "locked" / "deeper").mkdir(parents=True)
    (work / "locked" / "deeper").chmod(0o000)
    (work / "locked").chmod(0o000)
    (work / "link").symlink_to(outside)
    execution._make_removable(work)
    assert (work / "locked").stat().st_mode & 0o777 == 0o700
    assert (work / "locked" / "deeper").stat().st_mode & 0o777 == 0o700
    assert outside.stat().st_mode & 0o777 == 0o555


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


def nobody_processes() -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue  # it ended while we looked
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        count += uid_line.split()[1] == str(NOBODY)
    return count


def test_fork_bomb_is_bounded_by_the_process_limit(isolation):
    """Without the audit hook, only RLIMIT_NPROC holds the bomb: it applies to `nobody`, not root."""
    if isolation.uid != NOBODY:
        pytest.skip(f"programs do not run as nobody here: {isolation.notes}")
    baseline = nobody_processes()
    counts = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            counts.append(nobody_processes())
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
    assert 2 <= max(counts) - baseline <= 16
    if not isolation.namespaces:  # killed processes wait for the machine's init to reap them
        deadline = time.monotonic() + 2
        while nobody_processes() > baseline and time.monotonic() < deadline:
            time.sleep(0.05)
    assert nobody_processes() == baseline  # nothing of the bomb survives, not even a zombie


def test_isolation_layers_match_what_the_kernel_allows(isolation):
    if not kernel_namespaces_work():
        pytest.skip("util-linux unshare cannot make namespaces here")
    assert isolation.namespaces and isolation.read_only_mounts
    assert isolation.notes == ()
    if os.geteuid() == 0:
        assert isolation.uid == NOBODY
    # Seen from inside, without the audit hook.
    inside = (
        "import errno, os\n"
        "assert os.getpid() == 1\n"
        "interfaces = [line.split(':')[0].strip() for line in open('/proc/self/net/dev').read().splitlines()[2:]]\n"
        "assert interfaces == ['lo'], interfaces\n"
        "assert [name for name in os.listdir('/proc') if name.isdigit()] == ['1']\n"
        f"assert os.getuid() == {isolation.uid}\n"
        "assert 'NoNewPrivs:\\t1' in open('/proc/self/status').read()\n"
        "try:\n"
        "    open('/var/tmp/llama-eval-probe', 'w')\n"
        "except OSError as error:\n"
        "    assert error.errno == errno.EROFS, error\n"
        "else:\n"
        "    raise AssertionError('wrote outside the sandbox')\n"
        "open('inside.txt', 'w').write('the working folder is writable')\n"
    )
    assert run_without_guard(inside) == ExecResult("passed", "")


# ---------------------------------------------------------------------------------------
# HumanEval


def test_canonical_humaneval_solutions_pass(shared_data):
    problems = execution.load_humaneval_problems(shared_data / "humaneval" / "HumanEval.jsonl.gz")
    assert len(problems) == 164
    programs = [execution.humaneval_program(p, p["canonical_solution"]) for p in problems.values()]
    results = check_many(programs, timeout=10, workers=2)
    assert {task: r for task, r in zip(problems, results) if r.status != "passed"} == {}


def test_humaneval_with_the_body_removed_fails(shared_data):
    problems = execution.load_humaneval_problems(shared_data / "humaneval" / "HumanEval.jsonl.gz")
    programs = [execution.humaneval_program(p, "    pass\n") for p in problems.values()]
    results = check_many(programs, timeout=10, workers=2)
    assert [task for task, r in zip(problems, results) if r.status != "failed"] == []


# ---------------------------------------------------------------------------------------
# `llama-eval execute`: samples in, results and pass@k out

TOY_PROBLEMS = [
    {
        "task_id": "Toy/0",
        "prompt": "def add(a, b):\n",
        "entry_point": "add",
        "canonical_solution": "    return a + b\n",
        "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    },
    {
        "task_id": "Toy/1",
        "prompt": "def negate(x):\n",
        "entry_point": "negate",
        "canonical_solution": "    return -x\n",
        "test": "def check(candidate):\n    assert candidate(4) == -4\n",
    },
]
TOY_SAMPLES = [
    ("Toy/0", "    return a + b\n", "passed"),
    ("Toy/1", "    return x\n", "failed"),
    ("Toy/0", "    return a - b\n", "failed"),
    ("Toy/1", "    import sys\n    sys.exit(0)\n", "failed"),
    ("Toy/0", "    return b + a\n", "passed"),
    ("Toy/1", "    return -x\n", "passed"),
    ("Toy/1", "    return 0 - x\n", "passed"),
]


def write_jsonl(path: Path, rows: list[dict], compress: bool = False) -> Path:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if compress:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def brute_force_pass_at_k(outcomes: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(subset) for subset in subsets) / len(subsets)


def test_execute_samples_writes_results_and_pass_at_k(tmp_path):
    problems = execution.load_humaneval_problems(write_jsonl(tmp_path / "problems.jsonl.gz", TOY_PROBLEMS, compress=True))
    samples = write_jsonl(tmp_path / "samples.jsonl", [{"task_id": t, "completion": c} for t, c, _ in TOY_SAMPLES])
    output = tmp_path / "out" / "results.jsonl"
    scores = execution.execute_samples(samples, problems, output, ks=(1, 2, 3, 4), timeout=5, workers=2)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["task_id"], r["completion"], r["status"]) for r in rows] == TOY_SAMPLES
    assert all(set(r) == {"task_id", "completion", "status", "detail"} for r in rows)
    per_task = {"Toy/0": [True, False, True], "Toy/1": [False, False, True, True]}
    assert set(scores) == {"pass@1", "pass@2", "pass@3"}  # Toy/0 has only 3 samples
    for k in (1, 2, 3):
        expected = 100 * sum(brute_force_pass_at_k(o, k) for o in per_task.values()) / len(per_task)
        assert scores[f"pass@{k}"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"samples.jsonl:2: not valid JSON"),
        ('["Toy/0"]', r"samples.jsonl:2: expected a JSON object"),
        ('{"task_id": "Toy/0"}', r"samples.jsonl:2: missing field 'completion'"),
        ('{"completion": "x"}', r"samples.jsonl:2: missing field 'task_id'"),
        ('{"task_id": "Toy/0", "completion": 3}', r"samples.jsonl:2: field 'completion' must be a string"),
        ('{"task_id": "Toy/9", "completion": "x"}', r"samples.jsonl:2: task_id 'Toy/9' is not a known problem"),
    ],
)
def test_bad_sample_lines_name_file_line_and_field(tmp_path, line, message):
    problems = {p["task_id"]: p for p in TOY_PROBLEMS}
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"task_id": "Toy/0", "completion": "    return a + b\n"}) + "\n" + line + "\n")
    with pytest.raises(UserError, match=message):
        execution.execute_samples(samples, problems, tmp_path / "out.jsonl")


def test_bad_inputs_to_execute_are_user_errors(tmp_path):
    problems = {p["task_id"]: p for p in TOY_PROBLEMS}
    with pytest.raises(UserError, match="does not exist"):
        execution.execute_samples(tmp_path / "missing.jsonl", problems, tmp_path / "out.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(UserError, match="holds no samples"):
        execution.execute_samples(tmp_path / "empty.jsonl", problems, tmp_path / "out.jsonl")
    with pytest.raises(UserError, match="positive integer k"):
        execution.execute_samples(tmp_path / "empty.jsonl", problems, tmp_path / "out.jsonl", ks=(0,))
    broken = write_jsonl(tmp_path / "problems.jsonl", [{"task_id": "Toy/0", "prompt": "def f():\n"}])
    with pytest.raises(UserError, match="problems.jsonl:1: missing field 'entry_point'"):
        execution.load_humaneval_problems(broken)
