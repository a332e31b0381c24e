"""Eager lineage of tables joined on a unique integer key, looked up after the query (sql.key_lineage).

Every lineage here is checked against a brute force in pandas (merge of the files with their row numbers,
the query's filters, group by), never against the library's own output; each test also says whether the
look-up path ran (the SQL sent to DuckDB lacks the looked-up table's list) so the oracle checks that path.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import traceprop_frames as tpf
from traceprop_frames.errors import SourceChangedError
from traceprop_frames.sql import key_lineage

Q = (
    "SELECT c_seg, o_prio, SUM(l_qty) AS q, COUNT(*) AS n FROM cust, ord, item "
    "WHERE c_key = o_ckey AND l_okey = o_key AND l_qty > 2 AND o_prio <> 'low' "
    "GROUP BY c_seg, o_prio ORDER BY c_seg, o_prio"
)


def _tables(seed: int, n_cust=40, n_ord=120, n_item=600, dup_order=False, null_keys=True):
    rng = np.random.default_rng(seed)
    cust = pd.DataFrame(
        {
            "c_key": rng.permutation(np.arange(n_cust) * 3 + 7).astype("int32"),
            "c_seg": rng.choice(["a", "b", "c"], n_cust),
        }
    )
    o_key = rng.permutation(np.arange(n_ord) * 5 + 1).astype("int64")
    if dup_order:
        o_key[1] = o_key[0]  # two orders with one key: both join every item of that key
    o_ckey = pd.array(rng.choice(cust["c_key"].to_numpy(), n_ord), dtype="Int32")
    if null_keys:
        o_ckey[::17] = pd.NA
    ord_ = pd.DataFrame(
        {"o_key": o_key, "o_ckey": o_ckey, "o_prio": rng.choice(["high", "low", "mid"], n_ord)}
    )
    l_okey = pd.array(rng.choice(np.concatenate([o_key, [999_999]]), n_item), dtype="Int64")
    if null_keys:
        l_okey[::23] = pd.NA
    item = pd.DataFrame({"l_okey": l_okey, "l_qty": rng.integers(0, 10, n_item).astype("int64")})
    return {"cust": cust, "ord": ord_, "item": item}


def _write(tmp: Path, frames: dict) -> dict:
    paths = {}
    for name, df in frames.items():
        paths[name] = tmp / f"{name}.parquet"
        df.to_parquet(paths[name], index=False)
    return paths


def _connect(paths: dict):
    con = tpf.connect(capture="eager")
    for name, p in paths.items():
        con.read_parquet(p, name=name)
    return con


def _oracle(frames: dict) -> dict:
    """(c_seg, o_prio) -> {(table, file row)}: the joined tuples' rows, by pandas."""
    c = frames["cust"].assign(c_rn=np.arange(len(frames["cust"])))
    o = frames["ord"].assign(o_rn=np.arange(len(frames["ord"])))
    it = frames["item"].assign(l_rn=np.arange(len(frames["item"])))
    o = o[o["o_ckey"].notna()].astype({"o_ckey": "int64"})
    it = it[it["l_okey"].notna()].astype({"l_okey": "int64"})
    j = c.astype({"c_key": "int64"}).merge(o, left_on="c_key", right_on="o_ckey")
    j = j.merge(it, left_on="o_key", right_on="l_okey")
    j = j[(j["l_qty"] > 2) & (j["o_prio"] != "low")]
    out: dict = {}
    for key, g in j.groupby(["c_seg", "o_prio"]):
        out[key] = (
            {("cust", int(r)) for r in g["c_rn"]}
            | {("ord", int(r)) for r in g["o_rn"]}
            | {("item", int(r)) for r in g["l_rn"]}
        )
    return out


def _got(df) -> dict:
    frame = df.reset_index(drop=True)
    out = {}
    for i in range(len(frame)):
        src = df.tp.sources(i)
        out[(frame.loc[i, "c_seg"], frame.loc[i, "o_prio"])] = {
            (Path(p).stem, int(r)) for p, rows in src.items() for r in rows
        }
    return out


