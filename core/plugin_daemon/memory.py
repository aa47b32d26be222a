"""Giving freed memory back to the system after a big input (an upload, a debugging registration).

Python returns what it frees to the C allocator, and glibc keeps many of those pages for itself:
after an input of tens of megabytes read in pieces, the daemon's resident memory stayed that much
higher until later activity happened to release it. ``malloc_trim`` hands the free pages back at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # another C library (musl has no malloc_trim)
        return None
    return trim


_MALLOC_TRIM = _malloc_trim()


def give_back_memory() -> None:
    """Return the heap's free pages to the system (glibc's ``malloc_trim``; nothing elsewhere).

    Synchronous, a few milliseconds: call it from a worker thread, after the input is let go.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
