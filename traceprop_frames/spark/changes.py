"""What a lazily captured Spark query read, checked before each backward job.

A lazy result (:mod:`traceprop_frames.spark.lazy`) answers a lineage question by running the eager
rewrite of its query *when asked*. If what the query read changed in between, that job would read other
rows and could answer for them. Two kinds of change are checked, and either raises
:class:`~traceprop_frames.errors.SourceChangedError` (never a different answer):

- **Views.** The temporary views the query names are recorded when it is planned (Spark's own view
  objects: one cheap catalog call each, no analysis; on Spark Connect each view's DataFrame, analysed
  when the query is planned and compared with ``sameSemantics``), and with them every temporary view a SQL view
  refers to (``CREATE TEMP VIEW t AS SELECT ... FROM src`` reads ``src`` again each time it is used).
  A view replaced since (``createOrReplaceTempView``, ``CREATE OR REPLACE``, ``con.register``,
  ``con.read_parquet`` under the same name), created where there was none, or dropped, is a change.
  Replacing a view by an equal one (the same DataFrame again) still counts: Spark cannot tell cheaply.
- **Files.** Every source file with lineage is checked against the sha256 taken when it was loaded
  (re-hashed only when its size or modification time moved); every other file the result reads (an
  untraced view's) against its size and modification time when the result was pinned.

Not checked: catalog tables (``saveAsTable``) rewritten in place, and files of a view changed between the
query and the first question when they carry no lineage (the pinned rows then come from the new files,
and so does their lineage).
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame, SparkSession
from sqlglot import exp

from traceprop_frames.errors import SourceChangedError
from traceprop_frames.lineage import REGISTRY, OpNode

_HINT = (
    "rerun the query to ask about the data as it is now, or capture with capture='eager' and keep the "
    "result (to_pandas / write_parquet) before changing what it reads"
)


def read_names(stmt: exp.Expression) -> list[str]:
    """The relations ``stmt`` names that are not its own CTEs (lower case, as Spark's catalog keys)."""
    ctes = {c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)}
    names = {".".join(p.name for p in t.parts).lower() for t in stmt.find_all(exp.Table)}
    return sorted(n for n in names if n and n not in ctes)


class ReadState:
    """The views (and, once pinned, the files) a lazily captured query read; :meth:`check` raises if
    any changed."""

    def __init__(self, spark: SparkSession, names) -> None:
        self._spark = spark
        jss = getattr(spark, "_jsparkSession", None)  # (None on Spark Connect)
        self._catalog = jss.sessionState().catalog() if jss is not None else None
        self.views: dict[str, object] = {}  # name -> Spark's TemporaryViewRelation, or None (no view)
        if self._catalog is None:  # Spark Connect: the views' DataFrames, compared by sameSemantics
            self.views = {n: _table(spark, n) for n in names}
        else:
            self._record(names)
        self.files: dict[str, tuple[int, int] | None] = {}  # file URI -> (size, mtime) when pinned

    def _record(self, names) -> None:
        todo = list(names)
        while todo:
            name = todo.pop()
            if name in self.views or "." in name:  # (a catalog table: see the module's note)
                continue
            opt = self._catalog.getRawTempView(name)
            rel = opt.get() if opt.isDefined() else None
            self.views[name] = rel
            if rel is not None:  # a SQL view reads the temporary views it names again on each use
                todo.extend(_referred(rel.tableMeta().viewReferredTempViewNames().toString()))

    def pin(self, frame: DataFrame) -> None:
        """Record the files ``frame`` (the result about to be pinned) reads: their size and mtime."""
        self.files = {f: _stat(self._spark, f) for f in frame.inputFiles()}

    def check(self, node: OpNode | None) -> None:
        """Raise :class:`SourceChangedError` if a view or file the query read changed."""
        for name, old in self.views.items():
            if self._catalog is None:
                now = _table(self._spark, name)
                same = now.sameSemantics(old) if old is not None and now is not None else old is now
            else:
                opt = self._catalog.getRawTempView(name)
                now = opt.get() if opt.isDefined() else None
                same = (old is None) == (now is None) and (old is None or old.equals(now))
            if not same:
                what = "dropped" if now is None else ("created" if old is None else "replaced")
                raise SourceChangedError(
                    f"view {name!r}, which this lazily captured result read, was {what} after the query "
                    f"ran: its lineage would come from other rows. To get lineage, {_HINT}"
                )
        for src in _sources(node):
            if not src.check():
                raise SourceChangedError(
                    f"source file {src.path!r} changed (or is gone) since it was loaded: the rows of this "
                    f"lazily captured result would get lineage from other records. To get lineage, {_HINT}"
                )
        for f, st in self.files.items():
            if st is not None and _stat(self._spark, f) != st and not _unchanged_source(f):
                raise SourceChangedError(
                    f"file {f!r}, which this lazily captured result read, changed after its rows were "
                    f"pinned. To get lineage, {_HINT}"
                )


def _table(spark: SparkSession, name: str) -> DataFrame | None:
    """``spark.table(name)`` (analysed now), or None where there is no such relation."""
    try:
        return spark.table(name)
    except Exception:  # AnalysisException
        return None


def _referred(text: str) -> list[str]:
    """View names out of Spark's printed ``Seq[Seq[String]]`` (``List(List(src), List(db, v))``)."""
    return [".".join(p.strip() for p in m.split(",")).lower() for m in re.findall(r"\(([^()]*)\)", text) if m]


def _sources(node: OpNode | None):
    """The registered file sources (with lineage) under ``node``."""
    if node is None:
        return
    for n in node.topo():
        if n.op in ("read_parquet", "read_csv") and "sha256" in n.params:
            for src in REGISTRY.find(n.params["path"]):
                if src.sha256 == n.params["sha256"]:
                    yield src
                    break


def _local(uri: str) -> str | None:
    u = urlparse(uri)
    return unquote(u.path) if u.scheme in ("", "file") else None


def _stat(spark: SparkSession, uri: str) -> tuple[int, int] | None:
    """(size, modification time) of ``uri``: ``os.stat`` for local files, Hadoop's FileSystem otherwise;
    None where it is gone."""
    path = _local(uri)
    try:
        if path is not None:
            st = os.stat(path)
            return st.st_size, st.st_mtime_ns
        jvm = spark._jvm
        p = jvm.org.apache.hadoop.fs.Path(uri)
        st = p.getFileSystem(spark._jsc.hadoopConfiguration()).getFileStatus(p)
        return st.getLen(), st.getModificationTime()
    except Exception:  # FileNotFoundError, or the JVM's
        return None


def _unchanged_source(uri: str) -> bool:
    """Whether ``uri`` is a registered source whose bytes still hash to what was loaded (a ``touch``)."""
    path = _local(uri)
    return path is not None and any(s.check() for s in REGISTRY.find(path))
