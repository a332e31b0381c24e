"""Helpers shared by the SQL oracle tests: a result's lineage as plain Python sets, to compare with
lineage written out by hand (independent of the implementation)."""

from __future__ import annotations

from pathlib import Path


def lineage_sets(df) -> list[set]:
    """Per result row of a traced frame: the set of (source file stem, row number) it came from."""
    return [
        {(Path(p).stem, int(r)) for p, rows in df.tp.sources(i).items() for r in rows} for i in range(len(df))
    ]


def rows_of(table: str, idx) -> set:
    """``{(table, row), ...}`` for the row numbers ``idx`` of source ``table`` (the expected side)."""
    return {(table, int(i)) for i in idx}
