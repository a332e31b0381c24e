"""Two small sources and the grouping CREATE TABLE ... AS run that the deferred-oid tests share: ``t``
(key ``k``, value ``v``) and ``u`` (key ``k``, count ``w``), written as Parquet; ``a`` and ``b`` group
them by ``k`` and ``JOINED`` reads all three, as the credit ETL's final query does."""

from __future__ import annotations

import numpy as np
import pandas as pd

CTAS_A = "CREATE OR REPLACE TABLE a AS SELECT k, count(*) AS n FROM t GROUP BY k"
CTAS_B = "CREATE OR REPLACE TABLE b AS SELECT k, sum(w) AS s FROM u GROUP BY k"
JOINED = "SELECT t.*, a.n, b.s FROM t LEFT JOIN a USING (k) LEFT JOIN b USING (k)"


def write_frames(tmp_path, seed: int):
    """(t, u, tmp_path): the two frames drawn with ``seed``, written to ``tmp_path/{t,u}.parquet``."""
    rng = np.random.default_rng(seed)
    t = pd.DataFrame({"k": rng.integers(0, 6, 30), "v": rng.normal(size=30).round(3)})
    u = pd.DataFrame({"k": rng.integers(2, 9, 20), "w": rng.integers(0, 50, 20)})
    t.to_parquet(tmp_path / "t.parquet", index=False)
    u.to_parquet(tmp_path / "u.parquet", index=False)
    return t, u, tmp_path
