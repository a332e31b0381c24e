"""Replay DuckDB's own test queries through ``tpf.connect()`` and compare every answer with plain DuckDB.

Per test file, three connections see the same data:

- ``plain``: a DuckDB connection that runs every statement of the file as written (the judge);
- ``traced``: ``tpf.connect()``; every table the file builds is exported to Parquet after it changes and
  loaded with ``con.read_parquet`` (a traced source); views are created through the traced connection,
  macros, types and settings are run as they are;
- ``shuffled``: plain DuckDB with the same tables in another row order, which tells whether a query's
  answer depends on row order (``LIMIT`` without ``ORDER BY``, ties, ``random()`` ...).

Each query that plain DuckDB answers is classified:

- ``identical``: the same column names and values (as a multiset without a top-level ``ORDER BY``);
- ``refused``: :class:`UnsupportedSQLError` (or another library error) naming the construct;
- ``different``: an answer that is not plain DuckDB's (a silent difference: must be 0);
- ``crash``: any other exception, or the library's "the rewrite failed in DuckDB" error (must be 0);
- ``order-dependent``: plain DuckDB's own answer changes with the row order; not held against the
  library (it is still run, and a crash there still counts as a crash).

Usage: ``python tests/sql_compat/replay.py [--report out.json] [paths or directories under duckdb/test/sql]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import sqlglot
from sqlglot import exp

HERE = Path(__file__).resolve().parent
ROOT = HERE / "duckdb"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))

import slt  # noqa: E402

import traceprop_frames as tpf  # noqa: E402
from traceprop_frames.errors import TracepropError  # noqa: E402

logging.getLogger("sqlglot").setLevel(logging.ERROR)
TIMEOUT_S = 10.0
CLASSES = ("identical", "refused", "different", "crash", "order-dependent")
_REWRITE_FAILED = "the lineage-carrying rewrite of this query failed"
_VOLATILE = re.compile(
    r"\b(nextval|currval|setseed|duckdb_logs\w*|current_query|random|gen_random_uuid|uuid|uuidv[47])\s*\(",
    re.I,
)


def _is_query(con: duckdb.DuckDBPyConnection, sql: str) -> bool:
    """True if DuckDB runs ``sql`` as one query (SELECT, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE ...)."""
    try:
        kinds = [s.type for s in con.extract_statements(sql)]
    except Exception:
        return bool(re.match(r"^\s*(\(|select\b|with\b|from\b|values\b)", sql, re.I))
    return kinds == [duckdb.StatementType.SELECT]


def _norm(v):
    """A cell as a hashable, comparable value (NULL-likes to None, floats to 10 significant digits)."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return None
        return float(f"{f:.10g}")
    if isinstance(v, np.generic):
        return _norm(v.item())
    if isinstance(v, (np.ndarray, list, tuple)):
        return tuple(_norm(x) for x in v)
    if isinstance(v, dict):
        return tuple((k, _norm(x)) for k, x in v.items())
    if isinstance(v, (pd.Timestamp, pd.Timedelta)):
        return str(v)
    return v


def _rows(df: pd.DataFrame) -> list[tuple]:
    return [tuple(_norm(v) for v in row) for row in df.itertuples(index=False, name=None)]


def _same(a: tuple, b: tuple, ordered: bool) -> bool:
    """(names, rows) equal; rows as a multiset unless ``ordered``."""
    if a[0] != b[0]:
        return False
    if ordered:
        return a[1] == b[1]
    return sorted(map(repr, a[1])) == sorted(map(repr, b[1]))


def _ordered(sql: str, sort: str) -> bool:
    """True if the test compares rows in order: ``nosort`` and a top-level ORDER BY."""
    if sort != "nosort":
        return False
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except Exception:
        return bool(re.search(r"order\s+by", sql.rsplit(")", 1)[-1], re.I))
    while isinstance(tree, exp.Subquery):
        tree = tree.this
    return tree is not None and tree.args.get("order") is not None


def _with_timeout(raw: duckdb.DuckDBPyConnection, fn):
    timer = threading.Timer(TIMEOUT_S, raw.interrupt)
    timer.start()
    try:
        return fn()
    finally:
        timer.cancel()


