"""Unit tests of the sandbox's helpers, in-process: the channel's encoding, the seccomp filter
(run by an independent classic-BPF interpreter written here), id maps, mount-table parsing, the
iterative folder removal, and that the launcher imports only the standard library."""

from __future__ import annotations

import ast
import collections
import errno
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from llama_eval.execution import channel, confine, folders, launcher

EXECUTION = Path(launcher.__file__).parent


# -- the channel ------------------------------------------------------------------------------

PLAIN_VALUES = [
    None, True, False, 0, -7, 2**80, 1.5, -0.0, math.inf, "", "héllo\n", "\ud800", b"\x00\xff",
    [1, [2, [3]]], (1, (2, "x")), (), {1, 2}, frozenset({(1, 2)}), set(),
    {"a": 1}, {(1, 2): [3], 4: {5}, None: "n"}, {}, [{"k": (1.0, 2)}], 3 + 4j,
]


@pytest.mark.parametrize("value", PLAIN_VALUES, ids=repr)
def test_plain_values_cross_unchanged(value):
    back = channel.decode(json_round_trip(channel.encode(value)))
    assert back == value and type(back) is type(value)
    if isinstance(value, (list, tuple)) and value:
        assert [type(v) for v in back] == [type(v) for v in value]


def test_nan_crosses_as_nan():
    assert math.isnan(channel.decode(json_round_trip(channel.encode(math.nan))))


def json_round_trip(data):
    """What the other side decodes: through the message format, as bytes."""
    import json

    return json.loads(channel.dumps({"v": data}))["v"]


def test_standard_dict_subclasses_cross_as_dicts():
    for value in (collections.Counter("abca"), collections.OrderedDict(a=1), collections.defaultdict(int, a=2)):
        back = channel.decode(json_round_trip(channel.encode(value)))
        assert type(back) is dict and back == dict(value)


class AlwaysEqual:
    def __eq__(self, other):
        return True


class SneakyInt(int):
    def __eq__(self, other):
        return True


@pytest.mark.parametrize("value", [AlwaysEqual(), SneakyInt(3), [1, AlwaysEqual()], {"k": SneakyInt(1)},
                                   collections.deque([1]), lambda: 1, object()], ids=repr)
def test_other_objects_do_not_cross(value):
    with pytest.raises(TypeError, match="not a plain value"):
        channel.encode(value)


@pytest.mark.parametrize("data", [{"x": 1}, {"tuple": 3}, {"tuple": [1], "set": [2]}, {"ref": "f"},
                                  {"dict": [[1]]}, {"complex": ["a", 1]}, {"bytes": 5}], ids=repr)
def test_decoding_accepts_only_the_tags(data):
    with pytest.raises(ValueError, match="not a value of the sandbox channel"):
        channel.decode(data)


def test_nesting_is_bounded_both_ways():
    deep: list = []
    for _ in range(channel.DEPTH + 5):
        deep = [deep]
    with pytest.raises(ValueError, match="deeper"):
        channel.encode(deep)
    data: list = []
    for _ in range(channel.DEPTH + 5):
        data = [data]
    with pytest.raises(ValueError, match="deeper"):
        channel.decode(data)


def test_refs_resolve_only_where_allowed():
    ref = channel.Ref(None, "tree", False)
    assert channel.encode([ref]) == [{"ref": "tree"}]
    assert channel.decode([{"ref": "tree"}], {"tree": "the object"}.__getitem__) == ["the object"]
    with pytest.raises(TypeError, match="not callable"):
        ref()


def test_messages_are_one_ascii_line():
    data = channel.dumps({"value": channel.encode(["a\nb", "\ud800", "é"])})
    assert data.endswith(b"\n") and data.count(b"\n") == 1 and data.isascii()


# -- the seccomp filter, run by a classic-BPF interpreter written from the BPF spec ---------------

