"""What each kind of step reads and writes, as OpenLineage datasets: one describer per step kind.

A describer gets the emitter and the finished :class:`~traceprop_frames.lineage.events.StepEvent` and
returns a :class:`Step`. Inputs are found by walking the op DAG back from the step's input lineage to the
nearest dataset an earlier step produced, or to a source: the plain pandas operations in between
(filters, ``assign``, scikit-learn transformers) have no events of their own and belong to this step's
group (listed in the output's ``traceprop_rowLineage.ops``).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field

from openlineage.client.event_v2 import InputDataset, OutputDataset
from openlineage.client.facet_v2 import dataset_version_dataset, sql_job

from traceprop_frames.integrations import columns as cols
from traceprop_frames.integrations.facets import (
    ErasureRunFacet,
    certificate_sha256,
    column_lineage_facet,
    file_dataset,
    schema_facet,
)
from traceprop_frames.lineage import REGISTRY


@dataclass
class Step:
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    run_facets: dict = field(default_factory=dict)
    job_facets: dict = field(default_factory=dict)


def begin(ev) -> str | None:
    """At START: the job name of a step below the pipeline (None: not a lineage step, no events)."""
    if ev.kind == "sql.statement":
        what = _sql_kind(ev.args[1])
        if what is None:
            return None
        ev.state["stmt"] = ev.args[1].copy()  # the rewriter may change the statement in place
        target = ev.args[4]
        return f"sql.{what}" + (f".{target}" if target and what != "query" else "")
    if ev.kind == "train":
        return f"train.{type(ev.args[0]).__name__}"
    return ev.kind


# ---------------------------------------------------------------------------- datasets from lineage
def _source(em, node):
    """(namespace, name, columns, InputDataset) of a DAG source node, or None (untracked rows)."""
    p = node.params
    if node.op in ("read_csv", "read_parquet") and "path" in p:
        hits = [s for s in REGISTRY.find(p["path"]) if s.sha256 == p.get("sha256")]
        if hits:
            ds = file_dataset(hits[0])
            return ds.namespace, ds.name, list(hits[0].schema), ds
    if node.op == "track":
        return em.namespace, f"tracked/{p.get('name')}", [], None
    if node.op == "duckdb_table":
        return "duckdb", str(p.get("table")), [], None
    return None


def walk_inputs(em, node) -> list[tuple[str, str, list, object]]:
    """Datasets behind ``node``: nearest emitted outputs or sources, each once, in DAG order."""
    found, seen, stack = [], set(), [node]
    while stack:
        n = stack.pop()
        if n.id in seen:
            continue
        seen.add(n.id)
        known = em.known(n.id)
        if known is not None:
            found.append((*known, None))
        elif not n.parents:
            src = _source(em, n)
            if src is not None:
                found.append(src)
        else:
            stack.extend(reversed(n.parents))
    return found


def _input_datasets(found) -> list[InputDataset]:
    out, seen = [], set()
    for ns, name, _, ds in found:
        if (ns, name) not in seen:
            seen.add((ns, name))
            out.append(ds if ds is not None else InputDataset(ns, name))
    return out


def _one(em, lin):
    """The single dataset a frame's rows come from, or None (several, or untracked)."""
    found = walk_inputs(em, lin.node)
    return found[0] if len(found) == 1 else None


def _edges_checked(fields, dataset, sides):
    """Keep edges whose input column exists in the side's dataset (columns unknown: trust the frame)."""

    def ok(e):
        side = sides[e[0]]
        return side is not None and (not side[2] or e[1] in side[2])

    fields = {c: es for c, es in fields.items() if es and all(ok(e) for e in es)}
    return fields, [e for e in dataset if ok(e)]


def frame_shape(frame) -> tuple[list[str], dict[str, str]]:
    """A frame's column names and dtypes as plain strings (what an output dataset's facets need)."""
    return [str(c) for c in frame.columns], {str(c): str(t) for c, t in frame.dtypes.items()}


def _frame_output(em, ev, shape, lin, fields=None, dataset=None, sides=None):
    name = ev.state["job"]
    columns, dtypes = shape
    facets = {"schema": schema_facet(dtypes)}
    facets["traceprop_rowLineage"] = em.row_lineage_facet(lin, name)
    if fields is not None:
        fields, dataset = _edges_checked(fields, dataset, sides)
        if fields or dataset:
            inputs = [(s[0], s[1]) if s else ("", "") for s in sides]  # edges to a None side were dropped
            facets["columnLineage"] = column_lineage_facet(fields, dataset, inputs)
    em.remember(lin.node.id, em.namespace, name, columns)
    return OutputDataset(em.namespace, name, facets=facets)