def _plain_answer(con: duckdb.DuckDBPyConnection, sql: str) -> tuple:
    def run():
        rel = con.sql(sql)
        if rel is None:
            return None
        df = con.from_arrow(rel.to_arrow_table()).df()  # the names pandas gets (duplicates made unique)
        return (list(df.columns), _rows(df))

    return _with_timeout(con, run)


def _tables(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], str]:
    rows = con.execute(
        "SELECT schema_name, table_name, sql FROM duckdb_tables() WHERE database_name IN ('memory', 'temp')"
    ).fetchall()
    return {(s, t): q for s, t, q in rows}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Replay:
    """One test file's three connections and its tally."""

    def __init__(self, workdir: Path, capture: str = "lazy") -> None:
        self.dir = workdir
        self.plain = duckdb.connect()
        self.shuffled = duckdb.connect()
        self.traced = tpf.connect(capture=capture)
        # the harness mirrors tables through the private handle: reading con.raw would turn the rowid fast
        # path (sql.rowid_scan) off, and the traced queries would not exercise it
        for c in (self.plain, self.shuffled, self.traced._raw):
            c.execute("SET threads = 1")
        self.known: dict[tuple[str, str], str] = {}
        self.unfaithful: set[str] = set()
        self.dirty = False
        self.n_export = 0
        self.attached = False  # ATTACHed databases are not mirrored: later queries are not counted

    def close(self) -> None:
        for c in (self.plain, self.shuffled):
            c.close()
        self.traced.close()

    # ------------------------------------------------------------- data
    def sync(self) -> None:
        """Copy every table that changed in ``plain`` to the other two connections (traced: as a source)."""
        if not self.dirty:
            return
        self.dirty = False
        now = _tables(self.plain)
        for key in set(self.known) - set(now):
            self.shuffled.execute(f"DROP TABLE IF EXISTS {_q(key[0])}.{_q(key[1])}")
            self._traced_raw(f"DROP TABLE IF EXISTS {_q(key[0])}.{_q(key[1])}")
        for key in now:
            try:
                self._copy(key)
            except Exception:  # a type Parquet cannot hold (UNION, ...): queries over it are not counted
                self.unfaithful.add(key[1].lower())
        self.known = now

    def _copy(self, key: tuple[str, str]) -> None:
        schema, name = key
        self.n_export += 1
        f = self.dir / f"t{self.n_export}.parquet"
        full = f"{_q(schema)}.{_q(name)}"
        self.plain.execute(f"COPY (SELECT * FROM {full}) TO '{f}' (FORMAT parquet)")
        for c in (self.shuffled, self.traced._raw):
            c.execute(f"CREATE SCHEMA IF NOT EXISTS {_q(schema)}")
        self.shuffled.execute(
            f"CREATE OR REPLACE TABLE {full} AS SELECT * EXCLUDE (file_row_number) FROM "
            f"read_parquet('{f}', file_row_number = true) ORDER BY hash(file_row_number * 7 + 3)"
        )
        if schema == "main":
            self.traced.read_parquet(f, name)
        else:  # the rewriter's catalog names tables without their schema: other schemas load untraced
            self._traced_raw(f"CREATE OR REPLACE TABLE {full} AS FROM read_parquet('{f}')")
        want = self.plain.execute(f"SELECT column_name, column_type FROM (DESCRIBE {full})").fetchall()
        got = self.traced._raw.execute(f"SELECT column_name, column_type FROM (DESCRIBE {full})").fetchall()
        got = [g for g in got if g[0] != "__tp_rid"]
        if want != got:
            self.unfaithful.add(name.lower())
        else:
            self.unfaithful.discard(name.lower())

    def _traced_raw(self, sql: str) -> None:
        """Run ``sql`` on the traced connection's DuckDB connection, its rowid fast path told first (as
        ``con.execute`` would tell it: the statement may change tables)."""
        self.traced._rowid.before(self.traced._raw, sql)
        self.traced._raw.execute(sql)

    # ------------------------------------------------------------- records
    def statement(self, sql: str) -> bool:
        """Run a statement in ``plain``; mirror what is not table data. False if plain rejects it."""
        try:
            _with_timeout(self.plain, lambda: self.plain.execute(sql))
        except Exception:
            return False
        self.dirty = True
        self.attached = self.attached or bool(re.match(r"^\s*attach\b", sql, re.I))
        if re.match(r"^\s*create\s+(or\s+replace\s+)?(temp\w*\s+)?view\b", sql, re.I):
            self.sync()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.traced.execute(sql)
            except Exception:
                if not _try(self.traced._raw, sql):  # e.g. a view over a table Parquet could not hold
                    m = re.search(r"view\s+(?:if\s+not\s+exists\s+)?([\w\"]+)", sql, re.I)
                    if m:
                        self.unfaithful.add(m.group(1).strip('"').lower())
            _try(self.shuffled, sql)
            return True
        if _changes_tables(sql):
            return True
        self.sync()  # a macro or view may read the tables
        _try(self.shuffled, sql)
        with contextlib.suppress(Exception):
            self._traced_raw(sql)
        self.dirty = True  # whatever the copies did to table data, the next sync copies plain's again
        return True

    def query(self, sql: str, sort: str) -> tuple[str, str]:
        """Classify one query; returns (class, detail). Class "skip:<why>" when it is not counted."""
        try:
            want = _plain_answer(self.plain, sql)
        except Exception:
            return "skip:plain DuckDB rejects it", ""
        finally:
            self.dirty = self.dirty or bool(re.search(r"\b(insert|update|delete)\b", sql, re.I))
        if want is None:
            return "skip:not a query", ""
        if self.attached:
            return "skip:after ATTACH (other databases are not mirrored)", ""
        self.sync()
        lowered = sql.lower()
        if any(re.search(rf"\b{re.escape(t)}\b", lowered) for t in self.unfaithful):
            return "skip:a table's types do not survive Parquet", ""
        ordered = _ordered(sql, sort)
        try:
            other = _plain_answer(self.shuffled, sql)
        except Exception:
            other = None
        stable = other is not None and _same(want, other, ordered)
        if not stable and other is not None and ordered and _same(want, other, False):
            ordered, stable = False, True  # ties under ORDER BY: the rows, not their order, are the answer
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                df = _with_timeout(self.traced._raw, lambda: self.traced.execute(sql))
        except TracepropError as e:
            if _REWRITE_FAILED in str(e):
                return "crash", f"{type(e).__name__}: {e}"[:500]
            return "refused", f"{type(e).__name__}: {e}"[:300]
        except Exception as e:
            return "crash", f"{type(e).__name__}: {e}"[:500]
        if df is None:
            return "different", "the traced connection returned no result"
        got = (list(df.columns), _rows(df))
        if not stable:
            return ("order-dependent", "" if _same(want, got, False) else "differs")
        if _same(want, got, ordered):
            return "identical", ""
        return "different", f"want {want[0]} {want[1][:5]}\ngot  {got[0]} {got[1][:5]}"[:800]


