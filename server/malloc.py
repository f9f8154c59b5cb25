"""glibc malloc settings the server applies to itself at start, before any thread exists.

Why: every thread that allocates gets its own malloc arena (up to 8 per core), and a thread arena keeps the
pages it once used in a burst. Under 40,000 fuzzed requests the arenas of gRPC's and the decode pool's threads
held 5 MiB more after 40,000 than after 10,000 with almost nothing in use (server RSS +1.3 % after 10,000,
+2.2 % after 40,000); with two arenas +1.0 % and +1.2 % (bench/results/faults.md). The big allocations
(frames, tensors) are mmapped above the 32 KiB threshold (`core.bound_malloc`), so fewer arenas only share the
small ones, which each thread's tcache serves without a lock. An operator's MALLOC_ARENA_MAX wins.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2


def cap_arenas(n: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at `n`; False where the environment already sets it or there is no glibc."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, n))
    return False
