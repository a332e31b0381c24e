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

Since :mod:`frames.inline` installs most wrappers inside pandas' own method (behind a one-attribute
test), untraced calls never reach a wrapper, and on traced objects pandas' own chained-assignment check
runs in pandas' frame before the wrapper is called; the checks below then step aside
(:func:`_checked_by_pandas`) and only guard the wrappers installed as themselves (where pandas' source
could not be recompiled).

pandas 2.2 has three regimes (copy-on-write on: ChainedAssignmentError; ``"warn"`` mode and the legacy
mode on views: FutureWarning); the checks here follow each, with its constants.
"""

from __future__ import annotations

import inspect
import os
import sys
import textwrap
import warnings

import pandas as pd
import pandas.util._exceptions as _pd_exceptions

from traceprop_frames.frames import inline

_FRAMES_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_original_code = []

_RULE = "if filename.startswith(pkg_dir) and not filename.startswith(test_dir):"

_FALLBACK = """
def find_stack_level() -> int:
    import pandas as pd

    pkg_dir = os.path.dirname(pd.__file__) + os.sep
    test_dir = os.path.join(pkg_dir, "tests") + os.sep
    frame = inspect.currentframe()
    try:
        n = 0
        while frame:
            filename = frame.f_code.co_filename
            RULE
                frame = frame.f_back
                n += 1
            else:
                break
    finally:
        del frame
    return n
"""


def _stepping_over_frames(fn):
    """pandas' own ``find_stack_level`` source with one more condition in its loop (a generic version if
    this pandas words the loop differently); compiled at pandas' file and line numbers."""
    ours = (
        "if (filename.startswith(pkg_dir) and not filename.startswith(test_dir)) "
        f"or filename.startswith({_FRAMES_DIR!r}):"
    )
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        src = ""
    first = fn.__code__.co_firstlineno
    if _RULE not in src:
        src, first = _FALLBACK.replace("RULE", ours), 1
    namespace: dict = {}
    exec(compile(src.replace(_RULE, ours), fn.__code__.co_filename, "exec"), dict(fn.__globals__), namespace)
    return namespace[fn.__name__].__code__.replace(co_firstlineno=first)


def install() -> None:
    """Make pandas' warnings step over this package's wrapper frames (idempotent)."""
    if _original_code:
        return
    fn = _pd_exceptions.find_stack_level
    code = _stepping_over_frames(fn)
    _original_code.append(fn.__code__)
    fn.__code__ = code


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
else:  # pandas 2.2: copy-on-write is an option ("warn" mode: FutureWarning; off: FutureWarning on views)
    from pandas._config import using_copy_on_write, warn_copy_on_write
    from pandas.compat import PYPY as CHAINED_WARNING_DISABLED
    from pandas.compat._constants import REF_COUNT as REF_COUNT_METHOD
    from pandas.errors import (
        ChainedAssignmentError,
        _chained_assignment_method_msg,
        _chained_assignment_msg,
        _chained_assignment_warning_method_msg,
        _chained_assignment_warning_msg,
        _check_cacher,
    )

    _chained_assignment_method_update_msg = _chained_assignment_method_msg
    REF_COUNT, REF_COUNT_IDX = 3, 2

# A check below is called from a wrapper's first line with the object as an argument: its own local holds
# one more reference than pandas' method would have seen. Frame 3 (0: a helper, 1: the check, 2: the
# wrapper) is the user's. Each check returns the object: the wrapper keeps it in a local while pandas runs,
# so pandas' own check (which would name the wrapper's line) sees two more references and stays quiet.
_MINE = 1


def _local_in_caller(obj) -> bool:
    frame = sys._getframe(3)
    return any(v is obj for v in frame.f_locals.values())


def _setitem_syntax_in_caller() -> bool:
    try:
        frame = sys._getframe(3)
    except ValueError:
        return False
    return frame.f_code.co_code[frame.f_lasti] in _SETITEM_OPCODES


def _warn(msg: str, category) -> None:
    warnings.warn(msg, category, stacklevel=4)  # 1: here, 2: the check, 3: the wrapper, 4: the user


def _checked_by_pandas() -> bool:
    """The wrapper was called from pandas' own method recompiled by :mod:`frames.inline`, whose
    chained-assignment check already ran in pandas' frame (0: here, 1: the check, 2: the wrapper)."""
    return sys._getframe(3).f_code in inline.CODES


def chained_setitem(obj):
    """``obj[key] = value`` on a temporary (``df["a"][0] = 1``): pandas' ChainedAssignmentError."""
    rc = sys.getrefcount(obj) - _MINE
    if rc > REF_COUNT + 1 or CHAINED_WARNING_DISABLED or _checked_by_pandas():
        return obj
    if _V3:
        if rc <= REF_COUNT and not _local_in_caller(obj) and _setitem_syntax_in_caller():
            _warn(_chained_assignment_msg, ChainedAssignmentError)
    elif using_copy_on_write():
        if rc <= 3:
            _warn(_chained_assignment_msg, ChainedAssignmentError)
    elif isinstance(obj, pd.Series):
        warn_mode = warn_copy_on_write()
        limit = 3 + (not warn_mode and _check_cacher(obj))
        if rc <= limit and (warn_mode or obj._mgr.blocks[0].refs.has_reference()):
            _warn(_chained_assignment_warning_msg, FutureWarning)
    elif rc <= 3 and (warn_copy_on_write() or any(b.refs.has_reference() for b in obj._mgr.blocks)):
        _warn(_chained_assignment_warning_msg, FutureWarning)
    return obj


def chained_indexer(indexer):
    """``df["a"].loc[0] = 1``: the indexer's object is a temporary. Returns the object."""
    obj = indexer.obj
    rc = sys.getrefcount(obj) - 1  # -1: the local ``obj``
    if rc > REF_COUNT_IDX + 1 or CHAINED_WARNING_DISABLED or _checked_by_pandas():
        return obj
    if _V3 or using_copy_on_write():
        if rc <= REF_COUNT_IDX:
            _warn(_chained_assignment_msg, ChainedAssignmentError)
    elif rc <= 2 + (not warn_copy_on_write() and _check_cacher(obj)):
        _warn(_chained_assignment_warning_msg, FutureWarning)
    return obj


def chained_method(obj, update: bool = False):
    """``df["a"].fillna(0, inplace=True)`` / ``df["a"].update(other)``: an in-place method on a temporary."""
    rc = sys.getrefcount(obj) - _MINE
    if rc > REF_COUNT_METHOD + 1 or CHAINED_WARNING_DISABLED or _checked_by_pandas():
        return obj
    if _V3:
        if rc <= REF_COUNT_METHOD and not _local_in_caller(obj):
            msg = _chained_assignment_method_update_msg if update else _chained_assignment_method_msg
            _warn(msg, ChainedAssignmentError)
    elif using_copy_on_write():
        if rc <= REF_COUNT_METHOD:
            _warn(_chained_assignment_method_msg, ChainedAssignmentError)
    elif obj._is_view_after_cow_rules():
        if rc <= REF_COUNT_METHOD + (isinstance(obj, pd.Series) and _check_cacher(obj)):
            _warn(_chained_assignment_warning_method_msg, FutureWarning)
    return obj