# ---------------------------------------------------------------------------- pandas
@dataclass
class PandasCapture:
    """What a pandas step's event needs from the user's frames, read when the step returns (the frames
    may change afterwards): the output's lineage and shape, the column lineage, each input's lineage."""

    lin: object
    shape: tuple
    fields: dict
    dataset: list
    side_lineages: list


def capture_pandas(ev) -> PandasCapture:
    """Read a finished pandas step's frames (cheap; on the caller's thread)."""
    from traceprop_frames.frames import ops, resolve

    out = ev.result
    if ev.kind == "pandas.merge":
        b = inspect.signature(ops.merge.__wrapped__).bind(*ev.args, **ev.kwargs)
        b.apply_defaults()
        a = dict(b.arguments)
        left, right = a.pop("left"), a.pop("right")
        right = right.to_frame() if hasattr(right, "to_frame") and not hasattr(right, "columns") else right
        frames = [left, right]
        fields, dataset = cols.merge_columns(left, right, out, **a)
    elif ev.kind == "pandas.concat":
        b = inspect.signature(ops.concat.__wrapped__).bind(*ev.args, **ev.kwargs)
        objs = b.arguments["objs"]
        frames = [
            o.to_frame() if not hasattr(o, "columns") else o
            for o in (objs.values() if isinstance(objs, dict) else objs)
        ]
        fields, dataset = cols.concat_columns(frames, out)
    else:  # pandas.groupby: TracedGroupBy._run(self, fn, *args, **kwargs)
        gb, fn, *args = ev.args
        frames = [gb._df]
        fields, dataset = cols.groupby_columns(gb._df, gb._by, gb._selection, fn, tuple(args), ev.kwargs, out)
    sides = [resolve(f) if _has(f) else None for f in frames]
    return PandasCapture(resolve(out), frame_shape(out), fields, dataset, sides)


def describe_pandas(em, ev, cap: PandasCapture) -> Step:
    """The datasets of a pandas step from its capture (may run on the emitter's thread)."""
    sides = [None if lin is None else _one(em, lin) for lin in cap.side_lineages]
    found = walk_inputs(em, cap.lin.node)
    output = _frame_output(em, ev, cap.shape, cap.lin, cap.fields, cap.dataset, sides)
    return Step(_input_datasets(found), [output])


def _pandas(em, ev) -> Step:
    return describe_pandas(em, ev, capture_pandas(ev))


def _has(df) -> bool:
    from traceprop_frames.frames import has_lineage

    return has_lineage(df)


# ---------------------------------------------------------------------------- SQL
def _sql_kind(stmt) -> str | None:
    from sqlglot import exp

    if isinstance(stmt, exp.Query):
        return "query"
    if isinstance(stmt, exp.Create) and isinstance(stmt.expression, exp.Query):
        return "create_table"
    if isinstance(stmt, exp.Insert) and isinstance(stmt.expression, exp.Query):
        return "insert"
    return None


def _duckdb_namespace(con) -> str:
    db = getattr(con, "database", ":memory:")
    return "duckdb://memory" if db in (":memory:", "") else "duckdb://" + os.path.abspath(db)


def _sqlschema_facet(con, stmt) -> dict[str, dict[str, str]]:
    from sqlglot import exp

    from traceprop_frames.sql.rewrite import LIN, RID

    names = {t.name.lower() for t in stmt.find_all(exp.Table)}
    raw = con._raw if hasattr(con, "_raw") else con.raw  # (con.raw would turn sql.rowid_scan off)
    rows = raw.execute("SELECT table_name, column_name, data_type FROM duckdb_columns()").fetchall()
    schema: dict[str, dict[str, str]] = {}
    for t, c, typ in rows:
        if t.lower() in names and c not in (RID, LIN):
            schema.setdefault(t, {})[c] = typ
    return schema


