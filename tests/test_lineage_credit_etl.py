"""The credit-risk ETL's lineage against an oracle computed with plain pandas from the raw files.

For applicant k the training row depends on exactly: their application row ∪ the bureau rows with
SK_ID_CURR = k ∪ the previous-application rows with SK_ID_CURR = k.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traceprop_frames.datasets import make_credit_risk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "credit_risk"))
from etl import load, plain_etl, traced_etl  # noqa: E402


@pytest.fixture(scope="module")
def credit(tmp_path_factory):
    paths = make_credit_risk(tmp_path_factory.mktemp("credit"), applicants=1500, seed=7)
    app, bur, prev = load(paths)
    return paths, traced_etl(app, bur, prev)


def _oracle(paths):
    """{SK_ID_CURR: {path: set(rows)}} from the raw files, with plain pandas (row = file data row)."""
    raw = {
        str(paths["application"]): pd.read_csv(paths["application"]),
        str(paths["bureau"]): pd.read_csv(paths["bureau"]),
        str(paths["previous_application"]): pd.read_parquet(paths["previous_application"]),
    }
    out: dict[int, dict[str, set[int]]] = {}
    for path, df in raw.items():
        for k, rows in df.groupby("SK_ID_CURR").indices.items():
            out.setdefault(int(k), {})[path] = set(rows.tolist())
    return out


def test_every_training_row_has_exactly_its_applicants_rows(credit):
    paths, train = credit
    oracle = _oracle(paths)
    ids = train["SK_ID_CURR"].to_numpy()
    for i in range(len(train)):
        got = {p: set(r.tolist()) for p, r in train.tp.sources(rows=[i]).items()}
        assert got == oracle[int(ids[i])], f"training row {i}"


def test_forward_lookup_matches_oracle(credit):
    paths, train = credit
    bureau = pd.read_csv(paths["bureau"])
    ids = train["SK_ID_CURR"].to_numpy()
    rng = np.random.default_rng(0)
    for row in rng.choice(len(bureau), 25, replace=False):
        k = bureau["SK_ID_CURR"].iloc[row]
        expect = np.flatnonzero(ids == k)  # dropped applicants (income 0) give an empty answer
        np.testing.assert_array_equal(train.tp.rows_from_source(paths["bureau"], [int(row)]), expect)


def test_whole_frame_sources_and_ops(credit):
    paths, train = credit
    src = train.tp.sources()
    app = pd.read_csv(paths["application"])
    kept = app.index[app["AMT_INCOME_TOTAL"] > 0].to_numpy()
    np.testing.assert_array_equal(src[str(paths["application"])], kept)
    bureau = pd.read_csv(paths["bureau"])
    np.testing.assert_array_equal(
        src[str(paths["bureau"])], np.flatnonzero(bureau["SK_ID_CURR"].isin(app["SK_ID_CURR"].iloc[kept]))
    )
    ops = train.tp.ops()
    assert ops.count("read_csv") == 2 and ops.count("read_parquet") == 1
    assert ops.count("groupby_agg") == 2 and ops.count("merge") == 2


def test_traced_data_equals_plain_pandas(credit):
    paths, train = credit
    plain = plain_etl(
        pd.read_csv(paths["application"]),
        pd.read_csv(paths["bureau"]),
        pd.read_parquet(paths["previous_application"]),
    )
    pd.testing.assert_frame_equal(train.reset_index(drop=True), plain.reset_index(drop=True))


def test_trace_to_file_names_file_and_row(credit):
    paths, train = credit
    rows = train.tp.trace(3)
    app_rows = [r for r in rows if r.path == str(paths["application"])]
    assert len(app_rows) == 1 and all(r.sha256_ok for r in rows)
    assert app_rows[0].trace_to_file() == f"{paths['application']} row {app_rows[0].row}"


@pytest.mark.parametrize("capture", ["eager", "lazy"])
def test_sql_etl_rows_match_oracle(credit, capture):
    """The same ETL in SQL (benchmarks/bench_sql.py ETL / TRAIN), run twice as a pipeline would: every
    training row's lineage is its applicant's rows (eager: the grouping tables keep their members, see
    sql.member_lists, and the join reads them by rowid)."""
    import traceprop_frames as tpf

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_sql import ETL, TRAIN

    paths, _ = credit
    con = tpf.connect(capture=capture)
    con.read_csv(paths["application"], name="application")
    con.read_csv(paths["bureau"], name="bureau")
    con.read_parquet(paths["previous_application"], name="previous_application")
    for _ in range(2):
        for s in ETL:
            con.execute(s)
        train = con.sql(TRAIN)
    if capture == "eager":
        assert {type(con._pending.get(t)).__name__ for t in ("bureau_agg", "prev_agg")} == {"MemberTable"}
    oracle = _oracle(paths)
    ids = train["SK_ID_CURR"].to_numpy()
    assert len(train) > 100
    for i in range(len(train)):
        got = {p: set(r.tolist()) for p, r in train.tp.sources(rows=[i]).items() if len(r)}
        assert got == oracle[int(ids[i])], f"training row {i}"
