"""Hypothesis profiles, the ``spark`` fixture, and step listeners restored after each test.

``ci`` (the default; ``make test`` and ``.ci/run`` select it explicitly): derandomized, so every fresh
clone runs the same examples and a green suite stays green; no example database, no deadline (the CI
machine is shared and slow). ``dev``: random examples on every run and five times the budget, to keep
searching for new failures — ``make test-fresh`` runs it from fresh clones with different
``--hypothesis-seed`` values. Select with ``--hypothesis-profile=dev`` or ``HYPOTHESIS_PROFILE=dev``.
Tests that run a whole pipeline per example keep a smaller explicit ``max_examples``.

A private home: before anything is imported, ``HOME``, the XDG folders and ``TRACEPROP_SIGNING_KEY`` point
into a temporary folder (subprocesses inherit it), so no test creates ``~/.config/traceprop/signing_key.pem``
or anything else in the user's home. An audit hook records every write (open for writing, mkdir, rename,
remove) under the real home outside this checkout; the run fails at the end if there was one.

``spark``: one local[2] SparkSession for the whole test run (start-up is slow); skipped, saying why,
when pyspark or Java is missing.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from _home_guard import HomeWriteGuard
from hypothesis import HealthCheck, settings

REAL_HOME = Path.home().resolve()
_PRIVATE_HOME = Path(tempfile.mkdtemp(prefix="traceprop-test-home-"))
for _var, _sub in (
    ("XDG_CONFIG_HOME", ".config"),
    ("XDG_CACHE_HOME", ".cache"),
    ("XDG_DATA_HOME", ".local/share"),
):
    os.environ[_var] = str(_PRIVATE_HOME / _sub)
os.environ["HOME"] = str(_PRIVATE_HOME)
os.environ["TRACEPROP_SIGNING_KEY"] = str(_PRIVATE_HOME / "keys" / "signing_key.pem")
HOME_GUARD = HomeWriteGuard(REAL_HOME, allowed=[Path(__file__).resolve().parents[1], _PRIVATE_HOME])
sys.addaudithook(HOME_GUARD)  # cannot be removed; it only records, and the run's end reports

_COMMON = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, max_examples=150, print_blob=True, **_COMMON)
settings.register_profile("dev", derandomize=False, max_examples=750, print_blob=True, **_COMMON)


def pytest_configure(config):
    if config.getoption("hypothesis_profile", default=None) is None:  # the command line wins
        settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_PRIVATE_HOME, ignore_errors=True)
    if HOME_GUARD.writes:
        listed = "\n  ".join(f"{event}: {path}" for event, path in HOME_GUARD.writes[:20])
        sys.stderr.write(f"\nthe test run wrote into the real home {REAL_HOME}:\n  {listed}\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _step_listeners_restored():
    """Each test starts with the step listeners the run started with: a test that subscribes one (an MLflow
    watch, an OpenLineage run left open) must not switch later tests onto the listener path."""
    from traceprop_frames.lineage import events

    before = list(events._listeners)
    yield
    events._listeners[:] = before


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


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    """``_spark_small.DATA`` as a Parquet file (one per test module), for the Spark shared-set tests."""
    from _spark_small import DATA

    path = tmp_path_factory.mktemp("small") / "t.parquet"
    DATA.to_parquet(path, index=False)
    return path
