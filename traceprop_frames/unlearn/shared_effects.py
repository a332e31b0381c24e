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

from traceprop_frames.lineage.context import isin_ids, pool_hits, segments_any
from traceprop_frames.lineage.refs import sorted_unique
from traceprop_frames.lineage.rowsets import count_distinct

_EMPTY = np.zeros(0, dtype=np.int64)


def _reaching(ctx, seeds: np.ndarray) -> np.ndarray:
    """``seeds`` and every set that refers to one of them, transitively (sorted global set ids)."""
    reach = sorted_unique(seeds)
    first = int(reach[0]) if reach.size else 0
    for b in ctx.blocks.values():  # creation order: a block refers only to earlier ones
        if b.base + b.m <= first or not b.ref_pool.size:
            continue  # made before the seeds (cannot refer to them), or refers to nothing
        hit = segments_any(isin_ids(b.ref_pool, reach), b.ref_starts, b.ref_ends)
        if hit.any():
            reach = sorted_unique(np.concatenate([reach, b.base + np.flatnonzero(hit)]))
    return reach


def _one_set_pool(ctx, set_id: int) -> np.ndarray | None:
    """The ids of the set ``set_id`` when it refers to no other set (a view into its block's pool), else None."""
    which, blist = ctx._locate(np.array([set_id], dtype=np.int64))
    blk = blist[int(which[0])]
    j = set_id - blk.base
    if blk.ref_pool.size and blk.ref_ends[j] > blk.ref_starts[j]:
        return None
    return blk.pool[int(blk.starts[j]) : int(blk.ends[j])]


def _rows_read(ctx, block, local: np.ndarray, counted: dict | None = None) -> int:
    """Distinct source rows read by the sets ``local`` of ``block`` (their own ids and their references').

    ``counted``: ``{global set id: distinct rows}`` of single sets counted before in this analysis. A
    statistic of a statistic over the same rows (a std's mean) is counted once: its count is the
    referenced set's when that set holds exactly the same ids (compared, not assumed)."""
    counted = {} if counted is None else counted
    if local.size == 1:
        own = block.pool[int(block.starts[local[0]]) : int(block.ends[local[0]])]
    else:
        cover = np.zeros(len(block.pool) + 1, dtype=np.int64)
        np.add.at(cover, block.starts[local], 1)
        np.add.at(cover, block.ends[local], -1)
        own = block.pool[np.cumsum(cover[:-1]) > 0]
    refs = sorted_unique(block.set_refs(local))
    same_as = None  # the single referenced set holding exactly ``own``'s ids, if any
    if refs.size == 1:
        extra = _one_set_pool(ctx, int(refs[0]))
        if extra is None:
            extra = ctx.closure(refs)
        elif len(extra) == len(own) and np.array_equal(extra, own):
            same_as = int(refs[0])
    else:
        extra = ctx.closure(refs) if refs.size else _EMPTY
    if same_as is not None or (len(extra) == len(own) and np.array_equal(extra, own)):
        extra = _EMPTY  # a statistic of a statistic over the same rows (a std's mean): read them once
    if same_as is not None and same_as in counted:
        n = counted[same_as]
    else:
        n = count_distinct(np.concatenate([own, extra]) if extra.size else own)
    if local.size == 1 and not extra.size:
        counted[int(block.base + local[0])] = n
    return n


class SharedHits:
    """The shared sets behind a lineage that read any of the global row ids ``ids``, analysed once.

    Per operation whose own sets read an id (a block, in creation order): the label, how many of its
    sets were hit, how many it made, the distinct source rows the hit sets read, and a mask of the rows
    computed from a hit set (directly or through a later statistic). :meth:`touched` counts those rows
    against an exclusion (the erased samples, or the samples that carry the rows themselves), so one
    analysis serves the certificate's section and each request record.
    """

    def __init__(self, lineage, ids) -> None:
        self.ops: list[tuple] = []
        self.n = 0 if lineage is None else len(lineage)
        self.carried = None  # isin(lineage.ids, ids), where a caller computed it (request_records)
        ids = sorted_unique(np.asarray(ids, dtype=np.int64))
        if lineage is None or not lineage.has_context or not ids.size:
            return
        ctx = lineage.context
        counted: dict = {}
        blocks = list(ctx.blocks.values())
        for b, in_pool in zip(blocks, pool_hits(blocks, ids)):
            direct = np.flatnonzero(segments_any(in_pool, b.starts, b.ends))
            if not direct.size:
                continue  # hit only through an earlier statistic, if at all: reported with that one
            mask = np.zeros(len(ctx), dtype=bool)
            mask[ctx.rows_referring(_reaching(ctx, b.base + direct))] = True  # read from the compact parts
            self.ops.append((b.label, int(direct.size), int(b.m), _rows_read(ctx, b, direct, counted), mask))

    def touched(self, exclude_samples) -> tuple[list[dict], int]:
        """(one entry per operation, the number of distinct samples affected over all of them), counting
        only samples not in ``exclude_samples``."""
        if not self.ops:
            return [], 0
        keep = np.ones(self.n, dtype=bool)
        keep[np.asarray(exclude_samples, dtype=np.int64)] = False
        total, out = np.zeros(self.n, dtype=bool), []
        for label, hit, m, read, mask in self.ops:
            mine = mask & keep
            total |= mine
            out.append({"op": label, "sets_hit": hit, "sets_in_op": m, "rows_read": read,
                        "samples_affected": int(np.count_nonzero(mine))})  # fmt: skip
        return out, int(np.count_nonzero(total))


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
    return SharedHits(lineage, ids).touched(exclude_samples)


def section(
    lineage, ids, forget, removed: bool, how: str | None = None, hits: SharedHits | None = None
) -> dict:
    """The certificate's ``shared_statistics`` section for an erasure of global row ids ``ids``.

    ``removed``: the erasure recomputed the features without the rows (a pipeline re-run); ``how`` says
    how (default: a statement matching ``removed``); ``hits``: the analysis of ``ids``, made already.
    """
    hits = SharedHits(lineage, ids) if hits is None else hits
    sets, total = hits.touched(np.asarray(forget, dtype=np.int64))
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
    return sorted_unique(np.concatenate(parts)) if parts else _EMPTY


def attach_section(body: dict, lineage, request_sources, forget, removed: bool = False, how=None,
                   hits: SharedHits | None = None) -> None:  # fmt: skip
    """Add ``shared_statistics`` to a certificate body (and its ``not_guaranteed`` line when not removed).
    ``hits``: the analysis of the request's rows (:class:`SharedHits`), when the caller made it already."""
    if lineage is None:
        return
    ids = request_ids(lineage, request_sources, forget) if hits is None else _EMPTY
    sec = section(lineage, ids, forget, removed, how, hits)
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
