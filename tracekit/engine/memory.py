"""Process memory: peak figures (benchmarks) and handing freed heap back to the OS."""

from __future__ import annotations

from pathlib import Path


def peak_rss_mib() -> float:
    """Peak RSS of this process in MiB: ``VmHWM`` where /proc has it (reset by exec,
    so a child's figure is its own), else ``resource.getrusage`` (which on Linux keeps
    the parent's RSS at fork across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def release_freed_memory() -> None:
    """Hand freed heap memory back to the operating system: glibc's (``malloc_trim``;
    nothing elsewhere) and the Arrow memory pool's (Parquet reads), when loaded.

    The per-GPU and per-cell temporaries of one step (phases, grid series, a streamed
    batch: a few MB to tens of MB each, many on worker threads) are freed into
    malloc's arenas, where they stay resident; the next step's large arrays are
    mmapped and cannot reuse them, so the process peak would be their sum.  Results
    are unchanged.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    import sys

    if "pyarrow" in sys.modules:  # its pool (mimalloc by default) keeps what row-group reads freed
        sys.modules["pyarrow"].default_memory_pool().release_unused()


def _malloc_trim():
    global _MALLOC_TRIM
    if _MALLOC_TRIM is False:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim
            _MALLOC_TRIM.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _MALLOC_TRIM = None
    return _MALLOC_TRIM


_MALLOC_TRIM = False


def ram_bytes() -> int | None:
    """Physical memory of this machine (None where the OS does not say)."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


#: Share of physical memory a process that holds a whole trace may plan to use.
RAM_SHARE = 0.8


def ram_limit_bytes() -> int | None:
    """:data:`RAM_SHARE` of this machine's memory (None where the OS does not say)."""
    ram = ram_bytes()
    return None if ram is None else int(RAM_SHARE * ram)
