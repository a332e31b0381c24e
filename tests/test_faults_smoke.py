"""A small run of the fault-injection harness (`make faults` runs the full one): kills at durable-write
steps and at times spread over an erasure leave the model folder exactly before or after it."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the harness forks (POSIX only)")


def test_killed_erasures_are_never_half_done(tmp_path):
    spec = importlib.util.spec_from_file_location("harness", Path(__file__).parent / "faults" / "harness.py")
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    counts = harness.campaign(harness.Erase(), kills=4, root=tmp_path)
    assert counts["kills"] >= 2 and counts["half"] == 0 and counts["lost"] == 0
    assert counts["before"] + counts["after"] == counts["kills"]
    # the sweep hit both sides of the commit point
    assert counts["before"] >= 1 and counts["after"] >= 1
