"""DuckDB's own test queries (a fast subset of ``tests/sql_compat``) through ``tpf.connect()``: every
answer identical to plain DuckDB's or refused with a named error; never different, never a crash.
``make sql-compat`` runs every vendored file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "sql_compat"))

import replay  # noqa: E402

FAST = [
    "test/sql/setops",
    "test/sql/limit",
    "test/sql/select",
    "test/sql/filter",
    # recursive CTEs with UNION and USING KEY (the recursion runs untraced, a shared set per row)
    "test/sql/cte/test_recursive_cte_union.test",
    "test/sql/cte/recursive_cte_key_union.test",
    "test/sql/cte/test_recursive_cte_tutorial.test",
]


@pytest.mark.parametrize("folder", FAST)
def test_duckdb_tests_never_differ(folder):
    results = [replay.replay_file(f, rel) for f, rel in replay.collect([folder])]
    summary = replay.summarize(results)
    bad = [
        f"{r['file']}:{d['line']} {d['class']}: {d['sql'][:200]}\n{d['detail'][:300]}"
        for r in results
        for d in r["details"]
        if d["class"] in ("different", "crash")
    ]
    assert not bad, "\n\n".join(bad)
    assert summary["identical"] > 0.8 * summary["queries"]
