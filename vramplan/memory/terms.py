"""Named terms: the arithmetic behind every component, written out as nanoGPT's `estimate_mfu` does.

A `Term` is one product: `bytes` = the product of its factors' values, except as its `rounding`
says: "512 B blocks" - the first factor (a count of tensors) times the product of the rest rounded
up to whole allocator blocks (`xp.allocation_bytes`); "floor" - the product truncated to an int;
"shard" - the product of all factors but the last divided by the last (N ranks), rounded up. The plan sums terms into components and shells render them, so a
printed formula always multiplies out to the printed bytes. Values may be numpy arrays (sweeps);
then `bytes` is an array too and only scalar plans are rendered.
"""
from __future__ import annotations

from typing import NamedTuple

from vramplan.memory.xp import ALLOCATOR_BLOCK_BYTES, _is_array, allocation_bytes, as_int, maximum


ALLOCATION = "512 B blocks"
FLOOR = "floor"
SHARD = "shard"  # the product of every factor but the last, divided by the last (a shard count), rounded up


class Term(NamedTuple):
    name: str
    formula: str
    factors: tuple  # ((label, value), ...)
    bytes: object  # int, float or numpy array
    source: str = ""
    rounding: str = ""  # "", ALLOCATION or FLOOR


def term(name: str, formula: str, factors, source: str = "", rounding: str = "") -> Term:
    """A Term whose bytes are computed from its factors, so the two cannot disagree."""
    factors = tuple(factors)
    return Term(name, formula, factors, term_bytes([value for _label, value in factors], rounding), source, rounding)


def term_bytes(values, rounding: str = ""):
    """The bytes a term's factor values multiply out to under its rounding rule."""
    if rounding == ALLOCATION:
        rest = 1
        for value in values[1:]:
            rest = rest * value
        if type(rest) is int:  # the scalar plan's hot path: skip the array-aware helper
            return values[0] * (-(-max(rest, 1) // ALLOCATOR_BLOCK_BYTES) * ALLOCATOR_BLOCK_BYTES)
        return values[0] * allocation_bytes(rest)
    if rounding == SHARD:
        whole = 1
        for value in values[:-1]:
            whole = whole * value
        return -(-whole // values[-1])
    product = 1
    for value in values:
        product = product * value
    return as_int(product) if rounding == FLOOR else product


def largest(name: str, formula: str, alternatives, source: str = "") -> list:
    """The terms of whichever alternative (a list of terms) is largest. On arrays the winner differs
    per point, so it becomes one term holding the elementwise maximum."""
    totals = [total(terms) for terms in alternatives]
    if any(_is_array(value) for value in totals):
        return [term(name, formula, (("B", maximum(*totals)),), source)]
    return list(alternatives[max(range(len(totals)), key=totals.__getitem__)])


def total(terms) -> object:
    """Sum of the terms' bytes (0 for none)."""
    result = 0
    for item in terms:
        result = result + item.bytes
    return result


def as_dict(item: Term) -> dict:
    """A scalar term as plain JSON data."""
    return {"name": item.name, "formula": item.formula,
            "factors": [[label, _plain(value)] for label, value in item.factors],
            "bytes": int(item.bytes), "source": item.source, "rounding": item.rounding}


def _plain(value):
    number = float(value)
    return int(number) if number.is_integer() else number
