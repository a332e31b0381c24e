"""benchmarks/bench_sql.py's paired TPC-H measure (``--tpch-sf``) treats every side alike.

Its numbers are not tested (no timings in unit tests); what is: each side runs at each place of a round
equally often and straight after each other side equally often, each run's time goes to its own side and
round, and a ratio is taken against plain's run of the same round, so a machine that slows down between
rounds does not move it (a ratio of two medians would)."""

from __future__ import annotations

import statistics
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_sql as bs  # noqa: E402

SIDES = bs.TPCH_SIDES
TPCH = Path(__file__).resolve().parents[2] / "shared" / "tpch"


@pytest.mark.parametrize("i", range(5))
def test_every_side_takes_every_place_and_follows_every_side_equally_often(i):
    n = len(SIDES)
    rounds = [bs.side_order(i, r) for r in range(2 * n)]
    assert all(sorted(o) == sorted(SIDES) for o in rounds)
    places = Counter((side, k) for o in rounds for k, side in enumerate(o))
    assert set(places.values()) == {2}, places
    # within a round, every ordered pair (a straight before b) occurs equally often: no side always runs
    # after the same one (a cyclic rotation puts control after plain in 3 rounds of 4)
    follows = Counter((o[k], o[k + 1]) for o in rounds for k in range(n - 1))
    assert len(follows) == n * (n - 1) and set(follows.values()) == {2}, follows


def test_each_query_starts_its_rounds_elsewhere():
    n = len(SIDES)
    firsts = Counter(bs.side_order(i, 0)[0] for i in range(n))
    assert set(firsts) == set(SIDES) and set(firsts.values()) == {1}
    # with 5 rounds a query (not a multiple of 4) one side is first twice; over 4 queries all are even
    five = Counter(bs.side_order(i, r)[0] for i in range(n) for r in range(5))
    assert set(five.values()) == {5}


def _fake_clocks(monkeypatch, cost):
    """Both clocks advance only when a side runs: by ``cost(side, round)`` (wall) and twice that (CPU)."""
    now = [0.0]
    monkeypatch.setattr(bs.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(bs.time, "process_time", lambda: 2 * now[0])
    calls: list[str] = []

    def fn(side):
        def run():
            calls.append(side)
            now[0] += cost(side, (len(calls) - 1) // len(SIDES) - 1)  # round -1: the warm-up

        return run

    return {side: fn(side) for side in SIDES}, calls


def test_each_run_is_timed_for_its_own_side_and_round(monkeypatch):
    plain_s = [0.010, 0.040, 0.020, 0.030, 0.050, 0.015, 0.025, 0.035]  # the machine's speed moves
    mult = {"plain": 1.0, "control": 1.0, "eager": 1.3, "lazy": 1.05}
    fns, calls = _fake_clocks(monkeypatch, lambda side, r: 0 if r < 0 else plain_s[r] * mult[side])
    times = bs.paired_rounds(fns, len(plain_s), i=3)
    n = len(SIDES)
    assert calls == [s for r in range(-1, len(plain_s)) for s in bs.side_order(3, r)]
    assert [c for c in calls[:n]] == bs.side_order(3, -1)  # one warm-up run of each side, not timed
    for side in SIDES:
        assert [w for w, _ in times[side]] == pytest.approx([p * mult[side] for p in plain_s])
        assert [c for _, c in times[side]] == pytest.approx([2 * p * mult[side] for p in plain_s])
        assert bs.pair_ratios(times, side, 1) == pytest.approx([mult[side]] * len(plain_s))


def test_ratios_are_paired_per_round_not_ratios_of_medians():
    # plain 10, 40, 20, 30, 50 ms; lazy's ratio to plain in the same round is known, so the median and
    # quartiles are those of the per-round ratios; a ratio of the two medians gives 31.8 / 30 = 1.06
    plain_s = [0.010, 0.040, 0.020, 0.030, 0.050]
    ratios = [1.00, 1.02, 1.04, 1.06, 1.30]
    times = {
        "plain": [[p, 2 * p] for p in plain_s],
        "control": [[p, 2 * p] for p in plain_s],
        "eager": [[1.3 * p, 2.6 * p] for p in plain_s],
        "lazy": [[p * x, 2 * p * x] for p, x in zip(plain_s, ratios)],
    }
    s = bs.query_summary(times)
    assert s["plain"] == pytest.approx((0.030, 0.060))
    for c in (0, 1):
        assert s["lazy"][c] == pytest.approx((1.04, 1.02, 1.06))
        assert s["control"][c] == pytest.approx((1.0, 1.0, 1.0))
        assert s["eager"][c] == pytest.approx((1.3, 1.3, 1.3))
        of_medians = statistics.median(t[c] for t in times["lazy"]) / s["plain"][c]
        assert abs(of_medians - s["lazy"][c][0]) > 0.01  # the data tells the two apart


def test_summary_over_queries_names_the_worst_and_lowest():
    def result(case, lazy):
        one = ((lazy, lazy, lazy), (lazy, lazy, lazy))
        flat = ((1.0,) * 3, (1.0,) * 3)
        return {"case": case, "summary": {"plain": (0.1, 0.1), "control": flat, "eager": flat, "lazy": one}}

    rs = [result("TPC-H q01", 1.02), result("TPC-H q02", 1.25), result("TPC-H q03", 0.97)]
    med, lo, hi = bs.measure_summary(rs)["lazy"]["cpu"]
    assert med == pytest.approx(1.02) and lo == (0.97, "TPC-H q03") and hi == (1.25, "TPC-H q02")


def test_the_measure_runs_every_side_on_small_tpch(capsys):
    if not (TPCH / "q01.sql").exists():
        pytest.skip(f"no TPC-H data at {TPCH}")
    out = bs.tpch_measure(TPCH, TPCH, repeat=4, only=[6, 2])
    assert [r["case"] for r in out] == ["TPC-H q06", "TPC-H q02"]
    for r in out:
        assert {side: len(t) for side, t in r["times"].items()} == dict.fromkeys(SIDES, 4)
        assert all(w > 0 and c >= 0 for t in r["times"].values() for w, c in t)
        assert set(r["summary"]) == set(SIDES) and len(r["one_row"]) == 2
    bs.print_measure(out, 4)
    printed = capsys.readouterr().out
    for side in SIDES[1:]:
        assert f"TPC-H {side} (cpu, paired): median ratio" in printed
