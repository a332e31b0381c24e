"""The Examples blocks of the public API module, the step hook and the OpenLineage helpers run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "traceprop_frames",
    "traceprop_frames.lineage.events",
    "traceprop_frames.integrations.columns",
    "traceprop_frames.integrations.schemas",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    pytest.importorskip("openlineage.client")
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
