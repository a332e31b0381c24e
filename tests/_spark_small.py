"""The small table the Spark shared-set tests share (``small_table`` in conftest writes it as Parquet),
a query with an uncorrelated scalar subquery over it, its brute-force oracle, and answer helpers."""

from __future__ import annotations

import numpy as np
import pandas as pd

DATA = pd.DataFrame({"k": ["a", "b", "a", "c", "b", "a", "c", "b"], "v": [5, -1, 9, 2, 7, 8, 1, 10]})
SCALAR_QUERY = (
    "SELECT k, count(*) AS n FROM (SELECT k, v FROM t WHERE v > (SELECT avg(v) FROM t WHERE k <> 'a')) s "
    "GROUP BY k ORDER BY k"
)


def scalar_oracle() -> dict[str, list[int]]:
    """Brute force for :data:`SCALAR_QUERY`: a group's member rows (those passing the outer WHERE) plus
    every row the ``avg()`` subquery read (``k <> 'a'``)."""
    read = DATA.index[DATA.k != "a"]
    cut = DATA.v[read].mean()
    return {k: sorted(set(g.index) | set(read)) for k, g in DATA[DATA.v > cut].groupby("k")}


def rows(answer: dict, path) -> list[int]:
    """The sorted row numbers of ``path`` in a ``sources()`` answer (which names no other file)."""
    assert set(answer) <= {str(path)}
    return sorted(np.asarray(answer.get(str(path), [])).tolist())


def keys(res) -> list:
    """Column ``k`` of a Spark result, in pinned-position order."""
    return [r["k"] for r in res.pinned().orderBy("__tp_pos").select("k").collect()]


def answers(res, path) -> dict:
    """``{k: source rows of path}`` for each row of a Spark result (one lineage question per row)."""
    return {k: rows(res.sources(rows=[i]), path) for i, k in enumerate(keys(res))}
