"""Input checks shared by the kernel wrappers.

Each public kernel wrapper turns its inputs (NumPy, Polars, Arrow) into contiguous
NumPy arrays with these helpers, then calls one private Numba kernel with arrays
and scalars only.  Every failure is a :class:`~tracekit.errors.SchemaError`
(wrong dtype, shape, order) or :class:`~tracekit.errors.ParameterError` (a value
out of range) whose one-line message names the function and the argument.
"""

from __future__ import annotations

import numbers

import numpy as np

from tracekit.errors import ParameterError, SchemaError
from tracekit.kernels._jit import kernel

#: Sentinel for "no timestamp" in int64 nanosecond state arrays.
NO_TS = np.iinfo(np.int64).min

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _to_numpy(x: object) -> np.ndarray:
    """A NumPy view of ``x`` (ndarray, Polars Series, Arrow array, list)."""
    if isinstance(x, np.ndarray):
        return x
    to_numpy = getattr(x, "to_numpy", None)
    if to_numpy is not None:  # Polars Series, pyarrow Array / ChunkedArray
        try:  # pyarrow: nulls need a copy (floats become NaN)
            return np.asarray(to_numpy(zero_copy_only=False))
        except TypeError:  # Polars (nulls in floats become NaN)
            return np.asarray(to_numpy())
    return np.asarray(x)


