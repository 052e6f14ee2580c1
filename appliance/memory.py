"""The process's memory, handed back to the system (glibc only; a no-op elsewhere). A post runs for
months: what a busy minute or a sync catch-up freed must not stay in the process."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


def return_free_memory() -> None:
    """Hand memory freed by finished passes back to the system. Frames are megabytes each and
    glibc keeps freed blocks in its arenas, so a post's resident size otherwise creeps up towards
    its busiest minute. A no-op where the C library is not glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _malloc_trim():
    return getattr(_libc(), "malloc_trim", None)


M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap this process's glibc malloc arenas, before its threads start. glibc gives each thread
    that allocates an arena of its own (up to eight per core) and keeps what was freed there: the
    web server's four threads each came to hold a sync batch's working set, some 20 MB more for a
    post catching up by pull. Two arenas still spare the threads most of the contention. A no-op
    where the C library is not glibc."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, arenas)
