"""The only package that runs model-written code: each sample in a sandbox, its verdict outside.

Nothing here decides whether code may run: callers call `require_permission(flag)` with the
value of --allow-code-execution, and `require_isolation(flag)` with --allow-unsandboxed.

Files: harness.py (this process: folders, pipes, limits on output and wall clock, results),
launcher.py (run by path as `python -I -S -B launcher.py CONFIG`; standard library only, with
channel.py and confine.py beside it), folders.py (removing whatever a sample left).

One sample. The harness makes a folder R (mode 711, ours) holding candidate.py (the code to run
in the sandbox), trusted.json (the test code, which the candidate never sees) and work/ (mode
700, the sandbox user's), and starts the launcher L in a new session with a scrubbed
environment. L forks S, which reads candidate.py and sets up the sandbox and forks C (the
candidate, PID 1 of a new PID namespace); only then does L read trusted.json and fork K, the
checker. C runs the candidate's code and then answers K's calls: K runs the benchmark's test
code with the candidate's functions bound to proxies, arguments and return values crossing as
exact builtin values (channel.py), so an object whose __eq__ always agrees cannot cross, and
neither the test's code nor the verdict is in any memory C can read or any process C can name.
K itself runs the benchmark's own (trusted) code as the harness's user,
with the resource limits below and no new privileges; what it takes from C is plain data only.
The sample passes iff K's test code raises nothing (a plain program, `Check(program)` with no
test, passes iff it ran to its end; a program holding its own asserts can fake that, which is
why graders pass a test). L keeps a wall-clock alarm, kills what is left and reports.

What is enforced, by mode (`probe_isolation()` reports the mode a run got; `describe()` says it
in one line; `llama-eval run`, `demo` and `execute` print it):

- "user" (any user where user namespaces are allowed; root included): new user, mount, PID,
  network and IPC namespaces. Root maps ids 0 and nobody into the namespace and C becomes
  nobody (so it has nobody's rights on the machine); another user can map only itself, so C
  has that user's uid outside (with its supplementary groups, which an unprivileged user
  namespace cannot drop) and the sandbox id 65534 inside, with every capability dropped
  (bounding set included). Mounts: everything read-only, except fresh, empty, size-capped tmpfs
  on /tmp, /var/tmp and /dev/shm; empty read-only tmpfs over /run, /root, /home and the
  harness user's home (interpreter folders under them are bound back read-only); the sample's
  folder is its own tmpfs of `Limits.disk_bytes` (nothing it writes reaches the disk); a fresh
  /proc showing only the sample's processes. The network namespace has only a loopback that is
  down; the IPC namespace takes SysV objects and POSIX queues with it when the sample ends.
  RLIMIT_NPROC counts the sample's own processes (it is counted per user namespace).
- "root" (root, where user namespaces are disabled): the same namespaces and mounts without
  a user namespace; C becomes nobody. RLIMIT_NPROC then counts every process of nobody on the
  machine (concurrent samples share it).
- "none" (no namespace could be made): refused, unless --allow-unsandboxed. Then only the
  limits below, the audit hook, and (as root, when nobody can reach the interpreter) nobody's
  uid protect the machine: the program can read what the harness's user can read.

In every mode C has: RLIMIT_CPU (SIGXCPU, SIGKILL a second later), RLIMIT_AS = memory budget /
max_processes (so all of the sample's processes together stay within `Limits.memory_bytes`),
RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE = RLIMIT_MEMLOCK = RLIMIT_MSGQUEUE = 0 (the files a
sample writes to its tmpfs folders use the machine's memory outside that budget: at most
4 x `Limits.disk_bytes`, for its folder, /tmp, /var/tmp and /dev/shm),
PR_SET_NO_NEW_PRIVS, a parent-death signal (S, C and K die with their parent; L dies with the
harness), stdin from /dev/null and no inherited descriptors but its own. In "user" and "root"
modes on x86_64, a seccomp filter answers EPERM to socket (every family), ptrace, bpf, keyctl,
add_key, request_key, io_uring, mount and the new mount API, umount2, pivot_root, chroot,
unshare, setns, clone with any new-namespace flag, perf_event_open, userfaultfd,
process_vm_readv/writev, open_by_handle_at and module loading, and ENOSYS to clone3 (the C
library falls back to clone, whose flags the filter can read). Other architectures: no filter
(said in the notes). An audit hook (sys.addaudithook) refuses process creation, signals,
sockets, ctypes, rlimit changes and writes outside the work folder: defence in depth only, not
a security boundary. The harness kills a sample at its wall clock (L's own alarm does too, so
the limit holds if the harness stops reading), and at `Limits.output_bytes` on stdout or stderr.

A sample that breaks the harness (a folder it cannot remove, a full disk, text that is not
valid Unicode) is that sample's result ("crashed", or "failed" for invalid text), never an
exception. Programs run with the standard library only (`-S`: no site-packages).
"""

from .harness import (
    Check,
    ExecResult,
    Isolation,
    Limits,
    SandboxError,
    Status,
    check_many,
    check_program,
    iter_checks,
    probe_isolation,
    require_isolation,
    require_permission,
    run_sandboxed,
)

__all__ = [
    "Check", "ExecResult", "Isolation", "Limits", "SandboxError", "Status", "check_many", "check_program",
    "iter_checks", "probe_isolation", "require_isolation", "require_permission", "run_sandboxed",
]
