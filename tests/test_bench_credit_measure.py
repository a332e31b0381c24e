"""benchmarks/credit_measure.py: the credit benchmark's paired measure treats every side alike.

Its numbers are not tested (no timings in unit tests); what is: each side runs at each place of a round
equally often, and a ratio is taken against plain's run of the same round, so a machine that slows down
between rounds does not move it (a ratio of two medians would)."""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import credit_measure as cm  # noqa: E402


def test_every_side_takes_every_place_equally_often():
    n = len(cm.SIDES)
    for k in range(3):
        places = Counter((side, i) for r in range(2 * n) for i, side in enumerate(cm.round_order(k, r)))
        assert set(places.values()) == {2}, places
    made = {tuple(cm.round_order(k, 0)) for k in range(n)}
    assert len(made) == n  # each of n processes makes the connections in another order


def _times(ratio: float, plain_s: list[float]) -> dict:
    """Synthetic child output: every traced side ``ratio`` times plain in the same round, control equal."""
    out = {"plain": [[p, p] for p in plain_s], "control": [[p, p] for p in plain_s]}
    out["eager"] = [[p * 1.3, p * 1.3] for p in plain_s]
    out["lazy"] = [[p * ratio, p * ratio] for p in plain_s]
    return out


def test_ratios_are_paired_per_round_not_ratios_of_medians():
    # the machine's speed moves from round to round (plain 10, 40, 20, 30, 50 ms); lazy's ratio to plain
    # in the same round is known: the pooled median / quartiles are those of the per-round ratios
    plain_s = [0.010, 0.040, 0.020, 0.030, 0.050]
    ratios = [1.00, 1.02, 1.04, 1.06, 1.30]
    t = _times(1.0, plain_s)
    t["lazy"] = [[p * r, p * r] for p, r in zip(plain_s, ratios)]
    s = cm.summarise([t])
    for clock in ("wall", "cpu"):
        med, q1, q3, lo, hi, _ = s["lazy"][clock]
        assert abs(med - 1.04) < 1e-9 and abs(q1 - 1.02) < 1e-9 and abs(q3 - 1.06) < 1e-9
        assert abs(lo - 1.04) < 1e-9 and abs(hi - 1.04) < 1e-9
        # a ratio of medians would give 0.030 * 1.06 / 0.030 (lazy's median run is another round's)
        assert abs(statistics.median(x for x, _ in t["lazy"]) / 0.030 - 1.04) > 0.01
        assert abs(s["control"][clock][0] - 1.0) < 1e-9
        assert abs(s["eager"][clock][0] - 1.3) < 1e-9


def test_spread_shows_a_process_that_differs():
    a = _times(1.00, [0.03] * 5)
    b = _times(1.10, [0.03] * 5)
    med, q1, q3, lo, hi, plain_s = cm.summarise([a, a, b])["lazy"]["cpu"]
    assert abs(med - 1.00) < 1e-9 and abs(lo - 1.00) < 1e-9 and abs(hi - 1.10) < 1e-9
    assert q3 > q1 or statistics.median([q1, q3]) == med
    assert abs(plain_s - 0.03) < 1e-12


def test_every_side_follows_every_other_side_equally_often():
    # a cyclic rotation puts the same side before another in 3 of 4 rounds (lazy after eager)
    n = len(cm.SIDES)
    for k in range(3):
        after = Counter(
            (order[i - 1], order[i])
            for r in range(n)
            for order in [cm.round_order(k, r)]
            for i in range(1, n)
        )
        assert len(after) == n * (n - 1) and set(after.values()) == {1}, after


def test_plain_runs_on_duckdb_alone(tmp_path):
    """The plain sides' tables are DuckDB's own, read from the same files: the same columns and rows as a
    traced load shows, and no hidden id column (which plain on ``con.raw`` would carry through ``a.*``)."""
    import bench_sql

    from traceprop_frames.datasets import make_credit_risk

    paths = {k: str(v) for k, v in make_credit_risk(tmp_path, applicants=200, seed=2).items()}
    plain, traced = bench_sql.credit_connection(paths, "plain"), bench_sql.credit_connection(paths, "eager")
    assert not hasattr(plain, "raw")
    got = bench_sql.credit_run(plain, plain=True)()
    want = bench_sql.credit_run(traced, plain=False)()
    assert list(got.columns) == list(want.columns)
    assert not any(c.startswith("__tp") for c in got.columns)
    key = "SK_ID_CURR"
    a = got.sort_values(key).reset_index(drop=True)
    b = pd.DataFrame(want).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
