"""SparkConnection: ``tpf.spark.connect(spark)``, the traced connection's surface on a SparkSession.

Sources are temporary views with a hidden ``__tp_rid`` (see :mod:`traceprop_frames.spark.sources`);
registered traced frames and results carry ``__tp_lin``. Statements are parsed as Spark SQL, rewritten by
the rule set of :mod:`traceprop_frames.sql.rewrite` and printed by :func:`~traceprop_frames.spark.dialect.
to_spark`; a query returns a :class:`~traceprop_frames.spark.result.SparkTraced` (the Spark DataFrame plus
its lineage column), so nothing is collected to the driver until asked.
"""

from __future__ import annotations

from functools import partial

import pandas as pd
import pyarrow as pa
import sqlglot
from pyspark.logger import PySparkLogger
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from sqlglot import exp

from traceprop_frames.errors import UnsupportedOperationError, UnsupportedSQLError
from traceprop_frames.frames import has_lineage, resolve
from traceprop_frames.lineage import OpNode
from traceprop_frames.lineage.persist import to_arrow
from traceprop_frames.spark import sources
from traceprop_frames.spark.changes import ReadState, read_names
from traceprop_frames.spark.dialect import AGGREGATES, to_spark
from traceprop_frames.spark.lazy import LazySparkTraced
from traceprop_frames.spark.result import SparkTraced
from traceprop_frames.spark.shared import SharedSets
from traceprop_frames.spark.witness import cte_witness, witness_ids
from traceprop_frames.sql.exists_lateral import refuse_one_row_exists
from traceprop_frames.sql.lazy import add_keys, shape_of
from traceprop_frames.sql.reserved_names import HIDDEN, refuse_reserved, refuse_reserved_identifiers
from traceprop_frames.sql.rewrite import LIN, RID, Catalog, rewrite_query


def _target(stmt: exp.Expression) -> str | None:
    t = stmt.this.this if isinstance(stmt.this, exp.Schema) else stmt.this
    return t.name.lower() if isinstance(t, exp.Table) else None


