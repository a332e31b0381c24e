"""OpenLineage events: schema-valid on the file and http transports, and the credit-risk demo's runs form
one connected graph from the three source files to the model and its erasure (checked against the
pipeline's known structure and file hashes computed here, not by the emitter)."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("openlineage.client")

from openlineage.client import OpenLineageClient  # noqa: E402
from openlineage.client.transport.file import FileConfig, FileTransport  # noqa: E402
from openlineage.client.transport.http import HttpConfig, HttpTransport  # noqa: E402

import traceprop_frames as tpf  # noqa: E402
from traceprop_frames.demo import run_demo  # noqa: E402
from traceprop_frames.errors import LineageEventError  # noqa: E402
from traceprop_frames.integrations import facets  # noqa: E402
from traceprop_frames.integrations import openlineage as tol  # noqa: E402
from traceprop_frames.integrations.schemas import validate_event  # noqa: E402
from traceprop_frames.unlearn.certificate import Certificate  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error::traceprop_frames.errors.LineageEmitWarning")


def _file_client(path) -> OpenLineageClient:
    return OpenLineageClient(transport=FileTransport(FileConfig(log_file_path=str(path), append=True)))


def _read(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The credit-risk demo (pandas ETL, the same in SQL, training, one erasure) on a file transport, then
    a CREATE TABLE AS and a query over that table in the same pipeline."""
    d = tmp_path_factory.mktemp("ol")
    events = d / "events.jsonl"
    em = tpf.set_lineage_emitter(_file_client(events), pipeline="credit", artifact_dir=d / "lineage")
    try:
        facts = run_demo(applicants=300, out=d / "out", k=64)
        paths = {k: str(d / "out" / "data" / f) for k, f in
                 [("application", "application.csv"), ("bureau", "bureau.csv"),
                  ("previous_application", "previous_application.parquet")]}  # fmt: skip
        con = tpf.connect()
        con.read_csv(paths["application"], name="application").read_csv(paths["bureau"], name="bureau")
        con.sql(
            "CREATE TABLE loans AS SELECT SK_ID_CURR, count(AMT_CREDIT_SUM) AS n FROM bureau GROUP BY SK_ID_CURR"
        )
        con.sql("INSERT INTO loans SELECT SK_ID_CURR, 0 FROM application WHERE AMT_INCOME_TOTAL <= 0")
        con.sql(
            "SELECT a.SK_ID_CURR, l.n * 2 AS n2 FROM application a JOIN loans l ON a.SK_ID_CURR = l.SK_ID_CURR"
        )
    finally:
        tpf.set_lineage_emitter(None)
    cert = Certificate.load(facts["certificate"])
    return {"events": _read(events), "paths": paths, "cert": cert, "emitter": em}


def _by_job(events):
    out = {}
    for e in events:
        out.setdefault(e["job"]["name"], []).append(e)
    return out


def test_file_transport_output_matches_the_schemas(demo):
    events = demo["events"]
    assert len(events) == demo["emitter"].n_events >= 20
    for e in events:
        validate_event(e)  # raises on the first mismatch
    for jobs in _by_job(events).values():  # every run: START then COMPLETE, same run id
        assert [e["eventType"] for e in jobs] == ["START", "COMPLETE"]
        assert jobs[0]["run"]["runId"] == jobs[1]["run"]["runId"]


def test_steps_link_to_the_pipeline_run(demo):
    events = demo["events"]
    pipeline = [e for e in events if e["job"]["name"] == "credit"]
    assert [e["eventType"] for e in pipeline] == ["START", "COMPLETE"]
    parent_id = pipeline[0]["run"]["runId"]
    steps = [e for e in events if e["job"]["name"] != "credit"]
    assert {e["run"]["facets"]["parent"]["run"]["runId"] for e in steps} == {parent_id}
    kinds = {name.split(".")[1] for name in _by_job(steps)}
    assert kinds == {"pandas", "sql", "train", "erase"}


