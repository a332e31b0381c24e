"""Keep the wrappers of :mod:`frames.cross_row`, :mod:`frames.reductions` and :mod:`frames.alignment`
out of what pandas tells its user.

A Python wrapper around a pandas method adds one frame to the stack and one reference to the object it
was called on. pandas looks at both: its warnings name "the first frame outside pandas"
(``pandas.util._exceptions.find_stack_level``), which would be the wrapper's file, and copy-on-write's
``ChainedAssignmentError`` counts references to tell ``df["a"][0] = 1`` (a temporary: nothing is changed)
from ``s[0] = 1``, and looks at the caller's frame, which would be the wrapper's. Two measures make the
wrappers invisible, on traced and untraced objects alike:

- :func:`install` gives pandas' stack-level finder one more rule: frames of this package's ``frames/``
  folder are stepped over like pandas' own. It is the same function object (pandas imports it by name
  into ~100 modules), so its code is swapped in place; with no such frame on the stack it returns what
  pandas' own returns. :func:`uninstall` restores it.
- the wrappers of methods that check for chained assignment call :func:`chained_setitem`,
  :func:`chained_indexer` or :func:`chained_method` first, with the object they were called on, from their
  first line: these run pandas' own check (its constants, its message, its warning class) as pandas
  would have run it without the wrapper, and name the user's line. pandas' check inside the wrapped
  method then sees the wrapper's extra reference and stays quiet, so the warning comes once.

pandas 2.x (``pandas>=2.2``) checks only under copy-on-write (``pd.options.mode.copy_on_write = True`` or
``"warn"``); the checks here follow it.
"""

from __future__ import annotations

import os
import sys
import warnings

import pandas as pd
import pandas.util._exceptions as _pd_exceptions

_FRAMES_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_original_code = []

_FIND_STACK_LEVEL = """
def find_stack_level() -> int:
    import pandas as pd

    pkg_dir = os.path.dirname(pd.__file__) + os.sep
    test_dir = os.path.join(pkg_dir, "tests") + os.sep
    frame = inspect.currentframe()
    try:
        n = 0
        while frame:
            filename = frame.f_code.co_filename
            if (filename.startswith(pkg_dir) and not filename.startswith(test_dir)) or filename.startswith(
                {frames_dir!r}
            ):
                frame = frame.f_back
                n += 1
            else:
                break
    finally:
        del frame
    return n
"""


def install() -> None:
    """Make pandas' warnings step over this package's wrapper frames (idempotent)."""
    if _original_code:
        return
    fn = _pd_exceptions.find_stack_level
    namespace: dict = {}
    src = _FIND_STACK_LEVEL.format(frames_dir=_FRAMES_DIR)
    exec(compile(src, fn.__code__.co_filename, "exec"), dict(fn.__globals__), namespace)
    _original_code.append(fn.__code__)
    fn.__code__ = namespace["find_stack_level"].__code__


def uninstall() -> None:
    """Give pandas' stack-level finder its own code back."""
    if _original_code:
        _pd_exceptions.find_stack_level.__code__ = _original_code.pop()


# ------------------------------------------------------------------------------ chained assignment
_V3 = int(pd.__version__.split(".")[0]) >= 3
if _V3:
    from pandas.compat._constants import (
        CHAINED_WARNING_DISABLED,
        REF_COUNT,
        REF_COUNT_IDX,
        REF_COUNT_METHOD,
    )
    from pandas.core.common import _SETITEM_OPCODES
    from pandas.errors import ChainedAssignmentError
    from pandas.errors.cow import (
        _chained_assignment_method_msg,
        _chained_assignment_method_update_msg,
        _chained_assignment_msg,
    )
else:  # pandas 2.2: copy-on-write is an option; its checks run only when it is on
    from pandas._config import using_copy_on_write
    from pandas.compat import PYPY as CHAINED_WARNING_DISABLED
    from pandas.compat._constants import REF_COUNT as REF_COUNT_METHOD
    from pandas.errors import (
        ChainedAssignmentError,
        _chained_assignment_method_msg,
        _chained_assignment_msg,
    )

    _chained_assignment_method_update_msg = _chained_assignment_method_msg
    REF_COUNT, REF_COUNT_IDX = 3, 2
    _SETITEM_OPCODES = frozenset()

# A check below is called from a wrapper's first line with the object as an argument: its own local
# holds one more reference than pandas' method would have seen; frame 2 is the user's frame.
_MINE = 1


def _active() -> bool:
    return not CHAINED_WARNING_DISABLED and (_V3 or using_copy_on_write())


def _local_in_caller(obj) -> bool:
    frame = sys._getframe(3)  # 0: this, 1: the check, 2: the wrapper, 3: the user's frame
    return any(v is obj for v in frame.f_locals.values())


def _setitem_syntax_in_caller() -> bool:
    try:
        frame = sys._getframe(3)
    except ValueError:
        return False
    return frame.f_code.co_code[frame.f_lasti] in _SETITEM_OPCODES


def chained_setitem(obj) -> None:
    """``obj[key] = value`` on a temporary (``df["a"][0] = 1``): pandas' ChainedAssignmentError."""
    if sys.getrefcount(obj) - _MINE > REF_COUNT or not _active():
        return
    if _V3 and (_local_in_caller(obj) or not _setitem_syntax_in_caller()):
        return
    warnings.warn(_chained_assignment_msg, ChainedAssignmentError, stacklevel=3)


def chained_indexer(indexer) -> None:
    """``df["a"].loc[0] = 1``: the indexer's object is a temporary."""
    obj = indexer.obj
    if sys.getrefcount(obj) - 1 > REF_COUNT_IDX or not _active():  # -1: the local ``obj``
        return
    warnings.warn(_chained_assignment_msg, ChainedAssignmentError, stacklevel=3)


def chained_method(obj, update: bool = False) -> None:
    """``df["a"].fillna(0, inplace=True)`` / ``df["a"].update(other)``: an in-place method on a temporary."""
    if sys.getrefcount(obj) - _MINE > REF_COUNT_METHOD or not _active():
        return
    if _V3 and _local_in_caller(obj):
        return
    msg = _chained_assignment_method_update_msg if update else _chained_assignment_method_msg
    warnings.warn(msg, ChainedAssignmentError, stacklevel=3)
