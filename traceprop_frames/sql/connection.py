"""TracedConnection: an embedded DuckDB connection whose query results are traced pandas DataFrames.

Sources get a hidden id column when loaded (``read_csv`` / ``read_parquet``: ``__tp_rid``, the 0-based
data row of the file; ``register`` of a traced frame: ``__tp_lin``, the frame's row lineage). Every
statement is rewritten by :mod:`traceprop_frames.sql.rewrite`; a query's hidden last column comes back
as an Arrow array and becomes the CSR :class:`RowLineage` of the result without Python objects per row.
"""

from __future__ import annotations

import os

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from traceprop_frames.errors import UnsupportedSQLError
from traceprop_frames.frames import attach, has_lineage, resolve
from traceprop_frames.lineage import REGISTRY, OpNode, RowLineage, encode
from traceprop_frames.lineage.persist import to_arrow
from traceprop_frames.sql.rewrite import LIN, RID, Catalog, rewrite_query

_EMPTY = np.zeros(0, dtype=np.int64)
_AGGREGATES: frozenset[str] | None = None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def lineage_from_arrow(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets, ids) from a BIGINT or LIST<BIGINT> Arrow column; NULL ids and NULL lists are empty."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if pa.types.is_integer(arr.type):
        vals = arr.to_numpy(zero_copy_only=False)
        if arr.null_count:
            valid = arr.is_valid().to_numpy(zero_copy_only=False)
            off = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(valid, out=off[1:])
            return off, np.asarray(arr.drop_null().to_numpy(), dtype=np.int64)
        return np.arange(n + 1, dtype=np.int64), np.asarray(vals, dtype=np.int64)
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise TypeError(f"lineage column has type {arr.type}")
    off = np.asarray(arr.offsets, dtype=np.int64)
    child = arr.values.slice(off[0], off[-1] - off[0])
    off = off - off[0]
    lengths = np.diff(off)
    if arr.null_count:
        lengths = np.where(arr.is_valid().to_numpy(zero_copy_only=False), lengths, 0)
        keep_rows = np.repeat(lengths > 0, np.diff(off))
    else:
        keep_rows = None
    if child.null_count or keep_rows is not None:
        keep = child.is_valid().to_numpy(zero_copy_only=False)
        if keep_rows is not None:
            keep &= keep_rows
        row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(off))
        counts = np.bincount(row_of[keep], minlength=n)
        new_off = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=new_off[1:])
        ids = child.to_numpy(zero_copy_only=False)[keep] if len(child) else _EMPTY
        return new_off, np.asarray(ids, dtype=np.int64)
    ids = child.to_numpy(zero_copy_only=False) if len(child) else _EMPTY
    return off, np.asarray(ids, dtype=np.int64)


