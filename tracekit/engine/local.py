"""Local parallel execution: a thread pool over work items split by cost.

Kernels release the GIL (``nogil=True``), so threads run them on all cores without
copying arrays between processes.  Work is split into contiguous batches of roughly
equal cost (samples per GPU), not equal item counts (stumpy's ``_get_array_ranges``
does the same), and results are merged serially in item order, so the answer does not
depend on the number of workers.  The threads are kept between calls (one pool per
size): many calls are a few milliseconds of kernel work, where starting threads would
show.
"""

from __future__ import annotations

import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

_WORKERS: int | None = None
_POOLS: dict[int, ThreadPoolExecutor] = {}  # threads kept between calls (a call is often only ms of work)
_LOCAL = threading.local()
_SCOPED: contextvars.ContextVar[int | None] = contextvars.ContextVar("tracekit_workers", default=None)  # workers_scope
_POOLS_LOCK = threading.Lock()


def mark_pool_thread() -> None:
    """Pool thread initializer: a map called from this thread runs inline (the work
    is already spread over the workers)."""
    _LOCAL.in_pool = True


def _pool_map(fn: Callable, items: list, threads: int) -> list:
    """``[fn(x) for x in items]`` on a shared pool of ``threads`` threads, in order; run
    inline when called from one of the pool's own threads (a nested wait could take
    every thread)."""
    if getattr(_LOCAL, "in_pool", False):
        return [fn(x) for x in items]
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tracekit",
                                                        initializer=mark_pool_thread)
    return list(pool.map(in_caller_context(fn), items))


def in_caller_context(fn: Callable) -> Callable:
    """``fn`` run, on whichever thread, in a copy of the calling thread's context (its
    :func:`workers_scope` included)."""
    ctx = contextvars.copy_context()
    return lambda *a: ctx.copy().run(fn, *a)


if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads
    os.register_at_fork(after_in_child=_POOLS.clear)


def default_workers() -> int:
    """Worker threads: the innermost :func:`workers_scope`, :func:`set_workers`,
    ``TRACEKIT_THREADS`` or every core."""
    scoped = _SCOPED.get()
    if scoped is not None:
        return scoped
    if _WORKERS is not None:
        return _WORKERS
    env = os.environ.get("TRACEKIT_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, os.cpu_count() or 1)


def set_workers(n: int | None) -> None:
    """Fix the number of worker threads (None: back to the default)."""
    global _WORKERS
    _WORKERS = None if n is None else max(1, int(n))


@contextmanager
def workers_scope(n: int | None) -> Iterator[None]:
    """Every parallel map started from this thread inside the block uses ``n`` threads
    (None: unchanged), so one ``workers`` option reaches every threaded step of an
    ``analyze`` or ``replay`` call, not only those it is passed to."""
    if n is None:
        yield
        return
    token = _SCOPED.set(max(1, int(n)))
    try:
        yield
    finally:
        _SCOPED.reset(token)


def cost_ranges(costs: Sequence[float] | np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Split items ``0..n`` into at most ``parts`` contiguous ranges of similar total cost."""
    c = np.asarray(costs, dtype=np.float64)
    n = len(c)
    if n == 0:
        return []
    parts = max(1, min(parts, n))
    cum = np.cumsum(c)
    total = cum[-1]
    if total <= 0:
        edges = np.linspace(0, n, parts + 1).astype(int)
    else:
        targets = total * np.arange(1, parts) / parts
        edges = np.concatenate([[0], np.searchsorted(cum, targets, side="left") + 1, [n]])
        edges = np.unique(np.clip(edges, 0, n))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def map_ranges(fn: Callable[[int, int], T], costs, workers: int | None = None) -> list[T]:
    """``[fn(a, b) for each cost-balanced range]``, run on a thread pool, in order."""
    workers = workers or default_workers()
    ranges = cost_ranges(costs, workers)
    if len(ranges) <= 1:
        return [fn(a, b) for a, b in ranges]
    return _pool_map(lambda r: fn(*r), ranges, workers)


def map_items(fn: Callable[[T], object], items: list, workers: int | None = None) -> list:
    """``[fn(x) for x in items]`` on a thread pool, in order."""
    workers = workers or default_workers()
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    return _pool_map(fn, items, workers)
