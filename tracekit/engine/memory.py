"""Process memory figures (for benchmarks and, later, the streaming memory limit)."""

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