class TracedConnection:
    """A DuckDB connection that carries row lineage through SQL.

    Parameters
    ----------
    database : str
        ``":memory:"`` (default) or a DuckDB database file.
    **kwargs
        Passed to :func:`duckdb.connect`.

    Examples
    --------
    >>> import traceprop_frames as tpf
    >>> con = tpf.connect()
    >>> _ = con.raw.execute("CREATE TABLE plain AS SELECT 1 AS x")
    >>> con.rewrite("SELECT * FROM plain")
    'SELECT *, CAST(NULL AS BIGINT[]) AS __tp_lin FROM plain'
    """

    def __init__(self, database: str = ":memory:", **kwargs) -> None:
        self.database = database
        self.raw = duckdb.connect(database, **kwargs)
        self._nodes: dict[str, OpNode] = {}
        self._registered: dict[str, str] = {}

    # ------------------------------------------------------------------ sources
    def read_csv(self, path, name: str, **kwargs) -> TracedConnection:
        """Load a CSV file into table ``name``; row ``i`` is the file's 0-based data row ``i``.

        ``kwargs`` go to DuckDB's ``read_csv`` (``sep``, ``header``, ``dtype`` ...).
        """
        p = os.fspath(path)
        table = self.raw.read_csv(p, **kwargs).to_arrow_table()  # file order (insertion order kept)
        src = REGISTRY.register_file(p, "csv", table.num_rows, schema=_arrow_schema(table))
        ids = encode(src.id, np.arange(table.num_rows, dtype=np.int64))
        table = table.append_column(RID, pa.array(ids, pa.int64()))
        self.raw.register("__tp_load", table)
        try:
            self.raw.execute(f"CREATE OR REPLACE TABLE {_quote(name)} AS SELECT * FROM __tp_load")
        finally:
            self.raw.unregister("__tp_load")
        self._source_loaded(name, src, "read_csv")
        return self

    def read_parquet(self, path, name: str) -> TracedConnection:
        """Load a Parquet file into table ``name``; row ``i`` is the file's row ``i`` (file order)."""
        p = os.fspath(path)
        n = pq.ParquetFile(p).metadata.num_rows
        src = REGISTRY.register_file(p, "parquet", n)
        base = int(encode(src.id, np.zeros(1, dtype=np.int64))[0])
        self.raw.execute(
            f"CREATE OR REPLACE TABLE {_quote(name)} AS SELECT * EXCLUDE (file_row_number), "
            f"CAST({base} + file_row_number AS BIGINT) AS {RID} "
            f"FROM read_parquet({_literal(p)}, file_row_number = true)"
        )
        self._source_loaded(name, src, "read_parquet")
        return self

    def _source_loaded(self, name: str, src, op: str) -> None:
        self._registered.pop(name.lower(), None)
        self._nodes[name.lower()] = OpNode(op, {"path": src.path, "sha256": src.sha256, "table": name})

    def register(self, name: str, df: pd.DataFrame) -> TracedConnection:
        """Register a pandas frame as view ``name``; a traced frame's row lineage carries over."""
        if not has_lineage(df):
            self.raw.register(name, df)
            self._registered.pop(name.lower(), None)
            self._nodes.pop(name.lower(), None)
            return self
        lin = resolve(df)
        data = df.drop(columns=["tp_lid"], errors="ignore")
        data.attrs = {}  # the lineage handle is not data
        table = pa.Table.from_pandas(data, preserve_index=False)
        table = table.append_column(LIN, to_arrow(lin))
        self.raw.register(name, table)
        self._registered[name.lower()] = LIN
        self._nodes[name.lower()] = lin.node
        return self

    # ------------------------------------------------------------------ catalog
    def _catalog(self) -> Catalog:
        global _AGGREGATES
        if _AGGREGATES is None:  # built-in aggregate names, the same for every connection
            rows = self.raw.execute(
                "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'aggregate'"
            ).fetchall()
            _AGGREGATES = frozenset(r[0].lower() for r in rows)
        rows = self.raw.execute(
            f"SELECT table_name, column_name FROM duckdb_columns() WHERE column_name IN ('{RID}', '{LIN}')"
        ).fetchall()
        hidden = {t.lower(): c for t, c in rows}
        hidden.update(self._registered)
        return Catalog(hidden, _AGGREGATES)

    # ------------------------------------------------------------------ statements
    def _parse(self, query: str) -> list[exp.Expression]:
        try:
            stmts = [s for s in sqlglot.parse(query, read="duckdb") if s is not None]
        except sqlglot.errors.SqlglotError as e:
            self.raw.extract_statements(query)  # DuckDB's own syntax error, unchanged
            raise UnsupportedSQLError(f"the SQL rewriter (sqlglot) cannot parse this statement: {e}") from e
        return stmts

    def rewrite(self, query: str) -> str:
        """The lineage-carrying SQL that :meth:`sql` runs for ``query`` (statements joined by ``;``)."""
        cat = self._catalog()
        return ";\n".join(self._plan(s, cat)[0] for s in self._parse(query))

    def _plan(self, stmt: exp.Expression, cat: Catalog) -> tuple[str, str, object]:
        """(SQL to run, what it is: "query" | "create" | "other", rewrite result or None)."""
        if isinstance(stmt, exp.Query):
            rw = rewrite_query(stmt, cat)
            return rw.sql, "query", rw
        if isinstance(stmt, exp.Create) and isinstance(stmt.expression, exp.Query):
            if str(stmt.args.get("kind")).upper() in ("TABLE", "VIEW"):
                rw = rewrite_query(stmt.expression, cat)
                out = stmt.copy()
                out.set("expression", rw.expression)
                if isinstance(out.this, exp.Schema) and out.this.expressions:
                    out.this.append("expressions", exp.to_identifier(rw.kind))
                return out.sql(dialect="duckdb"), "create", rw
        if isinstance(stmt, exp.Insert) and isinstance(stmt.expression, exp.Query):
            return self._plan_insert(stmt, cat)
        if isinstance(stmt, exp.Update) and (
            stmt.args.get("from_") or any(e.find(exp.Query) for e in stmt.expressions)
        ):
            raise UnsupportedSQLError("UPDATE with FROM or subquery values: use CREATE TABLE ... AS SELECT")
        out = stmt.copy()
        changed = False
        for q in list(out.find_all(exp.Query)):
            if q.find_ancestor(exp.Query) is None and q.parent is not None:
                q.replace(rewrite_query(q, cat, trace=False).expression)
                changed = True
        return out.sql(dialect="duckdb"), ("other" if changed else "original"), None

    def _plan_insert(self, stmt: exp.Insert, cat: Catalog):
        target = stmt.this.this if isinstance(stmt.this, exp.Schema) else stmt.this
        kind = cat.hidden.get(target.name.lower())
        out = stmt.copy()
        if kind is None:
            out.set("expression", rewrite_query(stmt.expression, cat, trace=False).expression)
            return out.sql(dialect="duckdb"), "other", None
        if kind == RID:
            raise UnsupportedSQLError(
                f"INSERT INTO {target.name}: it is a loaded source table (its rows are file rows); "
                "insert into a table made with CREATE TABLE ... AS SELECT instead"
            )
        rw = rewrite_query(stmt.expression, cat, force_list=True)
        out.set("expression", rw.expression)
        if isinstance(out.this, exp.Schema) and out.this.expressions:
            out.this.append("expressions", exp.to_identifier(LIN))
        return out.sql(dialect="duckdb"), "insert", rw

    def execute(self, query: str) -> pd.DataFrame | None:
        """Run one or more statements; returns the traced result of the last one if it is a query."""
        stmts = self._parse(query)
        result = None
        for stmt in stmts:
            cat = self._catalog()
            sql, what, rw = self._plan(stmt, cat)
            if what == "original" and len(stmts) == 1:
                sql = query
            text = query if len(stmts) == 1 else stmt.sql(dialect="duckdb")
            result = self._run(sql, what, rw, stmt, text)
        return result

    sql = execute

    def _run(self, sql: str, what: str, rw, stmt: exp.Expression, original: str):
        try:
            if what == "query":
                table = self.raw.sql(sql).to_arrow_table()
            else:
                self.raw.execute(sql)
                table = None
        except duckdb.Error as e:
            self._explain_failure(stmt, e)
            raise
        node = None
        if rw is not None:
            parents = tuple(self._nodes[t] for t in sorted(rw.traced) if t in self._nodes)
            params = {"query": stmt.sql(dialect="duckdb")}
            if rw.untraced:
                params["missing_lineage"] = sorted(rw.untraced)
            node = OpNode("sql", params, parents)
        if what in ("create", "insert"):
            name = (stmt.this.this if isinstance(stmt.this, exp.Schema) else stmt.this).name.lower()
            if what == "create" or name not in self._nodes:
                self._nodes[name] = node
            else:
                self._nodes[name] = OpNode("sql_insert", {}, (self._nodes[name], node))
        if table is None:
            return None
        try:  # column names exactly as DuckDB names them for the original query (binds, never runs)
            names = self.raw.sql(original).columns
        except duckdb.Error:
            names = None
        if names is not None and len(names) == table.num_columns - 1:
            table = table.rename_columns([*names, table.column_names[-1]])
        return _frame(self.raw, table, node)

    def _explain_failure(self, stmt: exp.Expression, err: duckdb.Error) -> None:
        """If the original statement is valid, the rewrite is at fault: raise UnsupportedSQLError."""
        if not isinstance(stmt, exp.Query):
            return
        try:
            self.raw.execute("EXPLAIN " + stmt.sql(dialect="duckdb"))
        except duckdb.Error:
            return  # the user's statement itself fails: surface DuckDB's error unchanged
        raise UnsupportedSQLError(
            f"the lineage-carrying rewrite of this query failed in DuckDB ({err}); the query itself is "
            "valid. See con.rewrite(sql) and report it; con.raw runs it without lineage."
        ) from err

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> TracedConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _arrow_schema(table: pa.Table) -> dict[str, str]:
    return {f.name: str(f.type) for f in table.schema}


def _frame(raw: duckdb.DuckDBPyConnection, table: pa.Table, node: OpNode) -> pd.DataFrame:
    last = table.num_columns - 1
    off, ids = lineage_from_arrow(table.column(last))
    data = table.remove_column(last)
    df = raw.from_arrow(data).df() if data.num_columns else pd.DataFrame(index=range(data.num_rows))
    return attach(df, RowLineage(off, ids, node))


def connect(database: str = ":memory:", **kwargs) -> TracedConnection:
    """A traced DuckDB connection (``tpf.connect()``)."""
    return TracedConnection(database, **kwargs)