def float_array(func: str, name: str, x: object, *, ndim: int = 1) -> np.ndarray:
    """``x`` as a C-contiguous float32 or float64 array (NaN marks missing values)."""
    arr = _to_numpy(x)
    if arr.dtype not in _FLOATS:
        raise SchemaError(
            f"{func}: {name} must be float32 or float64 (NaN for missing), got {arr.dtype}; "
            f"cast it first, e.g. {name}.astype(np.float32)"
        )
    if arr.ndim != ndim:
        raise SchemaError(f"{func}: {name} must be {ndim}-D, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def float64_array(func: str, name: str, x: object, *, ndim: int = 1) -> np.ndarray:
    """``x`` as a C-contiguous float64 array (float32 and integers are widened)."""
    arr = _to_numpy(x)
    if arr.dtype.kind not in "fiu":
        raise SchemaError(f"{func}: {name} must be numeric, got {arr.dtype}")
    if arr.ndim != ndim:
        raise SchemaError(f"{func}: {name} must be {ndim}-D, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def int_array(func: str, name: str, x: object) -> np.ndarray:
    """``x`` as a C-contiguous 1-D int64 array (any integer dtype is accepted)."""
    arr = _to_numpy(x)
    if arr.dtype.kind not in "iu":
        raise SchemaError(f"{func}: {name} must be an integer array, got {arr.dtype}")
    if arr.ndim != 1:
        raise SchemaError(f"{func}: {name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise SchemaError(f"{func}: {name} has values above the int64 range")
    return np.ascontiguousarray(arr, dtype=np.int64)


def ts_array(func: str, name: str, x: object, *, check_sorted: bool = True) -> np.ndarray:
    """Timestamps as C-contiguous int64 nanoseconds, checked non-decreasing.

    Accepts int64 nanoseconds or ``datetime64`` of any unit (converted to ns); a
    Polars ``Datetime`` Series arrives as ``datetime64``.  NaT is rejected.  With
    ``check_sorted=False`` the order is left to the caller (see
    :func:`check_sorted_runs`).
    """
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise SchemaError(f"{func}: {name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "M":
        if np.isnat(arr).any():
            raise SchemaError(f"{func}: {name} contains NaT; drop rows without a timestamp first")
        arr = arr.astype("datetime64[ns]").view(np.int64)
    elif arr.dtype.kind in "iu":
        arr = arr.astype(np.int64, copy=False)
    else:
        raise SchemaError(
            f"{func}: {name} must be int64 nanoseconds or datetime64, got {arr.dtype}"
        )
    arr = np.ascontiguousarray(arr)
    if check_sorted:
        check_sorted_runs(func, name, arr, None)
    return arr


#: Pairs of samples :func:`_first_decrease` counts at once before it looks for the first.
_DECREASE_BLOCK = 1024


@kernel
def _first_decrease(ts, offsets):
    """Index i of the first ts[i+1] < ts[i] within a run, or -1."""
    for g in range(offsets.shape[0] - 1):
        i = offsets[g]
        end = offsets[g + 1] - 1  # the last pair of the run is (end - 1, end)
        while i < end:
            # a block's decreases are counted without a branch (vectorized: an early
            # exit per pair ran at a third of the speed); a block with one is searched
            e = min(i + _DECREASE_BLOCK, end)
            lo = ts[i:e]
            hi = ts[i + 1: e + 1]
            bad = 0
            for k in range(e - i):
                bad += hi[k] < lo[k]
            if bad:
                for k in range(e - i):
                    if hi[k] < lo[k]:
                        return i + k
            i = e
    return -1


def first_decrease(ts: np.ndarray, offsets: np.ndarray | None = None) -> tuple[int, int]:
    """``(i, run)`` of the first ``ts[i+1] < ts[i]`` within an ``offsets`` run (one run,
    0, when None), or ``(-1, -1)`` when every run is non-decreasing."""
    if ts.size < 2:
        return -1, -1
    runs = np.array([0, ts.size], dtype=np.int64) if offsets is None else offsets
    i = int(_first_decrease(ts, runs))
    return (i, int(np.searchsorted(runs, i, side="right") - 1)) if i >= 0 else (-1, -1)


def check_sorted_runs(func: str, name: str, ts: np.ndarray, offsets: np.ndarray | None) -> None:
    """SchemaError unless ``ts`` is non-decreasing within each ``offsets`` run.

    ``offsets`` (CSR style, ``ts[offsets[g]:offsets[g+1]]`` is run ``g``) may be
    None for a single run.
    """
    i, g = first_decrease(ts, offsets)
    if i >= 0:
        where = f" (run {g})" if offsets is not None else ""
        raise SchemaError(
            f"{func}: {name} must be sorted ascending{where}; sample {i + 1} ({ts[i + 1]} ns) "
            f"comes before sample {i} ({ts[i]} ns); sort by time first"
        )


def same_length(func: str, **arrays: np.ndarray) -> int:
    """The common length of ``arrays``; SchemaError naming them if they differ."""
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise SchemaError(f"{func}: arrays must have the same length, got {shown}")
    return next(iter(lengths.values())) if lengths else 0


def int_param(func: str, name: str, value: object, *, minimum: int | None = None) -> int:
    """An integer parameter, optionally bounded below."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{func}: {name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ParameterError(f"{func}: {name} must be >= {minimum}, got {value}")
    return value


def float_param(
    func: str,
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_min: bool = False,
    strict_max: bool = False,
) -> float:
    """A finite real parameter within optional bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{func}: {name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ParameterError(f"{func}: {name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if strict_min else value < minimum):
        op = ">" if strict_min else ">="
        raise ParameterError(f"{func}: {name} must be {op} {minimum}, got {value}")
    if maximum is not None and (value >= maximum if strict_max else value > maximum):
        op = "<" if strict_max else "<="
        raise ParameterError(f"{func}: {name} must be {op} {maximum}, got {value}")
    return value


def out_array(
    func: str, name: str, arr: object, shape: tuple[int, ...], dtype: type
) -> np.ndarray:
    """A caller-supplied output/accumulator array: right dtype, shape, contiguous, writable."""
    if not isinstance(arr, np.ndarray):
        raise SchemaError(f"{func}: {name} must be a NumPy array, got {type(arr).__name__}")
    if arr.dtype != np.dtype(dtype):
        raise SchemaError(f"{func}: {name} must have dtype {np.dtype(dtype)}, got {arr.dtype}")
    if arr.shape != shape:
        raise SchemaError(f"{func}: {name} must have shape {shape}, got {arr.shape}")
    if not arr.flags.c_contiguous or not arr.flags.writeable:
        raise SchemaError(f"{func}: {name} must be a writable C-contiguous array")
    return arr
