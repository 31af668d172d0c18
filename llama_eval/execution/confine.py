"""What confines the candidate, through ctypes and the standard library only (launcher.py loads
this file by path): mounts, capabilities, the seccomp filter, resource limits, the audit hook.
"""

import ctypes
import errno
import os
import re
import resource
import signal
import stat

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWUTS, CLONE_NEWCGROUP = 0x20000000, 0x40000000, 0x04000000, 0x02000000
NAMESPACES = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 0x400, 0x800, 0x1000, 0x4000
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 0x40000, 0x200000, 0x1000000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 22, 38, 47
# Per-mount flags a read-only remount must keep (mountinfo option -> mount flag).
KEPT = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
        "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
WRITABLE_TMP = ("/tmp", "/var/tmp", "/dev/shm")  # fresh, empty, size-capped, writable


def call(libc, name, *args):
    """Call a libc function; raise OSError with errno when it fails."""
    function = getattr(libc, name, None)
    if function is None:
        raise OSError(0, name + " is not available in this C library")
    if function(*args) != 0:
        error = ctypes.get_errno()
        raise OSError(error, name + ": " + os.strerror(error))


def prctl(libc, *args):
    call(libc, "prctl", *[ctypes.c_ulong(a) if isinstance(a, int) else a for a in args])


def mount(libc, source, target, fstype, flags, data=None):
    encode_ = lambda text: None if text is None else os.fsencode(text)
    call(libc, "mount", encode_(source), encode_(target), encode_(fstype), ctypes.c_ulong(flags), encode_(data))


def ancestors(path):
    """path and every folder above it, from the top down."""
    parts = [p for p in path.split("/") if p]
    return ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def first_unreachable(path):
    """The topmost folder on the way to path that other users may not enter, or None."""
    for folder in ancestors(path):
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            return folder
    return None


def under(path, folders):
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def mountinfo_targets(text):
    """{mount point: its options} from /proc/self/mountinfo (the last mount at a place wins)."""
    unescape = lambda s: re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)
    options = {}
    for line in text.splitlines():
        fields = line.split()
        options[unescape(fields[4])] = fields[5].split(",")
    return options


def remount_flags(options):
    """The flags of a read-only bind remount that keeps a mount's locked per-mount flags."""
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
    for option in options:
        flags |= KEPT.get(option, 0)
    return flags


def remount_read_only(libc, notes):
    """Remount every mount read-only (in our mount namespace only)."""
    with open("/proc/self/mountinfo") as info:
        targets = mountinfo_targets(info.read())
    complete = True
    for target, options in targets.items():
        try:
            mount(libc, None, target, None, remount_flags(options))
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.EACCES):
                continue  # covered by a later mount: unreachable, nothing to protect
            notes.append("left writable: %s (%s)" % (target, error.strerror))
            complete = False
    return complete


