"""Resident memory of process trees, sampled with psutil.

The limit is enforced on RSS, sampled, rather than with ``RLIMIT_AS``: Python, gevent's thread
stacks and glibc arenas reserve far more virtual memory than they touch, so an address-space
limit kills healthy plugins (or makes them fail with MemoryError in odd places) long before
they use the memory their manifest declares. RSS counts pages a forked child still shares with
its parent twice; that errs on the safe side.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import psutil

MiB = 1024 * 1024

#: /proc/PID/task/PID/children exists on kernels built with CONFIG_PROC_CHILDREN (the usual case)
_HAS_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _children_from_proc(pid: int) -> list[int] | None:
    """Direct children of ``pid`` read from /proc (Linux); None where the kernel does not say."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as handle:
            return [int(child) for child in handle.read().split()]
    except FileNotFoundError:
        return []  # the process has just gone
    except OSError:
        return None


def _process_table_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for process in psutil.process_iter(["ppid"]):
        ppid = process.info.get("ppid")
        if ppid:
            children.setdefault(ppid, []).append(process.pid)
    return children


def tree_rss(roots: Iterable[int]) -> dict[int, int]:
    """RSS in bytes of each root process plus all its descendants.

    Descendants come from /proc/PID/task/PID/children where the kernel offers it (a few small
    reads per plugin), else from one scan of the whole process table.
    """
    table: dict[int, list[int]] | None = None
    result: dict[int, int] = {}
    for root in roots:
        total = 0
        stack = [root]
        seen: set[int] = set()
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            try:
                total += psutil.Process(pid).memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            children = _children_from_proc(pid) if _HAS_PROC_CHILDREN else None
            if children is None:
                if table is None:
                    table = _process_table_children()
                children = table.get(pid, [])
            stack.extend(children)
        result[root] = total
    return result