def _spy(con, monkeypatch) -> list:
    """The SQL each keyed plan sends (None where no table is looked up)."""
    sent = []
    plan = con._keys.plan

    def spy(*a, **k):
        out = plan(*a, **k)
        sent.append(None if out is None else out[0])
        return out

    monkeypatch.setattr(con._keys, "plan", spy)
    return sent


def _same_as_plain(df: pd.DataFrame, frames: dict, q: str) -> None:
    """``df`` is the frame plain DuckDB gives for ``q`` over ``frames`` (values, dtypes, names)."""
    plain = duckdb.connect()
    for name, f in frames.items():
        plain.register(name, f)
    pd.testing.assert_frame_equal(df.reset_index(drop=True), plain.sql(q).df())


@pytest.mark.parametrize("seed", range(6))
def test_looked_up_tables_equal_brute_force(tmp_path, monkeypatch, seed):
    frames = _tables(seed)
    con = _connect(_write(tmp_path, frames))
    first = con.sql(Q)  # run once: carried, reads nothing
    assert not con._keys._cols and _got(first) == _oracle(frames)
    sent = _spy(con, monkeypatch)
    df = con.sql(Q)
    assert sent and sent[-1] is not None, "the look-up path did not run"
    lin = sent[-1][sent[-1].index("SUM(l_qty)") :].split(" FROM ")[0]
    assert "cust." not in lin and "ord." not in lin and "item." in lin  # only item's ids carried
    assert _got(df) == _oracle(frames)
    _same_as_plain(df, frames, Q)


def test_lineage_is_sufficient(tmp_path):
    """The query over only one result row's lineage rows gives that row again."""
    frames = _tables(11)
    con = _connect(_write(tmp_path, frames))
    con.sql(Q)
    df = con.sql(Q).reset_index(drop=True)
    full = con.sql(Q)
    assert con._keys._cols  # the look-up path
    for i in range(len(df)):
        sub = duckdb.connect()
        rows = {Path(p).stem: r for p, r in full.tp.sources(i).items()}
        for name, f in frames.items():
            sub.register(name, f.iloc[np.asarray(rows.get(name, []), dtype=np.int64)].reset_index(drop=True))
        again = sub.sql(Q).df()
        key = (df.loc[i, "c_seg"], df.loc[i, "o_prio"])
        hit = again[(again["c_seg"] == key[0]) & (again["o_prio"] == key[1])]
        assert len(hit) == 1 and hit["q"].iloc[0] == df.loc[i, "q"] and hit["n"].iloc[0] == df.loc[i, "n"]


def test_duplicate_key_is_carried(tmp_path, monkeypatch):
    """ord.o_key not unique: ord's ids are carried (both orders of the key are in the lineage)."""
    frames = _tables(3, dup_order=True)
    con = _connect(_write(tmp_path, frames))
    con.sql(Q)
    sent = _spy(con, monkeypatch)
    df = con.sql(Q)
    lin = sent[-1][sent[-1].index("SUM(l_qty)") :].split(" FROM ")[0] if sent[-1] else ""
    assert sent[-1] is None or "ord." in lin
    assert _got(df) == _oracle(frames)


def test_table_changed_after_load(tmp_path, monkeypatch):
    """A table re-read under the same name (other rows, other keys), then a duplicate key inserted
    through the connection: each next run of the same query (its plan cached) reads the table as it is
    now, never a look-up made before."""
    frames = _tables(5, null_keys=False)
    con = _connect(_write(tmp_path, frames))
    con.sql(Q)
    assert _got(con.sql(Q)) == _oracle(frames) and con._keys._cols
    (tmp_path / "x").mkdir()  # the same rows in another order: every old look-up would find a wrong row
    other = {"ord": frames["ord"].sample(frac=1, random_state=1).reset_index(drop=True)}
    con.read_parquet(_write(tmp_path / "x", other)["ord"], name="ord")
    sent = _spy(con, monkeypatch)
    got = con.sql(Q)
    assert sent[-1] is not None  # still looked up, from the new table's keys
    assert _got(got) == _oracle({**frames, "ord": other["ord"]})
    first = other["ord"].iloc[1]
    con.sql(
        f"INSERT INTO ord (o_key, o_ckey, o_prio) VALUES ({int(first.o_key)}, {int(first.o_ckey)}, 'high')"
    )
    again = con.sql(Q)
    assert sent[-1] is None  # ord may have changed: carried, not looked up
    plain = duckdb.connect()
    dup = pd.concat([other["ord"], other["ord"].iloc[[1]].assign(o_prio="high")], ignore_index=True)
    for name, f in {**frames, "ord": dup}.items():
        plain.register(name, f)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), plain.sql(Q).df())
    with pytest.raises(SourceChangedError):  # the inserted row has no source row (sql.null_rids)
        _got(again)


