"""Hypothesis profiles.

``ci`` (the default; ``make test`` and ``.ci/run`` select it explicitly): derandomized, so every fresh
clone runs the same examples and a green suite stays green; no example database, no deadline (the CI
machine is shared and slow). ``dev``: random examples on every run and five times the budget, to keep
searching for new failures — ``make test-fresh`` runs it from fresh clones with different
``--hypothesis-seed`` values. Select with ``--hypothesis-profile=dev`` or ``HYPOTHESIS_PROFILE=dev``.
Tests that run a whole pipeline per example keep a smaller explicit ``max_examples``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, max_examples=150, print_blob=True, **_COMMON)
settings.register_profile("dev", derandomize=False, max_examples=750, print_blob=True, **_COMMON)


def pytest_configure(config):
    if config.getoption("hypothesis_profile", default=None) is None:  # the command line wins
        settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
