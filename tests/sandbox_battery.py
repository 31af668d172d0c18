"""A battery of attacks on the sandbox, run by test_sandbox_modes.py as a separate process in
each mode this machine allows (root, root without CAP_SYS_ADMIN, an unprivileged user).

Usage: python sandbox_battery.py '{"secret_file": ..., "open_folder": ..., "socket": ..., "modes": [...]}'
Prints one JSON line per attack and run: {"attack", "audit_hook", "status", "detail"}, then
{"isolation": ...}. An attack that worked raises an exception whose message starts with
"ESCAPED"; the caller also checks the machine from outside (files, processes, IPC objects).
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from llama_eval import execution
from llama_eval.execution import Check, Limits


def attacks(config: dict) -> dict[str, tuple[str, float]]:
    """name -> (program, timeout in seconds)."""
    secret_file, folder, sock = config["secret_file"], config["open_folder"], config["socket"]
    harness = os.getpid()
    return {
        "read the secret in HOME": (
            f"data = open({secret_file!r}).read()\nraise AssertionError('ESCAPED ' + data)\n", 5),
        "read the environment of every process": (
            "import os\n"
            "seen = [repr(dict(os.environ))]\n"
            "for pid in os.listdir('/proc'):\n"
            "    try:\n"
            "        seen.append(open('/proc/%s/environ' % pid, 'rb').read().decode('latin-1'))\n"
            "    except Exception:\n"
            "        pass\n"
            "hits = [s for s in seen if 'LLAMA_EVAL_TEST_SECRET' in s]\n"
            "raise AssertionError('ESCAPED ' + hits[0] if hits else 'blocked')\n", 5),
        "write outside the work folder": (
            f"open({folder + '/sentinel.txt'!r}, 'a').write('pwned')\nraise AssertionError('ESCAPED')\n", 5),
        "write through a dir_fd": (
            f"import os\nfd = os.open({folder!r}, os.O_RDONLY)\n"
            "os.close(os.open('new.txt', os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))\nraise AssertionError('ESCAPED')\n", 5),
        "kill the harness with pidfd_send_signal": (
            f"import os, signal\nsignal.pidfd_send_signal(os.pidfd_open({harness}), signal.SIGKILL)\n"
            "raise AssertionError('ESCAPED')\n", 5),
        "kill everything it may signal": (
            f"import os, signal\nos.kill(-1, signal.SIGKILL)\nos.kill({harness}, signal.SIGKILL)\n"
            "raise AssertionError('ESCAPED')\n", 5),
        "leave a detached process": (
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(5)\n"
            f"        open({folder + '/survivor.txt'!r}, 'w').write('alive')\n"
            "    os._exit(0)\n"
            "raise AssertionError('blocked')\n", 5),
        "SysV shared memory": (
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "shmid = libc.shmget(0, 64 << 20, 0o1000 | 0o600)\n"
            "raise AssertionError('made segment %d' % shmid)\n", 5),
        "connect to a host Unix socket": (
            f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({sock!r})\nraise AssertionError('ESCAPED')\n", 5),
        "connect to an abstract Unix socket": (
            "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0llama-eval-test')\n"
            "raise AssertionError('ESCAPED')\n", 5),
        "new user namespace": (
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "assert libc.unshare(0x10000000) != 0, 'ESCAPED'\nraise AssertionError('blocked')\n", 5),
        "fork bomb": (
            "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n", 3),
        "memory bomb in every process": (
            "import os\nfor _ in range(7):\n    if os.fork() == 0:\n        break\n"
            "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))\n", 8),
        "deep folder": (
            "import os\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\nraise AssertionError('blocked')\n", 20),
    }


def main() -> None:
    config = json.loads(sys.argv[1])
    modes = tuple(config["modes"])
    for name, (program, timeout) in attacks(config).items():
        for audit_hook in (True, False):
            result, _ = execution.run_sandboxed(Check(program), timeout, Limits(), allow_unsandboxed=False,
                                                audit_guard=audit_hook, modes=modes)
            print(json.dumps({"attack": name, "audit_hook": audit_hook, "status": result.status, "detail": result.detail}),
                  flush=True)
    _, isolation = execution.run_sandboxed(Check("pass\n"), 30, Limits(), allow_unsandboxed=False, modes=modes)
    print(json.dumps({"isolation": {"mode": isolation.mode, "uid": isolation.uid, "seccomp": isolation.seccomp,
                                    "read_only": isolation.read_only_mounts, "notes": list(isolation.notes)}}))
    # Under load, the canonical kind of work: 20 programs at once.
    check = Check("def f(x):\n    return x * 2\n", test="assert f(21) == 42\n", names=("f",))
    with ThreadPoolExecutor(20) as pool:
        runs = pool.map(lambda _: execution.run_sandboxed(check, 30, Limits(), False, modes=modes)[0].status, range(20))
        print(json.dumps({"load": list(runs)}))


if __name__ == "__main__":
    main()
