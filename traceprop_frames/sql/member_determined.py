"""Member tables joined ``USING`` their group key: the row found from the first table's key, not carried.

The key path (:mod:`traceprop_frames.sql.member_keys`) returns each joined member table's group key as a
hidden column (``b."k"``, ``p."k"``): per result row, which group it joined, or NULL. Where every join of
the query is ``LEFT`` or inner ``USING (k)`` on one and the same column ``k`` and the FROM item is a
table ``a``, that key is decided by ``a.k`` alone: ``b`` joins the row iff ``a.k`` is not NULL and ``b``
has a row with key ``a.k`` (a ``USING`` column of ``LEFT`` / inner joins has ``a``'s value, or NULL where
``a.k`` is NULL). Every such table then reads one hidden column, ``a."k"``, shared by all of them (credit
ETL ``TRAIN``: one column instead of two). Sound only where, beyond :func:`member_keys.key_columns`'s
conditions (the table's rows are exactly what its CTAS made; no NULL group):

- the table has a row for *every* key its members have: its CTAS had no ``HAVING``, ``LIMIT``,
  ``OFFSET`` or ``FETCH`` (:func:`complete`), so "``b`` has a row with key ``a.k``" is "a member has key
  ``a.k``", and a key without members means no row joined (an empty part, not an error);
- ``a.k`` reads as a signed integer (``member_keys.key_values(..., signed=True)``): the comparison is then
  exact, as it is on the int64 values. A float, string, decimal or unsigned ``a.k`` runs the key path.

Any other join (``ON``, ``RIGHT`` / ``FULL``, ``NATURAL``, ``ASOF``, ``SEMI`` / ``ANTI``, a lateral, two
key columns) keeps the key path.

Where the result's first item already holds ``a.k`` — ``a.*`` (``EXCLUDE`` of the hidden row id only, no
``REPLACE`` / ``RENAME``: ``a``'s columns come first, so the first column named ``k`` is ``a``'s) or
``a.k`` itself — and its bound type is a signed integer, not even that column is added: the key is read
from the result (:func:`relation`), copied, as the user may write to the frame before reading the lineage.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from traceprop_frames.sql.dialect import DIALECT
from traceprop_frames.sql.join_refs import JoinRefs
from traceprop_frames.sql.member_keys import keyed_sql
from traceprop_frames.sql.rewrite import RID

SOURCE = "__tp_lk"  # the hidden a."k" column
_JOIN_ARGS = frozenset(["this", "side", "kind", "using"])
_SIDES = {("", ""), ("", "INNER"), ("LEFT", ""), ("LEFT", "OUTER")}
_MISS = object()
_SIGNED = frozenset(["TINYINT", "SMALLINT", "INTEGER", "BIGINT"])  # exact as int64
_PLANS: dict[tuple[str, tuple], Determined | None] = {}  # (rowid query, key columns) -> plan
_COMPLETE: dict[str, bool] = {}  # CTAS query -> complete()


@dataclass(frozen=True)
class Determined:
    """The keyed query with the determined parts' key columns replaced by one ``a."k"`` column."""

    sql: str
    n_hidden: int
    columns: tuple[int, ...]  # per lineage part: the hidden column it reads
    determined: tuple[bool, ...]  # per lineage part: read from a."k" (a key without members: no row)
    frame_sql: str | None = None  # the query without the a."k" column, where the result's first item has it
    star: bool = False  # that item is ``a.*`` (a's k: the first result column named k), else ``a.k``
    key: str = ""  # k, lower case


def relation(raw, det: Determined):
    """(relation, hidden columns, the data column holding ``a.k`` or None) of ``det``'s query: the
    result's own ``a.k`` where its first item gives it and its type is a signed integer (then no hidden
    ``a."k"`` column), else the query with the hidden column."""
    if det.frame_sql is not None:
        rel = raw.sql(det.frame_sql)
        names, n_data = rel.columns, len(rel.columns) - (det.n_hidden - 1)
        at = next((i for i in range(n_data) if names[i].lower() == det.key), None) if det.star else 0
        if at is not None and at < n_data and str(rel.types[at]) in _SIGNED:
            return rel, det.n_hidden - 1, at
    return raw.sql(det.sql), det.n_hidden, None


def plan(refs: JoinRefs, keys: tuple[str | None, ...], pending: dict) -> Determined | None:
    """The :class:`Determined` query of ``refs`` (keys as :func:`member_keys.key_columns` gives them), or
    None where no part qualifies (see the module docstring); kept per query text, the tables' CTAS
    checked every call (a table may be made again by another statement)."""
    hit = _PLANS.get((refs.sql, keys), _MISS)
    if hit is _MISS:
        hit = _plan(refs, keys)
        while len(_PLANS) >= 256:
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS[(refs.sql, keys)] = hit
    if hit is None:
        return None
    for t, det in zip(refs.tables, hit.determined):
        if det and not complete(pending[t].query):
            return None
    return hit


