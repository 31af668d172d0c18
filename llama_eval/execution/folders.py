"""Removing a sample's folder whatever the program left in it: no recursion (a 1,500-deep tree
must not raise RecursionError), no path longer than one name (a deep tree's paths exceed
PATH_MAX), never following a symlink out, and folders the program made unreadable reopened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(root: Path | str) -> None:
    """Delete root and everything under it (a missing root is fine; other errors raise OSError).

    Walks with one open descriptor at a time: descend into the first subfolder, delete files as
    they are met, and climb back with ".." when a folder is empty. Only the names of the folders
    on the current path are kept.
    """
    root = os.fspath(root)
    try:
        fd = _open_dir(root, None)
    except FileNotFoundError:
        return
    path: list[str] = []  # names from root down to the folder fd is open on
    try:
        while True:
            child = _empty_one_level(fd)
            if child is not None:
                fd = _descend(fd, child)
                path.append(child)
                continue
            if not path:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(path.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(root)


def _open_dir(name: str, dir_fd: int | None) -> int:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:  # made unreadable by the program (it is a folder: we saw it as one)
        os.chmod(name, 0o700, dir_fd=dir_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    if os.stat(fd).st_mode & 0o700 != 0o700:
        os.chmod(fd, 0o700)  # the program may have made it unreadable; we own it (or are root)
    return fd


def _descend(fd: int, name: str) -> int:
    child = _open_dir(name, fd)
    os.close(fd)
    return child


def _empty_one_level(fd: int) -> str | None:
    """Delete every non-folder entry of the folder fd; return one subfolder's name, or None."""
    with os.scandir(fd) as entries:
        for entry in entries:
            if stat.S_ISDIR(entry.stat(follow_symlinks=False).st_mode):
                return entry.name
            os.unlink(entry.name, dir_fd=fd)
    return None
