"""Whether a lazily made table still holds exactly the rows its recorded query gives.

A lazy ``CREATE TABLE ... AS`` whose table oid could not be read before a statement ran outside the
traced connection (:mod:`traceprop_frames.sql.deferred_oids`: a cursor made earlier, another connection)
cannot tell by its oid whether the table of that name is the one it made. Its inputs' oids are known
(they show the inputs are the tables it was made from), so it compares the table's rows with its query's
rows over those inputs instead: the same column names and types, and the same rows counted with their
repeats (as many rows, and none of the table's left over after ``EXCEPT ALL`` the query's; NULLs
equal). Only then is the query's lineage the table's lineage; anything else (another table under that
name, rows changed, a query whose answer varies between runs such as one that calls ``random()`` or sums
floating-point values in another order) counts as changed. One statement that runs the query once (5-6x
the query's own CPU time on the credit ETL's tables at 20k applicants: 17-23 ms), once per such table,
only in that case.
"""

from __future__ import annotations

import duckdb

from traceprop_frames.sql.dialect import quote_name
from traceprop_frames.sql.rewrite import LIN


def holds_query_rows(con: duckdb.DuckDBPyConnection, quoted: str, query: str) -> bool:
    """True where table ``quoted`` (its ``__tp_lin`` column aside) holds exactly ``query``'s rows."""
    try:
        table = con.sql(f"SELECT * FROM {quoted}")
        cols = [c for c in table.columns if c != LIN]
        rows = f"SELECT {', '.join(quote_name(c) for c in cols)} FROM {quoted}"
        mine = con.sql(rows)
        made = con.sql(f"SELECT * FROM ({query})")
        if mine.columns != made.columns or [str(t) for t in mine.types] != [str(t) for t in made.types]:
            return False
        sql = (  # as many rows, none of the table's missing from the query's: the same rows (run once)
            f"WITH __tp_q AS MATERIALIZED ({query}) SELECT (SELECT count(*) FROM __tp_q) = (SELECT count(*) "
            f"FROM {quoted}) AND NOT EXISTS (({rows}) EXCEPT ALL (SELECT * FROM __tp_q))"
        )
        return con.execute(sql).fetchall() == [(True,)]
    except duckdb.Error:
        return False
