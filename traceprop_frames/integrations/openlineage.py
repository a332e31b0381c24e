"""OpenLineage events for every step that builds lineage, through the official ``openlineage-python`` client.

Opt in with :func:`set_lineage_emitter` (or ``tpf.set_lineage_emitter``), or the environment variable
``TRACEPROP_OPENLINEAGE`` read at ``import traceprop_frames``. Each step — a pandas operation that rebuilds
rows (merge, group-by aggregation, concat) together with the plain pandas steps before it, a SQL
statement (query, ``CREATE TABLE AS``, ``INSERT``), a training run, an erasure — becomes one OpenLineage
run with START and COMPLETE (or FAIL) events, linked to one pipeline run by the parent-run facet:

- datasets: source files (namespace ``file``, name = absolute path, sha256 as the version facet, schema
  facet), DuckDB tables (``duckdb://<database>``), intermediate frames and models (``traceprop``);
- the column-lineage facet on outputs (see :mod:`traceprop_frames.integrations.columns`);
- ``traceprop_rowLineage`` on outputs: row counts, the source-row-id encoding, the sources and, with an
  ``artifact_dir``, the Parquet file holding every row's source rows;
- ``traceprop_erasure`` on erasure runs: certificate id and hash, forget-set size, method, bound.

Every event is validated against :mod:`traceprop_frames.integrations.schemas` before it is sent; an
invalid event raises :class:`~traceprop_frames.errors.LineageEventError` (inside a step it surfaces as a
``LineageEmitWarning`` and the step goes on).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path

from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    error_message_run,
    job_type_job,
    parent_run,
)
from openlineage.client.naming.dataset import LocalFileSystem
from openlineage.client.serde import Serde
from openlineage.client.uuid import generate_new_uuid

from traceprop_frames.errors import LineageEventError
from traceprop_frames.integrations import steps
from traceprop_frames.integrations.facets import (
    PRODUCER,
    RowLineageDatasetFacet,
)
from traceprop_frames.integrations.schemas import validate_event
from traceprop_frames.lineage import REGISTRY, events

NAMESPACE = "traceprop"
_emitter: OpenLineageEmitter | None = None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


class OpenLineageEmitter:
    """Turns step events into OpenLineage run events and sends them with ``client``.

    Parameters
    ----------
    client : openlineage.client.OpenLineageClient
        Any transport: console, file, http, kafka (configured on the client).
    pipeline : str
        Job name of the parent run that links every step; step jobs are ``<pipeline>.<step>.<n>``.
    namespace : str
        Job namespace (and namespace of intermediate frames and models).
    artifact_dir : path, optional
        Where to write each output's row lineage as Parquet (named in ``traceprop_rowLineage``).
    validate : bool
        Check every event against the shipped JSON Schemas before sending (default True).
    """

    def __init__(self, client: OpenLineageClient, pipeline: str = "traceprop", namespace: str = NAMESPACE,
                 artifact_dir=None, validate: bool = True) -> None:  # fmt: skip
        self.client = client
        self.pipeline = pipeline
        self.namespace = namespace
        self.artifact_dir = None if artifact_dir is None else Path(artifact_dir)
        self.validate = validate
        self.run_id = str(generate_new_uuid())
        self.n_events = 0
        self._datasets: dict[int, tuple[str, str, list[str]]] = {}  # op node id -> (ns, name, columns)
        self._models: dict[int, tuple[str, str]] = {}  # id(estimator) -> (ns, name)
        self._counts: dict[str, int] = {}
        self._open = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> OpenLineageEmitter:
        """Send the pipeline's START and subscribe to step events."""
        if not self._open:
            self._send(self._pipeline_event(RunState.START))
            events.subscribe(self)
            self._open = True
        return self

    def close(self, failed: bool = False) -> None:
        """Unsubscribe and send the pipeline's COMPLETE (or FAIL)."""
        if self._open:
            events.unsubscribe(self)
            state = RunState.FAIL if failed else RunState.COMPLETE
            self._send(self._pipeline_event(state))
            self._open = False

    def __enter__(self) -> OpenLineageEmitter:
        return self.start()

    def __exit__(self, exc_type, *_) -> None:
        self.close(failed=exc_type is not None)

    # ------------------------------------------------------------------ events
    def __call__(self, state: str, ev: events.StepEvent) -> None:
        describe = steps.DESCRIBERS.get(ev.kind)
        if describe is None:
            return
        if state == "START":
            name = steps.begin(ev)
            if name is None:
                ev.state["skip"] = True
                return
            n = self._counts[name] = self._counts.get(name, 0) + 1
            ev.state["job"] = f"{self.pipeline}.{name}.{n}"
            ev.state["run"] = str(generate_new_uuid())
            self._send(self._event(RunState.START, ev, [], [], {}))
            return
        if ev.state.get("skip") or "job" not in ev.state:
            return
        if state == "FAIL":
            facet = error_message_run.ErrorMessageRunFacet(
                message=f"{type(ev.error).__name__}: {ev.error}", programmingLanguage="python"
            )
            self._send(self._event(RunState.FAIL, ev, [], [], {"errorMessage": facet}))
            return
        step = describe(self, ev)
        self._send(
            self._event(RunState.COMPLETE, ev, step.inputs, step.outputs, step.run_facets, step.job_facets)
        )

    def _pipeline_event(self, state) -> RunEvent:
        job = self._job(self.pipeline)
        return RunEvent(
            eventType=state, eventTime=_now(), run=Run(runId=self.run_id), job=job, producer=PRODUCER
        )

    def _job(self, name: str, facets: dict | None = None) -> Job:
        return Job(namespace=self.namespace, name=name, facets=facets or {})

    def _event(self, state, ev, inputs, outputs, run_facets, job_facets=None) -> RunEvent:
        parent = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=self.run_id),
            job=parent_run.Job(namespace=self.namespace, name=self.pipeline),
        )
        jf = {"jobType": job_type_job.JobTypeJobFacet("BATCH", "TRACEPROP", ev.kind.split(".")[0].upper())}
        jf.update(job_facets or {})
        return RunEvent(
            eventType=state,
            eventTime=_now(),
            run=Run(runId=ev.state["run"], facets={"parent": parent, **run_facets}),
            job=self._job(ev.state["job"], jf),
            inputs=inputs,
            outputs=outputs,
            producer=PRODUCER,
        )

    def _send(self, event: RunEvent) -> None:
        if self.validate:
            validate_event(Serde.to_dict(event))
        self.client.emit(event)
        self.n_events += 1

    # ------------------------------------------------------------------ datasets (used by steps.py)
    def remember(self, node_id: int, namespace: str, name: str, columns: list[str]) -> None:
        self._datasets[node_id] = (namespace, name, list(columns))

    def known(self, node_id: int) -> tuple[str, str, list[str]] | None:
        return self._datasets.get(node_id)

    def model_name(self, est, create: bool) -> tuple[str, str] | None:
        key = id(est)
        if key not in self._models and create:
            n = self._counts["model"] = self._counts.get("model", 0) + 1
            self._models[key] = (self.namespace, f"{self.pipeline}/model/{type(est).__name__}-{n}")
        return self._models.get(key)

    def row_lineage_facet(self, lin, job: str) -> RowLineageDatasetFacet:
        """``traceprop_rowLineage`` for a RowLineage; writes the Parquet artifact if ``artifact_dir``."""
        sources = []
        for sid in lin.source_ids().tolist():
            s = REGISTRY.get(int(sid))
            naming = LocalFileSystem(path=s.abspath) if s.abspath else None
            sources.append({
                "sourceId": int(sid), "namespace": naming.get_namespace() if naming else self.namespace,
                "name": naming.get_name() if naming else f"tracked/{s.path}", "sha256": s.sha256,
                "format": s.format, "rowCount": int(s.n_rows),
            })  # fmt: skip
        artifact = None
        if self.artifact_dir is not None:
            from traceprop_frames.lineage import persist

            self.artifact_dir.mkdir(parents=True, exist_ok=True)
            path = (self.artifact_dir / f"{_slug(job)}.lineage.parquet").resolve()
            persist.save(lin, str(path))
            artifact = {
                "location": path.as_uri(),
                "format": "parquet",
                "column": "tp_lineage",
                "manifestKey": "traceprop",
            }
            if lin.has_context:
                artifact["contextKey"] = persist.CONTEXT_KEY.decode()
        return RowLineageDatasetFacet(
            rowCount=len(lin),
            lineageIdCount=int(lin.n_ids),
            sources=sources,
            sharedContext=bool(lin.has_context),
            artifact=artifact,
            ops=lin.ops(),
        )


