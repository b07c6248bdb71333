"""Freed memory handed back to the operating system, where the C library allows it (glibc).

A worker with more models than its state cache holds rebuilds states from
the table and saves them again all day: each round decodes, updates and
encodes a model, and frees what it used. glibc's allocator keeps freed
memory in its heap for reuse, and can only shrink the heap from its top, so
a few long-lived blocks among the freed ones (a stored state, a new array)
keep hundreds of megabytes resident that the worker no longer uses. Two
remedies: large blocks get pages of their own (``mmap``), returned the
moment they are freed, instead of glibc's default of moving ever larger
blocks into the heap once one such block was freed; and ``malloc_trim``
gives the free pages inside the heap back, now and then. Other C libraries
(musl, macOS) have neither call; there this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

# Blocks from this size on get pages of their own: a state's JSON, a batch's columns, and input
# records of 128 KB and more (an SDK envelope of a few hundred events), freed back to the system
# with their record rather than left in the heap until the next trim.
MMAP_THRESHOLD_BYTES = 128 * 1024
# glibc's mallopt parameter for it (malloc.h)
_M_MMAP_THRESHOLD = -3
# How often a worker hands freed memory back. A pass holds the event loop for as long as it
# walks the heap's free blocks, a few milliseconds now that large blocks have pages of their
# own; every round of rebuilt and saved states frees tens of megabytes, which at longer
# intervals stayed resident until the next pass.
RELEASE_INTERVAL_S = 5.0


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(ctypes.util.find_library("c"))
except OSError:
    _LIBC = None


def _libc_function(name: str, argtypes: list[type]) -> Callable[..., int] | None:
    function = getattr(_LIBC, name, None)
    if function is not None:
        function.argtypes = argtypes
        function.restype = ctypes.c_int
    return function


_TRIM = _libc_function("malloc_trim", [ctypes.c_size_t])
_MALLOPT = _libc_function("mallopt", [ctypes.c_int, ctypes.c_int])


def give_large_blocks_their_own_pages() -> bool:
    """Allocate blocks of ``MMAP_THRESHOLD_BYTES`` and more apart from the heap, for good; whether it could.

    glibc starts at 128 KB but raises the threshold (to 32 MB) each time
    such a block is freed, which puts a worker's large short-lived buffers
    into the heap among long-lived blocks. A fixed threshold stops that.
    It holds for the whole process, so the worker sets it once, at start.
    """
    if _MALLOPT is None:
        return False
    return bool(_MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_free_memory() -> bool:
    """Give the allocator's free pages back to the operating system; whether any were (False where unsupported)."""
    if _TRIM is None:
        return False
    return bool(_TRIM(0))
