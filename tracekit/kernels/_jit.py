"""All Numba options in one place.

``kernel`` compiles with ``nogil`` (threads run kernels in parallel), ``cache`` (the
compile cost is paid once per install) and ``error_model="numpy"`` (division by zero
gives inf/NaN like NumPy instead of raising).  Never ``fastmath``: traces carry NaN
gaps, and fast-math may assume they do not exist.
"""

from __future__ import annotations

import numba

KERNEL_OPTIONS = dict(nogil=True, cache=True, error_model="numpy")


def kernel(fn=None, **overrides):
    """Decorator: ``numba.njit`` with tracekit's options."""
    options = {**KERNEL_OPTIONS, **overrides}
    if fn is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(fn)