def _try(con: duckdb.DuckDBPyConnection, sql: str) -> bool:
    try:
        con.execute(sql)
        return True
    except Exception:
        return False  # a later query that needs it fails in that connection and is classified there


def _changes_tables(sql: str) -> bool:
    return bool(
        re.match(
            r"^\s*(create\s+(or\s+replace\s+)?((temp|temporary|local|global)\s+)*table|insert|update|delete|"
            r"drop\s+table|alter|copy|truncate|import|attach|load|begin|commit|rollback|checkpoint|"
            r"create\s+(unique\s+)?index|drop\s+schema)",
            sql,
            re.I,
        )
    )


def replay_file(path: Path, rel: str, capture: str = "lazy") -> dict:
    """Replay one file; returns its counts and the details of every query not identical."""
    t0 = time.perf_counter()
    out = _replay(path, rel, capture)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _replay(path: Path, rel: str, capture: str = "lazy") -> dict:
    tf = slt.parse(path, rel)
    out = {"file": rel, "counts": Counter(), "details": [], "skip_file": tf.skip_file}
    out["counts"].update({f"skip:{k}": v for k, v in tf.skipped.items()})
    if tf.skip_file:
        n = sum(1 for r in tf.records if r.kind == "query")
        out["counts"][f"skip:file ({tf.skip_file})"] += n
        return out
    with tempfile.TemporaryDirectory() as d:
        rp = Replay(Path(d), capture)
        try:
            for rec in tf.records:
                sql = rec.sql.replace("__TEST_DIR__", d).replace("{TEST_DIR}", d)
                if slt.unresolved(sql):
                    out["counts"]["skip:unresolved ${variable}"] += rec.kind == "query"
                    continue
                is_query = _is_query(rp.plain, sql)
                if rec.kind == "statement" and (rec.expect_error or not is_query):
                    rp.statement(sql)
                    continue
                if not is_query:  # INSERT ... RETURNING, EXPLAIN, PRAGMA ...: state only
                    rp.statement(sql)
                    out["counts"]["skip:not a query (EXPLAIN, RETURNING, PRAGMA ...)"] += 1
                    continue
                if _VOLATILE.search(sql):
                    rp.statement(sql)
                    out["counts"][
                        "skip:reads or advances state (nextval, currval, setseed, logs, random)"
                    ] += 1
                    continue
                cls, detail = rp.query(sql, rec.sort)
                out["counts"][cls] += 1
                if cls in ("refused", "different", "crash") or detail:
                    out["details"].append({"line": rec.line, "class": cls, "sql": sql, "detail": detail})
        finally:
            rp.close()
    return out


