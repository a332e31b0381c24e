"""The Examples blocks of the unlearning modules run."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "traceprop_frames.unlearn.correction",
        "traceprop_frames.unlearn.certificate",
        "traceprop_frames.unlearn.batch",
        "traceprop_frames.estimators.newton",
        "traceprop_frames.unlearn.ledger",
        "traceprop_frames.unlearn.refresh",
        "traceprop_frames.unlearn.bundle",
        "traceprop_frames._durable",
    ],
)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