def test_demo_emits_one_connected_graph_from_files_to_model_and_erasure(demo):
    paths = demo["paths"]
    done = [e for e in demo["events"] if e["eventType"] == "COMPLETE" and e.get("outputs")]
    edges: dict[tuple, set] = {}
    for e in done:
        for i in e.get("inputs", []):
            for o in e["outputs"]:
                edges.setdefault((i["namespace"], i["name"]), set()).add((o["namespace"], o["name"]))
    erase = [e for e in done if e["job"]["name"].startswith("credit.erase")]
    assert len(erase) == 1
    model = (erase[0]["outputs"][0]["namespace"], erase[0]["outputs"][0]["name"])
    assert model in {
        (i["namespace"], i["name"]) for i in erase[0]["inputs"]
    }  # erasure reads and writes the model

    def reaches(start, goal):
        seen, todo = set(), [start]
        while todo:
            n = todo.pop()
            if n == goal:
                return True
            if n not in seen:
                seen.add(n)
                todo.extend(edges.get(n, ()))
        return False

    for key in ("application", "bureau", "previous_application"):
        ds = ("file", str(Path(paths[key]).resolve()))
        assert reaches(ds, model), key
        # the file's version facet is its sha256, computed here from the bytes
        want = hashlib.sha256(Path(paths[key]).read_bytes()).hexdigest()
        versions = {
            i["facets"]["version"]["datasetVersion"]
            for e in done
            for i in e.get("inputs", [])
            if (i["namespace"], i["name"]) == ds
        }
        assert versions == {want}
    at = next(k for k, e in enumerate(done) if e["job"]["name"].startswith("credit.train"))
    train = done[at]
    # the training table is the output of the last pandas merge before it (the filter and `ratio` fold into
    # training; the demo's last step re-runs the ETL for the pipeline erasure, after training)
    merges = [e for e in done[:at] if e["job"]["name"].startswith("credit.pandas.merge")]
    assert [i["name"] for i in train["inputs"]] == [merges[-1]["outputs"][0]["name"]]


def test_column_lineage_follows_the_etl(demo):
    done = {e["job"]["name"]: e for e in demo["events"] if e["eventType"] == "COMPLETE"}
    bureau = str(Path(demo["paths"]["bureau"]).resolve())
    agg = done["credit.pandas.groupby.1"]["outputs"][0]["facets"]["columnLineage"]
    n_loans = agg["fields"]["n_loans"]["inputFields"]
    assert [(f["name"], f["field"], f["transformations"][0]["subtype"]) for f in n_loans] == [
        (bureau, "AMT_CREDIT_SUM", "AGGREGATION")
    ]
    assert [(f["field"], f["transformations"][0]["subtype"]) for f in agg["dataset"]] == [
        ("SK_ID_CURR", "GROUP_BY")
    ]
    merge = done["credit.pandas.merge.1"]["outputs"][0]["facets"]["columnLineage"]
    assert {f["field"] for f in merge["dataset"]} == {"SK_ID_CURR"}
    assert {f["transformations"][0]["subtype"] for f in merge["dataset"]} == {"JOIN"}
    assert (
        merge["fields"]["debt"]["inputFields"][0]["name"]
        == done["credit.pandas.groupby.1"]["outputs"][0]["name"]
    )
    demo_sql = done["credit.sql.query.1"]["outputs"][0]["facets"]["columnLineage"]["fields"]
    assert [
        (f["name"], f["field"], f["transformations"][0]["subtype"]) for f in demo_sql["debt"]["inputFields"]
    ] == [(bureau, "AMT_CREDIT_SUM_DEBT", "AGGREGATION")]
    app = str(Path(demo["paths"]["application"]).resolve())
    assert demo_sql["AMT_CREDIT"]["inputFields"][0]["name"] == app
    q = done["credit.sql.query.2"]
    assert {i["name"] for i in q["inputs"]} == {app, "loans"}
    n2 = q["outputs"][0]["facets"]["columnLineage"]["fields"]["n2"]["inputFields"]
    assert [(f["name"], f["field"], f["transformations"][0]["subtype"]) for f in n2] == [
        ("loans", "n", "TRANSFORMATION")
    ]
    insert = done["credit.sql.insert.loans.1"]
    assert [i["name"] for i in insert["inputs"]] == [app]
    assert [(o["namespace"], o["name"]) for o in insert["outputs"]] == [("duckdb://memory", "loans")]
    ctas = done["credit.sql.create_table.loans.1"]
    assert ctas["job"]["facets"]["sql"]["query"].startswith("CREATE TABLE loans")
    n = ctas["outputs"][0]["facets"]["columnLineage"]["fields"]["n"]["inputFields"]
    assert [(f["name"], f["field"]) for f in n] == [(bureau, "AMT_CREDIT_SUM")]