def test_raw_connection_handed_out(tmp_path, monkeypatch):
    frames = _tables(7)
    con = _connect(_write(tmp_path, frames))
    con.raw.execute("SELECT 1")  # user code may now change tables unseen: no look-ups from here on
    sent = _spy(con, monkeypatch)
    df = con.sql(Q)
    assert sent[-1] is None
    assert _got(df) == _oracle(frames)


def test_equality_under_or_is_not_a_join_key(tmp_path, monkeypatch):
    """``o_key = l_okey OR ...`` does not say which ord row a tuple has: ord is carried."""
    frames = _tables(8, null_keys=False)
    con = _connect(_write(tmp_path, frames))
    q = (
        "SELECT o_prio, COUNT(*) AS n FROM ord, item WHERE (l_okey = o_key OR l_qty = 9) AND o_key < 40 "
        "GROUP BY o_prio ORDER BY o_prio"
    )
    con.sql(q)
    sent = _spy(con, monkeypatch)
    df = con.sql(q)
    assert sent[-1] is None
    o = frames["ord"].assign(o_rn=np.arange(len(frames["ord"])))
    it = frames["item"].assign(l_rn=np.arange(len(frames["item"])))
    j = o.merge(it, how="cross")
    j = j[((j["l_okey"] == j["o_key"]) | (j["l_qty"] == 9)) & (j["o_key"] < 40)]
    want = {
        k: {("ord", int(r)) for r in g["o_rn"]} | {("item", int(r)) for r in g["l_rn"]}
        for k, g in j.groupby("o_prio")
    }
    frame = df.reset_index(drop=True)
    got = {
        frame.loc[i, "o_prio"]: {(Path(p).stem, int(r)) for p, rows in df.tp.sources(i).items() for r in rows}
        for i in range(len(frame))
    }
    assert got == want


def test_chain_and_one_to_one_cycle(tmp_path, monkeypatch):
    """A table reached through a looked-up table (cust via ord via item), and two tables whose keys are
    unique on both sides (one of them carried)."""
    rng = np.random.default_rng(2)
    a = pd.DataFrame({"a_key": rng.permutation(50).astype("int64"), "a_v": rng.integers(0, 3, 50)})
    b = pd.DataFrame({"b_key": rng.permutation(50).astype("int64"), "b_w": rng.integers(0, 4, 50)})
    paths = _write(tmp_path, {"ta": a, "tb": b})
    con = _connect(paths)
    qc = "SELECT a_v, COUNT(*) AS n FROM ta, tb WHERE a_key = b_key AND b_w > 0 GROUP BY a_v ORDER BY a_v"
    con.sql(qc)
    sent = _spy(con, monkeypatch)
    df = con.sql(qc)
    assert sent[-1] is not None
    j = a.assign(a_rn=np.arange(50)).merge(b.assign(b_rn=np.arange(50)), left_on="a_key", right_on="b_key")
    j = j[j["b_w"] > 0]
    want = {
        k: {("ta", int(r)) for r in g["a_rn"]} | {("tb", int(r)) for r in g["b_rn"]}
        for k, g in j.groupby("a_v")
    }
    frame = df.reset_index(drop=True)
    got = {
        int(frame.loc[i, "a_v"]): {
            (Path(p).stem, int(r)) for p, rows in df.tp.sources(i).items() for r in rows
        }
        for i in range(len(frame))
    }
    assert got == want


