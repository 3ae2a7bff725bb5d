"""Keep freed memory in the process instead of handing it back to the kernel after every forward (glibc).

torch's CPU tensors come from malloc. With glibc's defaults a forward's activations (megabytes each) are
either mmapped and unmapped per allocation or returned from the top of the heap when freed, so the next
forward touches fresh pages again: on the development machine a packed forward of 64 sequences (hidden 256,
4 layers, 1 thread) took 22k minor page faults and 360 ms, against 264 faults and 324 ms with freed memory kept;
16 sequences 108 against 84 ms (benchmarks/forward_memory.py). Serving allocations up to `MMAP_THRESHOLD` from the heap
and trimming it only above `TRIM_THRESHOLD` free removes the faults; the cost is that memory stays at its peak,
which a server reaches again on its next big batch anyway.

The same as starting the process with MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_, but settable from
Python after start. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest (on 64-bit): bigger allocations are still mmapped
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Serve allocations up to `mmap_threshold` bytes from the heap and return freed heap memory to the kernel only
    once more than `trim_threshold` bytes are free. Whether it took effect (False where libc is not glibc)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and libc.mallopt(M_TRIM_THRESHOLD,
                                                                                    trim_threshold) == 1
    except (OSError, AttributeError) as exc:
        logger.debug("mallopt unavailable: %s", exc)
        return False
    return bool(done)