def collect(paths: list[str]) -> list[tuple[Path, str]]:
    """Test files under the given paths (relative to the vendored ``duckdb/`` folder, or absolute)."""
    files = []
    for p in paths or ["test/sql"]:
        base = Path(p) if Path(p).is_absolute() else ROOT / p
        found = [base] if base.is_file() else sorted(base.rglob("*.test"))
        files += [(f, str(f.relative_to(ROOT))) for f in found]
    return files


def summarize(results: list[dict]) -> dict:
    total = Counter()
    for r in results:
        total.update(r["counts"])
    counted = sum(total[c] for c in CLASSES)
    judged = counted - total["order-dependent"]
    return {
        "files": len(results),
        "files_skipped": sum(1 for r in results if r["skip_file"]),
        "queries": counted,
        **{c: total[c] for c in CLASSES},
        "identical_share_of_order_independent": round(total["identical"] / judged, 4) if judged else None,
        "skipped": {k[5:]: v for k, v in sorted(total.items()) if k.startswith("skip:")},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "paths", nargs="*", help="files or folders under tests/sql_compat/duckdb (default test/sql)"
    )
    ap.add_argument("--report", help="write every non-identical query to this JSON file")
    ap.add_argument("-v", action="store_true", help="print each silently different answer and crash")
    ap.add_argument(
        "--capture",
        choices=("lazy", "eager"),
        default="lazy",
        help="capture mode of the traced connection (tpf.connect(capture=...)); default lazy",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = []
    for f, rel in collect(args.paths):
        try:
            results.append(replay_file(f, rel, args.capture))
        except Exception as e:  # the harness itself failed on this file: say so, count nothing from it
            print(f"harness error in {rel}: {type(e).__name__}: {e}", file=sys.stderr)
            results.append(
                {
                    "file": rel,
                    "counts": Counter({"skip:harness error": 1}),
                    "details": [],
                    "skip_file": "harness error",
                }
            )
    summary = summarize(results)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    if args.v:
        for r in results:
            for d in r["details"]:
                if d["class"] in ("different", "crash"):
                    print(f"--- {d['class']} {r['file']}:{d['line']}\n{d['sql']}\n{d['detail']}\n")
    print(json.dumps(summary, indent=2))
    if args.report:
        Path(args.report).write_text(
            json.dumps({"summary": summary, "files": results}, indent=1, default=str)
        )
    return 1 if summary["different"] or summary["crash"] else 0


if __name__ == "__main__":
    sys.exit(main())