class SparkConnection:
    """Row lineage through Spark SQL on ``spark`` (a SparkSession, local or a cluster's).

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        The session queries run on; views are created in it (temporary views, session scoped).
    capture : {"eager", "lazy"}
        ``"lazy"`` (default): the query carries one cheap key per row and lineage questions run a
        backward job (see :mod:`traceprop_frames.spark.lazy`); TPC-H SF 1 costs a median ~1.02x plain
        Spark in wall clock against eager's ~1.42x. ``"eager"``: the query carries its lineage column
        (no backward job per question: for asking about most rows, or saving the lineage at once).

    Examples
    --------
    >>> con = tpf.spark.connect(spark)  # doctest: +SKIP
    >>> res = con.read_parquet("orders.parquet", name="orders").sql(
    ...     "SELECT o_custkey, count(*) AS n FROM orders GROUP BY o_custkey")  # doctest: +SKIP
    >>> res.tp.sources(rows=[0])  # a Spark job; only the answer comes back  # doctest: +SKIP
    {'orders.parquet': array([17, 3084, ...])}
    """

    def __init__(self, spark: SparkSession, capture: str = "lazy") -> None:
        if capture not in ("eager", "lazy"):
            raise UnsupportedOperationError(f"capture={capture!r}: use capture='eager' or capture='lazy'")
        self.spark = spark
        self.capture = capture
        self._hidden: dict[str, str] = {}  # view name (lower case) -> RID | LIN
        self._nodes: dict[str, OpNode] = {}
        self._plain: dict[str, str] = {}  # Parquet source view -> a view of its files without __tp_rid
        self._owners: dict[str, SharedSets] = {}  # view -> the shared sets its rows may carry markers of

    # ------------------------------------------------------------------ sources
    def read_parquet(self, path, name: str) -> SparkConnection:
        """View ``name`` over the Parquet file (or folder of files) ``path``; rows keep file row numbers."""
        df, srcs = sources.read_parquet(self.spark, path)
        self._source(name, df, srcs, "read_parquet")
        plain = f"__tp_plain_{name.lower()}"
        sources.plain_parquet(self.spark, path).createOrReplaceTempView(plain)
        self._plain[name.lower()] = plain
        return self

    def read_csv(self, path, name: str, **options) -> SparkConnection:
        """View ``name`` over the CSV file(s) ``path``; row ``i`` is ``pd.read_csv``'s row ``i``.

        ``options`` are Spark CSV options (defaults ``header=True, inferSchema=True, escape='"'``).
        """
        df, srcs = sources.read_csv(self.spark, path, **options)
        return self._source(name, df, srcs, "read_csv")

    def _source(self, name: str, df: DataFrame, srcs, op: str) -> SparkConnection:
        df.createOrReplaceTempView(name)
        nodes = [OpNode(op, {"path": s.path, "sha256": s.sha256, "table": name}) for s in srcs]
        self._set(name, RID, nodes[0] if len(nodes) == 1 else OpNode("union", {"table": name}, tuple(nodes)))
        return self

    def _set(self, name: str, kind: str | None, node: OpNode | None, owner: SharedSets | None = None) -> None:
        self._plain.pop(name.lower(), None)
        if owner is None:
            self._owners.pop(name.lower(), None)
        else:
            self._owners[name.lower()] = owner
        if kind is None:
            self._hidden.pop(name.lower(), None)
            self._nodes.pop(name.lower(), None)
        else:
            self._hidden[name.lower()] = kind
            self._nodes[name.lower()] = node

    def register(self, name: str, df) -> SparkConnection:
        """View ``name`` over a traced pandas frame, a :class:`SparkTraced` result or a plain frame.

        A traced pandas frame goes to Spark through Arrow with its lineage as an ``array<bigint>``
        column; a :class:`SparkTraced` keeps its lineage column (a lazily captured one is pinned and
        gets its rows' lineage from its backward job); anything else has no lineage. A frame with a
        column named ``__tp_rid``, ``__tp_lin`` or ``__tp_...`` is refused (as ``tpf.connect()`` does).
        """
        if isinstance(df, LazySparkTraced):  # its frame holds keys: the pinned rows with their lineage
            cols = [F.col(f"`{c}`") for c in df.df.columns]
            df._with_lineage(df.pinned()).select(*cols, F.col(df.kind)).createOrReplaceTempView(name)
            self._set(name, df.kind, df.node, df._owner)
        elif isinstance(df, SparkTraced):
            df.frame.createOrReplaceTempView(name)
            self._set(name, df.kind, df.node, df._owner)
        elif isinstance(df, pd.DataFrame) and has_lineage(df):
            refuse_reserved(df.columns, HIDDEN, f"con.register({name!r}, df)")
            lin = resolve(df)
            data = df.drop(columns=["tp_lid"], errors="ignore")
            data.attrs = {}
            table = pa.Table.from_pandas(data, preserve_index=False).append_column(LIN, to_arrow(lin))
            self.spark.createDataFrame(table).createOrReplaceTempView(name)
            self._set(name, LIN, lin.node)
        else:
            sdf = df if isinstance(df, DataFrame) else self.spark.createDataFrame(df)
            refuse_reserved(sdf.columns, HIDDEN, f"con.register({name!r}, df)")
            sdf.createOrReplaceTempView(name)
            self._set(name, None, None)
        return self

    # ------------------------------------------------------------------ statements
    def _catalog(self) -> Catalog:
        return Catalog(dict(self._hidden), AGGREGATES)

    def _parse(self, query: str) -> list[exp.Expression]:
        try:
            stmts = [s for s in sqlglot.parse(query, read="spark") if s is not None]
        except sqlglot.errors.SqlglotError as e:
            raise UnsupportedSQLError(f"the SQL rewriter (sqlglot) cannot parse this statement: {e}") from e
        for s in stmts:
            refuse_reserved_identifiers(s)  # (a user's `7 AS __tp_rid` would be read as row ids)
            refuse_one_row_exists(s)
        return stmts

    def _new_owner(self, stmt: exp.Expression) -> SharedSets:
        """A new owner for the shared sets of ``stmt``, keeping those of the views it reads alive."""
        names = {t.name.lower() for t in stmt.find_all(exp.Table)}
        return SharedSets(self._owners[n] for n in names if n in self._owners)

    def _plan(self, stmt: exp.Expression, owner: SharedSets | None = None):
        """(Spark SQL, kind of the hidden column, RewriteResult or None, target view or None); the
        query's shared sets go to ``owner`` (a throwaway one if None)."""
        cat = self._catalog()
        if isinstance(stmt, exp.Query):
            rw = self._rewrite(stmt, owner if owner is not None else self._new_owner(stmt))
            return to_spark(rw.expression, self._plain, self._standalone), rw.kind, rw, None
        if isinstance(stmt, exp.Create) and isinstance(stmt.expression, exp.Query):
            rw = rewrite_query(stmt.expression, cat)
            out = stmt.copy()
            out.set("expression", rw.expression)
            if isinstance(out.this, exp.Schema) and out.this.expressions:
                out.this.append("expressions", exp.to_identifier(rw.kind))
            return to_spark(out, self._plain, self._standalone), rw.kind, rw, _target(stmt)
        if isinstance(stmt, exp.Insert):
            target = _target(stmt)
            if target in self._hidden:
                raise UnsupportedSQLError(
                    f"INSERT INTO {target}: it carries lineage; build it with CREATE ... AS SELECT ... "
                    "UNION ALL SELECT ... instead"
                )
        out = stmt.copy()
        for q in list(out.find_all(exp.Query)):
            if q.find_ancestor(exp.Query) is None and q.parent is not None:
                q.replace(rewrite_query(q, cat, trace=False).expression)
        return to_spark(out), None, None, None

    def _rewrite(self, stmt: exp.Expression, owner: SharedSets, over_ctes: bool = True):
        """``rewrite_query`` of a query with its uncorrelated scalar subqueries' rows as shared sets of
        ``owner``. A witness over the query's CTEs gets its set once the rewrite is done (the CTEs'
        rewritten trees are then known); if one does not run on its own, the query is rewritten again
        with such witnesses copied into each row (``over_ctes=False``)."""
        pending: list = []
        witness = partial(self._shared_witness, owner, pending if over_ctes else None)
        rw = rewrite_query(stmt, self._catalog(), constant=witness)
        for marker, wq, kind, with_ in pending:
            frame = cte_witness(rw.expression, wq, kind, with_, self._side_frame)
            if frame is None:
                for m, *_ in pending:
                    owner.forget(m)
                return self._rewrite(stmt, owner, over_ctes=False)
            owner.sides[marker] = frame
        return rw

    def _side_frame(self, side: exp.Select) -> DataFrame | None:
        """The shared set's DataFrame for ``side`` (a rewritten query of ids), or None where it does not
        analyse on its own (it is correlated)."""
        return self._analysed(to_spark(side, self._plain, self._standalone))

    def _shared_witness(
        self, owner: SharedSets, pending: list | None, wq: exp.Expression, kind: str, value, with_: str
    ) -> exp.Expression | None:
        """The rewriter's ``constant`` callback (``owner`` and ``pending`` bound): an uncorrelated scalar
        subquery's (or joined one-row aggregate's) rows as one marker id per row, its set a DataFrame run
        once when asked and owned by ``owner`` (see :mod:`traceprop_frames.spark.shared`). A witness over
        the query's CTEs (``with_``: their DuckDB text) is listed in ``pending`` and gets its set after the
        rewrite (see :meth:`_rewrite`). None (the rows copied into each row, as before) for an ``IN``
        list, where ``pending`` is None for a witness over CTEs, or where the witness does not run on its
        own (it is correlated)."""
        if value is not None:
            return None
        if with_:
            if pending is None:
                return None
            marker = owner.new_marker(None)
            pending.append((marker, wq.copy(), kind, with_))
            return exp.cast(exp.Literal.number(marker), "BIGINT")
        frame = self._side_frame(witness_ids(wq, kind))
        if frame is None:  # correlated (names the outer query) or not valid alone: rows copied per row
            return None
        return exp.cast(exp.Literal.number(owner.new_marker(frame)), "BIGINT")

    def _standalone(self, sql: str) -> bool:
        """Whether ``sql`` (a subquery) is valid on its own: Spark analyses it; nothing runs."""
        return self._analysed(sql) is not None

    def _analysed(self, sql: str) -> DataFrame | None:
        """``spark.sql(sql)`` (analysed, not run), or None where it does not analyse on its own (a
        correlated subquery names the outer query). pyspark's query-context logger, which logs every
        failed analysis as an ERROR with its stack, is muted for this probe only."""
        log = PySparkLogger.getLogger("SQLQueryContextLogger")  # (pyspark's class: it logs with extras)
        was, log.disabled = log.disabled, True
        try:
            return self.spark.sql(sql)
        except Exception:  # AnalysisException / ParseException
            return None
        finally:
            log.disabled = was

    def rewrite(self, query: str) -> str:
        """The lineage-carrying Spark SQL that :meth:`sql` runs for ``query`` (statements joined by ``;``)."""
        return ";\n".join(self._plan(s)[0] for s in self._parse(query))

    def execute(self, query: str) -> SparkTraced | None:
        """Run one or more Spark SQL statements; returns the last one's traced result if it is a query.

        A query returns a :class:`SparkTraced` at once (Spark plans it; nothing runs until an action).
        ``CREATE [TEMP] VIEW / TABLE ... AS SELECT`` keeps the lineage column in the new relation.
        Constructs the rewriter cannot carry lineage through raise :class:`UnsupportedSQLError`.
        """
        result = None
        for stmt in self._parse(query):
            lazy = self._lazy_query(stmt) if self.capture == "lazy" and isinstance(stmt, exp.Query) else None
            if lazy is not None:
                result = lazy
                continue
            owner = self._new_owner(stmt)
            sql, kind, rw, target = self._plan(stmt, owner)
            node = self._node(stmt, rw) if rw is not None else None
            lazy = None
            if self.capture == "lazy" and kind is not None and not isinstance(stmt, exp.Query):
                lazy = self._lazy(stmt, kind, node, self._new_owner(stmt))
            if lazy is not None:
                result = lazy
                continue
            df = self._run(sql, stmt)
            if isinstance(stmt, exp.Query):
                result = SparkTraced(df, kind, node, owner)
            else:
                result = None
                if target is not None:
                    self._set(target, kind, node, owner if kind is not None else None)
                elif isinstance(stmt, exp.Drop):
                    self._set(stmt.this.name, None, None)
        return result

    sql = execute

    def _node(self, stmt: exp.Expression, rw) -> OpNode:
        """The op node of a statement rewritten as ``rw``: the nodes of the tables it read as parents."""
        parents = tuple(self._nodes.get(t) or OpNode("spark_table", {"table": t}) for t in sorted(rw.traced))
        params = {"query": stmt.sql(dialect="spark")}
        if rw.untraced:
            params["missing_lineage"] = sorted(rw.untraced)
        return OpNode("spark_sql", params, parents)

    def _lazy_query(self, stmt: exp.Query) -> LazySparkTraced | None:
        """A query's lazy result, planned without the eager rewrite (whose shared sets cost a Spark
        analysis per scalar subquery: the backward job plans them when a question is asked); None where
        it reads no traced table or its shape is captured eagerly."""
        rw = rewrite_query(stmt, self._catalog())
        if rw.kind is None:
            return None
        return self._lazy(stmt, rw.kind, self._node(stmt, rw), self._new_owner(stmt))

    def _lazy(
        self, stmt: exp.Expression, kind: str, node: OpNode, owner: SharedSets
    ) -> LazySparkTraced | None:
        """The query with one key per row (None where its shape is captured eagerly); the backward
        query's shared sets go to ``owner``, which the result keeps."""
        cat = self._catalog()
        shape = shape_of(stmt, cat, set())  # temporary views have no rowid
        if shape is None:
            return None
        names = read_names(stmt)
        state = ReadState(self.spark, names + [self._plain[n] for n in names if n in self._plain])
        capture = rewrite_query(stmt, cat, trace=False).expression
        n_keys = add_keys(capture, shape)
        frame = self._run(to_spark(capture, self._plain), stmt)
        keys = [f"__tp_k{i}" for i in range(n_keys)]
        text = stmt.sql(dialect="spark")

        def backward() -> DataFrame:
            again = self._parse(text)[0]
            owner.adopt(self._new_owner(again).parents)  # (the views it reads now)
            sel = self._rewrite(again, owner).expression
            for k in ("order", "limit", "offset"):
                sel.set(k, None)
            add_keys(sel, shape)
            return self.spark.sql(to_spark(sel, self._plain, self._standalone))

        return LazySparkTraced(frame, keys, backward, kind, node, owner, state)

    def _run(self, sql: str, stmt: exp.Expression) -> DataFrame:
        """Run the rewritten SQL; if only the rewrite fails in Spark, say so (the user's query is valid)."""
        try:
            return self.spark.sql(sql)
        except Exception as err:  # pyspark raises AnalysisException / ParseException / Py4J errors
            if not isinstance(stmt, exp.Query):
                raise
            try:
                self.spark.sql(stmt.sql(dialect="spark"))  # analyses the original, runs nothing
            except Exception:
                raise err from None  # the query itself fails: Spark's own error, unchanged
            raise UnsupportedSQLError(
                f"the lineage-carrying rewrite of this query failed in Spark ({str(err)[:300]}); the query "
                "itself is valid. See con.rewrite(sql) and report it; con.spark.sql runs it without lineage."
            ) from err


def connect(spark: SparkSession, capture: str = "lazy") -> SparkConnection:
    """A traced connection on a SparkSession (``tpf.spark.connect(spark, capture="lazy" | "eager")``)."""
    return SparkConnection(spark, capture)
