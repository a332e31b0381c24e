"""Lazy capture: a key that is also an output column is read from that column, not fetched again.

A lazy result keeps one key per row (:mod:`traceprop_frames.sql.lazy`): its GROUP BY expressions, or its
FROM items' keys. Where the query selects a key expression as it is (``SELECT p_brand, ... GROUP BY
p_brand``), the output column holds the same values (the same expression, in the same SELECT list), so the
capture does not append it again: it reads the key from the result (TPC-H q16: three of three keys, two of
them strings). The backward query still names every key ``__tp_k<i>``.
"""

from __future__ import annotations

from sqlglot import exp

from traceprop_frames.sql.lazy import key_columns


def add_capture_keys(sel: exp.Select, shape) -> int:
    """Append to ``sel`` the keys no output column holds (``__tp_k<i>``, ``i`` the key's number); record in
    ``shape.reused`` each key's output column (None: appended); returns how many were appended."""
    keys = key_columns(sel, shape)
    outputs = [e.this if isinstance(e, exp.Alias) else e for e in sel.expressions]
    plain = not any(isinstance(e, exp.Star) or (isinstance(e, exp.Column) and e.is_star) for e in outputs)
    reused: list[int | None] = []
    for i, k in enumerate(keys):
        j = next((j for j, e in enumerate(outputs) if e == k), None) if plain else None
        reused.append(j)
        if j is None:
            sel.append("expressions", exp.alias_(k, f"__tp_k{i}"))
    shape.reused = reused
    return sum(j is None for j in reused)


def key_positions(shape, n_data: int) -> list[int]:
    """The result column of each key: an output column (reused) or one appended after the ``n_data``."""
    reused = getattr(shape, "reused", None)
    if reused is None:
        return list(range(n_data, n_data + shape.n_keys))
    appended = iter(range(n_data, n_data + shape.n_keys))
    return [j if j is not None else next(appended) for j in reused]


def key_names(n: int) -> list[str]:
    return [f"__tp_k{i}" for i in range(n)]
