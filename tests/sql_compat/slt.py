"""A reader for DuckDB's sqllogictest files (``test/sql/**/*.test``): records, loops expanded.

Only what a replay needs is kept: each ``statement`` (its SQL and whether DuckDB expects it to fail) and
each ``query`` (its SQL and sort mode). Directives that a replay through one in-memory connection cannot
honour are not guessed at: a file whose ``require`` / ``include`` cannot be met is skipped as a whole, and
records under ``mode skip`` or ``onlyif <other engine>`` are skipped; every skip is counted by reason.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_INTEGRAL = "tinyint smallint integer bigint hugeint utinyint usmallint uinteger ubigint uhugeint".split()
_TYPE_GROUPS = {
    "<integral>": _INTEGRAL,
    "<signed>": _INTEGRAL[:5],
    "<unsigned>": _INTEGRAL[5:],
    "<numeric>": _INTEGRAL + ["float", "double"],
}
# requirements a stock DuckDB Python build meets (standard vector size 2048, parquet built in)
_MET = {
    "skip_reload",
    "no_alternative_verify",
    "noforcestorage",
    "parquet",
    "64bit",
    "strinline",
    "core_functions",
    "json",
    "icu",
}
_DIRECTIVES = ("statement", "query", "loop", "concurrentloop", "foreach", "concurrentforeach", "endloop")


@dataclass
class Record:
    """One statement or query of a test file (after loop expansion)."""

    kind: str  # "statement" | "query"
    sql: str
    expect_error: bool = False  # statement error
    maybe: bool = False  # statement maybe
    sort: str = "nosort"  # query sort mode: nosort | rowsort | valuesort | sort
    line: int = 0


@dataclass
class TestFile:
    """A parsed file: its records, or why the whole file is skipped; skipped records by reason."""

    path: str
    records: list[Record] = field(default_factory=list)
    skip_file: str | None = None
    skipped: Counter = field(default_factory=Counter)


def _blocks(lines: list[str]) -> list[tuple[int, list[str]]]:
    """Split into blank-line separated blocks (comment-only lines dropped), with their first line number."""
    out, cur, start = [], [], 0
    for i, raw in enumerate(lines, 1):
        line = raw.rstrip("\n").rstrip("\r")
        if not line.strip():
            if cur:
                out.append((start, cur))
                cur = []
            continue
        if line.startswith("#") and not cur:
            continue
        if not cur:
            start = i
        cur.append(line)
    if cur:
        out.append((start, cur))
    return out


def _record(head: list[str], body: list[str], line: int) -> Record:
    sql_lines = []
    for b in body:
        if b.strip() == "----":
            break
        sql_lines.append(b)
    sql = "\n".join(sql_lines).strip()
    if head[0] == "statement":
        mode = head[1] if len(head) > 1 else "ok"
        return Record("statement", sql, expect_error=mode == "error", maybe=mode == "maybe", line=line)
    sort = head[2] if len(head) > 2 and head[2] in ("nosort", "rowsort", "valuesort", "sort") else "nosort"
    return Record("query", sql, sort=sort, line=line)


def _loop_values(head: list[str]) -> list[str] | None:
    if head[0] in ("loop", "concurrentloop"):
        return [str(i) for i in range(int(head[2]), int(head[3]))]
    values: list[str] = []
    for tok in head[2:]:
        if tok.startswith("<"):
            if tok not in _TYPE_GROUPS:
                return None
            values += _TYPE_GROUPS[tok]
        else:
            values.append(tok.strip('"'))
    return values


def _substitute(rec: Record, var: str, value: str) -> Record:
    sql = rec.sql.replace("${" + var + "}", value)
    return Record(rec.kind, sql, rec.expect_error, rec.maybe, rec.sort, rec.line)


def parse(path: str | Path, rel: str | None = None) -> TestFile:
    """Parse one ``.test`` file into :class:`TestFile`."""
    tf = TestFile(rel or str(path))
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    stack: list[tuple[str, list[str] | None, list[Record]]] = [("", [], [])]
    skipping = False
    pending_skip = False
    for line, block in _blocks(text.splitlines()):
        head = block[0].split()
        word = head[0]
        if word == "require":
            what = head[1] if len(head) > 1 else ""
            if what.startswith(("vector_size", "exact_vector_size")):
                if int(head[2]) > 2048:
                    tf.skip_file = f"require {what} {head[2]}"
            elif what not in _MET:
                tf.skip_file = f"require {what}"
        elif word == "require-env" or word == "include":
            tf.skip_file = word
        elif word == "halt":
            break
        elif word == "mode":
            skipping = head[1] == "skip" if head[1] in ("skip", "unskip") else skipping
        elif word in ("onlyif", "skipif"):
            engine = head[1] if len(head) > 1 else ""
            pending_skip = (word == "onlyif") != (engine == "duckdb")
            block = block[1:]
            if block:
                head, word = block[0].split(), block[0].split()[0]
        if word not in _DIRECTIVES:
            continue
        if word in ("loop", "concurrentloop", "foreach", "concurrentforeach"):
            stack.append((head[1], _loop_values(head), []))
            continue
        if word == "endloop":
            if len(stack) == 1:
                continue
            var, values, recs = stack.pop()
            if values is None:
                stack[-1][2].extend([])
                tf.skipped["loop over an unknown type group"] += len(recs)
                continue
            for v in values:
                stack[-1][2].extend(_substitute(r, var, v) for r in recs)
            continue
        if skipping or pending_skip:
            tf.skipped["mode skip / onlyif other engine"] += 1
            pending_skip = False
            continue
        stack[-1][2].append(_record(head, block[1:], line))
    tf.records = stack[0][2]
    return tf


_VAR = re.compile(r"\$\{[A-Za-z_]\w*\}")


def unresolved(sql: str) -> bool:
    """True if a ``${name}`` variable (set by a directive this reader does not run) is left in ``sql``."""
    return bool(_VAR.search(sql))
