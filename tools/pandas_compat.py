"""pandas' own tests, once plain and once with ``import traceprop_frames``: print what fails only with it.

pandas ships its test suite inside the wheel (``pytest --pyargs pandas.tests.<area>``). This runs the areas
the library touches twice, in the same interpreter, and lists the tests that fail (or error) only with the
library imported. Exit status 1 if there is any, 0 otherwise.

    python tools/pandas_compat.py                 # the full area list (several minutes each way)
    python tools/pandas_compat.py --quick         # the CI subset (about a minute each way)
    python tools/pandas_compat.py --python /tmp/pd22/bin/python   # another pandas, e.g. the oldest allowed

``--python`` names the interpreter whose pandas is tested; traceprop_frames is imported from this checkout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Every pandas area the library's wrappers touch (issue 20's list, plus copy-on-write and apply).
AREAS = (
    "window", "groupby.transform", "groupby.methods", "groupby.test_cumulative", "reductions",
    "series.methods", "frame.methods", "reshape.concat", "reshape.test_cut", "reshape.test_qcut",
    "indexing", "frame.indexing", "series.indexing", "series.test_arithmetic", "frame.test_arithmetic",
    "frame.test_reductions", "series.test_reductions", "arithmetic.test_numeric", "copy_view", "apply",
    "series.test_cumulative", "groupby.test_apply", "util",
)  # fmt: skip
# A subset that runs in about a minute each way and still crosses every wrapped entry point: warnings'
# stack level, chained assignment, copy-on-write, cross-row methods, reductions, concat and cut.
QUICK = (
    "copy_view", "series.indexing.test_setitem", "frame.indexing.test_setitem", "reshape.test_cut",
    "reshape.test_qcut", "groupby.test_cumulative", "series.test_cumulative", "series.methods.test_fillna",
    "series.methods.test_clip", "frame.methods.test_replace", "frame.methods.test_shift",
    "window.test_rolling", "reductions.test_stat_reductions", "reshape.concat.test_concat",
    "util.test_find_stack_level",
)  # fmt: skip


def _present(python: str, areas) -> list:
    """The areas this pandas ships (a newer pandas has test modules an older one lacks)."""
    code = (
        "import importlib.util, sys\n"
        "for a in sys.argv[1:]:\n"
        "    print(a if importlib.util.find_spec('pandas.tests.' + a) else '')"
    )
    out = subprocess.run([python, "-c", code, *areas], capture_output=True, text=True, check=True).stdout
    return [a for a in out.splitlines() if a]


def _hooks(python: str) -> str:
    """How the library's hooks went in on this pandas (frames.inline: recompiled, or a plain wrapper)."""
    code = (
        "import traceprop_frames\nfrom traceprop_frames.frames import inline\n"
        "done = inline.patched()\nrest = {k: v for k, v in done.items() if v != 'inline'}\n"
        "print(f'hooks: {len(done) - len(rest)} of {len(done)} inside pandas\\' own methods; wrappers: {rest}')"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env)
    return proc.stdout.strip() or proc.stderr.strip()[-500:]


def _run(python: str, areas, with_import: bool, out: Path, timeout: float) -> tuple[dict, float]:
    """Run pytest over ``areas``; returns ({test id: outcome}, wall seconds)."""
    xml = out / ("imported.xml" if with_import else "plain.xml")
    ini = out / "pytest.ini"
    ini.write_text("[pytest]\n")  # none of this project's pytest settings
    cmd = [python, "-m", "pytest", "-c", str(ini), "--rootdir", str(out), "-q", "-p", "no:cacheprovider",
           "--junitxml", str(xml), "-W", "ignore::pytest.PytestUnraisableExceptionWarning",
           "--pyargs", *(f"pandas.tests.{a}" for a in areas)]  # fmt: skip
    if with_import:
        cmd[3:3] = ["-p", "pandas_compat_plugin"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tools"), str(ROOT)]))
    env.pop("PYTHONWARNINGS", None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if not xml.exists():
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"pytest wrote no report ({'imported' if with_import else 'plain'} run)")
    return _outcomes(xml), wall


def _outcomes(xml: Path) -> dict:
    """{test id: (outcome, first line of the message)} from a JUnit XML report."""
    res = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        tid = f"{case.get('classname')}::{case.get('name')}"
        outcome, msg = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                msg = (child.get("message") or "").splitlines()[0][:200] if child.get("message") else ""
                if outcome != "skipped":
                    break
        res[tid] = (outcome, msg)
    return res


def _counts(res: dict) -> dict:
    c = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for outcome, _ in res.values():
        c[outcome] += 1
    return c


def _bad(res: dict) -> set:
    return {t for t, (o, _) in res.items() if o in ("failed", "error")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the CI subset of areas")
    ap.add_argument("--areas", nargs="*", help="pandas.tests sub-packages/modules (dotted), e.g. copy_view")
    ap.add_argument("--python", default=sys.executable, help="interpreter whose pandas is tested")
    ap.add_argument("--timeout", type=float, default=5400, help="seconds per run before giving up")
    ap.add_argument("--out", help="folder for the JUnit reports (default: a temporary one)")
    ap.add_argument("--reuse-plain", action="store_true", help="take the plain run from --out's plain.xml")
    ap.add_argument("--parallel", action="store_true", help="run both ways at once (two processes)")
    args = ap.parse_args(argv)
    areas = args.areas or (QUICK if args.quick else AREAS)
    out = Path(args.out or tempfile.mkdtemp(prefix="pandas-compat-"))
    out.mkdir(parents=True, exist_ok=True)
    version = subprocess.run([args.python, "-c", "import pandas; print(pandas.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    present = _present(args.python, areas)
    if len(present) < len(areas):
        print(f"not in this pandas, skipped: {sorted(set(areas) - set(present))}")
    areas = present
    print(f"pandas {version} ({args.python}); {len(areas)} area(s); reports in {out}", flush=True)
    print(_hooks(args.python), flush=True)
    if args.reuse_plain and (out / "plain.xml").exists():
        plain, t_plain = _outcomes(out / "plain.xml"), float("nan")
        imported, t_imp = _run(args.python, areas, True, out, args.timeout)
    elif args.parallel:
        with ThreadPoolExecutor(2) as pool:
            both = [pool.submit(_run, args.python, areas, w, out, args.timeout) for w in (False, True)]
            (plain, t_plain), (imported, t_imp) = (f.result() for f in both)
    else:
        plain, t_plain = _run(args.python, areas, False, out, args.timeout)
        imported, t_imp = _run(args.python, areas, True, out, args.timeout)
    print("| | plain | with `import traceprop_frames` |\n|---|---|---|")
    cp, ci = _counts(plain), _counts(imported)
    for k in ("failed", "error", "passed", "skipped"):
        print(f"| {k} | {cp[k]} | {ci[k]} |")
    print(f"| wall time | {t_plain:.0f} s | {t_imp:.0f} s |")
    only = sorted(_bad(imported) - _bad(plain) - (set(plain) - set(imported)))
    missing = sorted(set(plain) - set(imported))
    print(f"\n{len(only)} test(s) fail only with the import; {len(missing)} ran only plain")
    for t in only:
        print(f"  {t}: {imported[t][1]}")
    for t in missing[:50]:
        print(f"  not run with the import: {t}")
    return 1 if only or missing else 0


if __name__ == "__main__":
    sys.exit(main())
