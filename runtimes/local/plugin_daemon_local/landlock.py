"""Landlock (Linux 5.13+) through raw system calls: file-system rules, signal and socket scoping.

A ruleset is built in the daemon (so that a bad path is reported there, not in a child that
has already forked) and enforced in the child between fork and exec by
:func:`restrict_self`. Once enforced, the process and everything it starts can reach only
the hierarchies the rules name, with the rights they name; it can neither ptrace nor read the
``/proc`` entries (environ, mem, fd) of a process outside its domain, and with ABI 6 it can
signal no such process either. The rights that a kernel does not know are left out, so the
same code runs on every ABI version (1 to 7 and later).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterable
from pathlib import Path

_SYS_CREATE_RULESET = 444  # the same number on every architecture (generic syscall table)
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

#: Rights that apply to a file (a rule on a file may grant only these).
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ_ONLY = EXECUTE | READ_FILE | READ_DIR
READ_WRITE = (1 << 16) - 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc: ctypes.CDLL | None = None
if sys.platform == "linux":
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(None, use_errno=True)


class LandlockError(OSError):
    """A ruleset could not be built (the message names the path or the call)."""


def abi_version() -> int:
    """The Landlock ABI version of the running kernel; 0 when it has none or has it disabled."""
    if _libc is None:
        return 0
    version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(0, int(version))


def handled_rights(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


class Ruleset:
    """An open Landlock ruleset: add rules, then :meth:`restrict_self` in the child; close after the spawn."""

    def __init__(self, abi: int) -> None:
        if _libc is None or abi < 1:
            raise LandlockError("Landlock is not available on this kernel")
        self.abi = abi
        self.handled = handled_rights(abi)
        attr = _RulesetAttr(self.handled, 0, (SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET) if abi >= 6 else 0)
        fd = _libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), 0)
        if fd < 0:
            errno = ctypes.get_errno()
            raise LandlockError(errno, f"landlock_create_ruleset: {os.strerror(errno)}")
        self.fd: int = fd

    @property
    def scopes_signals(self) -> bool:
        return self.abi >= 6

    def allow(self, path: Path | str, rights: int) -> bool:
        """Allow ``rights`` beneath ``path`` (a folder) or on it (a file); False when it does not exist."""
        assert _libc is not None
        try:
            target = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise LandlockError(exc.errno, f"cannot open {path} for a Landlock rule: {exc.strerror}") from None
        try:
            rights &= self.handled
            if not os.path.isdir(f"/proc/self/fd/{target}"):
                rights &= FILE_RIGHTS
            attr = _PathBeneathAttr(rights, target)
            if _libc.syscall(_SYS_ADD_RULE, self.fd, _RULE_PATH_BENEATH, ctypes.byref(attr), 0) != 0:
                errno = ctypes.get_errno()
                raise LandlockError(errno, f"landlock_add_rule on {path}: {os.strerror(errno)}")
        finally:
            os.close(target)
        return True

    def allow_all(self, paths: Iterable[Path | str], rights: int) -> None:
        for path in paths:
            self.allow(path, rights)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def restrict_self(ruleset_fd: int) -> None:  # pragma: no cover - runs in the forked child
    """Enforce the ruleset on the calling process (no new privileges first, as Landlock requires)."""
    assert _libc is not None
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if _libc.syscall(_SYS_RESTRICT_SELF, ruleset_fd, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
