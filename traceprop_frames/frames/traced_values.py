"""Values that carry the rows they were computed from: traced scalars and the set type they hold.

:class:`TracedFloat` / :class:`TracedInt` are NumPy scalar subclasses (what pandas returns for a
reduction anyway, so ``isinstance(x, float)``, formatting and NumPy code behave as before) and
:class:`TracedStr` a ``str`` subclass; each holds a :class:`Stat`, the shared sets of the rows it read.
Arithmetic between them, with plain numbers and through NumPy ufuncs (``__array_ufunc__``) keeps the
union of their sets. ``float(x)``, ``int(x)``, ``x.item()``, ``math.*``, comparisons and string methods
return plain Python values: that is the boundary. :mod:`frames.reductions` makes and consumes them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from traceprop_frames.lineage.context import SetBlock

_EMPTY = np.zeros(0, dtype=np.int64)


class Stat:
    """The rows a statistic read: sets ``(block, j)`` of shared blocks. Deep copies return self, so it
    rides in pandas ``attrs`` at no cost."""

    __slots__ = ("parts", "_block")

    def __init__(self, parts) -> None:
        seen: dict[int, tuple[SetBlock, int]] = {}
        for b, j in parts:
            seen.setdefault(b.base + j, (b, j))
        self.parts = tuple(seen.values())
        self._block = None

    def union(self, *others: Stat | None) -> Stat:
        rest = [p for o in others if o is not None and o is not self for p in o.parts]
        return self if not rest else Stat(self.parts + tuple(rest))

    def block(self) -> SetBlock:
        """One block with one set: this statistic's rows (a reference-only set for a union)."""
        if self._block is None:
            if len(self.parts) == 1 and self.parts[0][0].m == 1:
                self._block = self.parts[0][0]
            else:
                refs = np.array([b.base + j for b, j in self.parts], dtype=np.int64)
                self._block = SetBlock(_EMPTY, [0], [0], "statistic", refs, [0], [len(refs)],
                                       tuple(b for b, _ in self.parts))  # fmt: skip
        return self._block

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __reduce__(self):  # a pickled statistic carries no lineage (as a pickled traced frame)
        return (Stat, ((),))


def carry(result, st: Stat | None):
    """``result`` as a traced value carrying ``st`` (and the set it already carried, if any); other types
    are returned as they are."""
    if st is None:
        return result
    if isinstance(result, TRACED):  # e.g. a traced value stored in an object column, reduced again
        st = st.union(result._tp)
        result = plain(result)
    if isinstance(result, (float, np.floating)):
        out = TracedFloat(result)
    elif isinstance(result, (int, np.integer)) and not isinstance(result, (bool, np.bool_)):
        out = TracedInt(result)
    elif isinstance(result, str):
        out = TracedStr(result)
    else:
        return result
    out._tp = st
    return out


def plain(x):
    if isinstance(x, TracedFloat):
        return np.float64(float(x))
    if isinstance(x, TracedInt):
        return np.int64(int(x))
    if isinstance(x, TracedStr):
        return str.__str__(x)
    return x


def _array_ufunc(self, ufunc, method, *inputs, **kwargs):
    if any(isinstance(x, (pd.Series, pd.DataFrame, pd.Index)) for x in inputs):
        return NotImplemented  # pandas' own ufunc dispatch handles it (its wrapped operators)
    sts = [x._tp for x in inputs if isinstance(x, TRACED)]
    result = getattr(ufunc, method)(*map(plain, inputs), **kwargs)
    return carry(result, sts[0].union(*sts[1:]))


def _binary(ufunc, reflected: bool):
    def op(self, other):
        if isinstance(other, (pd.Series, pd.DataFrame, pd.Index)):
            return NotImplemented
        return ufunc(other, self) if reflected else ufunc(self, other)

    return op


class TracedFloat(np.float64):
    """A float reduction of traced rows (``s.mean()``) that knows which rows it read.

    Examples
    --------
    >>> import pandas as pd, traceprop_frames as tpf
    >>> df = tpf.track(pd.DataFrame({"x": [1.0, 2.0, 6.0]}), "doc_red")
    >>> total = df["x"].sum()
    >>> isinstance(total, float), float(total / 3)
    (True, 3.0)
    >>> df["share"] = df["x"] / total  # every row now also depends on the rows the sum read
    >>> df.tp.sources(rows=[0])["doc_red"].tolist(), df.tp.sources(rows=[0], direct=True)["doc_red"].tolist()
    ([0, 1, 2], [0])
    """


class TracedInt(np.int64):
    """An integer reduction of traced rows (``s.count()``, ``s.nunique()``); see :class:`TracedFloat`."""


class TracedStr(str):
    """A string reduction of traced rows (``s.mode()[0]``, ``s.max()`` of a text column): a ``str`` that
    knows which rows it read, so ``s.fillna(s.mode()[0])`` records them. String operations return plain
    ``str``."""

    def __reduce__(self):  # pickles as a plain str
        return (str, (str.__str__(self),))


TRACED = (TracedFloat, TracedInt, TracedStr)
_NUMERIC = (TracedFloat, TracedInt)
# The methods are set on each class: a mixin base next to a NumPy scalar type crashes NumPy (2.4) in item().
for _cls in _NUMERIC:
    _cls.__array_ufunc__ = _array_ufunc
    _cls.__round__ = lambda self, ndigits=None: carry(round(plain(self), ndigits), self._tp)
    _cls.__reduce__ = lambda self: (type(plain(self)), (plain(self).item(),))  # pickles plain
    _cls.__neg__ = lambda self: np.negative(self)
    _cls.__pos__ = lambda self: np.positive(self)
    _cls.__abs__ = lambda self: np.absolute(self)
    for _name, _uf in {
        "add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
        "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power,
    }.items():  # fmt: skip
        setattr(_cls, f"__{_name}__", _binary(_uf, False))
        setattr(_cls, f"__r{_name}__", _binary(_uf, True))
