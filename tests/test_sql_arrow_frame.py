"""``sql.arrow_frame.data_frame`` against DuckDB's own ``from_arrow(t).df()`` (the conversion it replaces):
the same frame, dtypes and string storage included, for random tables of every type it converts itself and
of types it leaves to DuckDB; and eager results equal to the plain query's ``.df()``."""

from __future__ import annotations

import decimal
import warnings

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import traceprop_frames as tpf
from traceprop_frames.sql import arrow_frame
from traceprop_frames.sql.arrow_frame import data_frame

_TEXT = st.one_of(st.none(), st.text(max_size=6))
_CTX = decimal.Context(prec=60)
_KINDS = {
    "str": (pa.string(), _TEXT),
    "large_str": (pa.large_string(), _TEXT),
    "int32": (pa.int32(), st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1))),
    "int64": (pa.int64(), st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
    "float64": (pa.float64(), st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))),
    "bool": (pa.bool_(), st.one_of(st.none(), st.booleans())),
    "decimal": (pa.decimal128(15, 2), st.one_of(st.none(), st.decimals(-(10**12), 10**12, places=2))),
    "date": (pa.date32(), st.one_of(st.none(), st.dates())),
}
# DECIMAL (width, scale) as DuckDB returns them (sums are (38, s)); unscaled integers up to 2**70 in
# magnitude: past 2**53 (not exact in a double) and past 2**63 (left to DuckDB); scale 23 is left to DuckDB
_DECIMALS = [(38, 0), (38, 2), (38, 4), (38, 6), (18, 4), (9, 2), (4, 1), (18, 18), (38, 22), (38, 23)]
for _w, _s in _DECIMALS:
    _KINDS[f"decimal_{_w}_{_s}"] = (
        pa.decimal128(_w, _s),
        st.one_of(
            st.none(),
            st.one_of(st.integers(-(2**70), 2**70), st.integers(-(10**6), 10**6)).map(
                lambda v, w=_w: v % 10**w * (1 if v >= 0 else -1)
            ),
        ),
    )
# a DATE column without NULLs, days DuckDB can convert (+-273,000 years; out of years 1-9999: left to it)
_KINDS["date_no_null"] = (pa.date32(), st.integers(-(10**8), 10**8))


@st.composite
def tables(draw):
    n = draw(st.integers(0, 8))
    kinds = draw(st.lists(st.sampled_from(sorted(_KINDS)), min_size=1, max_size=4))
    names = draw(
        st.lists(
            st.sampled_from(["a", "A", "b", "c_1", "d d", "e"]), min_size=len(kinds), max_size=len(kinds)
        )
    )
    cols = {}
    for i, (kind, name) in enumerate(zip(kinds, names)):
        typ, values = _KINDS[kind]
        vals = draw(st.lists(values, min_size=n, max_size=n))
        if kind == "decimal":
            vals = [None if v is None else decimal.Decimal(v).quantize(decimal.Decimal("0.01")) for v in vals]
        if kind.startswith("decimal_"):  # unscaled integers drawn: the value is v * 10**-scale
            vals = [None if v is None else decimal.Decimal(v).scaleb(-typ.scale, _CTX) for v in vals]
        if kind == "date_no_null":
            arr = pa.array(vals, pa.int32()).cast(pa.date32())
        else:
            arr = pa.array(vals, type=typ)
        split = draw(st.integers(0, n))  # several chunks, as DuckDB's Arrow results have
        cols[(i, name)] = pa.chunked_array([arr.slice(0, split), arr.slice(split)], type=typ)
    return pa.Table.from_arrays(list(cols.values()), names=[name for _, name in cols])


@settings(max_examples=300, deadline=None)
@given(tables())
def test_the_frame_is_duckdbs(table):
    con = duckdb.connect()
    expected = con.from_arrow(table).df()
    got = data_frame(con, table)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    for name in got.columns:
        col = got[name]
        if isinstance(col, pd.Series) and isinstance(col.dtype, pd.StringDtype):
            assert col.array._pa_array.type == expected[name].array._pa_array.type


