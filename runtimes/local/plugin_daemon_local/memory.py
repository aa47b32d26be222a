"""Resident memory of process trees, sampled with psutil.

The limit is enforced on RSS, sampled, rather than with ``RLIMIT_AS``: Python, gevent's thread
stacks and glibc arenas reserve far more virtual memory than they touch, so an address-space
limit kills healthy plugins (or makes them fail with MemoryError in odd places) long before
they use the memory their manifest declares. RSS counts pages a forked child still shares with
its parent twice; that errs on the safe side.
"""

from __future__ import annotations

from collections.abc import Iterable

import psutil

MiB = 1024 * 1024


def tree_rss(roots: Iterable[int]) -> dict[int, int]:
    """RSS in bytes of each root process plus all its descendants (one scan of the process table)."""
    roots = list(roots)
    if not roots:
        return {}
    children: dict[int, list[int]] = {}
    for process in psutil.process_iter(["ppid"]):
        ppid = process.info.get("ppid")
        if ppid:
            children.setdefault(ppid, []).append(process.pid)
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
            stack.extend(children.get(pid, ()))
        result[root] = total
    return result
