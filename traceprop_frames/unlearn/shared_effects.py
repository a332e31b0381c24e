"""Shared statistics that read erased rows: the certificate's ``shared_statistics`` section.

A z-score ``(x - x.mean()) / x.std()``, a partition total broadcast back into rows or a scalar subquery
makes every row it feeds depend, through a *shared set* (:mod:`traceprop_frames.lineage.context`), on
every row the statistic read. Erasing a training sample does not remove an erased row from those
statistics: the other samples' features were computed with it. This module lists, per operation that
made shared sets, the sets that read an erased row, how many source rows they read and how many
remaining training samples were computed from them; the certificate says whether the erasure removed
that effect (``unlearn(..., rebuild=...)`` re-runs the pipeline without the rows) or not.
"""

from __future__ import annotations

import numpy as np

_EMPTY = np.zeros(0, dtype=np.int64)


def _segment_hits(pool: np.ndarray, starts, ends, members: np.ndarray) -> np.ndarray:
    """Which segments ``pool[starts[j]:ends[j]]`` contain a value of ``members`` (bool per segment)."""
    if not len(starts) or not members.size or not pool.size:
        return np.zeros(len(starts), dtype=bool)
    cum = np.zeros(len(pool) + 1, dtype=np.int64)
    np.cumsum(np.isin(pool, members), out=cum[1:])
    return cum[ends] - cum[starts] > 0


def _reaching(ctx, seeds: np.ndarray) -> np.ndarray:
    """``seeds`` and every set that refers to one of them, transitively (sorted global set ids)."""
    reach = np.unique(seeds)
    for b in ctx.blocks.values():  # creation order: a block refers only to earlier ones
        hit = _segment_hits(b.ref_pool, b.ref_starts, b.ref_ends, reach)
        if hit.any():
            reach = np.union1d(reach, b.base + np.flatnonzero(hit))
    return reach


def _n_distinct(a: np.ndarray) -> int:
    if not a.size:
        return 0
    a = np.sort(a)
    return int(1 + np.count_nonzero(a[1:] != a[:-1]))


def _rows_read(ctx, block, local: np.ndarray) -> int:
    """Distinct source rows read by the sets ``local`` of ``block`` (their own ids and their references')."""
    cover = np.zeros(len(block.pool) + 1, dtype=np.int64)
    np.add.at(cover, block.starts[local], 1)
    np.add.at(cover, block.ends[local], -1)
    own = block.pool[np.cumsum(cover[:-1]) > 0]
    refs = np.unique(block.set_refs(local))
    extra = ctx.closure(refs) if refs.size else _EMPTY
    return _n_distinct(np.concatenate([own, extra]))


class _Rows:
    """Row positions referring to given sets, as boolean masks (no sorting of ``n``-long arrays)."""

    def __init__(self, ctx, exclude: np.ndarray) -> None:
        self.ctx = ctx
        self.n = len(ctx)
        self.row_of = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(ctx.ref_offsets))
        self.keep = np.ones(self.n, dtype=bool)
        self.keep[np.asarray(exclude, dtype=np.int64)] = False
        self.total = np.zeros(self.n, dtype=bool)

    def count(self, sets: np.ndarray) -> int:
        mask = np.zeros(self.n, dtype=bool)
        mask[self.row_of[np.isin(self.ctx.refs, sets)]] = True
        mask &= self.keep
        self.total |= mask
        return int(np.count_nonzero(mask))


def touched_sets(lineage, ids: np.ndarray, exclude_samples: np.ndarray) -> list[dict]:
    """One entry per operation whose shared sets read any of the global row ids ``ids``.

    Each entry: ``op`` (what made the sets, e.g. ``"mean(axis=0)"``), ``sets_hit`` / ``sets_in_op``,
    ``rows_read`` (distinct source rows the hit sets read) and ``samples_affected`` (training samples not
    in ``exclude_samples`` whose features were computed from a hit set, directly or through a later
    statistic). Empty without shared context.
    """
    return _touched(lineage, ids, exclude_samples)[0]


def _touched(lineage, ids, exclude_samples) -> tuple[list[dict], int]:
    """(:func:`touched_sets`, the number of distinct samples affected over all of them)."""
    if lineage is None or not lineage.has_context or not len(ids):
        return [], 0
    ctx = lineage.context
    hit = ctx.hit_sets(np.asarray(ids, dtype=np.int64))
    if not hit.size:
        return [], 0
    which, blist = ctx._locate(hit)
    rows, out = _Rows(ctx, exclude_samples), []
    for k in np.unique(which).tolist():
        b = blist[k]
        local = hit[which == k] - b.base
        direct_hit = local[_segment_hits(b.pool, b.starts[local], b.ends[local], np.asarray(ids))]
        if not direct_hit.size:
            continue  # hit only through an earlier statistic: reported with that one
        out.append(
            {
                "op": b.label,
                "sets_hit": int(direct_hit.size),
                "sets_in_op": int(b.m),
                "rows_read": _rows_read(ctx, b, direct_hit),
                "samples_affected": rows.count(_reaching(ctx, b.base + direct_hit)),
            }
        )
    return out, int(np.count_nonzero(rows.total))


