"""A small run of the fault-injection harness (`make faults` runs the full one): kills at durable-write
steps and at times spread over an erasure (single, and a batch of requests) leave the model folder exactly
before or after it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the harness forks (POSIX only)")


def test_killed_erasures_are_never_half_done():
    # in its own process: the harness forks, which is only safe before torch starts worker threads
    harness = Path(__file__).parent / "faults" / "harness.py"
    run = subprocess.run(
        [sys.executable, str(harness), "--kills", "4", "--ops", "erase", "batch"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr  # exit 1 on any half-done or lost state
    for op in ("erase", "batch"):  # a single erasure; a batch of 20 requests committed together
        row = next(ln.split() for ln in run.stdout.splitlines() if ln.split()[:1] == [op])
        steps, _, kills, before, after, half, lost = map(int, row[1:8])
        assert steps > 0 and kills >= 2 and half == 0 and lost == 0 and before + after == kills
        assert before >= 1 and after >= 1  # the sweep hit both sides of the commit point
