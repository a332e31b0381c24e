"""OpenLineage emission overhead on the credit-risk ETL, side by side in one process (interleaved, medians).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_openlineage.py [--applicants 20000] [--repeats 9]

Cases: the traced ETL (3 group-bys, 3 merges, a filter, a derived column) with no emitter, with an emitter
on the official client's file transport (the default: events built and sent on the emitter's thread once
the steps pause), and the same with schema validation on (the debugging switch). Columns: the ETL's own
time and its ratio to "no emitter" (median of per-round ratios), and the time to flush the events
afterwards (``set_lineage_emitter(None)`` closes the emitter and waits for every event) with the ratio of
ETL + flush to "no emitter": the whole cost of the events, paid off the pipeline's path.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

from openlineage.client import OpenLineageClient
from openlineage.client.transport.file import FileConfig, FileTransport

import traceprop_frames as tpf
from traceprop_frames.datasets import make_credit_risk
from traceprop_frames.demo import etl


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--applicants", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=9)
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp())
    paths = make_credit_risk(d / "data", a.applicants, 0)
    app, bur = tpf.read_csv(paths["application"]), tpf.read_csv(paths["bureau"])
    prev = tpf.read_parquet(paths["previous_application"])
    client = OpenLineageClient(
        transport=FileTransport(FileConfig(log_file_path=str(d / "ev.jsonl"), append=True))
    )

    def run(emit: bool, validate: bool = False) -> tuple[float, float]:
        gc.collect()  # every case starts from the same heap (the previous case's garbage collected)
        if emit:
            tpf.set_lineage_emitter(client, pipeline="bench", validate=validate)
        t0 = time.perf_counter()
        etl(app, bur, prev)
        t1 = time.perf_counter()
        tpf.set_lineage_emitter(None)  # closes: waits for every queued event
        return t1 - t0, time.perf_counter() - t1

    cases = {"no emitter": lambda: run(False), "file transport": lambda: run(True),
             "file transport, validated": lambda: run(True, True)}  # fmt: skip
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    run(True, True)  # warm-up (imports, schema loading)
    keys = list(cases)
    for r in range(a.repeats):
        for k in keys if r % 2 == 0 else keys[::-1]:
            times[k].append(cases[k]())
    base = [t for t, _ in times["no emitter"]]
    print(f"credit-risk ETL, {a.applicants} applicants, {a.repeats} interleaved rounds (medians)")
    print(f"| {'case':27s} | ETL s | ratio | flush s | ETL + flush ratio |")
    print("|" + "-" * 29 + "|-------|-------|---------|-------------------|")
    for k in keys:
        etl_s = [t for t, _ in times[k]]
        ratio = statistics.median(t / b for t, b in zip(etl_s, base))
        whole = statistics.median((t + f) / b for (t, f), b in zip(times[k], base))
        flush = statistics.median(f for _, f in times[k])
        print(f"| {k:27s} | {statistics.median(etl_s):5.3f} | {ratio:5.2f} | {flush:7.3f} | {whole:17.2f} |")


if __name__ == "__main__":
    main()
