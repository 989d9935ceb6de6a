"""Arithmetic that works the same on Python ints and numpy arrays.

The fit path must not import numpy (start-up time), so these only reach for numpy
when an argument already is an array.
"""
from __future__ import annotations

ALLOCATOR_BLOCK_BYTES = 512
"""CUDA caching allocator: every block is rounded up to a multiple of 512 B
(c10/cuda/CUDACachingAllocator.cpp, kMinBlockSize / round_size)."""


def _is_array(value) -> bool:
    return hasattr(value, "__array__") and not isinstance(value, (int, float))


def ceil_div(numerator, denominator):
    """ceil(a / b) for non-negative integers or integer arrays."""
    return -(-numerator // denominator)


def round_up(value, multiple):
    return ceil_div(value, multiple) * multiple


def allocation_bytes(nbytes):
    """Bytes `max_memory_allocated` counts for one tensor of `nbytes` (512 B rounding)."""
    return round_up(maximum(nbytes, 1), ALLOCATOR_BLOCK_BYTES)


def maximum(*values):
    """Elementwise max of scalars and arrays."""
    if any(_is_array(v) for v in values):
        import numpy as np

        result = values[0]
        for value in values[1:]:
            result = np.maximum(result, value)
        return result
    return max(values)


def where(condition, if_true, if_false):
    """Elementwise choice: numpy.where for arrays, a plain conditional for scalars."""
    if _is_array(condition) or _is_array(if_true) or _is_array(if_false):
        import numpy as np

        return np.where(condition, if_true, if_false)
    return if_true if condition else if_false


INT64_SAFE_MAGNITUDE = 1 << 62
"""Below this an int64 cast of a float array cannot wrap (int64 ends at 2**63)."""


def as_int(value):
    """A scalar result as int; an array as int64, or floored float64 where a value would wrap int64.

    Casting a float past 2**63 to int64 gives -2**63 silently; a floored float is inexact past
    2**53 but keeps its sign and magnitude, so callers can see it is too large (`vramplan.sweep`).
    """
    if _is_array(value):
        import numpy as np

        array = np.asarray(value)
        if array.dtype.kind == "f" and not (np.abs(array) < INT64_SAFE_MAGNITUDE).all():
            return np.floor(array)
        return array.astype(np.int64)
    return int(value)