def test_sparse_and_negative_keys_use_the_sorted_index():
    values = np.array([10**12, -5, 7, 3 * 10**11], dtype=np.int64)
    index = key_lineage._key_index(values, None)
    assert index is not None and index[0] == "sorted"
    got = key_lineage._look_up(index, np.array([7, -5, 10**12, 8, 3 * 10**11], dtype=np.int64))
    assert got.tolist() == [2, 1, 0, -1, 3]
    assert key_lineage._key_index(np.array([4, -1, 4], dtype=np.int64), None) is None
    dense = key_lineage._key_index(np.array([2, 0, 5], dtype=np.int64), np.array([True, False, True]))
    assert dense[0] == "dense" and key_lineage._look_up(dense, np.array([2, 0, 5, 9])).tolist() == [
        0,
        -1,
        2,
        -1,
    ]
    assert (
        key_lineage._key_index(np.array([2, 2, 5], dtype=np.int64), np.array([True, False, True])) is not None
    )


def test_a_key_not_found_gives_no_parts():
    """A looked-up key without a row (or a NULL one) returns None: the caller then runs the query
    carrying every list (never a lineage short of a row)."""
    import pyarrow as pa

    from traceprop_frames.sql.connection import lineage_from_arrow

    base_x, base_t = 1 << 40, 2 << 40
    table = pa.table({"v": [1, 2], "__tp_lin": [[base_x + 0], [base_x + 1, base_x + 0]]})
    index = key_lineage._key_index(np.array([5, 9], dtype=np.int64), None)  # T rows: key 5 -> 0, 9 -> 1
    ok = [("t", (np.array([5, 9], dtype=np.int64), None), index, "x", base_t, base_x)]
    parts = key_lineage._derive(table, lineage_from_arrow, ok)
    assert parts[0][0].tolist() == [0, 1, 3] and parts[0][1].tolist() == [base_t, base_t + 1, base_t]
    missing = [("t", (np.array([5, 6], dtype=np.int64), None), index, "x", base_t, base_x)]
    assert key_lineage._derive(table, lineage_from_arrow, missing) is None
    null = [("t", (np.array([5, 9], dtype=np.int64), np.array([True, False])), index, "x", base_t, base_x)]
    assert key_lineage._derive(table, lineage_from_arrow, null) is None


def test_reads_kept_while_only_other_tables_change(tmp_path, monkeypatch):
    """A table made or dropped through the connection leaves the key columns of the others as read (no
    read again), and the lineage stays the brute force's."""
    frames = _tables(9)
    con = _connect(_write(tmp_path, frames))
    con.sql(Q)
    con.sql(Q)
    kept = {k: v for k, v in con._keys._cols.items()}
    con.sql("CREATE TABLE other AS SELECT 1 AS x")
    con.sql("DROP TABLE other")
    sent = _spy(con, monkeypatch)
    df = con.sql(Q)
    assert sent[-1] is not None
    assert all(con._keys._cols[k] is v for k, v in kept.items())  # the same arrays: not read again
    assert _got(df) == _oracle(frames)


def test_wide_sparse_keys(tmp_path, monkeypatch):
    """BIGINT keys past 2**32 (and negative): kept as 64-bit, looked up through the sorted index."""
    rng = np.random.default_rng(4)
    keys = rng.permutation(np.arange(-30, 30)).astype("int64") * 10**11 + 7
    a = pd.DataFrame({"k": keys, "g": rng.integers(0, 3, 60)})
    b = pd.DataFrame({"bk": rng.choice(keys, 200), "w": rng.integers(0, 5, 200)})
    con = _connect(_write(tmp_path, {"wa": a, "wb": b}))
    qw = "SELECT g, SUM(w) AS s FROM wa, wb WHERE k = bk AND w > 0 GROUP BY g ORDER BY g"
    con.sql(qw)
    sent = _spy(con, monkeypatch)
    df = con.sql(qw)
    assert sent[-1] is not None and "wa." not in sent[-1].split("SUM(w)")[1].split(" FROM ")[0]
    assert con._keys._maps[("wa", "k")][0] == "sorted"
    j = a.assign(a_rn=np.arange(60)).merge(b.assign(b_rn=np.arange(200)), left_on="k", right_on="bk")
    j = j[j["w"] > 0]
    want = {
        int(g): {("wa", int(r)) for r in d["a_rn"]} | {("wb", int(r)) for r in d["b_rn"]}
        for g, d in j.groupby("g")
    }
    frame = df.reset_index(drop=True)
    got = {
        int(frame.loc[i, "g"]): {(Path(p).stem, int(r)) for p, rows in df.tp.sources(i).items() for r in rows}
        for i in range(len(frame))
    }
    assert got == want


