"""The Examples blocks in docstrings run, so docs and code cannot drift apart."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "traceprop_frames.datasets",
    "traceprop_frames.tensor",
    "traceprop_frames.spark.dialect",
    "traceprop_frames.frames.cross_row",
    "traceprop_frames.frames.traced_values",
    "traceprop_frames.frames.reshape",
    "traceprop_frames.sql.shared",
    "traceprop_frames.sql.erasure_scan",
    "traceprop_frames.lineage.erasure_scope",
    "traceprop_frames.lineage.shared_summary",
    "traceprop_frames.unlearn.sample_map",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