def section(lineage, ids, forget, removed: bool, how: str | None = None) -> dict:
    """The certificate's ``shared_statistics`` section for an erasure of global row ids ``ids``.

    ``removed``: the erasure recomputed the features without the rows (a pipeline re-run); ``how`` says
    how (default: a statement matching ``removed``).
    """
    sets, total = _touched(lineage, np.asarray(ids, dtype=np.int64), np.asarray(forget, dtype=np.int64))
    if not sets:
        how = how or "no shared statistic behind the training samples read an erased row"
        return {"effect_removed": True, "how": how, "sets": [], "samples_affected": 0}
    if how is None:
        how = (
            "the feature pipeline was re-run without the erased rows and the model corrected to the rebuilt "
            "training table"
            if removed
            else "not removed: the remaining samples keep the features these statistics computed with the "
            "erased rows; erase with rebuild= to recompute them"
        )
    return {"effect_removed": bool(removed), "how": how, "sets": sets, "samples_affected": total}


def not_guaranteed_statement(sec: dict) -> str | None:
    """The ``not_guaranteed`` line for statistics that still carry erased rows (None when none do)."""
    if sec["effect_removed"] or not sec["sets"]:
        return None
    ops = ", ".join(f"{s['op']} ({s['rows_read']} rows read)" for s in sec["sets"])
    return (
        f"Shared statistics computed with the erased rows still shape the features of "
        f"{sec['samples_affected']} remaining training samples: {ops}. This erasure removed the erased "
        "samples, not those statistics; the model is close to a retrain on the same features, not to a "
        "retrain on the feature pipeline re-run without the rows. Erase with rebuild= (the pipeline re-run) "
        "to remove that effect."
    )


def request_ids(lineage, request_sources, forget) -> np.ndarray:
    """Global ids of the erased rows: the requested source rows, or (a request by training samples only)
    the forgotten samples' direct source rows."""
    from traceprop_frames.lineage import REGISTRY

    if lineage is None:
        return _EMPTY
    parts = [REGISTRY.ids_for_rows(r["path"], r["rows"], lineage.source_ids()) for r in request_sources]
    if not parts and len(forget):
        parts = [lineage.take(np.asarray(forget, dtype=np.int64)).ids]
    return np.unique(np.concatenate(parts)) if parts else _EMPTY


def attach_section(body: dict, lineage, request_sources, forget, removed: bool = False, how=None) -> None:
    """Add ``shared_statistics`` to a certificate body (and its ``not_guaranteed`` line when not removed)."""
    if lineage is None:
        return
    ids = request_ids(lineage, request_sources, forget)
    sec = section(lineage, ids, forget, removed, how)
    body["shared_statistics"] = sec
    note = not_guaranteed_statement(sec)
    if note:
        body["not_guaranteed"].append(note)


def summary_lines(body: dict) -> list[tuple[str, str]]:
    """(label, value) lines for :meth:`Certificate.summary`: the shared statistics and the rebuild."""
    out = []
    sec = body.get("shared_statistics")
    if sec is not None:
        state = "effect removed" if sec["effect_removed"] else "NOT removed"
        sets = "; ".join(
            f"{s['op']} ({s['rows_read']} rows read, {s['samples_affected']} samples)" for s in sec["sets"]
        )
        out.append(("shared statistics", f"{state}: {sets}" if sets else "none read an erased row"))
    rb = body.get("rebuild")
    if rb is not None:
        out.append(
            (
                "pipeline re-run",
                f"{rb['pipeline']}: {rb['n_rebuilt']} rows; {rb['samples_vanished']} vanished, "
                f"{rb['samples_changed']} changed, {rb['samples_unchanged']} unchanged, {rb['samples_new']} new",
            )
        )
    return out


def mark_removed(body: dict, how: str) -> None:
    """Record in a certificate body that a pipeline re-run removed the statistics' effect (drops the
    ``not_guaranteed`` line :func:`attach_section` added)."""
    sec = body.get("shared_statistics")
    if sec is None:
        return
    note = not_guaranteed_statement(sec)
    if note in body["not_guaranteed"]:
        body["not_guaranteed"].remove(note)
    body["shared_statistics"] = {**sec, "effect_removed": True, "how": how}
