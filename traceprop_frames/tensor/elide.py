"""Reusing a temporary's buffer, as numpy does for plain arrays (its "temporary elision").

In ``(a - m) / s`` numpy may write the division into the buffer of the temporary ``a - m`` when nothing
else can see that temporary (where its build can check that the call comes straight from the
interpreter; some builds never do). On ProvenanceTensors numpy cannot tell (the array sits inside a tensor
object), so each step would allocate a new buffer. This module makes the same call for tensors:
a left operand of a binary arithmetic operator whose tensor object and array are referenced by nothing
but the expression being evaluated gets the result written into its array.

"Referenced by nothing else" is read from reference counts in the tensor's operator (``core._operator``),
compared with counts calibrated once, in this process, on the same call path (an operator on a fresh
tensor vs. on one held by a variable).
When the two calibrated cases cannot be told apart (an interpreter that borrows stack references),
nothing is ever reused.
"""

from __future__ import annotations

import threading

import numpy as np

UFUNCS = frozenset({np.add, np.subtract, np.multiply, np.true_divide, np.maximum, np.minimum})
MIN_BYTES = 1 << 18  # numpy's own threshold: smaller temporaries are cheap to allocate

_state: dict = {"temp": None}
_calibration = threading.local()  # this thread's calibration run (other threads never record into it)
_lock = threading.Lock()


def calibrating() -> list | None:
    """The list this thread's calibration run records counts into, or None outside calibration."""
    return getattr(_calibration, "seen", None)


def temp_counts(fresh):
    """(tensor refcount, array refcount) of a temporary left operand, or False if they cannot be read.

    ``fresh()`` makes a tensor of :data:`MIN_BYTES` or more that owns its array (used once, to calibrate).
    """
    if _state["temp"] is None:
        with _lock:
            if _state["temp"] is None:
                try:
                    _state["temp"] = _calibrate(fresh)
                except Exception:  # noqa: BLE001 - any surprise: never reuse
                    _state["temp"] = False
    return _state["temp"]


def _calibrate(fresh):
    seen: list = []
    _calibration.seen = seen
    try:
        base = fresh()
        held = base * 1.0  # a tensor owning its array, held by a variable
        _ = (base * 1.0) - 1.0  # the temporary case, recorded first
        _ = held - 1.0  # the held case
    finally:
        _calibration.seen = None
    temp, var = seen[-2], seen[-1]
    if var[0] != temp[0] + 1 or var[1] != temp[1]:
        return False
    return temp


def reusable(a: np.ndarray, o, counts) -> bool:
    """Whether ``a`` (the left operand's array) may receive ``a <op> o``, given the left operand's
    reference counts ``counts`` read in the operator (``core._operator``, the path calibrated)."""
    if counts != _state["temp"]:
        return False
    if a.base is not None or not a.flags.writeable or a.dtype.kind != "f":
        return False
    if type(o) is not np.ndarray or o.dtype != a.dtype or o is a:
        return False
    return np.broadcast_shapes(o.shape, a.shape) == a.shape
