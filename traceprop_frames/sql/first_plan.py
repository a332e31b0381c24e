"""The lazy capture's rewrite of a query, kept for the first backward plan of that query.

A lazy capture rewrites a new query text once as eager capture would (the rewrite refuses what eager
capture refuses); the first lineage request for that text rewrites it again, with uncorrelated witnesses
as marker ids (:mod:`traceprop_frames.sql.shared`), to plan the backward query
(:class:`~traceprop_frames.sql.lazy.Resolver`). The capture now makes that rewrite itself, from a copy
of the parsed statement taken before the capture changes it, and keeps it here: the first request
plans from it without parsing and rewriting again (TPC-H q20: about 30 of its 35 ms of CPU planning).
Binding the witnesses' side queries (a DuckDB bind each) moves from the first request to the first
capture of the text; later captures of the same text use the capture cache and pay nothing.

A kept rewrite is used once (the plan changes it in place) and only on the catalog it was made for;
anything else (a later plan for changed tables, a changed catalog, pending lazy tables) rewrites afresh.
"""

from __future__ import annotations

from sqlglot import exp

_KEPT = 16  # rewrites kept per connection (the oldest goes first) ...
_TEXT_BUDGET = 500_000  # ... while their query texts total at most this many characters (a tree's size
# follows its text's: a generated query of megabytes is not kept, and planned from a fresh parse)


class FirstRewrites:
    """Per query text: (catalog, rewrite result, witness constants) until its first backward plan."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple] = {}

    def wanted(self, text: str) -> bool:
        """Whether a rewrite of ``text`` would be kept (its text fits the budget)."""
        return len(text) <= _TEXT_BUDGET

    def keep(self, text: str, catalog, rw, constants: list) -> None:
        """Keep ``rw`` (``rewrite_query(..., split=True, constant=...)`` of ``text`` on ``catalog``)."""
        self._kept.pop(text, None)
        if not self.wanted(text):
            return
        while self._kept and (
            len(self._kept) >= _KEPT or sum(map(len, self._kept)) + len(text) > _TEXT_BUDGET
        ):
            self._kept.pop(next(iter(self._kept)))
        self._kept[text] = (catalog, rw, constants)

    def take(self, text: str, catalog) -> tuple[exp.Select, list[str], list] | None:
        """(the rewrite's SELECT without ORDER BY / LIMIT / OFFSET, its hidden column names, its witness
        constants) for ``text`` on ``catalog``, once; None where none is kept for them."""
        hit = self._kept.pop(text, None)
        if hit is None or hit[0] is not catalog:
            return None
        rw, constants = hit[1], hit[2]
        sel = rw.expression
        if not isinstance(sel, exp.Select):
            return None
        for k in ("order", "limit", "offset"):
            sel.set(k, None)
        return sel, [e.alias for e in sel.expressions[-rw.n_hidden :]], constants

    def clear(self) -> None:
        self._kept.clear()