def _artifact(facet) -> list[list[int]]:
    import pyarrow.parquet as pq

    path = Path(facet["artifact"]["location"].removeprefix("file://"))
    col = pq.read_table(path).column("tp_lineage").to_pylist()
    assert len(col) == facet["rowCount"] and sum(map(len, col)) == facet["lineageIdCount"]
    return col


def test_row_lineage_facet_points_at_a_readable_artifact(demo):
    done = {e["job"]["name"]: e for e in demo["events"] if e["eventType"] == "COMPLETE"}
    app = pd.read_csv(demo["paths"]["application"])
    bur = pd.read_csv(demo["paths"]["bureau"])
    # the ETL's last merge: one row per applicant, in application.csv order (left joins on unique keys)
    facet = done["credit.pandas.merge.3"]["outputs"][0]["facets"]["traceprop_rowLineage"]
    assert facet["rowCount"] == len(app) and facet["sourceRowIdEncoding"]["rowBits"] == 40
    sid = {Path(s["name"]).name: s["sourceId"] for s in facet["sources"]}
    assert set(sid) == {"application.csv", "bureau.csv", "previous_application.parquet"}
    col = _artifact(facet)
    for i in (0, len(col) // 2, len(col) - 1):  # oracle: plain pandas on the files
        ids = np.asarray(col[i], dtype=np.int64)
        rows = {name: sorted((ids[(ids >> 40) == s] & ((1 << 40) - 1)).tolist()) for name, s in sid.items()}
        assert rows["application.csv"] == [i]
        assert rows["bureau.csv"] == np.flatnonzero(bur["SK_ID_CURR"] == app["SK_ID_CURR"][i]).tolist()
    # the model: trained on the applicants with income > 0, less the 10% held out
    train = [e for e in done.values() if e["job"]["name"].startswith("credit.train")][0]
    facet = train["outputs"][0]["facets"]["traceprop_rowLineage"]
    n = int((app["AMT_INCOME_TOTAL"] > 0).sum())
    assert facet["rowCount"] == n - max(1, n // 10) == len(_artifact(facet))


def test_erasure_facet_names_the_certificate(demo):
    cert = demo["cert"]
    erase = [e for e in demo["events"] if e["eventType"] == "COMPLETE" and "erase" in e["job"]["name"]][0]
    f = erase["run"]["facets"]["traceprop_erasure"]
    body = json.dumps(cert.body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert f["certificateId"] == cert.id and f["certificateSha256"] == hashlib.sha256(body).hexdigest()
    assert f["forgetSetSize"] == cert.body["forget_set"]["count"] >= 1
    assert f["method"] == "newton" and f["certifiedBound"] == cert.body["evidence"]["certified_bound"]
    before, after = erase["inputs"][0], erase["outputs"][0]
    assert before["facets"]["version"]["datasetVersion"] != after["facets"]["version"]["datasetVersion"]


def test_failed_step_emits_fail_with_the_error(tmp_path):
    path = tmp_path / "events.jsonl"
    df = tpf.track(pd.DataFrame({"k": [1, 2], "v": [3, 4]}), "t")
    tpf.set_lineage_emitter(_file_client(path), pipeline="p")
    try:
        with pytest.raises(KeyError):
            df.tp.merge(df, on="missing")
    finally:
        tpf.set_lineage_emitter(None)
    ev = [e for e in _read(path) if e["job"]["name"] != "p"]
    assert [e["eventType"] for e in ev] == ["START", "FAIL"]
    assert "missing" in ev[1]["run"]["facets"]["errorMessage"]["message"]
    for e in ev:
        validate_event(e)


def test_http_transport_posts_valid_events(tmp_path):
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client = OpenLineageClient(transport=HttpTransport(HttpConfig(url=url, timeout=5.0)))
        df = tpf.track(pd.DataFrame({"k": [1, 1, 2], "v": [3, 4, 5]}), "orders")
        with tol.OpenLineageEmitter(client, pipeline="http_demo"):
            df.tp.groupby("k").agg(total=("v", "sum"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert [e["eventType"] for e in received] == ["START", "START", "COMPLETE", "COMPLETE"]
    for e in received:
        validate_event(e)
    assert received[2]["inputs"][0]["name"] == "tracked/orders"


def test_invalid_events_and_settings_raise(tmp_path):
    good = facets.ErasureRunFacet(
        certificateId="c", certificateSha256="0" * 64, forgetSetSize=1, method="newton", status="erased"
    )
    from openlineage.client.serde import Serde

    event = {
        "eventType": "COMPLETE", "eventTime": "2024-01-01T00:00:00+00:00", "producer": facets.PRODUCER,
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": "01890f5c-7f3a-7a1e-8f00-000000000000", "facets": {"traceprop_erasure": Serde.to_dict(good)}},
        "job": {"namespace": "n", "name": "j"},
    }  # fmt: skip
    validate_event(event)
    event["run"]["facets"]["traceprop_erasure"]["certificateSha256"] = "not-a-hash"
    with pytest.raises(LineageEventError, match="certificateSha256"):
        validate_event(event)
    with pytest.raises(LineageEventError, match="TRACEPROP_OPENLINEAGE"):
        tol.client_from_setting("kafka-please")


def test_environment_variable_starts_an_emitter(tmp_path, monkeypatch):
    path = tmp_path / "env.jsonl"
    monkeypatch.setenv("TRACEPROP_OPENLINEAGE", f"file:{path}")
    monkeypatch.setenv("TRACEPROP_OPENLINEAGE_JOB", "from_env")
    em = tol.from_environment()
    try:
        tpf.concat([tpf.track(pd.DataFrame({"a": [1]}), "x"), tpf.track(pd.DataFrame({"a": [2]}), "y")])
    finally:
        em.close()
    names = [(e["job"]["name"], e["eventType"]) for e in _read(path)]
    assert names == [("from_env", "START"), ("from_env.pandas.concat.1", "START"),
                     ("from_env.pandas.concat.1", "COMPLETE"), ("from_env", "COMPLETE")]  # fmt: skip


def test_events_are_sent_off_the_step_and_flushed_in_order(tmp_path):
    path = tmp_path / "events.jsonl"
    df = tpf.track(pd.DataFrame({"k": [1, 1, 2], "v": [3, 4, 5]}), "orders")
    em = tol.OpenLineageEmitter(_file_client(path), pipeline="async").start()
    try:
        df.tp.groupby("k").agg(total=("v", "sum"))
        ended = pd.Timestamp.now(tz="UTC")
        df.tp.merge(df, on="k")
        em.flush()
        events = _read(path)
        names = [(e["job"]["name"], e["eventType"]) for e in events]
        assert names == [("async", "START"), ("async.pandas.groupby.1", "START"),
                         ("async.pandas.groupby.1", "COMPLETE"), ("async.pandas.merge.1", "START"),
                         ("async.pandas.merge.1", "COMPLETE")]  # fmt: skip
        assert pd.Timestamp(events[2]["eventTime"]) <= ended  # stamped when the step ended, not when sent
        assert events[4]["inputs"][0]["name"] == "tracked/orders"
    finally:
        em.close()
    assert [e["eventType"] for e in _read(path)][-1] == "COMPLETE" and em.n_events == 6


def test_validation_is_a_debug_switch_and_its_errors_surface_as_warnings(tmp_path, monkeypatch):
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState

    from traceprop_frames.errors import LineageEmitWarning

    facet = facets.ErasureRunFacet(
        certificateId="c", certificateSha256="not-a-hash", forgetSetSize=1, method="newton", status="erased"
    )
    bad = RunEvent(eventType=RunState.COMPLETE, eventTime="2024-01-01T00:00:00+00:00",
                   run=Run(runId="01890f5c-7f3a-7a1e-8f00-000000000000", facets={"traceprop_erasure": facet}),
                   job=Job(namespace="n", name="j"), producer=facets.PRODUCER)  # fmt: skip
    monkeypatch.delenv(tol.ENV_VALIDATE, raising=False)
    quiet = tol.OpenLineageEmitter(_file_client(tmp_path / "a.jsonl"))
    assert quiet.validate is False
    quiet._submit_send(bad)
    quiet.flush()  # not validated: sent as it is
    assert len(_read(tmp_path / "a.jsonl")) == 1
    monkeypatch.setenv(tol.ENV_VALIDATE, "1")
    checked = tol.OpenLineageEmitter(_file_client(tmp_path / "b.jsonl"))
    assert checked.validate is True
    checked._submit_send(bad)
    with pytest.warns(LineageEmitWarning, match="certificateSha256"):
        checked.flush()
    assert not (tmp_path / "b.jsonl").exists() or _read(tmp_path / "b.jsonl") == []
    quiet.close()
    checked.close()
