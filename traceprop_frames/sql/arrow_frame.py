"""An eager result's data columns as a pandas frame, straight from Arrow where that is exact.

The eager query returns one Arrow table (the data columns and the lineage lists); its data columns
became pandas through DuckDB again (``raw.from_arrow(data).df()``), so the frame is exactly the one
the plain query's ``.df()`` gives. That second pass costs ~1 ms per result and, for VARCHAR columns,
DuckDB builds every string again: TPC-H q16's 18k rows, 6.5 ms against 0.3 ms here (pandas' ``str``
dtype holds Arrow strings, so the column is taken as it is).

Only columns whose pandas form is known to be DuckDB's are converted here: INTEGER, BIGINT, DOUBLE
and BOOLEAN without NULLs (DuckDB gives the same numpy dtype; with a NULL it gives a nullable or
float dtype) and VARCHAR with at least one value (``str``, large_string storage, NULL as NaN, as
DuckDB's). DECIMAL and DATE without NULLs too: DuckDB gives a DECIMAL the double nearest its
unscaled integer divided by ``10.0 ** scale``, and a DATE ``datetime64[us]``; done here where the unscaled
integers fit in 64 bits (exactly rounded to double by numpy), the scale is at most 22 (``10 ** scale`` is
an exact double) and the dates lie in years 1-9999. Any other type, a NULL in a numeric, DECIMAL or DATE
column, a VARCHAR column of NULLs only or no rows (DuckDB gives those ``object`` dtype) or names that repeat
ignoring case (DuckDB renames those) leave the whole frame to DuckDB, as before.
``tests/test_sql_arrow_frame.py`` checks the frame against DuckDB's own conversion on random tables.
"""

from __future__ import annotations

import decimal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

_NUMPY = frozenset([pa.int32(), pa.int64(), pa.float64(), pa.bool_()])
_STRING = frozenset([pa.string(), pa.large_string()])


_DAYS = (-719_162, 2_932_896)  # 0001-01-01 .. 9999-12-31, days since 1970-01-01
_DAY_US = 86_400_000_000


def _direct(col: pa.ChunkedArray) -> bool:
    if col.type in _STRING:
        return col.null_count < len(col)  # DuckDB gives an all-NULL VARCHAR column ``object`` dtype
    return col.null_count == 0 and (
        col.type in _NUMPY
        or col.type == pa.date32()
        or (pa.types.is_decimal128(col.type) and col.type.scale <= 22)
    )


def _unscaled(col: pa.ChunkedArray) -> np.ndarray | None:
    """A DECIMAL column's unscaled integers as int64 (no NULLs); None where one needs more than 64 bits."""
    arr = col.combine_chunks()
    end = arr.offset + len(arr)
    words = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=2 * end).reshape(-1, 2)[arr.offset :]
    low = words[:, 0]
    if not np.array_equal(words[:, 1], low >> 63):  # the high word is not the low word's sign
        return None
    return low


def _series(col: pa.ChunkedArray):
    """``col`` as DuckDB's ``.df()`` gives it; None where that is left to DuckDB."""
    if col.type in _STRING:
        return pd.Series(col.cast(pa.large_string()), dtype="str")
    if col.type == pa.date32():
        days = col.cast(pa.int32()).to_numpy()
        if days.size and (days.min() < _DAYS[0] or days.max() > _DAYS[1]):
            return None
        return (days.astype(np.int64) * _DAY_US).view("datetime64[us]")
    if pa.types.is_decimal128(col.type):
        low = _unscaled(col)
        return None if low is None else low.astype(np.float64) / 10.0**col.type.scale
    return col.to_numpy()


_SELF_CHECK: dict[str, bool] = {}


def _probe() -> pa.Table:
    """DECIMAL (in DuckDB's 64- and 128-bit storage) and DATE values where a conversion that is not
    DuckDB's would differ: past 2**53, at the int64 limits, at the scales' edges; dates at both ends."""
    rng = np.random.default_rng(0)
    cols = {}
    for width, scales in ((15, (0, 2, 7, 15)), (18, (3, 18)), (38, (0, 2, 9, 17, 22))):
        top = 10**width - 1 if width < 19 else 2**63 - 1
        edge = [0, 1, -1, 2**53 + 1, -(2**53) - 3, 10**14 + 7, top, -top]
        vals = ([v for v in edge if abs(v) <= top] + [int(v) for v in rng.integers(-top, top, 40)])[:46]
        for scale in scales:
            cols[f"d{width}_{scale}"] = pa.array(
                [decimal.Decimal(v).scaleb(-scale) for v in vals], pa.decimal128(width, scale)
            )
    n = len(next(iter(cols.values())))
    days = np.linspace(_DAYS[0], _DAYS[1], n).astype(np.int32)
    cols["day"] = pa.array(days, pa.date32())
    return pa.table(cols)


def _duckdb_frame(raw, table: pa.Table) -> pd.DataFrame:
    return raw.from_arrow(table).df()  # reads the table only: nothing in the connection changes


def _decimal_and_date_direct(raw) -> bool:
    """Whether this DuckDB's ``.df()`` gives DECIMAL and DATE columns as ``_series`` does (asked once
    per DuckDB version with a probe table; a DuckDB that converts otherwise keeps doing it itself)."""
    version = getattr(duckdb, "__version__", "")
    if version not in _SELF_CHECK:
        probe = _probe()
        theirs = _duckdb_frame(raw, probe)
        _SELF_CHECK[version] = all(
            (ours := _series(col)) is not None
            and theirs[name].dtype == ours.dtype
            and np.array_equal(theirs[name].to_numpy().view(np.int64), ours.view(np.int64))
            for name, col in zip(probe.column_names, probe.columns)
        )
    return _SELF_CHECK[version]


def data_frame(raw, data: pa.Table) -> pd.DataFrame:
    """``data`` (at least one column) as the frame DuckDB's ``raw.from_arrow(data).df()`` gives.

    Examples
    --------
    >>> import duckdb
    >>> t = pa.table({"s": ["a", None], "n": pa.array([1, 2], pa.int32())})
    >>> df = data_frame(duckdb.connect(), t)
    >>> df.dtypes.astype(str).tolist(), df["s"].isna().tolist()
    (['str', 'int32'], [False, True])
    """
    names = data.column_names
    if (
        not data.num_rows
        or len({n.lower() for n in names}) != len(names)
        or not all(_direct(c) for c in data.columns)
    ):
        return raw.from_arrow(data).df()
    own = any(c.type not in _NUMPY and c.type not in _STRING for c in data.columns)
    if own and not _decimal_and_date_direct(raw):
        return raw.from_arrow(data).df()
    cols = {n: _series(c) for n, c in zip(names, data.columns)}
    if any(c is None for c in cols.values()):
        return raw.from_arrow(data).df()
    return pd.DataFrame(cols)
