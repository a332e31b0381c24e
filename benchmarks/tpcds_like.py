"""Seeded TPC-DS-shaped tables and the q23 pattern (frequent items / best customers), for tests and benchmarks.

TPC-DS q23 reads two CTEs through IN subqueries - items sold often ("frequent items") and customers whose
store spending exceeds a share of the maximum (a scalar subquery over another CTE) - so every result row
depends on whole groups of store sales. Column names follow TPC-DS; the data is random (no dsdgen).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

TABLES = ["store_sales", "catalog_sales", "web_sales", "date_dim", "item", "customer"]

Q23_ROWS = """
WITH frequent_ss_items AS (
  SELECT substr(i_item_desc, 1, 30) AS itemdesc, i_item_sk AS item_sk, d_date AS solddate, count(*) AS cnt
  FROM store_sales, date_dim, item
  WHERE ss_sold_date_sk = d_date_sk AND ss_item_sk = i_item_sk AND d_year IN (2000, 2001)
  GROUP BY itemdesc, i_item_sk, d_date HAVING count(*) > 1),
max_store_sales AS (
  SELECT max(csales) AS tpcds_cmax FROM (
    SELECT c_customer_sk, sum(ss_quantity * ss_sales_price) AS csales
    FROM store_sales, customer, date_dim
    WHERE ss_customer_sk = c_customer_sk AND ss_sold_date_sk = d_date_sk AND d_year IN (2000, 2001)
    GROUP BY c_customer_sk)),
best_ss_customer AS (
  SELECT c_customer_sk, sum(ss_quantity * ss_sales_price) AS ssales
  FROM store_sales, customer WHERE ss_customer_sk = c_customer_sk
  GROUP BY c_customer_sk
  HAVING sum(ss_quantity * ss_sales_price) > 0.5 * (SELECT * FROM max_store_sales))
SELECT cs_item_sk AS item, cs_bill_customer_sk AS cust, cs_quantity * cs_list_price AS sales
FROM catalog_sales, date_dim
WHERE d_year = 2000 AND cs_sold_date_sk = d_date_sk
  AND cs_item_sk IN (SELECT item_sk FROM frequent_ss_items)
  AND cs_bill_customer_sk IN (SELECT c_customer_sk FROM best_ss_customer)
UNION ALL
SELECT ws_item_sk, ws_bill_customer_sk, ws_quantity * ws_list_price
FROM web_sales, date_dim
WHERE d_year = 2000 AND ws_sold_date_sk = d_date_sk
  AND ws_item_sk IN (SELECT item_sk FROM frequent_ss_items)
  AND ws_bill_customer_sk IN (SELECT c_customer_sk FROM best_ss_customer)
"""
_HEAD, _BODY = Q23_ROWS.split("SELECT cs_item_sk AS item", 1)
# q23a proper: the total over those rows (one output row)
Q23_SUM = _HEAD + "SELECT sum(sales) AS total FROM (SELECT cs_item_sk AS item" + _BODY + ") AS s"


def make_tables(folder: Path, store_sales: int, seed: int = 0) -> dict[str, Path]:
    """Write the six tables as Parquet; ``store_sales`` rows, the other sales tables half / a quarter."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_items = max(store_sales // 50, 5)
    n_cust = max(store_sales // 40, 5)
    days = pd.date_range("1999-07-01", "2001-12-31", freq="D")
    tables = {
        "date_dim": pd.DataFrame(
            {"d_date_sk": np.arange(len(days)), "d_date": days.date, "d_year": days.year, "d_moy": days.month}
        ),
        "item": pd.DataFrame(
            {
                "i_item_sk": np.arange(n_items),
                "i_item_desc": [f"item description {i}" for i in range(n_items)],
            }
        ),
        "customer": pd.DataFrame({"c_customer_sk": np.arange(n_cust)}),
    }
    # a few popular items and heavy customers, so the frequent / best sets are neither empty nor everything
    item_p = rng.zipf(1.6, n_items).astype(float)
    item_p /= item_p.sum()
    cust_p = rng.zipf(1.4, n_cust).astype(float)
    cust_p /= cust_p.sum()
    for name, prefix, n in (
        ("store_sales", "ss", store_sales),
        ("catalog_sales", "cs", store_sales // 2),
        ("web_sales", "ws", store_sales // 4),
    ):
        cust_col = "ss_customer_sk" if prefix == "ss" else f"{prefix}_bill_customer_sk"
        price_col = "ss_sales_price" if prefix == "ss" else f"{prefix}_list_price"
        tables[name] = pd.DataFrame(
            {
                f"{prefix}_sold_date_sk": rng.integers(0, len(days), n),
                f"{prefix}_item_sk": rng.choice(n_items, n, p=item_p),
                cust_col: rng.choice(n_cust, n, p=cust_p),
                f"{prefix}_quantity": rng.integers(1, 100, n),
                price_col: rng.integers(100, 20000, n) / 100.0,
            }
        )
    paths = {}
    for name, df in tables.items():
        paths[name] = folder / f"{name}.parquet"
        df.to_parquet(paths[name], index=False)
    return paths
