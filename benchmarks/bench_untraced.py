"""What ``import traceprop_frames`` costs pandas code that traces nothing.

Everyday calls on untraced frames (scalar access, small arithmetic, reductions, fillna/clip/where,
``__setitem__``, shift/cumsum/rolling, group-by transform, concat), on a small frame and a 200k-row one,
timed with the library's pandas hooks installed and removed in the same process, interleaved: each
round times every case both ways in alternating order (cases shuffled per round), in CPU time of this
process, and the ratio is the median over rounds of (installed / removed). A traced frame is alive
throughout (the hooks are the same either way). The load average is printed before and after.

    python benchmarks/bench_untraced.py [--rounds 31] [--quick]

Targets (issue 20): geometric mean of the ratios <= 1.02, worst <= 1.05.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import statistics
import sys
import time

import numpy as np
import pandas as pd

import traceprop_frames as tpf
from traceprop_frames.frames import cross_row


def _frames(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "g": rng.integers(0, max(2, n // 50), size=n),
            "c": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
        }
    )
    return df, df["a"].copy()


def _cases(n: int):
    df, s = _frames(n)
    other = df.copy()
    idx = [0]

    def setitem():
        df["z"] = 1.0

    def series_setitem():
        s.iloc[0] = 1.5

    def loc_setitem():
        df.loc[idx[0], "b"] = 2.0

    scalar = {
        "iloc[i, j]": lambda: df.iloc[3, 1],
        "at[i, c]": lambda: df.at[3, "a"],
        "loc[i, c]": lambda: df.loc[3, "a"],
        "s.iloc[i]": lambda: s.iloc[3],
        "s[i]": lambda: s[3],
        "df[c]": lambda: df["a"],
    }
    common = {
        "s + 1": lambda: s + 1,
        "s * s": lambda: s * s,
        "s > 0": lambda: s > 0,
        "df + df": lambda: df[["a", "b"]] + other[["a", "b"]],
        "s.sum()": lambda: s.sum(),
        "s.mean()": lambda: s.mean(),
        "df.std()": lambda: df.std(),
        "fillna(0)": lambda: df["c"].fillna(0),
        "clip(-1, 1)": lambda: s.clip(-1, 1),
        "where(s > 0)": lambda: s.where(s > 0),
        "df[c] = x": setitem,
        "s.iloc[i] = x": series_setitem,
        "df.loc[i, c] = x": loc_setitem,
        "shift(1)": lambda: s.shift(1),
        "cumsum()": lambda: s.cumsum(),
        "rolling(3).mean()": lambda: s.rolling(3).mean(),
        "groupby transform": lambda: df.groupby("g")["a"].transform("mean"),
        "concat": lambda: pd.concat([df, other]),
    }
    return {**(scalar if n < 1000 else {}), **common}


def _time(fn, reps: int) -> float:
    """Best of three batches of ``reps`` calls in CPU time of this process (time spent waiting for a core
    on a shared machine is not counted); garbage collection off while timing."""
    best = float("inf")
    gc.disable()
    try:
        for _ in range(3):
            t0 = time.process_time()
            for _ in range(reps):
                fn()
            best = min(best, (time.process_time() - t0) / reps)
    finally:
        gc.enable()
    return best


def _reps(fn) -> int:
    t = _time(fn, 3)
    return max(3, min(2000, int(0.003 / max(t, 1e-7))))


def run(rounds: int, sizes) -> list[tuple[str, float, float, float]]:
    keep = tpf.track(pd.DataFrame({"x": [1.0, 2.0]}), "bench_untraced_alive")  # noqa: F841
    rows = []
    for n in sizes:
        cases = _cases(n)
        reps = {k: _reps(f) for k, f in cases.items()}
        on, off, ratio = {k: [] for k in cases}, {k: [] for k in cases}, {k: [] for k in cases}
        names = list(cases)
        for r in range(rounds):
            random.Random(r).shuffle(names)
            for k in names:
                f = cases[k]
                order = (True, False) if r % 2 == 0 else (False, True)
                t = {}
                for installed in order:
                    (cross_row.install if installed else cross_row.uninstall)()
                    t[installed] = _time(f, reps[k])
                cross_row.install()
                on[k].append(t[True])
                off[k].append(t[False])
                ratio[k].append(t[True] / t[False])
        for k in cases:
            label = f"{k} ({'small' if n < 1000 else f'{n // 1000}k rows'})"
            best = min(on[k]) / min(off[k])
            rows.append((label, min(off[k]), min(on[k]), statistics.median(ratio[k]), best))
    return rows


def _test_cost(fn, args: dict) -> float:
    """CPU seconds of the test frames.inline put in front of pandas' ``fn``, with the arguments of a
    real call: the test alone, timed in a tight loop against an empty function (noise cannot hide it)."""
    from traceprop_frames.frames import inline

    node = inline._function_ast(fn._tp_pristine)
    cond = " or ".join(f"({t})" for t in fn._tp_tests).replace("{rest}", inline._rest(node))
    params = ", ".join(args)
    env = dict(inline.ENV)
    exec(
        f"def probe({params}):\n    if {cond}:\n        return 1\ndef empty({params}):\n    return None", env
    )
    t = {}
    for name in ("probe", "empty"):
        f = env[name]
        t[name] = min(_time(lambda f=f: f(**args), 20000) for _ in range(5))
    return max(t["probe"] - t["empty"], 0.0)


def _tests_run(fn) -> list:
    """(recompiled pandas function, its arguments) for every test one call of ``fn`` runs."""
    from traceprop_frames.frames import inline

    seen = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in inline.CODES:
            seen.append((inline.CODES[frame.f_code], dict(frame.f_locals)))

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return seen


def bounds(sizes) -> list[tuple[str, int, float, float]]:
    """Per case: tests run, their CPU time, and 1 + that / the plain call's: what the hooks cost an
    untraced call, noise aside (no other code of the library runs on untraced objects: see
    tests/test_frames_pandas_compat.py::test_untraced_calls_never_enter_this_package)."""
    rows = []
    for n in sizes:
        for k, f in _cases(n).items():
            run = _tests_run(f)
            cost = sum(_test_cost(fn, args) for fn, args in run)
            cross_row.uninstall()
            plain = min(_time(f, _reps(f)) for _ in range(3))
            cross_row.install()
            label = f"{k} ({'small' if n < 1000 else f'{n // 1000}k rows'})"
            rows.append((label, len(run), cost, 1 + cost / plain))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--quick", action="store_true", help="small frame only, 5 rounds")
    args = ap.parse_args(argv)
    sizes = (100,) if args.quick else (100, 200_000)
    rounds = 5 if args.quick else args.rounds
    load0 = os.getloadavg()
    rows = run(rounds, sizes)
    load1 = os.getloadavg()
    print(f"pandas {pd.__version__}; {rounds} interleaved rounds; CPU time per call, best over the rounds")
    print(f"load average (1, 5, 15 min): before {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f}, after "
          f"{load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f}")  # fmt: skip
    print("| case | hooks removed | hooks installed | ratio (median of rounds) | ratio of bests |")
    print("|---|---|---|---|---|")
    for label, a, b, r, rb in rows:
        print(f"| {label} | {a * 1e6:.1f} us | {b * 1e6:.1f} us | {r:.3f} | {rb:.3f} |")
    brows = bounds(sizes)
    print("\nThe tests frames.inline runs in front of pandas' code, timed alone (CPU time, tight loop):")
    print("| case | tests run per call | their time | 1 + their time / plain call |\n|---|---|---|---|")
    for label, k, c, b in brows:
        print(f"| {label} | {k} | {c * 1e9:.0f} ns | {b:.3f} |")
    geo = math.exp(sum(math.log(x[3]) for x in brows) / len(brows))
    worst = max(brows, key=lambda x: x[3])
    print(f"tests alone: geometric mean {geo:.3f}; worst {worst[3]:.3f} {worst[0]}\n")
    for col, name in ((3, "median of rounds"), (4, "ratio of bests")):
        geo = math.exp(sum(math.log(x[col]) for x in rows) / len(rows))
        worst = max(rows, key=lambda x: x[col])
        print(
            f"{name}: geometric mean {geo:.3f} (target <= 1.02); worst {worst[col]:.3f} {worst[0]} (target <= 1.05)"
        )


if __name__ == "__main__":
    main()
