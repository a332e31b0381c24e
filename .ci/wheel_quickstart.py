"""Build the wheel, install it into a clean virtual environment, and run the README's quickstart there
from an empty folder; its output must be what the README shows.

    python .ci/wheel_quickstart.py [--keep]

The environment gets ``torch==2.13.0`` first (the CPU build the Makefile pins, so the project's
``torch>=2.2`` pulls no CUDA build) and then the wheel with its dependencies; pip's cache is reused, so
later runs download nothing. Exit status 0 only if the quickstart ran and printed what the README says.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"


def _readme_helpers():
    spec = importlib.util.spec_from_file_location("test_readme", ROOT / "tests" / "test_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(map(str, cmd)), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, check=True, **kw)
    print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    args = ap.parse_args(argv)
    helpers = _readme_helpers()
    code, shown = helpers.quickstart((ROOT / "README.md").read_text())
    work = Path(tempfile.mkdtemp(prefix="tpf-wheel-"))
    try:
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", work / "dist", ROOT])
        wheel = next((work / "dist").glob("traceprop_frames-*.whl"))
        _run([sys.executable, "-m", "venv", work / "venv"])
        py = work / "venv" / "bin" / "python"
        _run([py, "-m", "pip", "install", "-q", TORCH])
        _run([py, "-m", "pip", "install", "-q", wheel])
        empty = work / "empty"
        empty.mkdir()
        (work / "quickstart.py").write_text(code)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        out = _run([py, work / "quickstart.py"], cwd=empty, env=env, capture_output=True, text=True).stdout
        where = _run([py, "-c", "import traceprop_frames as t; print(t.__file__)"], cwd=empty, env=env,
                     capture_output=True, text=True).stdout.strip()  # fmt: skip
        if not where.startswith(str(work / "venv")):
            print(f"the quickstart imported traceprop_frames from {where}, not the wheel", file=sys.stderr)
            return 1
        if not helpers.same_output(out, shown):
            print(f"README shows:\n{shown}\nthe installed wheel printed:\n{out}", file=sys.stderr)
            return 1
        print(f"wheel quickstart: {wheel.name} in a clean venv printed what the README shows")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