def _carried(sent: str | None) -> set[str]:
    """The tables whose ids the eager SQL ``sent`` carries in its lineage list (all three where the
    look-up path did not run)."""
    if sent is None:
        return {"cust", "ord", "item"}
    lin = sent[sent.index("SUM(l_qty)") :].split(" FROM ")[0]
    return {t for t in ("cust", "ord", "item") if f"{t}." in lin}


@pytest.mark.parametrize(
    ("max_rows", "carried", "read"),
    [
        (100, {"cust", "ord", "item"}, set()),  # ord (120 rows) over: nothing looked up, no column read
        (120, {"ord", "item"}, {"cust", "ord"}),  # cust looked up from ord; item (600) over: ord carried
        (600, {"item"}, {"cust", "ord", "item"}),  # every table under: as without the limit
    ],
)
@pytest.mark.parametrize("seed", [0, 4])
def test_row_limit_keeps_large_tables_carried(tmp_path, monkeypatch, max_rows, carried, read, seed):
    """Only tables of at most MAX_ROWS rows are read, on both sides of a look-up: a look-up from or into
    a larger table is carried instead, and its columns are never read; the lineage equals the brute
    force in every case (NULL keys, unmatched keys, a duplicated order key with seed 4)."""
    monkeypatch.setattr(key_lineage, "MAX_ROWS", max_rows)
    frames = _tables(seed, dup_order=seed == 4)
    con = _connect(_write(tmp_path, frames))
    con.sql(Q)
    sent = _spy(con, monkeypatch)
    df = con.sql(Q)
    if seed == 4:  # o_key repeats: ord is never looked up, whatever the limit
        carried = carried | {"ord"}
    assert _carried(sent[-1]) == carried
    assert {t for t, _ in con._keys._cols} <= read and {t for t, _ in con._keys._maps} <= read
    assert _got(df) == _oracle(frames)
    _same_as_plain(df, frames, Q)


def test_row_limit_empty_result(tmp_path, monkeypatch):
    """A query with no result rows on the look-up path: an empty frame, as DuckDB gives it."""
    monkeypatch.setattr(key_lineage, "MAX_ROWS", 120)
    frames = _tables(2)
    con = _connect(_write(tmp_path, frames))
    empty = Q.replace("l_qty > 2", "l_qty > 100")
    con.sql(empty)
    sent = _spy(con, monkeypatch)
    df = con.sql(empty)
    assert _carried(sent[-1]) == {"ord", "item"} and len(df) == 0
    _same_as_plain(df, frames, empty)


def test_row_limit_counted_again_after_reload(tmp_path, monkeypatch):
    """A table re-loaded with more rows than MAX_ROWS is counted again: carried from then on."""
    monkeypatch.setattr(key_lineage, "MAX_ROWS", 120)
    frames = _tables(6)
    con = _connect(_write(tmp_path, frames))
    con.sql(Q)
    con.sql(Q)
    assert ("cust", "c_key") in con._keys._maps  # cust looked up from ord (120 rows)
    big = _tables(6, n_ord=240)
    (tmp_path / "x").mkdir()
    con.read_parquet(_write(tmp_path / "x", {"ord": big["ord"]})["ord"], name="ord")
    sent = _spy(con, monkeypatch)
    df = con.sql(Q)
    assert _carried(sent[-1]) == {"cust", "ord", "item"}
    assert _got(df) == _oracle({**frames, "ord": big["ord"]})