def _sql(em, ev) -> Step:
    import sqlglot

    from traceprop_frames.frames import resolve

    con, _, text, _, target = ev.args[:5]
    stmt = ev.state["stmt"]
    what = _sql_kind(stmt)
    query = stmt if what == "query" else stmt.expression
    job_facets = {"sql": sql_job.SQLJobFacet(query=text, dialect="duckdb")}
    schema = _sqlschema_facet(con, query)
    tables = sorted(schema)
    sides = []
    for t in tables:
        node = con._nodes.get(t.lower())
        found = walk_inputs(em, node) if node is not None else [(_duckdb_namespace(con), t, [], None)]
        sides.append(found[0] if len(found) == 1 else None)
    if what == "query":
        out = ev.result
        lin = resolve(out)
        out_cols = [str(c) for c in out.columns]
        try:
            fields, dataset = cols.sql_columns(query, out_cols, schema)
        except (sqlglot.errors.SqlglotError, KeyError, ValueError):
            fields, dataset = None, None
        found = walk_inputs(em, lin.node)
        output = _frame_output(em, ev, frame_shape(out), lin, fields, dataset, sides)
        return Step(_input_datasets(found), [output], {}, job_facets)
    node = con._nodes.get(target)
    src_node = node.parents[1] if node is not None and node.op == "sql_insert" else node
    found = walk_inputs(em, src_node) if src_node is not None else []
    ns = _duckdb_namespace(con)
    tcols = {
        c: t for tb, cs in _sqlschema_facet(con, sqlglot.exp.to_table(target)).items() for c, t in cs.items()
    }
    facets = {"schema": schema_facet(tcols)}
    if what == "create_table":
        try:
            fields, dataset = cols.sql_columns(query, list(tcols), schema)
            fields, dataset = _edges_checked(fields, dataset, sides)
            if fields:
                facets["columnLineage"] = column_lineage_facet(
                    fields, dataset, [(s[0], s[1]) if s else ("", "") for s in sides]
                )
        except (sqlglot.errors.SqlglotError, KeyError, ValueError):
            pass
    if node is not None:
        em.remember(node.id, ns, target, list(tcols))
    return Step(_input_datasets(found), [OutputDataset(ns, target, facets=facets)], {}, job_facets)


# ---------------------------------------------------------------------------- training and erasure
def _model_output(em, est, create: bool, version: str) -> OutputDataset:

    ns, name = em.model_name(est, create)
    facets = {"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=version)}
    names = getattr(est, "feature_names_in_", None)
    if names is not None:
        facets["schema"] = schema_facet({str(n): "feature" for n in names})
    lin = getattr(est, "lineage_", None)
    if lin is not None:
        facets["traceprop_rowLineage"] = em.row_lineage_facet(
            lin, name.replace("/", ".") + "." + version[:12]
        )
    return OutputDataset(ns, name, facets=facets)


def _train(em, ev) -> Step:
    from traceprop_frames.unlearn.objective import parameter_fingerprint

    est = ev.result
    lin = getattr(est, "lineage_", None)
    found = walk_inputs(em, lin.node) if lin is not None else []
    return Step(_input_datasets(found), [_model_output(em, est, True, parameter_fingerprint(est.module_))])


def _erase(em, ev) -> Step:

    est, cert = ev.args[0], ev.result
    b = cert.body
    known = em.model_name(est, False)
    inputs = []
    if known is not None:
        version = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=b["model"]["fingerprint_before"]
        )
        inputs.append(InputDataset(*known, facets={"version": version}))
    for s in b["request"]["sources"]:
        hits = REGISTRY.find(s["abspath"] or s["path"])
        if hits:
            inputs.append(file_dataset(hits[0]))
    ev_ = b["evidence"]
    facet = ErasureRunFacet(
        certificateId=cert.id, certificateSha256=certificate_sha256(b), forgetSetSize=int(b["forget_set"]["count"]),
        method=b["method"]["name"], status=b["status"], certifiedBound=ev_.get("certified_bound"),
        boundStatement=ev_.get("bound_statement"), fingerprintBefore=b["model"]["fingerprint_before"],
        fingerprintAfter=b["model"]["fingerprint_after"], regulations=list(b.get("regulations", [])),
    )  # fmt: skip
    outputs = [_model_output(em, est, True, b["model"]["fingerprint_after"])]
    return Step(inputs, outputs, {"traceprop_erasure": facet})


# step kinds whose events are described off the caller's thread: ``CAPTURES[kind](ev)`` reads what the
# event needs from the user's objects when the step returns; ``DEFERRED[kind](em, ev, capture)`` does the
# rest (walking the DAG, the row-lineage facet, which may compose deferred lineage) on the emitter's thread
CAPTURES = {"pandas.merge": capture_pandas, "pandas.concat": capture_pandas, "pandas.groupby": capture_pandas}
DEFERRED = {
    "pandas.merge": describe_pandas,
    "pandas.concat": describe_pandas,
    "pandas.groupby": describe_pandas,
}

DESCRIBERS = {
    "pandas.merge": _pandas,
    "pandas.concat": _pandas,
    "pandas.groupby": _pandas,
    "sql.statement": _sql,
    "train": _train,
    "erase": _erase,
}
