"""traceprop_frames: which source-file rows drove this prediction, and proof they are gone after erasure.

Public API (``import traceprop_frames as tpf``): ``read_csv``, ``read_parquet``, ``read_traced``, ``track``,
``concat`` (traced DataFrames); ``tensor``, ``tensor_from_csv``, ``tensor_from_parquet``, ``op_group``
(ProvenanceTensors; ``load_csv``, ``load_parquet`` and ``step`` are their earlier names); ``connect`` (DuckDB
SQL), ``spark.connect`` (Spark SQL), ``verify_certificate``, ``set_lineage_emitter`` (OpenLineage) and the
``df.tp`` accessor; seeded data sets in :mod:`traceprop_frames.datasets`; estimators in :mod:`traceprop_frames.estimators`,
attribution in :mod:`traceprop_frames.attribution`, erasure in :mod:`traceprop_frames.unlearn`; exceptions
live in :mod:`traceprop_frames.errors`.
"""

import os as _os

from traceprop_frames import errors, spark
from traceprop_frames._version import __version__
from traceprop_frames.frames import concat, read_csv, read_parquet, read_traced, track
from traceprop_frames.lineage import RowLineage, SourceRow
from traceprop_frames.tensor import (
    ProvenanceTensor,
    load_csv,
    load_parquet,
    op_group,
    step,
    tensor,
    tensor_from_csv,
    tensor_from_parquet,
)


def connect(database: str = ":memory:", capture: str = "lazy", **kwargs):
    """A traced DuckDB connection (see :mod:`traceprop_frames.sql`): query results are traced frames.

    Parameters
    ----------
    database : str
        ``":memory:"`` (default) or a DuckDB database file.
    capture : {"lazy", "eager"}
        ``"lazy"`` (default): a query keeps one cheap key per result row and computes a row's lineage by
        a backward query when it is asked for (see :mod:`traceprop_frames.sql.lazy`); a table changed
        since the query ran makes that raise ``SourceChangedError``. ``"eager"``: lineage is computed
        with every query and outlives changes to its tables. The answers are the same.
    **kwargs
        Passed to :func:`duckdb.connect`.

    Returns
    -------
    traceprop_frames.sql.TracedConnection

    Examples
    --------
    >>> import pandas as pd
    >>> import traceprop_frames as tpf
    >>> con = tpf.connect()
    >>> _ = con.register("t", tpf.track(pd.DataFrame({"k": [1, 1, 2], "v": [3, 4, 5]}), "t"))
    >>> out = con.sql("SELECT k, sum(v) AS s FROM t GROUP BY k ORDER BY k")
    >>> out.tp.sources(rows=[0])["t"].tolist()
    [0, 1]
    """
    from traceprop_frames.sql import connect as _connect

    return _connect(database, capture=capture, **kwargs)


def verify_certificate(path, public_key):
    """Check a signed erasure certificate file against the issuer's public key; returns the Certificate.

    Raises a ``CertificateError`` if the file was altered or signed by another key. Full documentation and
    a runnable example: :func:`traceprop_frames.unlearn.certificate.verify_certificate`.

    Parameters
    ----------
    path : str or Path
        The certificate JSON file.
    public_key : path, PEM text/bytes, or key object
        The issuer's Ed25519 public key.

    Returns
    -------
    traceprop_frames.unlearn.certificate.Certificate
    """
    from traceprop_frames.unlearn.certificate import verify_certificate as _verify

    return _verify(path, public_key)


def set_lineage_emitter(client, **options):
    """Send OpenLineage events for every lineage step (pandas, SQL, training, erasure) through ``client``.

    Needs the ``openlineage`` extra. ``client`` is an ``openlineage.client.OpenLineageClient`` with any of
    its transports; ``None`` stops the current emitter. Setting ``TRACEPROP_OPENLINEAGE`` (``console``,
    ``file:<path>``, an http(s) URL, or ``client``) before ``import traceprop_frames`` does the same.
    See :mod:`traceprop_frames.integrations.openlineage`.

    Parameters
    ----------
    client : openlineage.client.OpenLineageClient or None
    **options
        ``pipeline`` (parent job name), ``namespace``, ``artifact_dir`` (write each output's row lineage as
        Parquet), ``validate`` (check each event against the shipped JSON Schemas; default True).

    Returns
    -------
    OpenLineageEmitter or None
        Call ``.close()`` to end the pipeline run (sends its COMPLETE event).

    Examples
    --------
    >>> import tempfile, os, json
    >>> import traceprop_frames as tpf
    >>> from openlineage.client import OpenLineageClient
    >>> from openlineage.client.transport.file import FileConfig, FileTransport
    >>> path = os.path.join(tempfile.mkdtemp(), "events.jsonl")
    >>> em = tpf.set_lineage_emitter(
    ...     OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=path, append=True))),
    ...     pipeline="example")
    >>> tpf.set_lineage_emitter(None)  # ends the pipeline run
    >>> [json.loads(line)["eventType"] for line in open(path)]
    ['START', 'COMPLETE']
    """
    from traceprop_frames.integrations.openlineage import set_lineage_emitter as _set

    return _set(client, **options)


if _os.environ.get("TRACEPROP_OPENLINEAGE"):
    from traceprop_frames.integrations.openlineage import from_environment as _from_environment

    _from_environment()

__all__ = [
    "ProvenanceTensor",
    "RowLineage",
    "SourceRow",
    "__version__",
    "concat",
    "connect",
    "errors",
    "load_csv",
    "load_parquet",
    "op_group",
    "read_csv",
    "read_parquet",
    "read_traced",
    "step",
    "set_lineage_emitter",
    "spark",
    "tensor",
    "tensor_from_csv",
    "tensor_from_parquet",
    "track",
    "verify_certificate",
]