def complete(query: str) -> bool:
    """Whether a grouping CTAS's SELECT makes a row for every group its members have (no ``HAVING``,
    ``LIMIT``, ``OFFSET``, ``FETCH``)."""
    hit = _COMPLETE.get(query)
    if hit is None:
        try:
            sel = exp.maybe_parse(query, dialect=DIALECT)
        except Exception:  # noqa: BLE001 (sqlglot raises several kinds): not complete
            sel = None
        hit = isinstance(sel, exp.Select) and not any(
            sel.args.get(k) for k in ("having", "limit", "offset", "fetch", "qualify", "distinct")
        )
        while len(_COMPLETE) >= 256:
            _COMPLETE.pop(next(iter(_COMPLETE)))
        _COMPLETE[query] = hit
    return hit


def _using_key(sel: exp.Select) -> tuple[str, exp.Identifier] | None:
    """(lower-case name, identifier) of ``k`` where every join of ``sel`` is LEFT / inner ``USING (k)``
    of a table and its FROM item is a table; None else."""
    src = sel.args.get("from_")
    if (
        src is None
        or not isinstance(src.this, exp.Table)
        or src.this.args.get("db")
        or src.this.args.get("pivots")
    ):
        return None
    joins = sel.args.get("joins") or []
    if not joins or sel.args.get("laterals"):
        return None
    name = ident = None
    for j in joins:
        if {k for k, v in j.args.items() if v} - _JOIN_ARGS or not isinstance(j.this, exp.Table):
            return None
        side = (str(j.args.get("side") or "").upper(), str(j.args.get("kind") or "").upper())
        using = j.args.get("using") or []
        if side not in _SIDES or len(using) != 1 or not isinstance(using[0], exp.Identifier):
            return None
        if name is None:
            name, ident = using[0].name.lower(), using[0]
        elif using[0].name.lower() != name:
            return None
    return name, ident


def _plan(refs: JoinRefs, keys: tuple[str | None, ...]) -> Determined | None:
    sel = exp.maybe_parse(keyed_sql(refs, keys), dialect=DIALECT).copy()
    if not isinstance(sel, exp.Select):
        return None
    using = _using_key(sel)
    if using is None:
        return None
    name, ident = using
    src = sel.args["from_"].this
    first = src.alias_or_name.lower()
    table = src.args["alias"].this if src.args.get("alias") else src.this
    n = len(keys)
    parts = sel.expressions[-n:]
    determined = []
    for part, key in zip(parts, keys):
        col = part.this if isinstance(part, exp.Alias) else part
        det = (
            key is not None
            and key.lower() == name
            and isinstance(col, exp.Column)
            and col.table.lower() != first
        )
        determined.append(det)
    if not any(determined):
        return None
    kept = [p for p, d in zip(parts, determined) if not d]
    star = _first_item(sel.expressions[:-n], first, name)
    source = exp.alias_(
        exp.column(exp.to_identifier(ident.name, quoted=True), table=table.copy()),
        SOURCE,
    )
    data = sel.expressions[:-n]
    sel.set("expressions", [*data, *kept])
    frame_sql = None if star is None else sel.sql(dialect=DIALECT)
    sel.set("expressions", [*data, *kept, source])
    columns, at = [], 0
    for d in determined:
        columns.append(len(kept) if d else at)
        at += not d
    return Determined(
        sel.sql(dialect=DIALECT),
        len(kept) + 1,
        tuple(columns),
        tuple(determined),
        frame_sql,
        bool(star),
        name,
    )


def _first_item(data: list[exp.Expression], first: str, name: str) -> bool | None:
    """True where the result's first item is ``a.*`` (no ``REPLACE`` / ``RENAME``; ``EXCLUDE`` of the
    hidden row id only): its columns come first, ``k`` among them once; False where it is ``a.k``
    (aliased or not); None else (the hidden ``a."k"`` column is read)."""
    if not data:
        return None
    col = data[0].this if isinstance(data[0], exp.Alias) else data[0]
    if not isinstance(col, exp.Column) or col.table.lower() != first:
        return None
    if not isinstance(col.this, exp.Star):
        return False if col.name.lower() == name else None
    star = col.this
    if {k for k, v in star.args.items() if v} - {"except", "except_"}:
        return None
    dropped = star.args.get("except") or star.args.get("except_") or []
    if not all(isinstance(c, exp.Column) and c.name.lower() == RID for c in dropped):
        return None
    return True
