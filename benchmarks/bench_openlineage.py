"""OpenLineage emission overhead on the credit-risk ETL, side by side in one process (interleaved, medians).

    .venv/bin/python benchmarks/bench_openlineage.py [--applicants 20000] [--repeats 7]

Cases: the traced ETL (3 group-bys, 3 merges, a filter, a derived column) with no emitter, with an emitter
on a file transport, and the same without schema validation; ratio = median of per-round ratios to
"no emitter".
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp())
    paths = make_credit_risk(d / "data", a.applicants, 0)
    app, bur = tpf.read_csv(paths["application"]), tpf.read_csv(paths["bureau"])
    prev = tpf.read_parquet(paths["previous_application"])
    client = OpenLineageClient(
        transport=FileTransport(FileConfig(log_file_path=str(d / "ev.jsonl"), append=True))
    )

    def run(emit: bool, validate: bool = True) -> float:
        if emit:
            tpf.set_lineage_emitter(client, pipeline="bench", validate=validate)
        t0 = time.perf_counter()
        etl(app, bur, prev)
        dt = time.perf_counter() - t0
        tpf.set_lineage_emitter(None)
        return dt

    cases = {"no emitter": lambda: run(False), "file transport": lambda: run(True),
             "file transport, no validation": lambda: run(True, False)}  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in cases}
    run(True)  # warm-up (imports, schema compilation)
    keys = list(cases)
    for r in range(a.repeats):
        for k in keys if r % 2 == 0 else keys[::-1]:
            times[k].append(cases[k]())
    base = times["no emitter"]
    print(f"credit-risk ETL, {a.applicants} applicants, {a.repeats} interleaved rounds (medians)")
    print(f"{'case':32s} {'seconds':>8s} {'ratio':>6s}")
    for k in keys:
        ratio = statistics.median(t / b for t, b in zip(times[k], base))
        print(f"{k:32s} {statistics.median(times[k]):8.3f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
