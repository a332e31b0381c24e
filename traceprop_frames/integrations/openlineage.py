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

Emission stays off the pipeline's path: a step only reads what its events need from the user's objects
(for a pandas step: the output's lineage, columns and dtypes, the column lineage); describing the
datasets, composing the row-lineage facet, serialising and sending happen on the emitter's own thread, in
the order the steps ran. :meth:`OpenLineageEmitter.flush` waits for every event so far; ``close()`` (and
the end of the process) flushes. An emitter error (a transport down, an invalid event) surfaces as a
:class:`~traceprop_frames.errors.LineageEmitWarning` at the next step or at ``flush``/``close``; the
steps themselves always run normally.

Validation against :mod:`traceprop_frames.integrations.schemas` (the RunEvent and our facets' JSON
Schemas) is a debugging switch: ``validate=True`` or ``TRACEPROP_OPENLINEAGE_VALIDATE=1``. It costs about
as much as describing a step; the test suite validates every event the library emits.
"""

from __future__ import annotations

import atexit
import collections
import datetime as _dt
import os
import re
import threading
import time
import warnings
import weakref
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

from traceprop_frames.errors import LineageEmitWarning, LineageEventError
from traceprop_frames.integrations import steps
from traceprop_frames.integrations.facets import (
    PRODUCER,
    RowLineageDatasetFacet,
)
from traceprop_frames.integrations.schemas import validate_event
from traceprop_frames.lineage import REGISTRY, events

NAMESPACE = "traceprop"
ENV_VALIDATE = "TRACEPROP_OPENLINEAGE_VALIDATE"
_emitter: OpenLineageEmitter | None = None
_live: weakref.WeakSet = weakref.WeakSet()  # emitters whose queued events the end of the process flushes


def _validate_default() -> bool:
    return os.environ.get(ENV_VALIDATE, "").strip().lower() in ("1", "true", "yes", "on")


class _Worker:
    """One thread that runs submitted calls in order, once the submitting thread has paused.

    A burst of steps (an ETL) only queues its events; they are built and sent once no step is running and
    none has ended for ``idle`` seconds, when ``max_pending`` are waiting, or when someone drains
    (``flush``, ``close``, the end of the process, a step described in place). Errors are kept for the
    submitting thread."""

    def __init__(self, idle: float = 0.2, max_pending: int = 256) -> None:
        self.idle, self.max_pending = idle, max_pending
        self._cv = threading.Condition()
        self._items: collections.deque = collections.deque()
        self._submitted = self._done = self._urgent = 0
        self._last = 0.0
        self.active = 0  # steps running now (START heard, COMPLETE/FAIL not yet)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def submit(self, fn, *args) -> None:
        with self._cv:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="traceprop-openlineage", daemon=True)
                self._thread.start()
            self._items.append((fn, args))
            self._submitted += 1
            self._last = time.monotonic()
            self._cv.notify_all()

    def drain(self) -> None:
        """Run every call submitted so far now, and wait for them."""
        with self._cv:
            target, self._urgent = self._submitted, self._urgent + 1
            self._cv.notify_all()
            while self._done < target and self._thread is not None and self._thread.is_alive():
                self._cv.wait(0.5)
            self._urgent -= 1

    def stop(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            with self._cv:
                self._stopping = True
                self._cv.notify_all()
            thread.join()
        self._thread, self._stopping = None, False

    def _next_batch(self) -> list | None:
        with self._cv:
            while True:
                if self._items and (self._urgent or self._stopping or len(self._items) >= self.max_pending):
                    break
                if not self._items:
                    if self._stopping:
                        return None
                    self._cv.wait()
                    continue
                wait = self._last + self.idle - time.monotonic()
                if wait <= 0 and not self.active:
                    break
                self._cv.wait(wait if wait > 0 else self.idle)
            batch = list(self._items)
            self._items.clear()
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            for fn, args in batch:
                try:
                    fn(*args)
                except Exception as e:  # reported on the submitting thread (OpenLineageEmitter._report)
                    self.errors.append(f"{type(e).__name__}: {e}")
            with self._cv:
                self._done += len(batch)
                self._cv.notify_all()


@atexit.register
def _flush_at_exit() -> None:
    for em in list(_live):
        em.flush(report=False)


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
    validate : bool, optional
        Check every event against the shipped JSON Schemas before sending (a debugging switch; default:
        the environment variable ``TRACEPROP_OPENLINEAGE_VALIDATE``, else False).
    """

    def __init__(self, client: OpenLineageClient, pipeline: str = "traceprop", namespace: str = NAMESPACE,
                 artifact_dir=None, validate: bool | None = None) -> None:  # fmt: skip
        self.client = client
        self.pipeline = pipeline
        self.namespace = namespace
        self.artifact_dir = None if artifact_dir is None else Path(artifact_dir)
        self.validate = _validate_default() if validate is None else bool(validate)
        self._worker = _Worker()
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
            self._submit_send(self._pipeline_event(RunState.START))
            events.subscribe(self)
            _live.add(self)
            self._open = True
        return self

    def close(self, failed: bool = False) -> None:
        """Unsubscribe, send the pipeline's COMPLETE (or FAIL) and wait for every queued event."""
        if self._open:
            events.unsubscribe(self)
            state = RunState.FAIL if failed else RunState.COMPLETE
            self._submit_send(self._pipeline_event(state))
            self._open = False
            _live.discard(self)
        self._worker.stop()
        self._report()

    def flush(self, report: bool = True) -> None:
        """Wait until every event of the steps so far has been sent (errors: ``LineageEmitWarning``)."""
        self._worker.drain()
        if report:
            self._report()

    def _report(self) -> None:
        errors, self._worker.errors = self._worker.errors, []
        for message in errors:
            warnings.warn(
                f"OpenLineage emitter for pipeline {self.pipeline!r} failed: {message}; the step itself ran "
                "normally. Check the transport, or set validate=True to find an invalid event.",
                LineageEmitWarning,
                stacklevel=3,
            )

    def __enter__(self) -> OpenLineageEmitter:
        return self.start()

    def __exit__(self, exc_type, *_) -> None:
        self.close(failed=exc_type is not None)

    # ------------------------------------------------------------------ events
    def __call__(self, state: str, ev: events.StepEvent) -> None:
        describe = steps.DESCRIBERS.get(ev.kind)
        if describe is None:
            return
        if self._worker.errors:
            self._report()
        self._worker.active += 1 if state == "START" else -1
        if state == "START":
            name = steps.begin(ev)
            if name is None:
                ev.state["skip"] = True
                return
            n = self._counts[name] = self._counts.get(name, 0) + 1
            ev.state["job"] = f"{self.pipeline}.{name}.{n}"
            ev.state["run"] = str(generate_new_uuid())
            self._submit_send(self._event(RunState.START, ev, [], [], {}))
            return
        if ev.state.get("skip") or "job" not in ev.state:
            return
        if state == "FAIL":
            facet = error_message_run.ErrorMessageRunFacet(
                message=f"{type(ev.error).__name__}: {ev.error}", programmingLanguage="python"
            )
            self._submit_send(self._event(RunState.FAIL, ev, [], [], {"errorMessage": facet}))
            return
        ev.state["time"] = _now()  # when the step ended, whenever its event is built
        if ev.kind in steps.DEFERRED:  # read the user's objects now, describe on the worker
            self._worker.submit(self._complete, steps.DEFERRED[ev.kind], ev, steps.CAPTURES[ev.kind](ev))
            return
        self._worker.drain()  # the datasets of earlier steps are known before this one is described
        self._submit_send(self._completed(ev, describe(self, ev)))

    def _complete(self, describe, ev, capture) -> None:
        self._send(self._completed(ev, describe(self, ev, capture)))

    def _completed(self, ev, step) -> RunEvent:
        return self._event(RunState.COMPLETE, ev, step.inputs, step.outputs, step.run_facets, step.job_facets)

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
            eventTime=ev.state.get("time") or _now(),
            run=Run(runId=ev.state["run"], facets={"parent": parent, **run_facets}),
            job=self._job(ev.state["job"], jf),
            inputs=inputs,
            outputs=outputs,
            producer=PRODUCER,
        )

    def _submit_send(self, event: RunEvent) -> None:
        self._worker.submit(self._send, event)

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
