"""The sandbox launcher: trusted code, standard library only, run by path by harness.py as
`python -I -S -B launcher.py CONFIG` (CONFIG: the JSON built by harness._config).

It imports nothing from llama_eval (it runs before any confinement, as the harness's user, and
must not depend on site-packages), and importing it has no side effects, so its helpers are
tested in-process. Processes of one sample:

    L  this launcher (the harness's uid, the host's namespaces): forks S and K, writes S's
       user-namespace maps, keeps the wall clock (alarm), and reports to the harness.
    S  sandbox setup: unshares user + mount + PID + network + IPC namespaces, builds the
       mounts, forks C, and exits the way C ended.
    C  the candidate: PID 1 of the new PID namespace, with limits, no capabilities, a seccomp
       filter and an unprivileged uid; runs the model's code, then serves calls from K.
    K  the checker: runs the benchmark's own test code, which reaches the candidate only
       through `Channel` (plain values both ways), and decides the verdict. C cannot name K
       (another PID namespace) and never holds K's code or verdict pipe in its memory.
"""

import ctypes
import importlib.util
import json
import os
import signal
import sys


def _sibling(name):
    """A standard-library-only module beside this file, loaded by path: we run with -I, so our
    folder is not on sys.path, and we import nothing from llama_eval."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location("llama_eval_sandbox_" + name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


channel = _sibling("channel")
confine = _sibling("confine")

def guard(work):
    """An audit hook: defence in depth, not a security boundary (see execution/__init__.py)."""
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


# ---------------------------------------------------------------------------------------------
# The processes


def user_maps(euid, egid, sandbox_uid, sandbox_gid):
    """(uid_map, gid_map, deny setgroups) for the sandbox's user namespace, written by L.

    As root: ids 0 and the sandbox user map to themselves (0 lets setup reach folders only root
    may enter, e.g. an interpreter under /root; C then drops to the sandbox user for good). As
    anyone else the kernel allows one id: the sandbox id inside is the user outside.
    """
    if euid == 0:
        ids = "0 0 1\n%d %d 1\n"
        return ids % (sandbox_uid, sandbox_uid), ids % (sandbox_gid, sandbox_gid), False
    return "%d %d 1\n" % (sandbox_uid, euid), "%d %d 1\n" % (sandbox_gid, egid), True


def write_maps(pid, config):
    uid_map, gid_map, deny = user_maps(os.geteuid(), os.getegid(), config["sandbox_uid"], config["sandbox_gid"])
    if deny:
        with open("/proc/%d/setgroups" % pid, "w") as f:
            f.write("deny")
    for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
        with open("/proc/%d/%s" % (pid, name), "w") as f:
            f.write(text)


def unshare(libc, config, notes):
    """The first of config["modes"] whose namespaces this process can make: 'user' (a new user
    namespace with the others) or 'root' (the others only, as root); else 'none'."""
    for mode in config["modes"]:
        if mode == "root" and os.geteuid() != 0:
            continue
        flags = confine.NAMESPACES | (confine.CLONE_NEWUSER if mode == "user" else 0)
        try:
            confine.call(libc, "unshare", flags)
            return mode
        except OSError as error:
            notes.append("no %s namespaces: %s" % ("user" if mode == "user" else "root's", error.strerror))
    if not config["modes"]:
        notes.append("namespaces were not asked for")
    return "none"


def setup_main(config, fds, libc):
    """S: namespaces and mounts, then C; exits the way C ended."""
    parent = os.getppid()
    confine.keep_only([fds["req_r"], fds["resp_w"], fds["report_w"], fds["sync_w"], fds["go_r"]])
    confine.die_with_parent(libc, parent)
    with open(config["candidate"], encoding="utf-8") as file:
        source = file.read()
    notes = []
    mode = unshare(libc, config, notes)
    os.write(fds["sync_w"], mode.encode())
    os.close(fds["sync_w"])
    if mode == "user" and os.read(fds["go_r"], 1) != b"1":
        os._exit(125)  # L could not write our id maps
    os.close(fds["go_r"])
    read_only = False
    if mode == "none":
        if not config["allow_unsandboxed"]:
            os.write(fds["report_w"], json.dumps({"mode": mode, "refused": True, "notes": notes}).encode())
            os._exit(126)
        os.chdir(config["work"])
    else:
        read_only = confine.build_mounts(libc, config, notes)
    child = os.fork()  # in a new PID namespace, C is its PID 1
    if child == 0:
        candidate_main(config, fds, libc, source, mode, read_only, notes)
    del source
    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(child, signal.SIGKILL))
    for fd in (fds["req_r"], fds["resp_w"], fds["report_w"]):
        os.close(fd)
    _, status, usage = os.wait4(child, 0)
    finish_like(status, usage, config["limits"]["cpu"])


def candidate_main(config, fds, libc, source, mode, read_only, notes):
    """C: confine, report, run the candidate's code, then serve the checker's calls."""
    try:
        parent = os.getppid()
        if mode != "none":
            confine.mount(libc, "proc", "/proc", "proc", confine.MS_NOSUID | confine.MS_NODEV | confine.MS_NOEXEC)
            os.chdir(config["work"])
            # Our own session and group: kill(0) or killpg would otherwise reach L, S and K
            # (a group spans namespaces). Without a PID namespace, staying in the harness's
            # group is what lets it kill everything the program started.
            os.setsid()
        confine.set_limits(config["limits"], with_processes=mode != "none" or os.geteuid() == 0)
        if mode != "none" or os.geteuid() == 0:
            confine.drop_bounding_set(libc)  # first: it needs CAP_SETPCAP, which the uid change clears
        if os.geteuid() == 0:  # root (outside, or inside a user namespace that maps the sandbox id too)
            drop_to(config, mode, notes)
        elif mode == "none":
            notes.append("no namespaces and not root: the program keeps uid %d" % os.getuid())
        if mode == "user":
            confine.drop_capabilities(libc)  # an unprivileged user's namespace: we kept its capabilities
        confine.prctl(libc, confine.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        confine.die_with_parent(libc, parent)  # after the uid change, which clears it
        seccomp = mode != "none" and confine.install_seccomp(libc, notes)
        report = {"mode": mode, "uid": os.getuid(), "read_only": read_only, "seccomp": seccomp,
                  "capabilities": confine.capabilities(), "notes": notes}
        os.write(fds["report_w"], json.dumps(report).encode())
        os.close(fds["report_w"])
        os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
        confine.keep_only([fds["req_r"], fds["resp_w"]])
    except Exception as error:  # a failed setup must end this forked copy here
        os.write(2, ("llama-eval sandbox: setup failed: %s\n" % error).encode())
        os._exit(125)
    req_r, resp_w, guard_on = fds["req_r"], fds["resp_w"], config["guard"]
    del config, fds, libc
    for name in [name for name in sys.modules if name.split(".")[0] == "ctypes"]:
        del sys.modules[name]  # so the program's own `import ctypes` meets the audit hook
    sys.argv = ["program.py"]
    namespace = {"__name__": "__program__", "__builtins__": __builtins__}
    try:
        code = compile(source, "program.py", "exec")
    except (SyntaxError, ValueError, UnicodeError) as error:
        sys.stderr.write("%s: %s\n" % (type(error).__name__, error))
        os._exit(1)
    del source
    if guard_on:
        sys.addaudithook(guard(os.getcwd()))
    # Like OpenAI's human-eval: not "__main__", so a completion's `if __name__ == "__main__":`
    # demo block (often reading stdin) does not run.
    exec(code, namespace)
    channel.serve(namespace, req_r, resp_w)
    raise SystemExit(0)


def drop_to(config, mode, notes):
    """As root: become the sandbox user (without namespaces, only if it can reach the interpreter)."""
    unreachable = [path for path in config["expose"] if confine.first_unreachable(path) is not None]
    if mode == "none" and unreachable:
        notes.append("kept uid 0: %s is not reachable by uid %d" % (unreachable[0], config["sandbox_uid"]))
        return
    os.setgroups([])
    os.setresgid(*[config["sandbox_gid"]] * 3)
    os.setresuid(*[config["sandbox_uid"]] * 3)


def checker_main(config, fds, libc, trusted):
    """K: the benchmark's test code against the candidate; the verdict goes to L."""
    parent = os.getppid()
    verdict_w = fds["verdict_w"]
    confine.keep_only([fds["req_w"], fds["resp_r"], verdict_w])
    devnull = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    confine.die_with_parent(libc, parent)
    confine.set_limits(config["limits"], with_processes=False)
    confine.prctl(libc, confine.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    verdict = channel.check(channel.Channel(fds["resp_r"], fds["req_w"]), trusted)
    os.write(verdict_w, json.dumps(verdict).encode())
    os._exit(0)


def finished_early(verdict):
    """Whether the candidate's process ended by itself before the test was done: then its own
    exit (code, signal) is the outcome, and we let S report it instead of killing S."""
    try:
        decided = json.loads(verdict)
    except ValueError:
        return False
    return not decided["reached"] or bool(decided.get("gone"))


def finish_like(status, usage, cpu_limit):
    """Exit the way the child did, so the parent sees its exit code or signal."""
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


def launcher_main(config):
    """L: start S and K, keep the clock, report {"isolation", "verdict", "status", "timeout"}."""
    libc = ctypes.CDLL(None, use_errno=True)
    confine.die_with_parent(libc, config["harness_pid"])
    os.umask(0o077)
    names = ("req", "resp", "sync", "go", "verdict")
    fds = {}
    for name in names:
        fds[name + "_r"], fds[name + "_w"] = os.pipe()
    fds["report_w"] = config["report_fd"]
    setup_pid = os.fork()
    if setup_pid == 0:
        setup_main(config, fds, libc)
    # Read only now, so that the candidate's processes never held the test code in memory.
    with open(config["trusted"], encoding="utf-8") as file:
        trusted = json.load(file)
    checker_pid = os.fork()
    if checker_pid == 0:
        checker_main(config, fds, libc, trusted)
    for name in ("req_r", "req_w", "resp_r", "resp_w", "sync_w", "go_r", "verdict_w"):
        os.close(fds[name])
    stopped = []

    def stop(signum, frame):
        stopped.append(signum)
        for pid in (setup_pid, checker_pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # already ended

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)
    signal.alarm(config["wall_seconds"])
    mode = os.read(fds["sync_r"], 16).decode()
    if mode == "user":
        try:
            write_maps(setup_pid, config)
            os.write(fds["go_w"], b"1")
        except OSError as error:
            os.write(2, ("llama-eval sandbox: cannot map ids: %s\n" % error).encode())
    os.close(fds["go_w"])
    statuses, verdict = {}, b""
    while len(statuses) < 2:
        pid, status = os.waitpid(-1, 0)
        statuses[pid] = status
        if pid == checker_pid:
            verdict = os.read(fds["verdict_r"], 1 << 16)
            if setup_pid not in statuses and not finished_early(verdict):
                os.kill(setup_pid, signal.SIGKILL)  # the verdict is in: end the candidate
    status = statuses[setup_pid]
    outcome = {
        "verdict": json.loads(verdict) if verdict else None,
        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "timeout": signal.SIGALRM in stopped,
    }
    os.write(config["report_fd"], b"\n" + json.dumps(outcome).encode())
    os._exit(0)


if __name__ == "__main__":
    launcher_main(json.loads(sys.argv[1]))

