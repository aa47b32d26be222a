"""Starting child processes (uv, the plugin) so that they can be stopped as a group and never outlive us.

Processes are created with asyncio's subprocess support, not ``anyio.open_process``: the
latter has no ``preexec_fn``, and on Linux the child must call ``prctl(PR_SET_PDEATHSIG)``
between fork and exec so that the kernel kills it when the daemon dies, even by SIGKILL and
even when the orphan is re-parented to a subreaper rather than to pid 1 (the SDK only exits by
itself when ``getppid() == 1``). The local runtime therefore needs anyio's asyncio backend
(which is what uvicorn runs). The child's stdout/stderr are wrapped as anyio byte streams so
that the shared framing code reads them like any other stream.

Every child starts a new session (``start_new_session=True``): its pid is its process group,
and signals go to the whole group, grandchildren included.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream

from .sandbox import Confinement, prepare_child

#: StreamReader buffer limit; reading pauses above twice this (back-pressure on the child).
STREAM_LIMIT = 1024 * 1024

_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None
if sys.platform == "linux":
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent_pid: int) -> None:  # pragma: no cover - runs in the forked child
    """In the child, before exec: get SIGKILL when the spawning thread (the event loop) ends."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


async def spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin: bool = False,
    merge_stderr: bool = False,
    confinement: Confinement | None = None,
) -> asyncio.subprocess.Process:
    """Start ``argv`` in its own session, with pipes for stdout/stderr (and stdin if asked).

    A ``confinement`` (see ``sandbox``) gives the child its uid, gid, umask, extra environment and
    Landlock rules; it is enforced between fork and exec, and closed once the child is started.
    """
    die = functools.partial(_die_with_parent, os.getpid()) if _libc is not None else None
    if confinement is not None:
        env = {**env, **confinement.env}
    preexec = prepare_child(confinement, die) if confinement is not None else die
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            start_new_session=True,
            preexec_fn=preexec,
            limit=STREAM_LIMIT,
        )
    finally:
        if confinement is not None:
            confinement.close()


def signal_group(pid: int, sig: int) -> bool:
    """Send ``sig`` to the process group led by ``pid``; False when nothing was left to signal."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class ReaderStream(ByteReceiveStream):
    """An asyncio ``StreamReader`` (a child's pipe) as an anyio byte stream."""

    __slots__ = ("_reader",)

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    async def receive(self, max_bytes: int = 65536) -> bytes:
        data = await self._reader.read(max_bytes)
        if not data:
            raise anyio.EndOfStream
        return data

    async def aclose(self) -> None:
        return None