def run_bpf(program, nr: int, arch: int = confine.AUDIT_ARCH_X86_64, args=(0,) * 6) -> int:
    """The filter's return value for one system call (struct seccomp_data: nr, arch, ip, args)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
    accumulator, pc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            accumulator = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code in (0x15, 0x35, 0x45):  # jeq, jge, jset with a constant
            taken = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: bool(accumulator & k)}[code]
            pc += 1 + (jt if taken else jf)
        elif code == 0x06:  # BPF_RET | BPF_K
            return k
        else:
            raise AssertionError(f"instruction {code:#x} is not interpreted here")


def test_seccomp_filter_allows_ordinary_calls_and_denies_the_listed_ones():
    program = confine.seccomp_filter()
    assert len(program) < 4096 and all(0 <= jt < 256 and 0 <= jf < 256 for _, jt, jf, _ in program)
    eperm, enosys = confine.RET_ERRNO | errno.EPERM, confine.RET_ERRNO | errno.ENOSYS
    for nr in (0, 1, 2, 3, 9, 39, 57, 59, 60, 62, 231, 257, 434):  # read, write, open, ..., fork, execve, kill
        assert run_bpf(program, nr) == confine.RET_ALLOW, nr
    for name, nr in confine.X86_64_DENIED.items():
        assert run_bpf(program, nr) == eperm, name
    assert run_bpf(program, confine.X86_64_CLONE3) == enosys
    assert run_bpf(program, 0x40000000 + 1) == eperm  # x32 ABI
    assert run_bpf(program, 0, arch=0xC00000B7) == confine.RET_KILL_PROCESS  # another architecture


@pytest.mark.parametrize("flag", ["CLONE_NEWUSER", "CLONE_NEWNS", "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_NEWIPC",
                                  "CLONE_NEWUTS", "CLONE_NEWCGROUP"])
def test_seccomp_filter_denies_clone_into_new_namespaces(flag):
    program = confine.seccomp_filter()
    thread_flags = 0x003D0F00  # what pthread_create passes: VM, FS, FILES, SIGHAND, THREAD, ...
    assert run_bpf(program, confine.X86_64_CLONE, args=(0x01200011, 0, 0, 0, 0, 0)) == confine.RET_ALLOW  # fork
    assert run_bpf(program, confine.X86_64_CLONE, args=(thread_flags, 0, 0, 0, 0, 0)) == confine.RET_ALLOW
    flags = 0x01200011 | getattr(confine, flag)
    assert run_bpf(program, confine.X86_64_CLONE, args=(flags, 0, 0, 0, 0, 0)) == confine.RET_ERRNO | errno.EPERM


# -- ids, mounts, paths -------------------------------------------------------------------------

def test_user_maps():
    assert launcher.user_maps(0, 0, 65534, 65534) == ("0 0 1\n65534 65534 1\n", "0 0 1\n65534 65534 1\n", False)
    # An ordinary user may map only itself; setgroups must be denied before its gid map.
    assert launcher.user_maps(1000, 100, 65534, 65534) == ("65534 1000 1\n", "65534 100 1\n", True)


def test_mount_table_parsing_and_remount_flags():
    text = ("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
            "30 22 0:5 / /dev rw,nosuid,relatime - devtmpfs udev rw\n"
            "41 22 0:40 / /with\\040space rw,nosuid,nodev,noexec - tmpfs tmpfs rw\n"
            "42 22 0:41 / /dev rw,noatime - tmpfs tmpfs rw\n")
    targets = confine.mountinfo_targets(text)
    assert targets == {"/": ["rw", "relatime"], "/dev": ["rw", "noatime"], "/with space": ["rw", "nosuid", "nodev", "noexec"]}
    base = confine.MS_REMOUNT | confine.MS_BIND | confine.MS_RDONLY | confine.MS_NOSUID
    assert confine.remount_flags(targets["/"]) == base | confine.MS_RELATIME
    assert confine.remount_flags(targets["/with space"]) == base | confine.MS_NODEV | confine.MS_NOEXEC


def test_ancestors_and_reachability(tmp_path):
    assert confine.ancestors("/a/b/c") == ["/", "/a", "/a/b", "/a/b/c"]
    assert confine.ancestors("/") == ["/"]
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    closed.chmod(0o700)
    assert confine.first_unreachable(str(closed / "inner")) in {str(closed), *[str(p) for p in closed.parents]}
    closed.chmod(0o755)
    tmp_path.chmod(0o755)
    if all(os.stat(p).st_mode & 0o001 for p in tmp_path.parents):
        assert confine.first_unreachable(str(closed / "inner")) is None


# -- folders ------------------------------------------------------------------------------------

@pytest.fixture
def memory_folder(tmp_path):
    """A folder on tmpfs where there is one (each rmdir on a disk here costs milliseconds)."""
    if not os.path.isdir("/dev/shm"):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(dir="/dev/shm"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_removing_a_1500_deep_tree_with_paths_longer_than_path_max(memory_folder):
    tmp_path = memory_folder
    root = tmp_path / "sample"
    fd = os.open(tmp_path, os.O_RDONLY)
    os.mkdir("sample", dir_fd=fd)
    os.close(fd)
    fd = os.open(root, os.O_RDONLY)
    name = "d" * 200  # 1,500 levels of 200 characters: paths of 300,000 characters
    for depth in range(1500):
        os.mkdir(name, dir_fd=fd)
        if depth % 100 == 0:
            with open(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w") as file:
                file.write("x")
        child = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    folders.remove_tree(root)
    assert not root.exists()


def test_removal_reopens_locked_folders_but_never_follows_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    outside.chmod(0o555)
    root = tmp_path / "sample"
    (root / "locked" / "deeper").mkdir(parents=True)
    (root / "locked" / "deeper" / "file").write_text("x")
    (root / "locked" / "deeper").chmod(0o000)
    (root / "locked").chmod(0o000)
    (root / "link").symlink_to(outside)
    (root / "locked_link").symlink_to(outside / "keep.txt")
    folders.remove_tree(root)
    assert not root.exists()
    assert (outside / "keep.txt").read_text() == "precious" and outside.stat().st_mode & 0o777 == 0o555
    folders.remove_tree(root)  # already gone: nothing to do


# -- the launcher is standard library only ------------------------------------------------------

@pytest.mark.parametrize("name", ["launcher.py", "channel.py", "confine.py"])
def test_launcher_files_import_only_the_standard_library(name):
    tree = ast.parse((EXECUTION / name).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported and imported <= set(sys.stdlib_module_names)
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))


def test_launcher_runs_by_path_with_no_site_packages():
    """Run as the harness runs it, the launcher finds its siblings without sys.path changes."""
    code = ("import runpy, sys\n"
            f"module = runpy.run_path({str(EXECUTION / 'launcher.py')!r}, run_name='not_main')\n"
            "print(sorted(m for m in sys.modules if m.startswith('llama_eval')), module['channel'].__name__,\n"
            "      module['confine'].__name__, 'site' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "llama_eval_sandbox_channel", "llama_eval_sandbox_confine", "False"]
