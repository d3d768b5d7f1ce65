"""Process-wide malloc settings that make NumPy's many short-lived arrays cheap."""

from __future__ import annotations

import os


def keep_freed_memory_in_the_heap() -> bool:
    """Ask glibc's malloc to serve arrays up to 32 MiB from its heap and not to hand
    freed memory back to the kernel until 512 MiB of it are free.

    Every layer allocates fresh output and gradient arrays. With glibc's defaults, the
    arrays of a small network (0.1-2 MiB) are mmap-ed or trimmed on free and come back
    as fresh pages that fault in on first touch, which on this kind of (virtual)
    machine cost about a quarter of a LeNet training step. Kept in the heap, the freed
    pages are reused; the peak memory is the same. Skipped when the user sets
    ``CHAINRULE_MALLOC_TUNING=0`` or glibc's own ``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_`` variables, and off glibc. Returns whether it applied.
    """
    if os.environ.get("CHAINRULE_MALLOC_TUNING", "1") == "0" or any(
            name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3            # from <malloc.h>
        # mallopt returns 1 on success, 0 on a value it refuses.
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20)   # glibc's largest allowed
                    and libc.mallopt(m_trim_threshold, 512 << 20))
    except (OSError, AttributeError):                          # not glibc: leave it
        return False


keep_freed_memory_in_the_heap()
