"""Row-level lineage on Apache Spark: ``tpf.spark.connect(spark_session)`` (the ``[spark]`` extra).

The same rule set as :mod:`traceprop_frames.sql` (sqlglot), printed as Spark SQL by
:mod:`traceprop_frames.spark.dialect`; sources and results stay in Spark
(:class:`~traceprop_frames.spark.result.SparkTraced`), and only answers come back to the driver.
pyspark is imported when a connection is made, so this package imports without it.
"""

from __future__ import annotations

from traceprop_frames.errors import MissingDependencyError


def connect(spark, capture: str = "lazy"):
    """A traced connection on ``spark`` (a ``pyspark.sql.SparkSession``); see :class:`SparkConnection`.

    ``capture="lazy"`` (the default) keeps one cheap key per result row and answers lineage by a
    backward Spark job; ``capture="eager"`` carries every row's lineage column with the query.
    """
    try:
        import pyspark  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(
            f"tpf.spark needs pyspark>=4 ({e}); install it with: pip install 'traceprop-frames[spark]'"
        ) from e
    from traceprop_frames.spark.connection import SparkConnection

    return SparkConnection(spark, capture)


def __getattr__(name: str):
    if name in ("SparkConnection", "SparkTraced"):
        from traceprop_frames.spark import connection

        return getattr(connection, name)
    raise AttributeError(name)


__all__ = ["SparkConnection", "SparkTraced", "connect"]
