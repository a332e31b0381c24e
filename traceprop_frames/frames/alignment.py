"""Refuse plain pandas calls that copy another frame's rows into a traced frame by label.

``A.join(B.set_index("k"), on="k")``, ``pd.concat([A, B], axis=1)``, ``A["y"] = B["y"]``, ``A.update(B)``,
``A.combine_first(B)``, ``A.insert(i, "y", B["y"])``, ``A.loc[...] = B["y"]``, ``A["k"].map(B["y"])``: pandas matches ``B``'s rows to ``A``'s by index
label and the result keeps ``A``'s ``tp_lid`` index, so each row would resolve to ``A``'s row only —
silently missing the ``B`` row its new values came from. These wrappers (installed with the cross-row
ones) let the call through when ``B`` is indexed by the same ``tp_lid`` keys (then a matched ``B`` row *is*
the same lineage row), and otherwise:

- ``B`` carries lineage (a traced frame, or one that lost its keys): :class:`LineageLostError` naming
  ``A.tp.merge(B, ...)``, which records the matched ``B`` row;
- ``B`` never carried lineage: the call runs, with a :class:`MissingLineageWarning` (the same rule as an
  untracked right frame in ``df.tp.merge``: it contributes no source rows).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping

import pandas as pd

from traceprop_frames.errors import LineageLostError, MissingLineageWarning
from traceprop_frames.frames import inline, reductions, transparent
from traceprop_frames.frames.carrier import ATTRS_KEY, LID, untouched
from traceprop_frames.frames.carrier import keyed as _keyed

_installed: list = []  # undo functions (frames.inline.patch)
DETACHED = "traceprop_keys_in_column"  # attrs mark: the frame's tp_lid keys moved to a column
_NDFRAME = pd.core.generic.NDFrame


def _check(target, others, call: str, by_label: bool = False) -> None:
    """Raise/warn if ``others`` would be matched into ``target``'s traced rows by a foreign label."""
    if not isinstance(target, (pd.Series, pd.DataFrame)) or not _keyed(target):
        return
    for other in others:
        if not isinstance(other, (pd.Series, pd.DataFrame)) or other is target:
            continue
        if not by_label and (other.index is target.index or _keyed(other)):
            continue  # aligned on the same lineage keys: a matched row is the same lineage row
        if _keyed(other) or ATTRS_KEY in other.attrs or (isinstance(other, pd.DataFrame) and LID in other):
            raise LineageLostError(
                f"{call} copies rows of another traced frame into this one by index label, and the result "
                "would keep only this frame's lineage. Use df.tp.merge(other, left_on=..., right_on=... or "
                "left_index=True, right_index=True, how='left'), which records the matched row of both."
            )
        warnings.warn(
            f"{call} brings in values from a frame without lineage; they contribute no source rows. Wrap it "
            "with tpf.track(other, name) and combine with df.tp.merge to trace them.",
            MissingLineageWarning,
            stacklevel=3,
        )


def _method_hook(name: str, pick, by_label=lambda a, k: False, values: bool = False):
    update = name == "update"  # an in-place method: pandas checks it for chained assignment

    def make(orig):
        @functools.wraps(orig)
        def wrapper(self, *args, **kwargs):
            if update:
                _held = transparent.chained_method(self, update=True)  # noqa: F841  (see transparent)
            if untouched(self) and not values:  # an untraced target: nothing to refuse, warn or record
                return orig(self, *args, **kwargs)
            other = pick(args, kwargs)
            if values and not isinstance(other, (pd.Series, pd.DataFrame)):
                reductions.check_value(self, other, f"{type(self).__name__}.{name}")
            elif callable(other) and _keyed(self):  # s.map(func): what the function reads besides its value
                reductions.absorb(
                    self, reductions.closure_stat((other,), {}), f"{type(self).__name__}.{name}"
                )
            elif other is not None:
                others = other if isinstance(other, (list, tuple)) else (other,)
                _check(self, others, f"{type(self).__name__}.{name}", by_label(args, kwargs))
            return orig(self, *args, **kwargs)

        return wrapper

    return make


def _wrap_method(owner, name: str, pick, by_label=lambda a, k: False) -> None:
    _installed.append(inline.patch(owner, name, _method_hook(name, pick, by_label), inline.traced("self")))


