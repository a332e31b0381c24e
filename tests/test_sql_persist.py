"""A database file keeps its lineage: reopened in a new process, ids still point at the right file rows."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

import traceprop_frames as tpf

READER = """
import json, sys
import traceprop_frames as tpf
from traceprop_frames.lineage import REGISTRY
for i in range(5):  # shift this process's source ids so they differ from the writer's
    REGISTRY.register(f"dummy{i}", sha256="x", format="memory", n_rows=1)
con = tpf.connect(sys.argv[1])
df = con.sql("SELECT k, n FROM agg ORDER BY k")
print(json.dumps([{p: r.tolist() for p, r in df.tp.sources(i).items()} for i in range(len(df))]))
"""


def test_reopened_database_keeps_lineage(tmp_path):
    csv = tmp_path / "a.csv"
    pd.DataFrame({"k": [1, 2, 1, 3], "v": [5, 6, 7, 8]}).to_csv(csv, index=False)
    db = str(tmp_path / "etl.duckdb")
    con = tpf.connect(db)
    con.read_csv(csv, name="a")
    con.execute("CREATE TABLE agg AS SELECT k, count(*) AS n FROM a GROUP BY k")
    expected = [{str(csv): r} for r in ([0, 2], [1], [3])]
    df = con.sql("SELECT k, n FROM agg ORDER BY k")
    assert [{p: r.tolist() for p, r in df.tp.sources(i).items()} for i in range(len(df))] == expected
    con.close()
    out = subprocess.run([sys.executable, "-c", READER, db], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected
