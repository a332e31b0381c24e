"""TracedConnection: an embedded DuckDB connection whose query results are traced pandas DataFrames.

Sources get a hidden id column when loaded (``read_csv`` / ``read_parquet``: ``__tp_rid``, the 0-based
data row of the file; ``register`` of a traced frame: ``__tp_lin``, the frame's row lineage). Every
statement is rewritten by :mod:`traceprop_frames.sql.rewrite`; a query's hidden last column comes back
as an Arrow array and becomes the CSR :class:`RowLineage` of the result without Python objects per row.
"""

from __future__ import annotations

import contextlib
import os
import re

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from traceprop_frames.errors import (
    SourceChangedError,
    TracepropError,
    UnsupportedOperationError,
    UnsupportedSQLError,
)
from traceprop_frames.frames import attach, has_lineage, resolve
from traceprop_frames.lineage import REGISTRY, OpNode, RowLineage, encode
from traceprop_frames.lineage.events import lineage_step, listening
from traceprop_frames.lineage.persist import to_arrow
from traceprop_frames.sql import (
    dense_bits,
    distinct_count,
    lazy_unique,
    member_determined,
    null_rids,
    same_rows,
    scalar_temp,
    temp_witness,
)
from traceprop_frames.sql.arrow_frame import data_frame
from traceprop_frames.sql.autocommit import Autocommit
from traceprop_frames.sql.bound_capture import BoundCaptures
from traceprop_frames.sql.correlated import prepare, run_eager
from traceprop_frames.sql.ctas_rows import holds_query_rows
from traceprop_frames.sql.deferred_oids import UNREAD, DeferredOids
from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.dialect import quote_name as _quote
from traceprop_frames.sql.erasure_scan import scan_filter
from traceprop_frames.sql.exists_lateral import refuse_one_row_exists
from traceprop_frames.sql.first_plan import FirstRewrites
from traceprop_frames.sql.join_refs import JoinRefs, compose, id_part, plan_join_refs, row_positions, rows_of
from traceprop_frames.sql.key_lineage import KeyLineage
from traceprop_frames.sql.late_column import LateColumns, add_sql
from traceprop_frames.sql.lazy import (
    LazyRowLineage,
    Resolver,
    live_resolvers,
    read_tables,
    shape_of,
)
from traceprop_frames.sql.lazy_determined import drop_determined
from traceprop_frames.sql.lazy_reuse import add_capture_keys, key_names, key_positions
from traceprop_frames.sql.lazy_tables import (
    CreatePlan,
    PendingTable,
    delete_record,
    grouping_keys,
    load_records,
    save_record,
    update_sql,
)
from traceprop_frames.sql.member_keys import key_columns, key_part, key_values, keyed_sql
from traceprop_frames.sql.member_lists import (
    MemberTable,
    fill_sql,
    fill_table,
    key_type_ok,
    member_part,
    members_sql,
    with_source,
)
from traceprop_frames.sql.member_reuse import MemberReads
from traceprop_frames.sql.oid_reads import OidReads
from traceprop_frames.sql.reserved_names import (
    CSV,
    HIDDEN,
    PARQUET,
    refuse_reserved,
    refuse_reserved_identifiers,
)
from traceprop_frames.sql.rewrite import LIN, RID, Catalog, rewrite_query
from traceprop_frames.sql.rowid_scan import RowidScans
from traceprop_frames.sql.shared import (
    MAX_WITNESSES,
    PRESENT,
    flat_side_query,
    marker_expression,
    present_keys,
    resolve_markers,
    scalar_flat_side_query,
    side_query,
    with_frames,
    with_present,
    witness_blocks,
)
from traceprop_frames.sql.sources import SourceMap

_EMPTY = np.zeros(0, dtype=np.int64)
_UNREAD_NOTE = (  # see sql.deferred_oids
    "(A statement ran on this database outside the traced connection - through a cursor or another "
    "connection - right after the table was made, before the state of its tables was recorded: they count "
    "as changed.) "
)
_EXCLUDE = re.compile(r" EXCLUDE \(([^()]*)\)")


def _without_hidden(name: str) -> str:
    """A column name DuckDB derived from SQL with hidden stars, as from the user's SQL:
    ``EXCLUDE (__tp_rid, s)`` -> ``EXCLUDE (s)``, ``EXCLUDE (__tp_rid)`` -> nothing."""

    def keep(m: re.Match) -> str:
        items = [x for x in m.group(1).split(", ") if x.strip('"') not in (RID, LIN)]
        return f" EXCLUDE ({', '.join(items)})" if items else ""

    return _EXCLUDE.sub(keep, name)


_FUNCTIONS: tuple[frozenset[str], frozenset[str]] | None = None
# key types whose pandas column (DuckDB's .df()) holds every value exactly, NULL included
_PANDAS_EXACT = frozenset(
    ["TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "VARCHAR", "BOOLEAN"]
)


def _functions(raw) -> tuple[frozenset[str], frozenset[str]]:
    """(aggregate function names, built-in function names): the same for every connection, read once."""
    global _FUNCTIONS
    if _FUNCTIONS is None:
        rows = raw.execute("SELECT function_name, function_type, internal FROM duckdb_functions()").fetchall()
        _FUNCTIONS = (
            frozenset(n.lower() for n, t, _ in rows if t == "aggregate"),
            frozenset(n.lower() for n, _, internal in rows if internal),
        )
    return _FUNCTIONS


# read_csv options that change which file records become rows: row numbers could not be trusted
_CSV_REJECT = {"skip", "ignore_errors", "comment", "store_rejects", "rejects_table", "rejects_scan"}


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _sql_value(v) -> str:
    """A Python option value as a DuckDB literal (str, bool, number, list, dict)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_sql_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_literal(str(k))}: {_sql_value(x)}" for k, x in v.items()) + "}"
    return _literal(str(v))


def _recordable(v):
    """An option value in the JSON form the op DAG keeps, rendered by :func:`_sql_value` exactly as ``v``
    (anything but str, bool, number, None, list and dict is rendered by its ``str``, so kept as that)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_recordable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _recordable(x) for k, x in v.items()}
    return str(v)


# data column types that reach pandas the same through .df() and through Arrow (the eager path's way): not
# BIT / BLOB (bytes vs bytearray), TIME WITH TIME ZONE, unnamed STRUCT, INTERVAL, HUGEINT, ENUM, nested
_SAME_THROUGH_ARROW = frozenset(
    ["TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "FLOAT", "DOUBLE",
     "VARCHAR", "BOOLEAN", "DATE", "TIMESTAMP"]
)  # fmt: skip


def _hidden_ids(col) -> np.ndarray:
    """A hidden row id column as read (a pandas Series or an Arrow column) as int64, NULL as -1."""
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        return np.asarray(col.fill_null(-1).to_numpy(), dtype=np.int64)
    if col.dtype == np.int64:  # numpy int64 (no NULL): read in place (copy-on-write keeps it unchanged)
        return col.to_numpy()
    return col.to_numpy(dtype=np.int64, na_value=-1)


_OUTER_WORD = re.compile(r"\b(LEFT|RIGHT|FULL|POSITIONAL)\b", re.IGNORECASE)  # (may be an outer join)


def _table_count(rw, table: str) -> int:
    """How often eager rewrite ``rw`` names ``table`` (kept in ``rw.table_counts``: its expression is fixed
    once planned, and a kept plan runs again without the walk)."""
    kept = rw.table_counts
    if kept is None or kept[0] is not rw.expression:
        kept = rw.table_counts = (rw.expression, {})
    counts = kept[1]
    if table not in counts:
        counts[table] = sum(1 for x in rw.expression.find_all(exp.Table) if x.name.lower() == table)
    return counts[table]


def _same_through_arrow(t: str) -> bool:
    return t in _SAME_THROUGH_ARROW or (t.startswith("DECIMAL(") and t.endswith(")"))


def _key_array(col: pd.Series, copy: bool) -> pa.Array:
    """A key column of a capture frame as Arrow; ``copy``: one of the frame's own columns (the user's to
    change), copied. A numpy integer column is copied as its numpy array (the same Arrow array, ≈ 15 us
    less than ``Series.copy`` on 20,000 rows); any other dtype through ``Series.copy``."""
    if not copy:
        return pa.array(col)
    dtype = col.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return pa.array(np.array(col.to_numpy(), copy=True))
    return pa.array(col.copy())


def _unique(names: list[str] | None) -> bool:
    """No name repeats (DuckDB's ``.df()`` renames repeats itself: then the frame goes through Arrow)."""
    return names is None or len(set(names)) == len(names)