def client_from_setting(setting: str) -> OpenLineageClient:
    """A client for ``TRACEPROP_OPENLINEAGE``: ``console``, ``file:<path>``, ``http(s)://<url>``, or
    ``client`` (the client's own configuration: ``openlineage.yml`` / ``OPENLINEAGE__*`` variables)."""
    from openlineage.client.transport.console import ConsoleConfig, ConsoleTransport
    from openlineage.client.transport.file import FileConfig, FileTransport
    from openlineage.client.transport.http import HttpConfig, HttpTransport

    s = setting.strip()
    if s == "console":
        return OpenLineageClient(transport=ConsoleTransport(ConsoleConfig()))
    if s.startswith("file:"):
        path = s[5:]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=path, append=True)))
    if s.startswith(("http://", "https://")):
        return OpenLineageClient(transport=HttpTransport(HttpConfig(url=s)))
    if s == "client":
        return OpenLineageClient()
    raise LineageEventError(
        f"TRACEPROP_OPENLINEAGE={setting!r} is not understood: use 'console', 'file:<path>', an http(s) URL, "
        "or 'client' (configure the OpenLineage client with openlineage.yml or OPENLINEAGE__* variables)"
    )


def set_lineage_emitter(client: OpenLineageClient | None, **options) -> OpenLineageEmitter | None:
    """Emit OpenLineage events for every step from now on (``None`` stops and closes the current one).

    ``options`` go to :class:`OpenLineageEmitter` (``pipeline``, ``namespace``, ``artifact_dir``,
    ``validate``). Returns the emitter; ``emitter.close()`` ends the pipeline run.
    """
    global _emitter
    if _emitter is not None:
        _emitter.close()
        _emitter = None
    if client is not None:
        _emitter = OpenLineageEmitter(client, **options).start()
    return _emitter


def from_environment() -> OpenLineageEmitter | None:
    """Start an emitter if ``TRACEPROP_OPENLINEAGE`` is set (pipeline name: ``TRACEPROP_OPENLINEAGE_JOB``)."""
    setting = os.environ.get("TRACEPROP_OPENLINEAGE")
    if not setting:
        return None
    import atexit

    em = set_lineage_emitter(
        client_from_setting(setting), pipeline=os.environ.get("TRACEPROP_OPENLINEAGE_JOB", "traceprop")
    )
    atexit.register(em.close)
    return em
