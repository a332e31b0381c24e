"""The Examples blocks of the attribution and estimator docstrings run (docs and code cannot drift)."""

import doctest
import importlib

import pytest

MODULES = [
    "traceprop_frames.attribution.projection",
    "traceprop_frames.attribution.store",
    "traceprop_frames.attribution.lds",
    "traceprop_frames.attribution.taylor",
    "traceprop_frames.attribution.weighted",
    "traceprop_frames.attribution.sketch",
    "traceprop_frames.attribution.replay",
    "traceprop_frames.estimators.logistic",
    "traceprop_frames.estimators.mlp",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