def build_mounts(libc, config, notes):
    """Everything but the sample's folder read-only; empty tmpfs over temporary and home folders
    (interpreter folders under them bound back); the sample's folder a fresh, size-capped tmpfs."""
    mount(libc, None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks out
    umask = os.umask(0o022)  # folders made for bind mounts must be enterable by the sandbox user
    keep = [p for p in config["expose"] if os.path.isdir(p)]
    handles = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in keep}
    read_only = remount_read_only(libc, notes)
    hidden = []
    for folder in config["hide"]:
        if os.path.isdir(folder) and not os.path.islink(folder) and not under(folder, hidden):
            writable = folder in WRITABLE_TMP
            options = "mode=1777,size=%d" % config["disk_bytes"] if writable else "mode=0755,size=1m"
            mount(libc, "tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, options)
            hidden.append(folder)
    for path in keep:
        if under(path, hidden):
            os.makedirs(path, mode=0o755, exist_ok=True)
            mount(libc, "/proc/self/fd/%d" % handles[path], path, None, MS_BIND | MS_REC)
            mount(libc, None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
        os.close(handles[path])
    sample, uid, gid = config["sample"], config["sandbox_uid"], config["sandbox_gid"]
    os.makedirs(sample, mode=0o700, exist_ok=True)
    mount(libc, "tmpfs", sample, "tmpfs", MS_NOSUID | MS_NODEV,
          "mode=0700,size=%d,uid=%d,gid=%d" % (config["disk_bytes"], uid, gid))
    os.mkdir(config["work"], 0o700)
    os.chown(config["work"], uid, gid)
    for folder in hidden:
        if folder not in WRITABLE_TMP:
            mount(libc, None, folder, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.umask(umask)
    return read_only


def drop_bounding_set(libc):
    """Empty the bounding and ambient sets: no exec can give a capability back."""
    for cap in range(64):
        try:
            prctl(libc, PR_CAPBSET_DROP, cap, 0, 0, 0)
        except OSError as error:
            if error.errno == errno.EINVAL:
                break  # past the last capability this kernel knows
            raise
    prctl(libc, PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL


def drop_capabilities(libc):
    """Clear the effective, permitted and inheritable sets."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2 words: all zero
    call(libc, "capset", header, data)


def capabilities():
    """This process's effective capability mask, from /proc/self/status."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("CapEff:"))
    return int(line.split()[1], 16)


# Seccomp: a classic-BPF filter, for x86_64 only (the syscall numbers are per architecture).
AUDIT_ARCH_X86_64 = 0xC000003E
X86_64_DENIED = {
    "socket": 41, "ptrace": 101, "chroot": 161, "mount": 165, "umount2": 166, "pivot_root": 155,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "finit_module": 313, "init_module": 175, "bpf": 321, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
}
X86_64_CLONE, X86_64_CLONE3 = 56, 435
NEW_NAMESPACE_FLAGS = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWCGROUP
LD_ABS_W, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_KILL_PROCESS, RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000


def seccomp_filter():
    """(code, jt, jf, k) instructions: EPERM for the denied calls and for clone with a
    new-namespace flag, ENOSYS for clone3 (its flags sit in memory BPF cannot read; the C
    library then falls back to clone), EPERM for the x32 ABI, kill for another architecture."""
    denied = sorted(X86_64_DENIED.values())
    # Layout: [0-4] arch and x32 checks, [5..] one jeq per denied call, clone3, clone, allow,
    # then the clone flag check, and the two error returns at the end.
    head = 5
    clone_check = head + len(denied) + 3
    eperm = clone_check + 3
    enosys = eperm + 1
    program = [
        (LD_ABS_W, 0, 0, 4),  # seccomp_data.arch
        (JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (RET_K, 0, 0, RET_KILL_PROCESS),
        (LD_ABS_W, 0, 0, 0),  # seccomp_data.nr
        (JGE_K, eperm - 5, 0, 0x40000000),  # x32 system calls
    ]
    for nr in denied:
        program.append((JEQ_K, eperm - len(program) - 1, 0, nr))
    program.append((JEQ_K, enosys - len(program) - 1, 0, X86_64_CLONE3))
    program.append((JEQ_K, clone_check - len(program) - 1, 0, X86_64_CLONE))
    program.append((RET_K, 0, 0, RET_ALLOW))
    assert len(program) == clone_check
    program += [
        (LD_ABS_W, 0, 0, 16),  # low half of args[0]: clone's flags
        (JSET_K, eperm - clone_check - 2, 0, NEW_NAMESPACE_FLAGS),
        (RET_K, 0, 0, RET_ALLOW),
        (RET_K, 0, 0, RET_ERRNO | errno.EPERM),
        (RET_K, 0, 0, RET_ERRNO | errno.ENOSYS),
    ]
    return program


def install_seccomp(libc, notes):
    if os.uname().machine != "x86_64":
        notes.append("no seccomp filter: the syscall table is only written for x86_64")
        return False
    instructions = seccomp_filter()

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    table = (SockFilter * len(instructions))(*[SockFilter(*i) for i in instructions])
    program = SockFprog(len(instructions), table)
    try:
        prctl(libc, PR_SET_SECCOMP, 2, ctypes.byref(program), 0, 0)  # SECCOMP_MODE_FILTER
    except OSError as error:
        notes.append("no seccomp filter: %s" % error)
        return False
    return True


def set_limits(limits, with_processes):
    """The per-process limits; RLIMIT_AS x RLIMIT_NPROC stays within the sample's memory budget."""
    def cap(kind, soft, hard):
        _, current = resource.getrlimit(kind)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(kind, (soft, hard))
    cap(resource.RLIMIT_CORE, 0, 0)
    cap(resource.RLIMIT_CPU, limits["cpu"], limits["cpu"] + 1)  # SIGXCPU first, SIGKILL a second later
    cap(resource.RLIMIT_AS, limits["memory"] // limits["processes"], limits["memory"] // limits["processes"])
    cap(resource.RLIMIT_FSIZE, limits["file_size"], limits["file_size"])
    cap(resource.RLIMIT_NOFILE, limits["open_files"], limits["open_files"])
    cap(resource.RLIMIT_MEMLOCK, 0, 0)
    cap(resource.RLIMIT_MSGQUEUE, 0, 0)
    if with_processes:
        cap(resource.RLIMIT_NPROC, limits["processes"], limits["processes"])


def keep_only(fds):
    """Close every descriptor but 0, 1, 2 and fds (so nothing of the harness leaks in). The upper
    bound is not RLIMIT_NOFILE, which may already be lowered below descriptors we hold."""
    keep = sorted(set(fds) | {0, 1, 2})
    for low, high in zip(keep, keep[1:] + [1 << 30]):
        if high > low + 1:
            os.closerange(low + 1, high)


def die_with_parent(libc, parent):
    prctl(libc, PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(125)  # our parent died before the line above: it can no longer kill us


