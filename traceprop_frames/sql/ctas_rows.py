"""Whether a lazily made table still holds exactly the rows its recorded query gives.

A lazy ``CREATE TABLE ... AS`` whose table oid could not be read before a statement ran outside the
traced connection (:mod:`traceprop_frames.sql.deferred_oids`: a cursor made earlier, another connection)
cannot tell by its oid whether the table of that name is the one it made. Its inputs' oids are known
(they show the inputs are the tables it was made from), so it compares the table's rows with its query's
rows over those inputs instead: the same column names and types, and the same rows counted with their
repeats (``EXCEPT ALL`` both ways, NULLs equal). Only then is the query's lineage the table's lineage;
anything else (another table under that name, rows changed, a query whose answer varies between runs
such as one that calls ``random()`` or sums floating-point values in another order) counts as changed.
One run of the query, once per such table, only in that case.
"""

from __future__ import annotations

import duckdb

from traceprop_frames.sql.rewrite import LIN


def holds_query_rows(con: duckdb.DuckDBPyConnection, quoted: str, query: str) -> bool:
    """True where table ``quoted`` (its ``__tp_lin`` column aside) holds exactly ``query``'s rows."""
    try:
        table = con.sql(f"SELECT * FROM {quoted}")
        cols = [c for c in table.columns if c != LIN]
        rows = f"SELECT {', '.join(_quote(c) for c in cols)} FROM {quoted}"
        mine = con.sql(rows)
        made = con.sql(f"SELECT * FROM ({query})")
        if mine.columns != made.columns or [str(t) for t in mine.types] != [str(t) for t in made.types]:
            return False
        sql = (
            f"SELECT count(*) FROM (({rows}) EXCEPT ALL (SELECT * FROM ({query}))) UNION ALL "
            f"SELECT count(*) FROM ((SELECT * FROM ({query})) EXCEPT ALL ({rows}))"
        )
        return all(n == 0 for (n,) in con.execute(sql).fetchall())
    except duckdb.Error:
        return False


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
