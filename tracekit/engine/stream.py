"""Streaming execution: GPU batches sized by a memory limit, run on threads or Dask,
results handed back in batch order.

* :func:`plan_batches` cuts the GPUs, in topology order (row, rack, host), into
  batches whose estimated memory stays under a budget, preferring cuts at rack, then
  host boundaries so most groups are finished inside one batch and never held.
* :func:`run_ordered` runs ``fn(*args)`` for each batch on a thread pool (kernels
  release the GIL) or on a ``dask.distributed`` client, with a bounded number of
  batches in flight, and yields the results in batch order, so the merge (and
  therefore every floating-point sum) does not depend on timing, workers or retries.
  A task lost with a killed Dask worker is recomputed by the scheduler; its result
  is read exactly once here, so nothing is lost or counted twice.
"""

from __future__ import annotations

import uuid
import warnings
from collections import deque
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from tracekit.engine.local import default_workers, in_caller_context, mark_pool_thread, workers_scope

#: Default ``--memory-limit``.
DEFAULT_MEMORY_LIMIT = 2 * 2**30


def boundary_levels(keys: np.ndarray) -> np.ndarray:
    """For GPUs in order with group keys (n, L) from the coarsest level to the
    finest, the coarsest level that changes between position ``p - 1`` and ``p``
    (``L - j`` for level ``j``; 0 = same finest group), for ``p`` in ``0..n``;
    positions 0 and n count as every level changing."""
    n, n_levels = keys.shape
    out = np.zeros(n + 1, dtype=np.int64)
    out[0] = out[n] = n_levels + 1
    if n > 1:
        diff = keys[1:] != keys[:-1]  # (n-1, L)
        first = np.where(diff.any(axis=1), np.argmax(diff, axis=1), n_levels)
        out[1:n] = n_levels - first
    return out


def plan_batches(costs: np.ndarray, keys: np.ndarray, budget: float, *, max_gpus: int | None = None
                 ) -> list[np.ndarray]:
    """Batches of GPU indices, each of total ``costs`` at most ``budget`` (a single GPU
    over budget is a batch of its own), GPUs in the order of ``keys`` rows (group
    indices from the coarsest level to the finest).  A cut is placed at the coarsest
    group boundary that still leaves the batch at least half full.
    """
    costs = np.asarray(costs, dtype=np.float64)
    n = len(costs)
    if n == 0:
        return []
    order = np.lexsort(tuple(keys[:, j] for j in range(keys.shape[1] - 1, -1, -1))) if keys.size else np.arange(n)
    c = costs[order]
    cum = np.concatenate([[0.0], np.cumsum(c)])
    bl = boundary_levels(keys[order]) if keys.size else np.zeros(n + 1, dtype=np.int64)
    batches = []
    start = 0
    while start < n:
        end = int(np.searchsorted(cum, cum[start] + budget, side="right")) - 1
        end = min(max(end, start + 1), n)
        if max_gpus:
            end = min(end, start + max_gpus)
        if end < n:
            cand = np.arange(start + 1, end + 1)
            full = cum[cand] - cum[start] >= 0.5 * (cum[end] - cum[start])
            cand = cand[full]
            best = bl[cand]
            end = int(cand[np.flatnonzero(best == best.max())[-1]])
        batches.append(order[start:end])
        start = end
    return batches


def run_ordered(fn: Callable, args: Sequence[tuple], *, workers: int | None = None, client=None,
                shared: Iterable = ()) -> Iterator:
    """Yield ``fn(*a, *shared)`` for each ``a`` in ``args``, in order.

    Parameters
    ----------
    fn
        A module-level function (Dask pickles it by reference).
    args
        Per-task arguments.
    workers
        Threads (default: every core); with a Dask ``client``, tasks in flight per
        worker thread of the cluster.
    client
        A ``dask.distributed.Client``: tasks run on its workers; ``shared`` values
        go to the cluster once (as tasks that return them; workers fetch them from
        each other).
    """
    shared = tuple(shared)
    if client is not None:
        yield from _run_dask(fn, args, client, shared)
        return
    workers = workers or default_workers()
    if workers <= 1 or len(args) <= 1:
        for a in args:
            yield fn(*a, *shared)
        return
    from concurrent.futures import ThreadPoolExecutor

    task = in_caller_context(fn)
    with ThreadPoolExecutor(max_workers=workers, initializer=mark_pool_thread) as pool:
        pending: deque = deque()
        it = iter(args)
        for a in it:
            pending.append(pool.submit(task, *a, *shared))
            if len(pending) >= workers:
                break
        while pending:
            result = pending.popleft().result()
            for a in it:
                pending.append(pool.submit(task, *a, *shared))
                break
            yield result


def _one_thread(fn: Callable, *args):
    """``fn(*args)`` on a Dask worker: its maps run on the calling thread (the worker's
    threads are the parallelism; a pool per task would oversubscribe the machine)."""
    with workers_scope(1):
        return fn(*args)


def _shared_value(x):
    """The task that holds a shared argument on the cluster (see :func:`_run_dask`)."""
    return x


def _run_dask(fn: Callable, args: Sequence[tuple], client, shared: tuple) -> Iterator:
    # Shared arguments go to the cluster once, as tasks that return them, not with
    # ``client.scatter``: scattered data that a dying worker held is lost for good
    # (dask/distributed#3149) and the tasks that need it are cancelled ("already
    # forgotten"), while a task's result is recomputed elsewhere.
    with warnings.catch_warnings():  # the shared context is meant to travel in the graph, once
        warnings.filterwarnings("ignore", message="Sending large graph")
        scattered = [client.submit(_shared_value, s, key=f"tracekit-shared-{uuid.uuid4().hex}", pure=False)
                     for s in shared]
    threads = sum(client.nthreads().values()) or 1
    window = 2 * threads
    pending: deque = deque()
    it = iter(args)

    def submit(a) -> None:
        key = f"{fn.__name__}-{uuid.uuid4().hex}"  # the task's own name on the dashboard
        pending.append(client.submit(_one_thread, fn, *a, *scattered, key=key, retries=2))

    for a in it:
        submit(a)
        if len(pending) >= window:
            break
    while pending:
        fut = pending.popleft()
        result = fut.result()
        fut.release()
        for a in it:
            submit(a)
            break
        yield result


def connect(scheduler: str):
    """A ``dask.distributed.Client`` for ``tcp://HOST:PORT`` (ParameterError if Dask is
    missing or the scheduler cannot be reached)."""
    from tracekit.errors import ParameterError

    try:
        from dask.distributed import Client
    except ImportError:
        raise ParameterError("--scheduler needs dask.distributed: pip install 'tracekit[dask]'") from None
    try:
        return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise ParameterError(f"cannot reach the Dask scheduler {scheduler} ({exc})") from None
