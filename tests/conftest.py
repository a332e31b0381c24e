"""Hypothesis profiles and the ``spark`` fixture.

``ci`` (the default; ``make test`` and ``.ci/run`` select it explicitly): derandomized, so every fresh
clone runs the same examples and a green suite stays green; no example database, no deadline (the CI
machine is shared and slow). ``dev``: random examples on every run and five times the budget, to keep
searching for new failures — ``make test-fresh`` runs it from fresh clones with different
``--hypothesis-seed`` values. Select with ``--hypothesis-profile=dev`` or ``HYPOTHESIS_PROFILE=dev``.
Tests that run a whole pipeline per example keep a smaller explicit ``max_examples``.

``spark``: one local[2] SparkSession for the whole test run (start-up is slow); skipped, saying why,
when pyspark or Java is missing.
"""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, max_examples=150, print_blob=True, **_COMMON)
settings.register_profile("dev", derandomize=False, max_examples=750, print_blob=True, **_COMMON)


def pytest_configure(config):
    if config.getoption("hypothesis_profile", default=None) is None:  # the command line wins
        settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def spark():
    pytest.importorskip("pyspark", reason="pyspark not installed: pip install 'traceprop-frames[spark]'")
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (
        java_home and os.path.exists(os.path.join(java_home, "bin", "java"))
    ):
        pytest.skip(
            "Spark tests need Java 17+ (no `java` on PATH and no JAVA_HOME); install a JDK to run them"
        )
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("traceprop-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