def test_the_columns_it_converts_itself_skip_duckdb(monkeypatch):
    """The direct path is taken (the test above would pass if it never were) for the types it names."""
    table = pa.table(
        {"s": ["x", None], "i": pa.array([1, 2], pa.int32()), "b": [True, False], "d": [0.5, np.nan]}
    )

    class NoDuckDB:
        def from_arrow(self, _):
            raise AssertionError("went through DuckDB")

    df = data_frame(NoDuckDB(), table)
    assert df["s"].tolist()[0] == "x" and df["s"].isna().tolist() == [False, True]
    with pytest.raises(AssertionError, match="through DuckDB"):
        data_frame(NoDuckDB(), pa.table({"i": pa.array([1, None], pa.int64())}))  # a NULL: DuckDB's Int64


def test_eager_results_equal_the_plain_query(monkeypatch):
    con = tpf.connect(capture="eager")
    con.register(
        "t",
        pd.DataFrame(
            {"k": ["a", "b", "a", None, "é"], "v": [1, 2, 3, 4, 5], "f": [0.5, 1.0, 2.0, 3.0, np.nan]}
        ),
    )
    taken = []
    real = arrow_frame._series
    monkeypatch.setattr(arrow_frame, "_series", lambda c: taken.append(c) or real(c))
    for q in [
        "SELECT k, count(*) AS n, sum(v) AS s, max(f) AS m FROM t GROUP BY k ORDER BY k",
        "SELECT k, v FROM t WHERE v > 1 ORDER BY v",
        "SELECT upper(k) AS u, v > 2 AS big FROM t ORDER BY v",
        "SELECT k, v FROM t WHERE v > 10",
    ]:
        got = con.sql(q)
        expected = con._raw.sql(q).df()
        pd.testing.assert_frame_equal(pd.DataFrame(got).reset_index(drop=True), expected, check_exact=True)
    assert taken  # the direct conversion ran


@settings(max_examples=100, deadline=None)
@given(tables())
def test_the_frame_is_duckdbs_without_the_str_dtype(table):
    """With pandas' ``future.infer_string`` off, DuckDB gives text as ``object``: so does this."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the option is deprecated in pandas 3
        with pd.option_context("future.infer_string", False):
            con = duckdb.connect()
            pd.testing.assert_frame_equal(
                data_frame(con, table), con.from_arrow(table).df(), check_exact=True
            )


class _Spy:
    """A DuckDB connection that records whether the frame went through it."""

    def __init__(self):
        self.con, self.used = duckdb.connect(), 0

    def from_arrow(self, table):
        self.used += 1
        return self.con.from_arrow(table)


@pytest.fixture(autouse=True)
def _probed():
    """The once-per-process probe of DuckDB's DECIMAL / DATE conversion asked before each test, so that a
    spy counts the frame's own conversions only."""
    arrow_frame._decimal_and_date_direct(duckdb.connect())


def _unscaled_values(rng, n):
    """Unscaled DECIMAL integers around the places a conversion goes wrong: small, past 2**53 (not
    exact in a double), next to +-2**63 (the int64 bound), negative."""
    small = rng.integers(-(10**6), 10**6, n)
    big = rng.integers(-(2**62), 2**62, n) * rng.choice([1, 2], n)
    near = rng.choice([2**53 - 1, 2**53 + 1, 2**63 - 1, -(2**63), -(2**63) + 1, -(2**53) - 3, 0, -1], n)
    return [int(v) for v in np.concatenate([small, big, near])]