def lineage_from_arrow(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets, ids) from a BIGINT or LIST<BIGINT> Arrow column; NULL ids and NULL lists are empty."""
    if isinstance(col, pa.ChunkedArray):  # one chunk (the usual case): read in place, no combined copy
        arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    else:
        arr = col
    n = len(arr)
    if pa.types.is_integer(arr.type):
        if arr.null_count:
            valid = arr.is_valid().to_numpy(zero_copy_only=False)
            off = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(valid, out=off[1:])
            return off, np.asarray(arr.drop_null().to_numpy(), dtype=np.int64)
        return np.arange(n + 1, dtype=np.int64), np.asarray(
            arr.to_numpy(zero_copy_only=False), dtype=np.int64
        )
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise TypeError(f"lineage column has type {arr.type}")
    off = np.asarray(arr.offsets, dtype=np.int64)
    child = arr.values.slice(off[0], off[-1] - off[0])
    off = off - off[0]
    if not len(child):
        return np.zeros(n + 1, dtype=np.int64), _EMPTY
    if not (arr.null_count or child.null_count):
        return off, np.asarray(child.to_numpy(zero_copy_only=False), dtype=np.int64)
    # NULL ids (and the ids a NULL list may span) dropped. Never through to_numpy() of a column with
    # NULLs: that gives float64, which rounds ids above 2**53 (marker ids, large source ids)
    keep = child.is_valid().to_numpy(zero_copy_only=False).copy()
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        spans = np.diff(off)
        if spans[~valid].any():  # Arrow lets a NULL list span values: they are not its members
            keep &= np.repeat(valid, spans)
    kept = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(keep, out=kept[1:])
    ids = np.asarray(child.fill_null(0).to_numpy(), dtype=np.int64)[keep]
    return kept[off], ids


def _aggregates_outside(body: str, aggregates: frozenset[str]) -> bool:
    """Whether a macro body aggregates at the level of the query that calls it. An aggregate inside a
    subquery with its own ``FROM`` (``(SELECT array_agg(e) FROM (SELECT ...))``) aggregates that
    subquery's rows, not the caller's; one in a ``SELECT`` without ``FROM`` (``(SELECT max(x))``) or
    outside any subquery aggregates the caller's rows. A body sqlglot cannot read, or one that reads a
    table, counts as aggregating, as before (the rewrite then refuses or fails loudly, never silently)."""
    try:
        tree = sqlglot.parse_one(body, read=DIALECT)
    except Exception:
        return True
    if tree.find(exp.Table):  # reads a table: classified as before (this body's lineage is not traced)
        return True
    for node in tree.find_all(exp.AggFunc, exp.Anonymous):
        if isinstance(node, exp.Anonymous) and node.name.lower() not in aggregates:
            continue
        sel = node.find_ancestor(exp.Select)
        if sel is None or not (sel.args.get("from_") or sel.args.get("from")):
            return True
    return False


class TracedConnection:
    """A DuckDB connection that carries row lineage through SQL.

    Parameters
    ----------
    database : str
        ``":memory:"`` (default) or a DuckDB database file.
    capture : {"lazy", "eager"}
        ``"lazy"`` (default): a query keeps one cheap key per row and answers lineage by a backward
        query when asked (see :mod:`traceprop_frames.sql.lazy`). ``"eager"``: every query carries its
        rows' source-row ids through the SQL. The answers are the same.
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

    def __init__(self, database: str = ":memory:", capture: str = "lazy", **kwargs) -> None:
        if capture not in ("eager", "lazy"):
            raise UnsupportedOperationError(f"capture={capture!r}: use capture='eager' or capture='lazy'")
        self.database = database
        self.capture = capture
        self._con = duckdb.connect(database, **kwargs)  # internal code reads it as _raw; con.raw is for users
        self._deferred = DeferredOids(self._con)  # lazy CTAS records whose oids wait (sql.deferred_oids)
        self._autocommit = Autocommit(self._con)  # no transaction open, known without asking (sql.autocommit)
        self._oid_reads = OidReads(self._con)  # oids read once per catalog count (sql.oid_reads)
        self._bound = BoundCaptures(self._con)  # kept capture statements bound once (sql.bound_capture)
        self._hold_oids = False  # True while an eager query's own reads leave the waiting oids waiting
        self._rowid = RowidScans(database)  # loaded tables eager queries may read by rowid (sql.rowid_scan)
        self._keys = KeyLineage()  # tables eager queries look up by a unique key (sql.key_lineage)
        self._closed = False
        self._lazy = live_resolvers()  # lazily captured results still alive: resolved on close()
        self._versions: dict[str, int] = {}  # table -> statements run through this connection that changed it
        self._oids: tuple | None = None
        self._backward_plans: dict = {}  # (query, tables' fingerprint) -> lazy backward plan
        # query -> (catalog, shape, capture SQL, traced, untraced, tables read, names survive)
        self._captures: dict = {}
        self._unique: dict = {}  # query -> rows named by an output column's value (sql.lazy_unique)
        self._first_rewrites = FirstRewrites()  # query -> the capture's rewrite, for its first backward plan
        # query text -> [catalog, (SQL, what, rewrite), column names, names survive the rewrite]
        self._eager_plans: dict = {}
        self._nodes: dict[str, OpNode] = {}
        self._registered: dict[str, str] = {}
        self._inner = null_rids.InnerLists()  # tables whose stored lists no outer join wrote
        self._cat: Catalog | None = None
        self._last_cat: Catalog | None = None
        self._macros: frozenset[str] | None = None  # user macros that aggregate (None: read them again)
        self._macro_names: frozenset[str] = frozenset()
        self._sources = SourceMap(self._raw, persistent=not str(database).startswith(":memory:"))
        # tables made by a lazy CREATE TABLE ... AS, their lineage column not yet filled (sql.lazy_tables)
        self._pending: dict[str, PendingTable] = load_records(self._raw) if self._sources.persistent else {}
        self._ctas_plans: dict = {}  # CTAS text -> (catalog, CreatePlan or None)
        self._in_txn = False  # a transaction opened by BEGIN through this connection is open
        self._late = LateColumns()  # pending tables in memory made without their lineage column
        self._txn_filled: dict[str, PendingTable] = {}  # filled inside it: pending again on ROLLBACK
        self._txn_versions: dict[str, int] = {}  # table write counts when it began
        self._names: dict = {}  # query text -> (catalog, number of columns, DuckDB's column names)
        self._join_refs: dict = {}  # query text -> (catalog, rewrite, JoinRefs or None): see sql.join_refs
        # eager CREATE TABLE ... AS text -> (catalog, statement, (SQL, "create", rewrite), table, columns)
        self._eager_ctas: dict = {}
        self._member_plans: dict = {}  # eager grouping CTAS text -> (catalog, MemberPlan or None)
        self._member_reads = MemberReads(self._con)  # members kept while their source is unchanged

    _lineage_csr = staticmethod(lineage_from_arrow)  # for sql.lazy (which does not import this module)

    @property
    def raw(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection underneath: SQL run on it is not traced (and shows the hidden columns).

        Handing it out first records the table oids a lazy ``CREATE TABLE ... AS`` left unread (see
        :mod:`traceprop_frames.sql.deferred_oids`), so what is then run on it is told apart; from then on,
        eager queries read row ids from the stored column only (see :mod:`traceprop_frames.sql.rowid_scan`)."""
        self._rowid.off()
        if self._late:
            self._give_columns()  # user code sees the tables with their lineage column, as before
        return self._raw

    @property
    def _raw(self) -> duckdb.DuckDBPyConnection:
        """The connection for the library's own statements: the oids a lazy CTAS left unread are read
        first (a statement run here may replace a table); not the user's ``raw`` (the rowid guard stays)."""
        if self._deferred.records and not self._hold_oids:
            self._settle_oids()
        return self._con

    def _raw_later(self) -> duckdb.DuckDBPyConnection:
        """:attr:`_raw`, for a callee that needs it only sometimes (reading it may run a statement)."""
        return self._raw

    # ------------------------------------------------------------------ sources
    def read_csv(self, path, name: str, **kwargs) -> TracedConnection:
        """Load a CSV file into table ``name``; row ``i`` is the file's 0-based data row ``i``.

        ``kwargs`` are DuckDB ``read_csv`` options (``sep=";"``, ``header=True``, ``types={...}`` ...).
        """
        p = os.fspath(path)
        bad = [k for k in kwargs if k.lower() in _CSV_REJECT]
        if bad:
            raise UnsupportedOperationError(
                f"con.read_csv does not accept {bad}: they drop or skip records, so row numbers could not be "
                "traced. Load the whole file, then filter in SQL (lineage is kept)."
            )
        q = _quote(name)
        opts = "".join(f", {k} = {_sql_value(v)}" for k, v in kwargs.items())
        stage = _quote(f"__tp_load_{name}")
        self._settle_oids()
        self._before_write([name.lower()], replaced=True)
        self._rowid.forget(name)
        # a fresh, committed table keeps the file's record order, so rowid = 0-based data row (rowids of
        # rows inserted in a still-open transaction are not); a crash here leaves only this hidden table
        self._raw.execute(f"CREATE OR REPLACE TABLE {stage} AS SELECT * FROM read_csv({_literal(p)}{opts})")
        n = self._raw.execute(f"SELECT count(*) FROM {stage}").fetchall()[0][0]
        schema = {c: str(t) for c, t, *_ in self._raw.execute(f"DESCRIBE {stage}").fetchall()}
        try:  # (rowid: it would hide DuckDB's rowid, which numbers the rows)
            refuse_reserved(schema, CSV, p)
        except UnsupportedOperationError:
            self._raw.execute(f"DROP TABLE {stage}")
            raise
        src = REGISTRY.register_file(p, "csv", n, schema=schema)
        with self._transaction():  # the table, its row ids and its source record: all or none
            base = int(encode(self._sources.db_id(src.id), np.zeros(1, dtype=np.int64))[0])
            self._raw.execute(
                f"CREATE OR REPLACE TABLE {q} AS SELECT *, {base} + rowid AS {RID} FROM {stage}"
                + scan_filter(src, "rowid")  # an erasure's pipeline re-run drops the erased rows here
            )
            self._raw.execute(f"DROP TABLE {stage}")
        self._rowid.loaded(self._raw, name, base, self._in_txn)  # (any mode: capture may change later)
        self._source_loaded(name, src, "read_csv", kwargs)
        return self

    def read_parquet(self, path, name: str) -> TracedConnection:
        """Load a Parquet file into table ``name``; row ``i`` is the file's row ``i`` (file order)."""
        p = os.fspath(path)
        meta = pq.ParquetFile(p).metadata
        refuse_reserved(meta.schema.to_arrow_schema().names, PARQUET, p)
        n = meta.num_rows
        src = REGISTRY.register_file(p, "parquet", n)
        self._settle_oids()
        self._before_write([name.lower()], replaced=True)
        self._rowid.forget(name)
        with self._transaction():
            base = int(encode(self._sources.db_id(src.id), np.zeros(1, dtype=np.int64))[0])
            self._raw.execute(
                f"CREATE OR REPLACE TABLE {_quote(name)} AS SELECT * EXCLUDE (file_row_number), "
                f"CAST({base} + file_row_number AS BIGINT) AS {RID} "
                f"FROM read_parquet({_literal(p)}, file_row_number = true)"
                + scan_filter(src, "file_row_number")
            )
        self._rowid.loaded(self._raw, name, base, self._in_txn)  # (any mode: capture may change later)
        self._source_loaded(name, src, "read_parquet")

    @contextlib.contextmanager
    def _transaction(self):
        """One DuckDB transaction around a loader's statements."""
        try:
            self._raw.begin()
        except duckdb.TransactionException as e:
            raise UnsupportedOperationError(
                "tracing loaders (con.read_csv / con.read_parquet) run their own transaction: call them "
                "outside BEGIN ... COMMIT (rows inserted in an open transaction do not have the file's row "
                f"numbers yet). DuckDB: {e}"
            ) from None
        try:
            yield
            self._raw.commit()
        except BaseException:
            self._raw.rollback()
            self._sources = SourceMap(self._raw, persistent=self._sources.persistent)  # drop unsaved ids
            raise
        return self

    def _source_loaded(self, name: str, src, op: str, options: dict | None = None) -> None:
        self._forget_pending(name)
        self._cat = None
        self._changed(name)
        self._registered.pop(name.lower(), None)
        params = {"path": src.path, "sha256": src.sha256, "table": name}
        if options:  # the loader's options, so a replay (sql.replay) reads the file the same way
            params["options"] = {k: _recordable(v) for k, v in options.items()}
        self._nodes[name.lower()] = OpNode(op, params)

    def register(self, name: str, df: pd.DataFrame) -> TracedConnection:
        """Register a pandas frame as view ``name``; a traced frame's row lineage carries over."""
        refuse_reserved(df.columns, HIDDEN, f"con.register({name!r}, df)")
        self._settle_oids()
        self._before_write([name.lower()], replaced=True)
        self._changed(name)
        self._rowid.forget(name)  # the view hides a table of that name
        if not has_lineage(df):
            self._cat = None
            self._raw.register(name, df)
            self._registered.pop(name.lower(), None)
            self._nodes.pop(name.lower(), None)
            return self
        self._cat = None
        lin = resolve(df).flattened()  # one list per row: shared sets folded in
        data = df.drop(columns=["tp_lid"], errors="ignore")
        data.attrs = {}  # the lineage handle is not data
        table = pa.Table.from_pandas(data, preserve_index=False)
        table = table.append_column(LIN, to_arrow(RowLineage(lin.offsets, self._sources.to_db(lin.ids))))
        self._raw.register(name, table)
        self._registered[name.lower()] = LIN
        self._nodes[name.lower()] = lin.node
        return self

    # ------------------------------------------------------------------ catalog
    def _catalog(self, fresh: bool = False) -> Catalog:
        """Which tables carry lineage; cached until a statement or loader may have changed the catalog.

        A rebuilt catalog equal to the previous one is the previous object, so the plans cached for it
        (per query text) still hold after a ``CREATE OR REPLACE`` that keeps the table's columns."""
        builtin_aggregates, _ = _functions(self._con)  # (a read: the oids left waiting may wait on)
        if self._cat is None or fresh:
            self._oids = None  # table oids are re-read with the catalog
            rows = self._raw.execute(
                "SELECT table_name, column_name FROM duckdb_columns() "
                "ORDER BY database_name, schema_name, table_name, column_index"
            ).fetchall()
            hidden: dict[str, str] = {}
            columns: dict[str, list[str]] = {}
            for t, c in rows:
                if c in (RID, LIN):
                    hidden[t.lower()] = c
                else:
                    columns.setdefault(t.lower(), []).append(c)
            hidden.update(self._registered)
            if self._late:
                hidden.update(self._late.hidden(columns))
            if self._macros is None:
                self._macros = self._aggregate_macros()
            cat = Catalog(hidden, builtin_aggregates | self._macros, columns)
            self._cat = self._last_cat if cat == self._last_cat else cat
            self._last_cat = self._cat
        return self._cat

    def _catalog_for(self, stmt: exp.Expression | None, fresh: bool = False) -> Catalog:
        """:meth:`_catalog`, re-reading the user's macros first where ``stmt`` calls a function that is
        neither built in nor a macro known here (one created through ``con.raw`` since)."""
        if stmt is not None and self._macros is not None:
            _, builtin = _functions(self._raw)
            known = builtin | self._macro_names
            if any(f.name.lower() not in known for f in stmt.find_all(exp.Anonymous)):
                self._macros = None
                fresh = True
        return self._catalog(fresh=fresh)

    def _aggregate_macros(self) -> frozenset[str]:
        """User macros whose body calls an aggregate (``CREATE MACRO m(x) AS max(x) + 1``): a query that
        calls one aggregates, as DuckDB expands it. (Listing functions costs ~25 ms: read once, and again
        after ``CREATE`` / ``DROP`` of a function through this connection or a call of an unknown one.)"""
        rows = self._raw.execute(
            "SELECT function_name, macro_definition FROM duckdb_functions() "
            "WHERE function_type IN ('macro', 'table_macro') AND NOT internal"
        ).fetchall()
        self._macro_names = frozenset(name.lower() for name, _ in rows)
        aggregates, _ = _functions(self._raw)
        rows = [(n, b) for n, b in rows if b]
        if not rows:
            return frozenset()
        calls = re.compile(r"\b(" + "|".join(map(re.escape, sorted(aggregates))) + r")\s*\(", re.I)
        return frozenset(
            name.lower()
            for name, body in rows
            if body and calls.search(body) and _aggregates_outside(body, aggregates)
        )

    # ------------------------------------------------------------------ statements
    def _parse(self, query: str) -> list[exp.Expression]:
        try:
            stmts = [
                s
                for s in sqlglot.parse(query, read=DIALECT)
                if s is not None and not isinstance(s, exp.Semicolon)
            ]
        except sqlglot.errors.SqlglotError as e:
            self._raw.extract_statements(query)  # DuckDB's own syntax error, unchanged
            raise UnsupportedSQLError(f"the SQL rewriter (sqlglot) cannot parse this statement: {e}") from e
        for s in stmts:
            if isinstance(s, (exp.Command, exp.Describe, exp.Show, exp.Summarize)):
                self._refuse_unparsed_query(s)
            refuse_reserved_identifiers(s)
            refuse_one_row_exists(s)
        return stmts

    def _refuse_unparsed_query(self, stmt: exp.Expression) -> None:
        """A statement DuckDB runs as a query but sqlglot does not see as one (kept as text, DESCRIBE,
        SHOW, SUMMARIZE): its answer would either lose its lineage or list the hidden columns."""
        text = stmt.sql(dialect=DIALECT)
        try:
            kinds = [st.type for st in self._raw.extract_statements(text)]
        except duckdb.Error:
            return  # DuckDB's own error comes when the statement runs
        if duckdb.StatementType.SELECT in kinds:
            raise UnsupportedSQLError(
                f"the SQL rewriter (sqlglot) cannot carry lineage through this query: {text[:120]!r}; "
                "write it as a plain SELECT, or run it on con.raw (which also shows the hidden lineage "
                f"columns {RID} / {LIN})"
            )

    def rewrite(self, query: str) -> str:
        """The lineage-carrying SQL that :meth:`sql` runs for ``query`` (statements joined by ``;``)."""
        cat = self._catalog(fresh=True)
        return ";\n".join(self._plan(s, cat)[0] for s in self._parse(query))

    def _plan(self, stmt: exp.Expression, cat: Catalog, eager: bool = False) -> tuple[str, str, object]:
        """(SQL to run, what it is: "query" | "create" | "insert" | "other" | "original", rewrite).
        ``eager``: a query planned to run now (its witness tables, ``rw.temps``, are made by the run)."""
        if self._pending:  # (a query's member tables: see _fill_reads)
            self._materialise_reads(stmt, members=not isinstance(stmt, (exp.Query, exp.Values)))
        if isinstance(stmt, (exp.Query, exp.Values)):  # a bare VALUES list is a query too
            consts: list[str] = []
            temps: list[tuple[str, str]] | None = [] if eager else None
            scalars: list = []  # uncorrelated scalar witnesses that may be computed once (scalar_temp)
            rw = rewrite_query(
                stmt,
                cat,
                split=True,
                copy=False,
                constant=self._constant_witness(consts, temps, scalars),
                cover=True,
            )
            if scalars:
                scalar_temp.apply(rw.expression, consts, temps, scalars)
                same_rows.apply(
                    rw.expression, consts, temps, scalars, lambda s: same_rows.few_rows(self._raw, s)
                )
            rw.constants = consts
            rw.temps = temps or []
            return rw.sql, "query", rw
        if isinstance(stmt, exp.Create) and isinstance(stmt.expression, exp.Query):
            if str(stmt.args.get("kind")).upper() in ("TABLE", "VIEW"):
                rw = rewrite_query(stmt.expression, cat)
                out = stmt.copy()
                out.set("expression", rw.expression)
                if isinstance(out.this, exp.Schema) and out.this.expressions:
                    out.this.append("expressions", exp.to_identifier(rw.kind))
                return out.sql(dialect=DIALECT), "create", rw
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
        return out.sql(dialect=DIALECT), ("other" if changed else "original"), None

    def _constant_witness(self, consts: list, temps: list | None = None, scalars: list | None = None):
        """A callback for the rewriter: an uncorrelated witness (it binds on its own) becomes a marker
        (see :mod:`traceprop_frames.sql.shared`). With ``temps`` (a query run eagerly now), an IN
        witness that compares with a correlated aggregate is written once to a table that the IN reads
        too (see :mod:`traceprop_frames.sql.temp_witness`): ``temps`` gets its (name, CREATE SQL); and a
        scalar witness that aggregates is added to ``scalars`` (see :mod:`traceprop_frames.sql.scalar_temp`)."""

        bound: dict[str, tuple[int, str | None] | None] = {}  # side SQL -> (witness index, IN value type)

        def constant(wq: exp.Expression, kind: str, value, with_) -> exp.Expression | None:
            if isinstance(value, exp.Tuple):
                return None
            sql, check_sql = side_query(wq, kind, with_, keyed=value is not None)
            if sql not in bound:  # the same witness again (e.g. in each UNION branch): bound once
                try:  # binds, does not run; fails for a correlated subquery
                    types = self._raw.sql(check_sql).types
                    value_type = str(types[0]) if value is not None else None
                except duckdb.Error:
                    value_type = ""
                if value_type in ("", '"NULL"') or len(consts) >= MAX_WITNESSES:
                    bound[sql] = None
                else:
                    label = ("IN" if value is not None else "subquery") + f" witnesses #{len(consts)}"
                    members = None
                    if temps is not None and value is not None and isinstance(value.parent, exp.In):
                        members = temp_witness.members_sql(wq, kind, with_)
                    name = None if members is None else f"{temp_witness.PREFIX}{len(consts)}"
                    if name is not None:
                        temps.append((name, temp_witness.create_sql(name, members)))
                        consts.append((temp_witness.side_sql(name, kind), label))
                    else:
                        consts.append((self._flat_witness(wq, kind, with_, value) or sql, label))
                        if temps is not None and value is None and scalars is not None:
                            one = scalar_temp.candidate(len(consts) - 1, wq, kind, with_)
                            scalars.extend([one] if one is not None else [])
                    bound[sql] = (len(consts) - 1, value_type, name)
            if bound[sql] is None:
                return None
            if bound[sql][2] is not None:
                temp_witness.read_from(value.parent, bound[sql][2])
            return marker_expression(bound[sql][0], value, bound[sql][1])

        return constant

    def _flat_witness(self, wq: exp.Expression, kind: str, with_: str, value) -> str | None:
        """A grouping IN witness's side query as one row per member (see ``shared.flat_side_query``),
        where it binds; None otherwise."""
        sql = (
            flat_side_query(wq, kind, with_) if value is not None else scalar_flat_side_query(wq, kind, with_)
        )
        if sql is None:
            return None
        try:
            _ = self._raw.sql(with_present(sql, None)).types
        except duckdb.Error:
            return None
        return sql

    def _plan_insert(self, stmt: exp.Insert, cat: Catalog):
        target = stmt.this.this if isinstance(stmt.this, exp.Schema) else stmt.this
        kind = cat.hidden.get(target.name.lower())
        out = stmt.copy()
        if kind is None:
            out.set("expression", rewrite_query(stmt.expression, cat, trace=False).expression)
            return out.sql(dialect=DIALECT), "other", None
        if kind == RID:
            raise UnsupportedSQLError(
                f"INSERT INTO {target.name}: its rows are source-file rows, named by their row ids (a loaded "
                "source table, or a table made from one by CREATE TABLE ... AS that keeps its rows one for "
                "one); make the combined table instead: CREATE TABLE <name> AS SELECT * FROM "
                f"{target.name} UNION ALL SELECT ..."
            )
        rw = rewrite_query(stmt.expression, cat, force_list=True)
        out.set("expression", rw.expression)
        if isinstance(out.this, exp.Schema) and out.this.expressions:
            out.this.append("expressions", exp.to_identifier(LIN))
        return out.sql(dialect=DIALECT), "insert", rw

    def execute(self, query: str, parameters=None) -> pd.DataFrame | None:
        """Run one or more statements; returns the traced result of the last one if it is a query.

        ``parameters`` (a sequence for ``?`` / ``$1``, a dict for ``$name``) are substituted as literals
        before the rewrite, so the witness copies of subqueries see the same values. Syntax errors raise
        DuckDB's own exception; constructs the rewriter cannot carry lineage through raise
        :class:`UnsupportedSQLError` naming them.
        """
        self._rowid.before(
            self._con, query
        )  # (a statement that may change a table: its rowids too; parsed only)
        if parameters is None and self.capture == "lazy" and not listening():
            hit = self._captures.get(query)
            if hit is not None and hit[0] is self._cat:  # captured before on this catalog: no parse
                return self._run_one(None, query, hit[-1], None, single=True)
            hit = self._ctas_plans.get(query)
            if hit is not None and hit[0] is self._cat and hit[1] is not None:
                if self._create_lazy(query, hit[1]):  # a lazy CREATE TABLE ... AS planned before
                    return None
        if parameters is None and self.capture == "eager" and not listening():
            hit = self._member_plans.get(query)
            if hit is not None and hit[0] is self._cat and hit[1] is not None:
                if self._create_members(query, hit[1]):  # a grouping CREATE TABLE ... AS planned before
                    return None
        if self._deferred.records and not self._kept_query(query, parameters):  # any other statement:
            self._settle_oids()  # the oids a CTAS left are read first
        if parameters is None and self.capture == "eager" and not listening():
            hit = self._eager_plans.get(query)
            if hit is not None and hit[0] is self._cat:  # planned before on this catalog: no parse
                return self._run_one(None, query, hit[3], None, single=True)
            hit = self._eager_ctas.get(query)
            if hit is not None and hit[0] is self._cat:  # a CREATE TABLE ... AS planned before
                return self._run_one(hit[1], query, False, hit[3], single=True)
        stmts = self._parse(query)
        if parameters is not None:
            stmts = [_bind_parameters(s, parameters) for s in stmts]
        single = len(stmts) == 1 and parameters is None
        result = None
        for stmt in stmts:
            text = query if single else stmt.sql(dialect=DIALECT)
            result = self._run_one(stmt, text, _names_survive(stmt), _target(stmt), single=single)
        return result

    sql = execute

    @lineage_step("sql.statement")
    def _run_one(self, stmt, text: str, simple_names: bool, target: str | None, single: bool):
        if self.capture == "lazy" and isinstance(stmt, exp.Create):
            plan = self._lazy_create_plan(stmt, text)
            if plan is not None and self._create_lazy(text, plan):
                return None
        if self.capture == "eager" and single and isinstance(stmt, exp.Create):
            plan = self._member_plan(stmt, text)
            if plan is not None and self._create_members(text, plan):
                return None
        if self.capture == "lazy" and (stmt is None or isinstance(stmt, exp.Query)):
            out = self._run_lazy(stmt, text, simple_names)
            if out is not None:
                return out
            stmt = self._parse(text)[0]  # lazy capture may have changed it in place
        fresh, dense = self._cat is None, None
        while True:  # a cached catalog may be stale (tables changed through con.raw): re-plan once, fresh
            sql, what, rw = self._plan_eager(stmt, text, single, fresh)
            if what == "original" and single:
                sql = text
            if not fresh and rw is not None and rw.untraced:
                fresh, stmt = True, self._parse(text)[0]
                continue
            try:
                if what == "query":
                    refs = self._join_refs_plan(text, rw, single)
                    if self._pending:  # (before the temps: a scalar subquery's temp reads their lineage)
                        self._fill_reads(rw, refs)
                    self._make_temps(rw)
                    by_refs = (
                        None if refs is None else self._query_by_refs(refs, rw, text, simple_names, single)
                    )
                    if by_refs is not None:
                        table = None
                        break
                    dense = dense_bits.run(self._raw, rw, sql)  # (table, lo): bitstrings, decoded when read
                    rw.null_sides = []  # (sides of this run whose ids hold a NULL: sql.null_rids)
                    table, extra = (None, []) if dense else self._run_keyed(sql, rw)  # rowid where sound
                else:
                    self._write(stmt, sql, text, what, rw, single)
                    table = None
                break
            except duckdb.Error as e:
                self._drop_temps(rw)
                if not fresh and what == "query":
                    fresh, stmt = True, self._parse(text)[0]
                    continue
                self._explain_failure(stmt, text, e)
                raise
        node = None
        if rw is not None:
            parents = tuple(self._node(t) for t in sorted(rw.traced))
            params = {"query": text}
            if rw.untraced:
                params["missing_lineage"] = sorted(rw.untraced)
            node = OpNode("sql", params, parents)
        if what in ("create", "insert") and target is not None:
            if what == "create" or target not in self._nodes:
                self._nodes[target] = node
            else:
                self._nodes[target] = OpNode("sql_insert", {"table": target}, (self._nodes[target], node))
        if what == "query" and dense is not None:
            return self._dense_frame(*dense, node, text, simple_names, single)
        if what == "query" and by_refs is not None:
            self._drop_temps(rw)
            df, parts = by_refs
            to_process = self._sources.to_process

            def build():  # the arrays read at capture, composed when the lineage is first read
                off, ids = compose([p() if callable(p) else p for p in parts])
                return off, to_process(ids)

            return attach(df, RowLineage.deferred(len(df), build, (), node, has_context=False))
        if table is None:
            return None
        n_data = table.num_columns - rw.n_hidden
        table = self._fix_names(table, text, n_data, simple_names, single)
        refs = None
        if not rw.frames and any(PRESENT in sql for sql, _ in rw.constants):  # (frames may refer too)
            n_lin = table.num_columns - 3 * len(rw.frames)
            refs = [lineage_from_arrow(table.column(i))[1] for i in range(n_data, n_lin)]
            refs += [ids for _, ids in extra]
        try:
            blocks, sides = self._witness_blocks(rw.constants, refs)
            frames = [(self._raw.sql(sql).to_arrow_table(), label) for sql, label in rw.frames]
        finally:
            self._drop_temps(rw)
        err = self._null_ids(table, n_data, sql, text, rw, sides)  # rows without an id: raised when asked
        return _frame(self._raw, table, n_data, node, self._sources, blocks, frames, extra, err)

    def _null_ids(self, table: pa.Table, n_data: int, sql: str, text: str, rw, sides: list):
        """The :class:`SourceChangedError` an eager result's lineage raises (:mod:`~traceprop_frames.sql.null_rids`):
        a NULL id in its hidden columns, its correlated side queries' (``rw.null_sides``) or its witness
        side tables' (``sides``) that no outer join made; else None."""
        err = null_rids.in_table(table, n_data, len(rw.frames), sql, self._catalog, self._inner, self._raw)
        witnessed = [*rw.null_sides, *((q, [t.column(1)]) for (t, _), (q, _) in zip(sides, rw.constants))]
        joined = bool(witnessed) and _OUTER_WORD.search(text) is not None  # (an outer join's NULLs)
        for side_sql, cols in witnessed:
            err = err or null_rids.found(
                cols, side_sql, self._catalog, None, self._inner, rw.traced, self._raw, joined
            )
        return err

    def _run_eager(self, sql: str, rw):
        return run_eager(self._raw, sql, rw, lineage_from_arrow)

    def _run_keyed(self, sql: str, rw):
        """:meth:`_run_eager` (by rowid where sound), the tables reached on a unique key looked up after
        the query instead of carried where sound (see :mod:`traceprop_frames.sql.key_lineage`)."""
        cat = self._cat
        keyed = self._keys.plan(self._raw, sql, rw, self._rowid, cat.columns if cat is not None else {})
        if keyed is not None:
            table, extra = self._rowid.run(self._run_eager, keyed[0], rw)
            parts = keyed[1](table, lineage_from_arrow)
            if parts is not None:
                return table, extra + parts
        return self._rowid.run(self._run_eager, sql, rw)

    def _write(self, stmt, sql: str, text: str, what: str, rw, single: bool) -> None:
        """Run a statement that writes (DDL / DML) and bring the cached catalog and plans up to date."""
        hidden = None if self._cat is None else self._cat.hidden  # (before it: the tables it reads)
        self._run_write(stmt, sql)
        target = _target(stmt)
        if what in ("create", "insert") and target is not None and stmt.expression is not None:
            self._inner.made(target, text, hidden, what == "insert", self._raw_later)  # (sql.null_rids)
        else:
            self._inner.dropped(_written(stmt))
        made = self._eager_ctas.get(text) if single and what == "create" else None
        if made is not None and made[2][2] is rw:  # a table of known columns: patched
            self._patch_catalog(made[3], made[4], rw.kind)
        else:
            self._cat = None  # DDL / DML may change which tables carry lineage
        if isinstance(stmt, (exp.Create, exp.Drop)) and str(stmt.args.get("kind")).upper() in (
            "MACRO",
            "FUNCTION",
        ):
            self._macros = None  # a macro that aggregates makes its callers aggregate
        self._changed(_written(stmt))

    def _make_temps(self, rw) -> None:
        """Write the witness tables of eager rewrite ``rw`` (see :mod:`traceprop_frames.sql.temp_witness`)."""
        for _, create in getattr(rw, "temps", None) or []:
            self._raw.execute(create)

    def _drop_temps(self, rw) -> None:
        """Drop the witness tables of ``rw`` (after its side queries, or when its query failed)."""
        for name, _ in getattr(rw, "temps", None) or []:
            with contextlib.suppress(duckdb.Error):
                self._raw.execute(f"DROP TABLE IF EXISTS temp.{name}")
            if scalar_temp.drop_sql(name) is not None:
                with contextlib.suppress(duckdb.Error):
                    self._raw.execute(scalar_temp.drop_sql(name))

    def _plan_eager(self, stmt, text: str, single: bool, fresh: bool):
        """:meth:`_plan` for a statement run eagerly, correlated witnesses split off (see
        :mod:`traceprop_frames.sql.correlated`); a query's plan is kept per query text while the catalog
        is the same (no parse, rewrite or split when the same query runs again)."""
        cat = self._catalog_for(stmt, fresh=fresh)
        hit = self._eager_plans.get(text) if single else None
        if hit is not None and hit[0] is cat:
            return hit[1]
        made = self._eager_ctas.get(text) if single else None
        if made is not None and made[0] is cat:
            if self._pending:
                self._materialise_reads(stmt)
            return made[2]
        simple = _names_survive(stmt)  # (before the rewrite changes stmt in place)
        sql, what, rw = self._plan(stmt, cat, eager=True)
        if what == "create" and single:
            self._plan_eager_ctas(stmt, text, cat, (sql, what, rw))
        if what == "query":
            prepare(rw, cat)
            sql = distinct_count.apply(rw, sql, self._raw)
            rw.dense = dense_bits.plan(rw, sql, self._table_oids)  # few dense groups: bitstrings
            if single:
                while len(self._eager_plans) >= 256:
                    self._eager_plans.pop(next(iter(self._eager_plans)))
                self._eager_plans[text] = [cat, (sql, what, rw), None, simple]
        return sql, what, rw

    def _plan_eager_ctas(self, stmt: exp.Create, text: str, cat: Catalog, plan: tuple) -> None:
        """Keep an eager ``CREATE [OR REPLACE] TABLE t AS SELECT ...``'s plan with the columns ``t`` gets
        (bound, not run), so running it again parses nothing and patches the catalog instead of
        re-reading it. Only the plain form (no column list, schema, TEMP or IF NOT EXISTS)."""
        rw = plan[2]
        if (
            str(stmt.args.get("kind")).upper() != "TABLE"
            or not isinstance(stmt.this, exp.Table)
            or stmt.this.args.get("db")
            or stmt.args.get("exists")
            or stmt.args.get("properties")
            or rw is None
            or rw.kind not in (RID, LIN)
        ):
            return
        try:
            names = self._raw.sql(rw.sql).columns
        except duckdb.Error:
            return
        if not names or names[-1] != rw.kind or len({n.lower() for n in names}) != len(names):
            return
        while len(self._eager_ctas) >= 256:
            self._eager_ctas.pop(next(iter(self._eager_ctas)))
        self._eager_ctas[text] = (cat, stmt, plan, stmt.this.name.lower(), list(names[:-1]))

    def _fix_names(self, table: pa.Table, text: str, n_data: int, simple_names: bool, single: bool = False):
        """Column names exactly as DuckDB names them for the original query (binds it, does not run it;
        kept with the query's eager plan)."""
        names = self._result_names(text, n_data, simple_names, single)
        if names is not None:
            table = table.rename_columns([*names, *table.column_names[n_data:]])
        return table

    def _result_names(self, text: str, n_data: int, simple_names: bool, single: bool) -> list[str] | None:
        """The names :meth:`_fix_names` gives the data columns; None where the rewrite keeps them."""
        if simple_names:
            return None
        hit = self._eager_plans.get(text) if single else None
        if hit is not None and hit[0] is self._cat and hit[2] is not None and len(hit[2]) == n_data:
            return hit[2]
        names = self._original_names(text, n_data)
        if hit is not None and hit[0] is self._cat:
            hit[2] = names
        return names

    def _join_refs_plan(self, text: str, rw, single: bool) -> JoinRefs | None:
        """The :class:`~traceprop_frames.sql.join_refs.JoinRefs` of eager rewrite ``rw``, kept per query
        text while the catalog and the rewrite are the same."""
        hit = self._join_refs.get(text) if single else None
        if hit is not None and hit[0] is self._cat and hit[1] is rw:
            return hit[2]
        plan = plan_join_refs(rw, self._catalog(), self._table_oids())
        if single:
            while len(self._join_refs) >= 256:
                self._join_refs.pop(next(iter(self._join_refs)))
            self._join_refs[text] = (self._cat, rw, plan)
        return plan

    def _kept_query(self, query: str, parameters) -> bool:
        """True for an eager query run from its kept plan: it changes no table, so the oids that CTAS
        statements left waiting (``sql.deferred_oids``) may wait on through its own reads."""
        if parameters is not None or self.capture != "eager" or listening():
            return False
        hit = self._eager_plans.get(query)
        return hit is not None and hit[0] is self._cat

    def _query_by_refs(self, refs: JoinRefs, rw, text: str, simple_names: bool, single: bool):
        """:meth:`_read_by_refs`, the oids that CTAS statements left waiting kept waiting where nothing
        else ran since them: its statements (its own BEGIN and COMMIT, a query, list reads) replace no
        table, so the records stay valid if the catalog count moved by its BEGIN and COMMIT only (else
        they are settled as before: read, or unknown where something else ran)."""
        hold = bool(self._deferred.records) and self._deferred.unchanged()
        before = self._deferred.version()
        self._hold_oids = hold
        try:
            out = self._read_by_refs(refs, rw, text, simple_names, single)
        finally:
            self._hold_oids = False
        if hold and self._deferred.version() - before in (0, 2):
            self._deferred.advance()
        return out

    def _read_by_refs(self, refs: JoinRefs, rw, text: str, simple_names: bool, single: bool):
        """Run an eager query whose joined tables' lineage lists are read once and gathered by ``rowid``
        (see :mod:`traceprop_frames.sql.join_refs`): (frame, the lineage parts for ``join_refs.compose``,
        read now), or None where DuckDB refuses it (the usual path then runs the
        query and reports any error as it always has). Member tables made since the catalog last moved
        are read by their group keys instead (:mod:`traceprop_frames.sql.member_keys`)."""
        keys = key_columns(refs, self._pending, self._deferred)
        if keys is not None:
            out = self._read_by_keys(refs, keys, text, simple_names, single)
            if out is not None:
                return out
        try:
            with self._own_transaction():  # the query and the list reads see the same rows
                rel = self._raw.sql(refs.sql)
                df, cols = self._refs_frame(rel, len(refs.tables), text, simple_names, single)
                lists = {}
                for t in dict.fromkeys(t for t in refs.tables if t is not None):
                    p = self._pending.get(t)  # a table of members (see _fill_reads): its keys
                    col = _quote(p.key_columns[0]) if isinstance(p, MemberTable) else LIN
                    lists[t] = (self._raw.sql(f"SELECT rowid, {col} FROM {_quote(t)}").to_arrow_table(), p)
        except duckdb.Error:
            return None
        err = null_rids.found(
            [c for c, t in zip(cols, refs.tables) if t is None],
            refs.sql,
            self._catalog,
            inner=self._inner,
            raw=self._raw,
        )
        ids = list(map(_hidden_ids, cols))
        for v, t in zip(ids, refs.tables):  # a NULL id inside stored lists an inner join wrote
            if err is None and t is not None and not isinstance(lists[t][1], MemberTable):
                err = null_rids.in_lists(t, lists[t][0], row_positions(lists[t][0].column(0), v), self._inner)
        parts = [] if err is None else [null_rids.raising(err)]  # (composed when the lineage is read)
        for v, t in zip(ids, refs.tables):
            if t is None:
                parts.append(id_part(v))
            elif isinstance(lists[t][1], MemberTable):  # grouped when the lineage is first read
                table = lists[t][0]
                parts.append(
                    member_part(lists[t][1].members, table.column(1), row_positions(table.column(0), v))
                )
            else:
                parts.append(rows_of(lists[t][0], v, lineage_from_arrow))
        return df, parts

    def _read_by_keys(self, refs: JoinRefs, keys, text: str, simple_names: bool, single: bool):
        """:meth:`_read_by_refs` with each member table's group key in the result instead of its rowid:
        one statement, no list read (:mod:`traceprop_frames.sql.member_keys`); None where DuckDB refuses
        it, a key column does not read exactly, or the catalog count moved meanwhile (the rowid path)."""
        at = self._deferred.version()
        det = member_determined.plan(refs, keys, self._pending)  # b's, p's key from a.k: one column
        try:
            if det is None:
                rel, n_hidden, src = self._raw.sql(keyed_sql(refs, keys)), len(refs.tables), None
            else:  # (src: the result's own a.k column, where it has one)
                rel, n_hidden, src = member_determined.relation(self._raw, det)
            df, cols = self._refs_frame(rel, n_hidden, text, simple_names, single)
        except duckdb.Error:
            return None
        if self._deferred.version() != at:  # something else ran beside the query
            return None
        if src is not None:
            cols = [*cols, df.iloc(axis=1)[src]]
        picked = [
            (cols[det.columns[i]], det.determined[i]) if det else (cols[i], False) for i in range(len(keys))
        ]
        err = null_rids.found(
            [c for (c, _), k in zip(picked, keys) if k is None],
            refs.sql,
            self._catalog,
            inner=self._inner,
            raw=self._raw,
        )
        parts = [] if err is None else [null_rids.raising(err)]  # (composed when the lineage is read)
        for (col, absent_ok), t, key in zip(picked, refs.tables, keys):
            if key is None:
                parts.append(id_part(_hidden_ids(col)))
                continue
            kv = key_values(col, signed=absent_ok)
            if kv is None:
                return None
            if absent_ok:  # (a copy: the user's frame may be written to)
                kv = (np.array(kv[0]), kv[1])
            parts.append(key_part(self._pending[t].members, *kv, absent_ok=absent_ok))
        return df, parts

    def _refs_frame(self, rel, n_hidden: int, text: str, simple_names: bool, single: bool):
        """(frame of the data columns, the ``n_hidden`` last columns as read) of a join-refs query."""
        types = [str(t) for t in rel.types]
        n_data = len(types) - n_hidden
        names = self._result_names(text, n_data, simple_names, single)
        if n_data and all(_same_through_arrow(t) for t in types[:n_data]) and _unique(names):
            # one conversion, as the plain query's .df(): every hidden column is an integer
            df = rel.df()
            by_column = df.iloc(axis=1)  # (columns only: iloc[:, ...] slices every block's rows first)
            cols = [by_column[n_data + i] for i in range(n_hidden)]
            df = by_column[:n_data]
            if names is not None:
                df.columns = names
            return df, cols
        table = self._fix_names(rel.to_arrow_table(), text, n_data, simple_names, single)
        cols = [table.column(n_data + i) for i in range(n_hidden)]
        data = table.select(list(range(n_data)))
        df = self._raw.from_arrow(data).df() if n_data else pd.DataFrame(index=range(table.num_rows))
        return df, cols

    def _dense_frame(self, table: pa.Table, lo: int, node, text: str, simple_names: bool, single: bool):
        """The frame of an eager result whose last column holds each row's ids as a bitstring (see
        :mod:`traceprop_frames.sql.dense_bits`): the bitstrings are read now, decoded to ids when the
        lineage is first read."""
        n_data = table.num_columns - 1
        table = self._fix_names(table, text, n_data, simple_names, single)
        bits = table.column(n_data)
        data = table.select(list(range(n_data)))
        df = data_frame(self._raw, data) if n_data else pd.DataFrame(index=range(table.num_rows))
        to_process = self._sources.to_process

        def build():
            off, ids = lineage_from_arrow(dense_bits.decode(bits, lo))
            return off, to_process(ids)

        return attach(df, RowLineage.deferred(len(df), build, (), node, has_context=False))

    def _original_names(self, text: str, n_data: int) -> list[str] | None:
        """The result's column names as DuckDB gives them to ``text`` (binding only). Where the text does
        not bind alone (``ANY (SELECT * ...)`` also sees the hidden columns), the names of its copy with
        stars hidden, without the ``EXCLUDE`` that hides them."""
        try:  # a star also lists the hidden columns: they are not the user's
            names = [n for n in self._raw.sql(text).columns if n not in (RID, LIN)]
        except duckdb.Error:
            names = None
        if names is not None and len(names) == n_data:
            return names
        try:
            stmt = self._parse(text)[0]
            names = self._raw.sql(rewrite_query(stmt, self._catalog(), trace=False).sql).columns
        except (duckdb.Error, UnsupportedSQLError):
            return None
        names = [_without_hidden(n) for n in names]
        return names if len(names) == n_data else None

    def _witness_blocks(self, constants: list, refs: list | None = None) -> list:
        """Run the side queries of a rewrite's marker ids; their shared sets (see ``sql.shared``) and the
        side tables (their lineage in column 1: checked for NULL ids by the caller).

        ``refs``: the result's lineage ids (arrays), where known: a side query that can compute only
        the groups the result refers to (``shared.with_present``) then does. The side queries run last
        to first, so the markers of a later one's rows count as referred to as well."""
        if refs is None or not any(PRESENT in sql for sql, _ in constants):
            sides = [
                (self._raw.sql(with_present(sql, None)).to_arrow_table(), label) for sql, label in constants
            ]
            return witness_blocks(sides, lineage_from_arrow, self._sources.to_process), sides
        ids = [np.asarray(r, dtype=np.int64) for r in refs]
        sides = [None] * len(constants)
        for k in range(len(constants) - 1, -1, -1):
            sql, label = constants[k]
            keys = present_keys(np.concatenate(ids), k) if PRESENT in sql else None
            table = self._raw.sql(with_present(sql, keys)).to_arrow_table()
            sides[k] = (table, label)
            if k:
                ids.append(lineage_from_arrow(table.column(1))[1])
        return witness_blocks(sides, lineage_from_arrow, self._sources.to_process), sides

    def _check_ids(self, cols, sql: str) -> None:
        """Raise where lineage columns ``cols`` read by ``sql`` hold a NULL id no join made (sql.null_rids)."""
        null_rids.check(cols, sql, self._catalog, None, self._inner, self._raw)

    def _lineage_of(self, table: pa.Table, start: int, n_hidden: int, node, blocks, sql=None) -> RowLineage:
        """RowLineage of ``table``'s rows from its hidden columns ``start .. start + n_hidden``; ``sql``:
        the statement that read them, where a NULL id in them may raise (:mod:`~traceprop_frames.sql.null_rids`)."""
        cols = [table.column(i) for i in range(start, start + n_hidden)]
        if sql is not None:
            null_rids.check(
                cols,
                sql,
                self._catalog,
                table.column_names[start : start + n_hidden],
                self._inner,
                raw=self._raw,
            )
        parts = [lineage_from_arrow(c) for c in cols]
        off, ids = _concat_csr(parts)
        if hasattr(blocks, "for_ids"):  # a lazy plan's witness sets: computed for the ids present
            blocks = blocks.for_ids(ids)
        return resolve_markers(off, ids, list(blocks), self._sources.to_process, node)

    # ------------------------------------------------------------------ lazy capture
    def _run_lazy(self, stmt: exp.Expression, text: str, simple_names: bool) -> pd.DataFrame | None:
        """Run ``stmt`` keeping one key per row (see :mod:`traceprop_frames.sql.lazy`); None where its
        shape is captured eagerly. Changes ``stmt`` in place (no copies: they cost more than the rest)."""
        fresh = self._cat is None
        cat = self._catalog_for(stmt, fresh=fresh)
        hit = self._captures.get(text)
        kept = (
            hit is not None
            and hit[0] is cat
            and (not self._pending or hit[1].keyed == self._keyed_tables(hit[5]))
        )
        oids = None if kept and self._oids_can_wait() else self._table_oids()  # None: read later
        if kept:
            _, shape, capture_sql, traced, untraced, tables, _ = hit  # the same query and catalog: planned
        else:
            if stmt is None:
                stmt = self._parse(text)[0]
            tables = read_tables(stmt, cat)
            shape = shape_of(stmt, cat, set(oids), self._keyed_tables(tables))
            if shape is None:
                return None
            drop_determined(stmt, shape, self._raw)  # keys another item's row decides: not fetched
            # the rewrite the first backward plan needs, made here from the statement as parsed (see
            # sql.first_plan); with pending lazy tables, the plan rewrites once they are filled
            tree = stmt.copy() if not self._pending and self._first_rewrites.wanted(text) else None
            by_value = lazy_unique.candidates(
                stmt, shape, cat, set(oids)
            )  # (read before the capture rewrite)
            capture_sql = self._capture_sql(stmt, cat, shape)
            unique = lazy_unique.UniqueKey(shape, by_value, stmt.sql(dialect=DIALECT)) if by_value else None
            consts: list = []
            rw = (  # what eager refuses, lazy refuses too
                rewrite_query(stmt, cat, split=True, copy=False)
                if tree is None
                else rewrite_query(tree, cat, split=True, copy=False, constant=self._constant_witness(consts))
            )
            traced, untraced = sorted(rw.traced), sorted(rw.untraced)
            if untraced and not fresh:  # a cached catalog may be stale (tables changed through con.raw)
                self._cat = None
                return self._run_lazy(self._parse(text)[0], text, simple_names)
            while len(self._captures) >= 256:
                self._unique.pop(next(iter(self._captures)), None)  # (kept with its capture only)
                self._captures.pop(next(iter(self._captures)))
            self._captures[text] = (cat, shape, capture_sql, traced, untraced, tables, simple_names)
            self._unique.pop(text, None)
            if unique is not None:
                self._unique[text] = unique
            if tree is not None:
                self._first_rewrites.keep(text, cat, rw, consts)
        if self._late.mentioned(capture_sql):
            self._give_columns()  # a star's EXCLUDE (__tp_lin) of a table made without it
        spec = self._unique.get(text)  # (planned with this shape: a new plan replaces it)
        got = (
            self._capture_by_value(text, spec, simple_names)
            if kept and spec is not None and spec.on
            else None
        )
        if got is not None:
            df, keys, key_types = got
            shape = spec.by_value
        else:
            try:
                df, keys, key_types = self._capture_frame(text, capture_sql, shape, simple_names)
            except duckdb.Error:
                return None  # the eager path reports the failure as it always has
            if spec is not None and not spec.tried:
                lazy_unique.choose(spec, df)  # a column naming the rows by value, for the next runs
        n_rows = len(df)
        params = {"query": text}
        if untraced:
            params["missing_lineage"] = untraced
        node = OpNode("sql", params, tuple(self._node(t) for t in traced))
        resolver = Resolver(self, text, keys, key_types, shape, node, {})
        if oids is None:
            known = self._oid_reads.at(self._deferred.version())  # (where it starts a run)
            self._deferred.add_result(resolver, tables, self._versions, known)  # oids read later
        else:
            resolver.fingerprint = self._fingerprint(tables, oids)
        return attach(df, LazyRowLineage(resolver, np.arange(n_rows, dtype=np.int64)))

    def _capture_by_value(self, text: str, spec, simple_names: bool):
        """The capture statement without the row id, its rows named by an output column's values (see
        :mod:`traceprop_frames.sql.lazy_unique`): (frame, keys, key types), or None where that column is
        not unique (or not integers without NULLs) in this result: not tried again for ``text``."""
        try:
            df, keys, key_types = self._capture_frame(text, spec.sql, spec.by_value, simple_names, "\0u")
        except duckdb.Error:
            df = None
        keys = lazy_unique.checked_keys(keys) if df is not None else None
        if keys is None:
            spec.on = False  # (the caller runs the statement again with the row id)
            return None
        return df, keys, key_types

    def _capture_frame(self, text: str, capture_sql: str, shape, simple_names: bool, bound: str = ""):
        """Run the capture statement: (data frame, key columns as Arrow, the keys' DuckDB types);
        ``bound``: a suffix of ``text`` under which its bind is kept (another capture of the same text).
        The key columns never share memory with the frame (``lazy_unique.checked_keys`` relies on it)."""
        # (not self._raw, which would read the oids left to wait)
        btext = text + bound
        types, rel, count = self._bound.types(btext, capture_sql), None, None
        if types is None:  # not bound at this catalog count before: through a relation (sql.bound_capture)
            count = self._bound.count()
            rel = self._con.sql(capture_sql)
            types = [str(t) for t in rel.types]
        n_data = len(types) - shape.n_keys
        key_at = key_positions(shape, n_data)  # keys the output holds are read there (sql.lazy_reuse)
        key_types = [types[i] for i in key_at]
        names = None if simple_names else self._original_names_cached(text, n_data)
        if (
            n_data
            and all(t in _PANDAS_EXACT for t in key_types)
            and all(_same_through_arrow(t) for t in types[:n_data])
            and _unique(names)
        ):
            # one conversion, as plain DuckDB's .df(): the keys' pandas columns hold them exactly
            if rel is None:
                res = self._con.execute(capture_sql)
                try:
                    if [str(d[1]) for d in res.description] != types:  # (a moved count would say so first)
                        res.abort()  # (its rows are not wanted: no need to fetch them)
                        self._bound.forget(btext)
                        return self._capture_frame(text, capture_sql, shape, simple_names, bound)
                    df = res.df()
                    self._bound.ran(btext, len(df))
                except BaseException:  # an interrupt too: DuckDB refuses all work on an unfinished result
                    res.abort()
                    raise
            else:
                df = rel.df()
                self._bound.keep(btext, capture_sql, count, types, len(df))
            # column by column: from_pandas starts a thread pool (~0.5 ms a query, the size of the keys);
            # iloc(axis=1) indexes the columns only (iloc[:, ...] also slices every block's rows first:
            # twice the time on a 16-column result)
            cols = df.iloc(axis=1)
            # a key read from an output column is copied: pa.array shares a numpy column's memory, and the
            # frame is the user's (a write into it in place would change the rows the lineage names)
            keys = pa.table([_key_array(cols[i], i < n_data) for i in key_at], names=key_names(len(key_at)))
            if shape.n_keys:  # keys appended after the data columns
                df = cols[:n_data]
            if names is not None and df.columns.tolist() != names:  # (a rename costs ~80 us a query)
                df.columns = names
            return df, keys, key_types
        if rel is None:  # (types are kept for the .df() shape only: its names changed) bound anew
            self._bound.forget(btext)
            return self._capture_frame(text, capture_sql, shape, simple_names, bound)
        table = rel.to_arrow_table()
        if names is not None:  # (kept per text and catalog: no bind, no read of waiting oids)
            table = table.rename_columns([*names, *table.column_names[n_data:]])
        keys = pa.table([table.column(i) for i in key_at], names=key_names(len(key_at)))
        data = table.select(list(range(n_data)))
        df = self._con.from_arrow(data).df() if n_data else pd.DataFrame(index=range(table.num_rows))
        return df, keys, key_types

    def _oids_can_wait(self) -> bool:
        """A lazy query from its kept plan: its tables' oids may wait with the CTAS records' (see
        :mod:`traceprop_frames.sql.deferred_oids`) where they would be read now (records wait, or a CTAS
        left the cached oids stale) and nothing moved the catalog count since the records were made."""
        if self._sources.persistent or not self._deferred.available:
            return False
        if self._oids is not None and self._oids[0] is self._cat and not self._deferred.records:
            return False  # cached oids: _table_oids uses them, or reads anew where the count moved
        return self._deferred.unchanged()

    def _original_names_cached(self, text: str, n_data: int) -> list[str] | None:
        """:meth:`_original_names`, kept per query text and catalog."""
        hit = self._names.get(text)
        if hit is not None and hit[0] is self._cat and hit[1] == n_data:
            return hit[2]
        names = self._original_names(text, n_data)
        while len(self._names) >= 256:
            self._names.pop(next(iter(self._names)))
        self._names[text] = (self._cat, n_data, names)
        return names

    @staticmethod
    def _capture_sql(stmt: exp.Expression, cat: Catalog, shape) -> str:
        """``stmt`` with its key columns appended (and stars hiding the hidden columns), as SQL."""
        # what the eager rewrite hides from the user (stars, row structs, catalog listings) hidden here too
        rewrite_query(stmt, cat, trace=False, copy=False)
        shape.n_keys = add_capture_keys(stmt, shape)
        sql = stmt.sql(dialect=DIALECT, copy=False)
        for _ in range(shape.n_keys):
            stmt.expressions[-1].pop()
        return sql

    # ------------------------------------------------------------------ lazy CREATE TABLE ... AS
    def _lazy_create_plan(self, stmt: exp.Create, text: str) -> CreatePlan | None:
        """How ``stmt`` runs as a lazy CTAS (see :mod:`traceprop_frames.sql.lazy_tables`), or None where it
        is captured eagerly (not a grouping query, a column list, TEMP / IF NOT EXISTS, ...)."""
        cat = self._catalog_for(stmt)
        hit = self._ctas_plans.get(text)
        if hit is not None and hit[0] is cat:
            return hit[1]
        plan = None
        sel = stmt.expression
        if (
            str(stmt.args.get("kind")).upper() == "TABLE"
            and isinstance(sel, exp.Select)
            and isinstance(stmt.this, exp.Table)
            and not stmt.this.args.get("db")
            and not stmt.args.get("exists")
            and not stmt.args.get("properties")
        ):
            keys = grouping_keys(sel, cat)
            if keys is not None:
                plan = self._build_create_plan(stmt, sel, cat, *keys)
        while len(self._ctas_plans) >= 256:
            self._ctas_plans.pop(next(iter(self._ctas_plans)))
        self._ctas_plans[text] = (cat, plan)
        return plan

    def _build_create_plan(self, stmt, sel, cat: Catalog, keys: list[str], positions: list[int]):
        query = sel.sql(dialect=DIALECT)
        try:
            rw = rewrite_query(sel.copy(), cat)  # what eager refuses, lazy refuses too
        except UnsupportedSQLError:
            return None
        if rw.kind != LIN or not rw.traced:
            return None
        body = sel.copy()
        rewrite_query(body, cat, trace=False, copy=False)  # stars, row structs: hidden as eagerly
        try:
            names = self._raw.sql(body.sql(dialect=DIALECT)).columns  # binds, does not run
        except duckdb.Error:
            return None
        if len(names) != len(sel.expressions) or len(set(n.lower() for n in names)) != len(names):
            return None
        plain = stmt.copy()
        plain.set("expression", body.copy())  # the table without its lineage column (sql.late_column)
        body.append("expressions", exp.alias_(exp.cast(exp.null(), "BIGINT[]"), LIN))
        out = stmt.copy()
        out.set("expression", body)
        return CreatePlan(
            sql=out.sql(dialect=DIALECT),
            query=query,
            keys=keys,
            key_positions=positions,
            traced=sorted(rw.traced),
            untraced=sorted(rw.untraced),
            tables=sorted(rw.traced),
            target=stmt.this.name.lower(),
            columns=list(names),
            plain_sql=plain.sql(dialect=DIALECT),
        )

    def _create_lazy(self, text: str, plan: CreatePlan) -> bool:
        """Run a lazy CTAS: the table (in memory without its lineage column, added when needed: see
        :mod:`traceprop_frames.sql.late_column`; in a database file with a NULL one) and (in a database
        file) its pending record, in one transaction. False where it cannot (in a database file, inside a transaction of the
        user's): eager capture then. (In memory, a rolled-back CTAS is seen when the table is filled.)"""
        target = plan.target
        persistent = self._sources.persistent
        self._before_write([target], replaced=True)
        defer = self._deferred.available and not persistent  # the oids read later (sql.deferred_oids)
        if not (defer and self._deferred.unchanged()):
            self._settle_oids()
        known = self._run_start() if defer else None
        if persistent and not self._own_begin():
            return False
        q = _quote(target)
        late = not persistent and not self._in_txn and bool(plan.plain_sql)  # no column yet: late_column
        try:
            try:  # (not self._raw: that would read the oids left waiting)
                self._con.execute(plan.plain_sql if late else plan.sql)
            except duckdb.Error:
                if persistent:
                    self._raw.rollback()
                self._deferred.advance()  # (a failed statement replaced nothing)
                return False  # the eager path reports it, as it always has
            n = -1  # counted when filled, in memory (a table deleted from meanwhile keeps its other rows)
            counts = {t: -1 for t in plan.tables}
            if self._sources.persistent:
                n = self._raw.execute(f"SELECT count(*) FROM {q}").fetchall()[0][0]
                for t in plan.tables:
                    counts[t] = self._raw.execute(f"SELECT count(*) FROM {_quote(t)}").fetchall()[0][0]
            key_columns = [plan.columns[i] for i in plan.key_positions]
            pending = PendingTable(target, plan.query, plan.keys, key_columns, counts, n)
            if persistent:
                save_record(self._raw, pending)
                self._raw.commit()
        except BaseException:
            if persistent:
                with contextlib.suppress(duckdb.Error):
                    self._raw.rollback()
            raise
        self._pending[target] = pending
        self._late.made(target, late)
        self._inner.made(target, text, None if self._cat is None else self._cat.hidden, raw=self._raw_later)
        self._changed(target)
        self._patch_catalog(target, plan.columns)
        if defer:
            self._deferred.add(pending, [*plan.tables, target], self._versions, known)
        else:
            oids = self._read_oids()
            if self._cat is not None:
                self._oids = (self._cat, oids)
            pending.fingerprint = self._fingerprint([*plan.tables, target], oids)
        params = {"query": text}
        if plan.untraced:
            params["missing_lineage"] = plan.untraced
        self._nodes[target] = OpNode("sql", params, tuple(self._node(t) for t in plan.traced))
        return True

    def _run_start(self) -> dict[str, int] | None:
        """The oids now where a lazy CTAS about to run starts a run of them (none waiting): the last read's
        where the catalog count still holds, else read now, once per run (with the run's start known, a
        statement outside the traced connection before the oids are read does not make every table of
        the run count as changed: see :mod:`traceprop_frames.sql.deferred_oids`); None within a run."""
        if self._deferred.records:
            return None
        known = self._oid_reads.at(self._deferred.version())
        return self._read_oids() if known is None else known

    def _patch_catalog(self, table: str, columns: list[str], kind: str = LIN) -> None:
        """The catalog after this connection made ``table`` (hidden column ``kind``, ``columns``):
        patched, not re-read."""
        self._oids = None
        cat = self._cat
        if cat is None:
            return
        if (
            cat.hidden.get(table) == kind
            and cat.columns.get(table) == columns
            and table not in self._registered
        ):
            return  # the same table again (CREATE OR REPLACE): the catalog is unchanged
        self._registered.pop(table, None)
        hidden = {**cat.hidden, table: kind}
        self._cat = self._last_cat = Catalog(hidden, cat.aggregates, {**cat.columns, table: list(columns)})

    # ------------------------------------------------------------------ eager grouping CTAS by members
    def _member_plan(self, stmt: exp.Create, text: str):
        """How eager ``stmt`` runs keeping its groups' members (see :mod:`traceprop_frames.sql.member_lists`):
        (CreatePlan, members SQL), or None where it runs as before (a database file: the members live in
        this process only)."""
        if self._sources.persistent:
            return None
        cat = self._catalog_for(stmt)
        hit = self._member_plans.get(text)
        if hit is not None and hit[0] is cat:
            return hit[1]
        plan = None
        create = self._lazy_create_plan(stmt, text)
        if (  # (a column named rowid would hide DuckDB's, which the members' readers go by)
            create is not None and len(create.keys) == 1 and all(c.lower() != "rowid" for c in create.columns)
        ):
            try:
                msql = members_sql(rewrite_query(stmt.expression.copy(), cat), cat)
                if msql is not None and key_type_ok([str(t) for t in self._raw.sql(msql).types]):
                    plan = (create, msql)
            except (duckdb.Error, UnsupportedSQLError):
                plan = None
        while len(self._member_plans) >= 256:
            self._member_plans.pop(next(iter(self._member_plans)))
        self._member_plans[text] = (cat, plan)
        return plan

    def _create_members(self, text: str, plan) -> bool:
        """Run an eager grouping CTAS as the plain statement plus its members (read first, so they are
        the rows the statement groups); False where it cannot (inside a transaction opened through this
        connection, or DuckDB refuses it: the usual eager path then runs and reports)."""
        create, msql = plan
        if self._in_txn:
            return False
        target = create.target
        self._before_write([target], replaced=True)
        defer = self._deferred.available  # the oid read later, as a lazy CTAS's (sql.deferred_oids)
        if not (defer and self._deferred.unchanged()):
            self._settle_oids()
        known = self._oid_reads.at(self._deferred.version())  # (no read of its own: see _run_start)
        autocommit = self._autocommit.known()
        members = self._members_and_create(create, msql)
        if members is None:
            self._deferred.advance()  # (a failed statement replaced nothing)
            return False
        if autocommit:  # a CTAS of our own outside a transaction leaves none open (sql.autocommit)
            self._autocommit.mark()
        key = create.columns[create.key_positions[0]]
        pending = MemberTable(target, create.query, create.keys, [key], {}, -1, members=members)
        self._pending[target] = pending
        self._late.forget(target)  # (made with its column)
        self._inner.made(target, text, None if self._cat is None else self._cat.hidden, raw=self._raw_later)
        self._changed(target)
        self._patch_catalog(target, create.columns)
        if defer:
            self._deferred.add(pending, [target], self._versions, known)
        else:
            pending.fingerprint = self._fingerprint([target], self._table_oids())
        params = {"query": text}
        if create.untraced:
            params["missing_lineage"] = create.untraced
        self._nodes[target] = OpNode("sql", params, tuple(self._node(t) for t in create.traced))
        return True

    def _members_and_create(self, create, msql: str) -> pa.Table | None:
        """Read the members (or take the kept ones: :mod:`traceprop_frames.sql.member_reuse`), then run the
        statement; None where DuckDB refuses either."""
        reads, source = self._member_reads, create.tables[0] if len(create.tables) == 1 else None
        if not create.sql.startswith("CREATE OR REPLACE "):
            source = None  # run again below only where that is harmless: kept reads for OR REPLACE only
        c0 = reads.version()
        members = reads.reuse(msql, c0) if source is not None else None
        reused = members is not None
        keep = reused or (source is not None and reads.keepable(msql))
        for _ in range(2):  # a second time where something ran beside a statement that used kept members
            try:  # (self._con, not self._raw: that would read the oids left waiting)
                if members is None:
                    members = with_source(self._con.sql(msql).to_arrow_table(), sorted(create.traced))
                self._con.execute(create.sql)
            except duckdb.Error:
                reads.forget()
                return None
            if reads.ran(msql, source, create.target, members, c0, keep) or not reused:
                return members
            members, reused, keep = None, False, False
        return members

    def _fill_reads(self, rw, refs: JoinRefs | None) -> None:
        """Fill the pending tables eager query ``rw`` reads, except tables of members that ``refs`` (the
        join by rowid) reads only where it joins them."""
        for t in sorted(rw.traced):
            p = self._pending.get(t)
            if p is None:
                continue
            if isinstance(p, MemberTable) and refs is not None and t in refs.tables:
                if _table_count(rw, t) == refs.tables.count(t):
                    continue
            self._materialise(t)

    def _fill_members(self, p: MemberTable) -> None:
        """Write table ``p``'s lists from its members (in the user's transaction where one is open)."""
        view, q = "__tp_members_fill", _quote(p.name)
        with self._own_transaction() as own:  # the rowids read are the rowids updated
            rows = self._raw.sql(f"SELECT rowid, {_quote(p.key_columns[0])} FROM {q}").to_arrow_table()
            self._raw.register(view, fill_table(p.members, rows))  # a row without members raises
            try:
                updated = self._raw.execute(fill_sql(p.name, view, _quote)).fetchall()[0][0]
            finally:
                self._raw.unregister(view)
            if updated != rows.num_rows:
                raise SourceChangedError(
                    f"table {p.name!r} changed while its lineage was written ({updated} of {rows.num_rows} "
                    "rows): run the statement again"
                )
            if not own:  # the user's transaction: a ROLLBACK of it makes the table pending again
                self._txn_filled[p.name] = p

    def _own_begin(self) -> bool:
        """BEGIN a transaction of our own; False inside one opened with BEGIN through this connection or
        through ``con.raw`` (DuckDB aborts an open transaction when another BEGIN fails: it is not tried
        then)."""
        if self._in_txn:
            return False
        if not self._autocommit.known():
            txid = "SELECT txid_current()"  # the same id twice: inside a transaction (opened through con.raw)
            if self._raw.execute(txid).fetchall() == self._raw.execute(txid).fetchall():
                return False
            self._autocommit.mark()
        try:
            self._raw.begin()
        except duckdb.TransactionException:
            return False
        return True

    @contextlib.contextmanager
    def _own_transaction(self):
        """Run the block in a transaction of our own where :meth:`_own_begin` can open one (yields whether
        it did): committed when the block ends, rolled back when it raises. Inside the user's
        transaction the block just runs (it commits or rolls back with theirs)."""
        own = self._own_begin()
        try:
            yield own
            if own:
                self._raw.commit()
                self._autocommit.mark()
        except BaseException:
            if own:
                with contextlib.suppress(duckdb.Error):
                    self._raw.rollback()
            raise

    def _keyed_tables(self, tables) -> dict[str, list[str]]:
        """Pending tables among ``tables``: their key columns (a lazy result names their rows by them)."""
        return {t: self._pending[t].key_columns for t in tables if t in self._pending}

    def _materialise_reads(self, stmt: exp.Expression, members: bool = True) -> None:
        """Fill the lineage of the pending tables ``stmt``'s queries read (its write target aside; with
        ``members=False``, tables made by an eager grouping CTAS aside too)."""
        whole = isinstance(stmt, (exp.Query, exp.Values))
        for t in list(stmt.find_all(exp.Table)):
            name = t.name.lower()
            if name in self._pending and (whole or t.find_ancestor(exp.Query) is not None):
                if members or not isinstance(self._pending[name], MemberTable):
                    self._materialise(name)

    def _before_write(self, targets: list[str], replaced: bool) -> None:
        """Before ``targets`` change: fill the lineage of the pending tables that read them (and of a
        target itself that is pending and only changed, not ``replaced``)."""
        if not self._pending:
            return
        for target in targets:
            for p in list(self._pending.values()):
                if target in p.inputs and p.name in self._pending:
                    self._materialise(p.name)
            if target in self._pending and not replaced:
                self._materialise(target)

    def _forget_pending(self, table: str) -> None:
        """``table`` was replaced or dropped: its pending record goes."""
        self._late.forget(table.lower())
        if self._pending.pop(table.lower(), None) is not None and self._sources.persistent:
            delete_record(self._raw, table.lower())

    def _give_columns(self, names: list[str] | None = None, checked: bool = False) -> None:
        """Add the lineage column to the pending tables ``names`` (all where None) made without it, where
        the table of that name is the one made (its oid; ``checked``: the caller compared it). The oids
        left waiting are read first (the ALTER keeps the table's oid but moves DuckDB's catalog count)."""
        read = bool(self._deferred.records)  # then the settle reads the oids now: used below too
        self._settle_oids()
        todo = sorted(self._late.tables if names is None else set(names) & self._late.tables)
        now = {} if checked else (self._oids[1] if read and self._oids else self._read_oids())
        done = []
        for t in todo:
            p = self._pending.get(t)
            if checked or (
                p is not None
                and t in now
                and p.fingerprint.get(t, (None,))[0] == now[t]
                and (not p.verify or self._rows_hold(p))
            ):
                self._con.execute(add_sql(_quote(t)))
                done.append(t)
        self._late.given(done)

    def _rows_hold(self, p: PendingTable) -> bool:
        """Whether table ``p`` holds its query's rows (see :mod:`traceprop_frames.sql.ctas_rows`); once it
        did, its oid tells it apart again; once it did not, it is not checked again (``con.raw`` read in a
        loop does not run the query each time): it counts as changed until made again."""
        if p.verify and not p.differs:
            if holds_query_rows(self._con, _quote(p.name), p.query):
                p.verify = False
            else:
                p.differs = True
        return not p.verify

    def _check_rows(self, p: PendingTable) -> None:
        """Raise SourceChangedError where table ``p`` must be checked row by row and does not hold its
        query's rows."""
        if p.verify and not self._rows_hold(p):
            raise SourceChangedError(
                f"table {p.name!r} was made by a lazily captured CREATE TABLE AS whose lineage is computed when "
                "first needed; a statement ran on this database outside the traced connection before the "
                "state of its tables was recorded, and the table no longer holds the rows its query gives "
                "(replaced or changed there, or a query whose answer varies): its lineage cannot be computed "
                "exactly. Re-create the table through the traced connection (con.execute) and run other "
                "statements on this database after it, not between it and its first use"
            )

    def _run_write(self, stmt: exp.Expression, sql: str) -> None:
        """Run a DDL / DML statement; the pending tables it changes or reads from are resolved first, and
        the record of one it replaces or drops goes in the same transaction."""
        if isinstance(stmt, (exp.Transaction, exp.Commit, exp.Rollback)):
            if self._late and isinstance(stmt, exp.Transaction):
                self._give_columns()  # a ROLLBACK must not bring back a table without it (sql.late_column)
            self._raw.execute(sql)
            if isinstance(stmt, exp.Rollback) and self._in_txn:  # what it wrote or filled never happened
                self._pending.update(self._txn_filled)
                self._versions = self._txn_versions
            self._txn_versions = dict(self._versions)
            self._in_txn = isinstance(stmt, exp.Transaction)
            self._txn_filled = {}
            return
        targets = [t.lower() for t in _written(stmt)]
        replaced = isinstance(stmt, exp.Drop) or (isinstance(stmt, exp.Create) and stmt.args.get("replace"))
        self._before_write(targets, replaced=bool(replaced))
        gone = [t for t in targets if t in self._pending] if replaced else []
        if not gone:
            self._raw.execute(sql)
            return
        with self._own_transaction() as own:
            if (
                not own
            ):  # inside the user's transaction, which may roll back and bring the table back: fill it
                for t in gone:
                    self._materialise(t)
                gone = []
            self._raw.execute(sql)
            for t in gone:
                self._forget_pending(t)

    def _materialise(self, name: str) -> None:
        """Fill pending table ``name``'s lineage column (the eager rewrite of its query, all rows, once)."""
        p = self._pending.pop(name)
        try:
            if not self._check_pending(p):
                self._late.forget(name)
                if self._sources.persistent:
                    delete_record(self._raw, name)
                return
            if isinstance(p, MemberTable):
                return self._fill_members(p)
            self._check_rows(p)
            if name in self._late.tables:
                self._give_columns([name], checked=True)  # the table made, unchanged: its column now
            stmt = self._parse(p.query)[0]
            self._materialise_reads(stmt)  # a pending table it read: filled first
            rw = rewrite_query(stmt, self._catalog())
            sql = update_sql(p, rw.expression, _quote)
            with self._own_transaction() as own:
                updated = self._raw.execute(sql).fetchall()[0][0]
                n_rows = p.n_rows
                if n_rows < 0:
                    n_rows = self._raw.execute(f"SELECT count(*) FROM {_quote(name)}").fetchall()[0][0]
                if updated != n_rows:
                    raise SourceChangedError(
                        f"table {name!r} (made by a lazily captured CREATE TABLE AS) has {n_rows} rows but "
                        f"its query now gives lineage for {updated}: a table it read changed; re-create it"
                    )
                if self._sources.persistent:
                    delete_record(self._raw, name)
                if not own:  # the user's transaction: a ROLLBACK of it makes the table pending again
                    self._txn_filled[name] = p
        except SourceChangedError:
            self._pending[name] = p  # never resolvable: every later use of its lineage raises again
            raise
        except BaseException:
            self._pending[name] = p
            raise

    def _unfilled(self, name: str) -> bool:
        """True if table ``name`` exists with a lineage column of NULLs only (as a lazy CTAS makes it), or
        without one where a lazy CTAS made a table of that name without it (sql.late_column): a table
        replaced under that name outside the traced connection then counts as changed, never as untraced."""
        try:
            return self._raw.execute(f"SELECT count({LIN}) = 0 FROM {_quote(name)}").fetchall()[0][0]
        except duckdb.Error:
            return name in self._late.tables and name in self._read_oids()

    def _check_pending(self, p: PendingTable) -> bool:
        """Raise SourceChangedError where a table ``p`` read (or ``p`` itself) changed since it was made;
        False where ``p``'s record no longer describes the table of that name (another program replaced
        it: it has no lineage column, or a filled one)."""
        changed = []
        if p.fingerprint:  # made in this process: DuckDB oids and this connection's write counts
            now = self._fingerprint(list(p.fingerprint))
            if now[p.name][0] != p.fingerprint[p.name][0] and not self._unfilled(p.name):
                return False  # not the table made (gone, or replaced: a rolled-back CREATE, con.raw)
            changed = sorted(t for t, v in p.fingerprint.items() if now.get(t) != v)
        else:  # made by another process: row counts (a change through another program that keeps them is
            # not seen; through a traced connection, dependent tables are filled before any change)
            for t, n in [*p.inputs.items(), (p.name, p.n_rows)]:
                try:
                    now = self._raw.execute(f"SELECT count(*) FROM {_quote(t)}").fetchall()[0][0]
                except duckdb.Error:
                    now = None
                if now != n:
                    changed.append(t)
            if p.name not in changed and not self._unfilled(p.name):
                return False
        if changed:
            unread = any(v[0] is UNREAD for v in p.fingerprint.values())
            raise SourceChangedError(
                f"table {p.name!r} was made by a lazily captured CREATE TABLE AS whose lineage is computed when "
                f"first needed, and table(s) {changed} changed since: it can no longer be computed exactly. "
                + (_UNREAD_NOTE if unread else "")
                + "Re-create the table (or use tpf.connect(capture='eager'), which stores lineage when the "
                "table is made)"
            )
        return True

    def _read_oids(self) -> dict[str, int]:
        """DuckDB table oids by name now: read, or the last read's while nothing could change them
        (:mod:`traceprop_frames.sql.oid_reads`)."""
        return self._oid_reads.read(self._query_oids)

    def _query_oids(self) -> dict[str, int]:
        rows = self._con.execute("SELECT table_name, table_oid FROM duckdb_tables()").fetchall()
        return {name.lower(): oid for name, oid in rows}

    def _settle_oids(self, oids: dict[str, int] | None = None) -> None:
        """The oids of the lazy CTAS records that wait for them (see :mod:`traceprop_frames.sql.deferred_oids`):
        ``oids`` (read now) or a read (kept as :meth:`_table_oids` keeps it)."""
        if oids is None and self._deferred.records:
            oids = self._read_oids()
            self._oids = (self._cat, oids)
        for p in self._deferred.settle(self._read_oids, oids, lambda r: not isinstance(r, MemberTable)):
            p.verify = True  # its oid read after a statement outside: its rows are checked (sql.ctas_rows)

    def _table_oids(self) -> dict[str, int]:
        """DuckDB table oids by name, cached with the catalog (both refresh after DDL through ``sql``) while
        DuckDB's catalog count holds: a table replaced through ``con.raw`` or a cursor keeps the catalog
        (same columns) but not its oid, and a new result must record the new one."""
        if (
            self._oids is None
            or self._oids[0] is not self._cat
            or self._deferred.records
            or self._oid_reads.stale()
        ):
            oids = self._read_oids()
            self._settle_oids(oids)
            self._oids = (self._cat, oids)
        return self._oids[1]

    def _fingerprint(self, tables: list[str], oids: dict[str, int] | None = None) -> dict[str, tuple]:
        """Per table: (DuckDB table oid or None for a view, statements that changed it here)."""
        if oids is None:  # now, not cached: a table replaced through con.raw gets a new oid
            oids = self._read_oids()
            self._settle_oids(oids)
        return {t: (oids.get(t), self._versions.get(t, 0)) for t in tables}

    def _changed(self, tables: str | list[str]) -> None:
        for table in [tables] if isinstance(tables, str) else tables:
            self._versions[table.lower()] = self._versions.get(table.lower(), 0) + 1

    def _node(self, table: str) -> OpNode:
        """The op behind a traced table (a table from an earlier session gets a placeholder op)."""
        node = self._nodes.get(table)
        if node is None:
            node = self._nodes[table] = OpNode("duckdb_table", {"table": table})
        return node

    def _explain_failure(self, stmt: exp.Expression, text: str, err: duckdb.Error) -> None:
        """If the original statement is valid, the rewrite is at fault: raise UnsupportedSQLError."""
        if not isinstance(stmt, exp.Query):
            return
        try:
            self._raw.execute("EXPLAIN " + text)
        except duckdb.Error:
            return  # the user's statement itself fails: surface DuckDB's error unchanged
        raise UnsupportedSQLError(
            f"the lineage-carrying rewrite of this query failed in DuckDB ({err}); the query itself is "
            "valid. See con.rewrite(sql) and report it; con.raw runs it without lineage."
        ) from err

    def close(self) -> None:
        """Close the connection; the lineage of lazily captured results still alive is resolved first."""
        if not self._closed:
            for resolver in list(self._lazy):
                try:
                    resolver.resolve_all()
                except TracepropError as e:
                    resolver._closed_error = str(e)
            self._closed = True
        self._raw.close()

    def __enter__(self) -> TracedConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _concat_csr(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Row i = the concatenation of row i of every part (vectorised, no loop over rows)."""
    if len(parts) > 1:  # parts without any id (a NULL lineage column) add nothing
        parts = [p for p in parts if len(p[1])] or parts[:1]
    if len(parts) == 1:
        return parts[0]
    lengths = [np.diff(off) for off, _ in parts]
    total = np.sum(lengths, axis=0)
    out_off = np.zeros(len(total) + 1, dtype=np.int64)
    np.cumsum(total, out=out_off[1:])
    out = np.empty(int(out_off[-1]), dtype=np.int64)
    start = out_off[:-1].copy()
    for (off, ids), ln in zip(parts, lengths):
        if ids.size:
            # element k of row r goes to start[r] + (k - off[r])
            out[np.arange(ids.size, dtype=np.int64) + np.repeat(start - off[:-1], ln)] = ids
        start += ln
    return out_off, out


def _frame(
    raw, table: pa.Table, n_data: int, node, sources: SourceMap, blocks=(), frames=(), extra=(), err=None
) -> pd.DataFrame:
    """The frame of an eager result; ``err``: its rows' lineage raises it when asked (sql.null_rids)."""
    n_lin = table.num_columns - 3 * len(frames)
    if err is not None:
        lin = RowLineage.deferred(table.num_rows, null_rids.raising(err), (), node, has_context=False)
    else:
        parts = [lineage_from_arrow(table.column(i)) for i in range(n_data, n_lin)] + list(extra)
        lin = resolve_markers(*_concat_csr(parts), list(blocks), sources.to_process, node)
    if frames and err is None:
        bounds = [[table.column(n_lin + 3 * j + c) for c in range(3)] for j in range(len(frames))]
        lin = with_frames(lin, bounds, list(frames), lineage_from_arrow, list(blocks), sources.to_process)
    data = table.select(list(range(n_data)))
    df = data_frame(raw, data) if n_data else pd.DataFrame(index=range(table.num_rows))
    return attach(df, lin)


def _bind_parameters(stmt: exp.Expression, parameters) -> exp.Expression:
    """Replace ``?`` / ``$1`` / ``$name`` placeholders by literals of the given values."""
    anonymous = 0
    for ph in list(stmt.find_all(exp.Placeholder, bfs=False)):
        key = ph.this
        if isinstance(parameters, dict):
            if key is None or str(key) not in parameters:
                raise UnsupportedSQLError(f"no value for parameter ${key} in the parameters dict")
            value = parameters[str(key)]
        else:
            if key is None:
                anonymous += 1
                i = anonymous
            else:
                i = int(str(key))
            if not 1 <= i <= len(parameters):
                raise UnsupportedSQLError(f"parameter {i} of {len(parameters)} given is missing")
            value = parameters[i - 1]
        ph.replace(exp.convert(value))
    return stmt


def _names_survive(stmt: exp.Expression) -> bool:
    """True if sqlglot's regenerated SQL names every output column as the original does."""
    while isinstance(stmt, (exp.SetOperation, exp.Subquery)):
        stmt = stmt.this
    if not isinstance(stmt, exp.Select):
        return False
    # a star may expand a subquery's columns, which DuckDB names from their SQL text (not sqlglot's)
    return all(isinstance(e, (exp.Alias, exp.Column)) and not e.find(exp.Star) for e in stmt.expressions)


def _written(stmt: exp.Expression) -> list[str]:
    """The tables a DDL / DML statement creates, changes or drops (``COPY`` counts either way)."""
    kinds = (exp.Create, exp.Insert, exp.Update, exp.Delete, exp.Drop, exp.Alter, exp.Copy, exp.Merge)
    if isinstance(stmt, exp.TruncateTable):
        targets = list(stmt.expressions)
    elif isinstance(stmt, exp.Drop) and stmt.args.get("tables"):
        targets = list(stmt.args["tables"])
    else:
        targets = [stmt.this] if isinstance(stmt, kinds) else []
    targets = [t.this if isinstance(t, exp.Schema) else t for t in targets]
    return [t.name for t in targets if isinstance(t, exp.Table)]


def _target(stmt: exp.Expression) -> str | None:
    if isinstance(stmt, (exp.Create, exp.Insert)):
        t = stmt.this.this if isinstance(stmt.this, exp.Schema) else stmt.this
        return t.name.lower() if isinstance(t, exp.Table) else None
    return None


def connect(database: str = ":memory:", capture: str = "lazy", **kwargs) -> TracedConnection:
    """A traced DuckDB connection (``tpf.connect()``); ``capture`` is ``"lazy"`` (default) or ``"eager"``."""
    return TracedConnection(database, capture=capture, **kwargs)