def _insert_wrapper(orig):
    """``df.insert``: a value into traced rows (see ``_wrap_method``), and the keys moving to a column
    (``reset_index()`` inserts them): the frame is marked detached, its columns inherit the mark through
    pandas' attrs, and pandas' own inserts run with the wrappers passive."""
    checked = _method_hook("insert", _arg(2, "value"), values=True)(orig)

    @functools.wraps(orig)
    def insert(self, loc, column, value, *args, **kwargs):
        if _keyed(self):
            keys = (isinstance(column, str) and column == LID) or (type(column) is tuple and LID in column)
            if keys or LID in self.columns:
                if keys:
                    self.attrs[DETACHED] = True
                return reductions.run_busy(orig, self, loc, column, value, *args, **kwargs)
        return checked(self, loc, column, value, *args, **kwargs)

    return insert


def _arg(i: int, *keys: str):
    """Argument ``i``, passed by position or under one of ``keys`` (pandas 3 renamed ``map(arg)``)."""
    return lambda a, k: a[i] if len(a) > i else next((k[x] for x in keys if k.get(x) is not None), None)


def _join_on(a, k) -> bool:
    return (a[1] if len(a) > 1 else k.get("on")) is not None


def _setitem_wrapper(orig):
    @functools.wraps(orig)
    def __setitem__(self, key, value):
        _held = transparent.chained_setitem(self)  # noqa: F841  (see transparent)
        if (
            untouched(self)
            and not isinstance(value, reductions.TRACED)
            and not (isinstance(value, _NDFRAME) and value._attrs)
        ):
            return orig(self, key, value)
        if not isinstance(value, (pd.Series, pd.DataFrame)):
            if reductions.check_value(self, value, "df[...] = value"):
                return reductions.run_busy(orig, self, key, value)
        elif value.index is not self.index:
            _check(self, (value,), "df[...] = other")
        return orig(self, key, value)

    return __setitem__


def _loc_setitem_wrapper(orig):
    @functools.wraps(orig)
    def __setitem__(self, key, value):
        _held = transparent.chained_indexer(self)  # noqa: F841  (see transparent)
        # ``target`` stays referenced while pandas runs: its own chained-assignment check (which would
        # name this frame) stays quiet; the check above ran as pandas' would have, naming the user's line.
        target = self.obj
        if (
            untouched(target)
            and not isinstance(value, reductions.TRACED)
            and not (isinstance(value, _NDFRAME) and value._attrs)
        ):
            return orig(self, key, value)
        if not isinstance(value, (pd.Series, pd.DataFrame)):
            if reductions.check_value(target, value, f"df.{self.name}[...] = value"):
                return reductions.run_busy(orig, self, key, value)
        elif value.index is not target.index:
            _check(target, (value,), f"df.{self.name}[...] = other")
        return orig(self, key, value)

    return __setitem__


def _concat_wrapper(orig):
    @functools.wraps(orig)
    def concat(objs, *args, **kwargs):
        axis = args[0] if args else kwargs.get("axis", 0)
        if axis in (1, "columns"):
            if not isinstance(objs, Mapping):
                objs = list(objs)  # a generator (pyspark's toPandas passes one) is read once, here
            items = list(objs.values()) if isinstance(objs, Mapping) else objs
            keyed = [o for o in items if isinstance(o, (pd.Series, pd.DataFrame)) and _keyed(o)]
            if keyed:
                _check(keyed[0], items, "pd.concat(..., axis=1)")
        return orig(objs, *args, **kwargs)

    return concat


def install() -> None:
    if _installed:
        return
    traced, carries = inline.traced, inline.carries
    _wrap_method(pd.DataFrame, "join", _arg(0, "other"), by_label=_join_on)
    for owner in (pd.DataFrame, pd.Series):
        _wrap_method(owner, "update", _arg(0, "other"))
        _wrap_method(owner, "combine_first", _arg(0, "other"))
    _installed.append(
        inline.patch(pd.DataFrame, "insert", _insert_wrapper, f"{traced('self')} or {carries('value')}")
    )
    _wrap_method(pd.Series, "map", _arg(0, "func", "arg"), by_label=lambda a, k: True)  # a look-up by value
    _installed.append(
        inline.patch(pd.DataFrame, "__setitem__", _setitem_wrapper, f"{traced('self')} or {carries('value')}")
    )
    _installed.append(
        inline.patch(  # .loc and .iloc
            pd.core.indexing._LocationIndexer,
            "__setitem__",
            _loc_setitem_wrapper,
            f"{traced('self.obj')} or {carries('value')}",
        )
    )
    _installed.append(inline.patch(pd, "concat", _concat_wrapper, 'axis in (1, "columns")'))


def uninstall() -> None:
    while _installed:
        _installed.pop()()