@pytest.mark.parametrize("width, scale", _DECIMALS)
def test_decimals_without_nulls_match_duckdb_and_skip_it(width, scale):
    rng = np.random.default_rng(width * 100 + scale)
    vals = [v for v in _unscaled_values(rng, 2000) if abs(v) < 10**width]
    arr = pa.array([decimal.Decimal(v).scaleb(-scale, _CTX) for v in vals], pa.decimal128(width, scale))
    table = pa.table({"d": pa.chunked_array([arr.slice(0, 7), arr.slice(7)]), "i": np.arange(len(vals))})
    spy = _Spy()
    got = data_frame(spy, table)
    pd.testing.assert_frame_equal(got, spy.con.from_arrow(table).df(), check_exact=True)
    assert spy.used == (scale > 22)  # the direct path, except where 10**scale is not an exact double
    wide = pa.array([decimal.Decimal(2**63 + 5).scaleb(-scale, _CTX)], pa.decimal128(38, scale))
    spy = _Spy()
    pd.testing.assert_frame_equal(
        data_frame(spy, pa.table({"d": wide})),
        spy.con.from_arrow(pa.table({"d": wide})).df(),
        check_exact=True,
    )
    assert spy.used  # an unscaled integer past 64 bits: DuckDB's conversion


def test_dates_without_nulls_match_duckdb_and_skip_it():
    rng = np.random.default_rng(7)
    days = np.concatenate([rng.integers(-719_162, 2_932_897, 3000), [-719_162, 2_932_896, 0, -1, 1]])
    table = pa.table({"d": pa.array(days.astype(np.int32)).cast(pa.date32())})
    spy = _Spy()
    got = data_frame(spy, table)
    pd.testing.assert_frame_equal(got, spy.con.from_arrow(table).df(), check_exact=True)
    assert not spy.used and str(got["d"].dtype) == "datetime64[us]"
    for outside in (-719_163, 2_932_897):  # year 0 / 10000: DuckDB's conversion
        spy = _Spy()
        data_frame(spy, pa.table({"d": pa.array([outside], pa.int32()).cast(pa.date32())}))
        assert spy.used


def test_eager_decimal_and_date_results_equal_the_plain_query():
    con = tpf.connect(capture="eager")
    con.register(
        "t",
        pd.DataFrame(
            {
                "k": ["a", "b", "a", "c"],
                "d": pd.to_datetime(["2020-01-02", "1969-12-31", "1900-03-01", "2262-04-12"]),
                "v": [1.25, -2.5, 3.75, 1e15],
            }
        ),
    )
    for q in [
        "SELECT k, sum(CAST(v AS DECIMAL(18, 2))) AS s, min(CAST(d AS DATE)) AS m FROM t GROUP BY k ORDER BY k",
        "SELECT CAST(d AS DATE) AS day, CAST(v AS DECIMAL(38, 6)) * 3 AS x FROM t ORDER BY v",
    ]:
        got = con.sql(q)
        expected = con._raw.sql(q).df()
        pd.testing.assert_frame_equal(pd.DataFrame(got).reset_index(drop=True), expected, check_exact=True)


def test_a_duckdb_converting_decimals_otherwise_keeps_converting_them(monkeypatch):
    """The probe asked once per DuckDB version: where DuckDB's ``.df()`` gives one probe value one ulp
    away from ``_series``, DECIMAL and DATE columns go through DuckDB again; where it agrees, they do not."""

    def nudged(raw, table):
        frame = raw.from_arrow(table).df()
        values = frame["d15_2"].to_numpy().copy()
        values[-1] = np.nextafter(values[-1], np.inf)
        frame["d15_2"] = values
        return frame

    table = pa.table(
        {"d": pa.array([decimal.Decimal("1.25"), decimal.Decimal("-3.50")], pa.decimal128(15, 2))}
    )
    monkeypatch.setattr(arrow_frame, "_SELF_CHECK", {})
    monkeypatch.setattr(arrow_frame, "_duckdb_frame", nudged)
    spy = _Spy()
    pd.testing.assert_frame_equal(data_frame(spy, table), spy.con.from_arrow(table).df(), check_exact=True)
    assert spy.used == 2 and arrow_frame._SELF_CHECK == {duckdb.__version__: False}  # probe, then the frame
    monkeypatch.undo()
    monkeypatch.setattr(arrow_frame, "_SELF_CHECK", {})
    spy = _Spy()
    data_frame(spy, table)
    assert spy.used == 1 and arrow_frame._SELF_CHECK == {duckdb.__version__: True}  # the probe only
