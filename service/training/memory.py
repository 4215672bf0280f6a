"""Hand a large job's memory back to the system, so an idle worker is small again.

Dropping the references is not enough. glibc's malloc keeps freed blocks for reuse, and
tensors of a few MB come from its heaps (its mmap threshold rises as large blocks are freed):
malloc_trim(0) returns the free pages of every heap. CUDA's caching allocator has its own cache
to empty. (The database connections hold memory of their own: see Worker.run_job.) A small job
is left alone: what it freed serves the next one, and a collection costs more than it gives.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
from collections.abc import Callable

import torch

# A job that left the worker this much larger than it found it is worth a release.
RELEASE_ABOVE_BYTES = 64 * 1024**2


def resident_bytes() -> int | None:
    """This process's resident set size, or None where /proc does not say (not Linux)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def grew(resident_before: int | None) -> bool:
    """Whether the process is notably larger than resident_bytes() said before; when it
    cannot tell, True (a needless release costs milliseconds, a missed one gigabytes)."""
    resident_after = resident_bytes()
    if resident_before is None or resident_after is None:
        return True
    return resident_after - resident_before > RELEASE_ABOVE_BYTES


def release_memory(used_cuda: bool) -> None:
    gc.collect()  # cycles (autograd graphs, exception frames) can hold tensors until then
    if used_cuda and torch.cuda.is_available():
        torch.cuda.empty_cache()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    try:
        # The process's own symbols, the C library's among them.
        function: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return function
