"""Shared sets: sets of source rows that many derived rows depend on, stored once.

A statistic broadcast back into rows (a column mean, a partition total, a scalar subquery, a running
sum) makes every row depend on the rows it was computed from. Copying that set into each row's CSR
list costs O(rows x set size); here it is stored once, in a :class:`SetBlock`, and rows hold
*references* to it.

- A :class:`SetBlock` is made by one operation and holds ``m`` sets. Set ``j`` is the segment
  ``pool[starts[j]:ends[j]]`` of one flat int64 pool of global row ids, plus references to sets of
  earlier blocks (the context of the rows the set was computed from). Segments may overlap, so the
  prefixes of an ordered column (``cumsum``, ``expanding``) or its rolling windows cost O(n) in all,
  not O(n^2).
- Every set has one *global set id* (``block.base + j``); ids are unique in the process, so lineages
  that meet in a join or a concat merge their blocks by id, never by copying.
- A :class:`Context` is the per-row side of it: a CSR of global set ids (``ref_offsets``, ``refs``)
  and the blocks those ids (and their own references, transitively) live in.

Readers compute the *closure* of a row's references (the pool segments of the referenced sets and of
the sets those refer to) with array operations, one step per block generation - the depth of the
pipeline, never the number of rows.
"""

from __future__ import annotations

import io
import json
import threading

import numpy as np

from traceprop_frames.errors import LineageFormatError

_EMPTY = np.zeros(0, dtype=np.int64)
_base_lock = threading.Lock()
_base_cursor = [0]


def _allocate(m: int) -> int:
    with _base_lock:
        base = _base_cursor[0]
        _base_cursor[0] += max(int(m), 1)
    return base


def segments_flat(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(starts[k], ends[k])`` for all k (vectorised)."""
    lengths = np.maximum(ends - starts, 0)
    total = int(lengths.sum())
    if total == 0:
        return _EMPTY
    off = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    return np.arange(total, dtype=np.int64) + np.repeat(starts - off[:-1], lengths)


def isin_ids(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``np.isin(values, members)`` for int64 ids, by the method that suits the members' count.

    A handful of members (an erasure request's rows) is compared one by one, a pass per member; numpy's
    default would pick a lookup table over the members' value range, about 20 times slower over a large
    pool. Many members go to numpy's default.
    """
    members = np.asarray(members)
    if members.size <= 32:
        return np.isin(values, members, kind="sort")
    return np.isin(values, members)


def segments_any(mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per segment ``j``, whether ``mask[starts[j]:ends[j]]`` holds a True (one prefix sum; none when the
    mask is all False)."""
    if not len(starts) or not mask.any():
        return np.zeros(len(starts), dtype=bool)
    if len(starts) == 1:
        return np.array([bool(mask[int(starts[0]) : int(ends[0])].any())])
    cum = np.zeros(len(mask) + 1, dtype=np.int64)
    np.cumsum(mask, out=cum[1:])
    return cum[ends] - cum[starts] > 0


class SetBlock:
    """``m`` shared sets made by one operation (see the module docstring).

    Parameters
    ----------
    pool : int64 array of global row ids, in the order the operation read them.
    starts, ends : int64 arrays (m,), set ``j`` is ``pool[starts[j]:ends[j]]``.
    label : str, what made the sets (``"mean(axis=0)"``, ``"window sum"``), shown by readers.
    ref_pool, ref_starts, ref_ends : set ``j`` refers to the global set ids
        ``ref_pool[ref_starts[j]:ref_ends[j]]`` (all in ``deps``; repeats allowed). Like the id pool, the
        references are laid out once in the operation's order, so overlapping sets (prefixes, windows)
        share them: storage stays O(members' references), whatever the number of sets.
    deps : the blocks referred to (so a block keeps what its closure needs alive).

    Examples
    --------
    >>> b = SetBlock(np.array([10, 11, 12]), np.array([0, 0]), np.array([1, 3]), "cumsum")
    >>> b.m, b.base + 1 in b
    (2, True)
    """

    __slots__ = ("base", "m", "pool", "starts", "ends", "label", "ref_pool", "ref_starts", "ref_ends", "deps")

    def __init__(self, pool, starts, ends, label: str, ref_pool=None, ref_starts=None, ref_ends=None,
                 deps=()) -> None:  # fmt: skip
        self.pool = np.ascontiguousarray(pool, dtype=np.int64)
        self.starts = np.ascontiguousarray(starts, dtype=np.int64)
        self.ends = np.ascontiguousarray(ends, dtype=np.int64)
        if self.starts.shape != self.ends.shape:
            raise ValueError("starts and ends must have the same length")
        self.m = len(self.starts)
        if self.m and (self.starts.min() < 0 or self.ends.max() > len(self.pool)):
            raise ValueError("set segments outside the pool")
        self.label = str(label)
        if ref_pool is None:
            ref_pool, ref_starts, ref_ends = _EMPTY, np.zeros(self.m, np.int64), np.zeros(self.m, np.int64)
        self.ref_pool = np.ascontiguousarray(ref_pool, dtype=np.int64)
        self.ref_starts = np.ascontiguousarray(ref_starts, dtype=np.int64)
        self.ref_ends = np.ascontiguousarray(ref_ends, dtype=np.int64)
        if self.ref_starts.shape != (self.m,) or self.ref_ends.shape != (self.m,):
            raise ValueError("ref_starts and ref_ends need one entry per set")
        if self.m and (self.ref_starts.min() < 0 or self.ref_ends.max() > len(self.ref_pool)):
            raise ValueError("reference segments outside the reference pool")
        self.deps = tuple(deps)
        self.base = _allocate(self.m)

    def __contains__(self, set_id: int) -> bool:
        return self.base <= set_id < self.base + self.m

    @property
    def nbytes(self) -> int:
        arrays = (self.pool, self.starts, self.ends, self.ref_pool, self.ref_starts, self.ref_ends)
        return sum(a.nbytes for a in arrays)

    def set_refs(self, local: np.ndarray) -> np.ndarray:
        """The global set ids the sets ``local`` (0-based in this block) refer to, with repeats."""
        return self.ref_pool[segments_flat(self.ref_starts[local], self.ref_ends[local])]

    def __repr__(self) -> str:
        return f"SetBlock({self.label!r}, {self.m} sets over a pool of {len(self.pool)} ids)"


def all_blocks(blocks) -> dict[int, SetBlock]:
    """The blocks and everything they refer to, keyed by base (ascending = creation order)."""
    out: dict[int, SetBlock] = {}
    stack = list(blocks)
    while stack:
        b = stack.pop()
        if b.base not in out:
            out[b.base] = b
            stack.extend(b.deps)
    return dict(sorted(out.items()))


class Context:
    """Per-row references to shared sets: CSR ``ref_offsets`` (n + 1), ``refs`` (global set ids)."""

    __slots__ = ("ref_offsets", "refs", "blocks", "_bases")

    def __init__(self, ref_offsets, refs, blocks) -> None:
        self.ref_offsets = np.ascontiguousarray(ref_offsets, dtype=np.int64)
        self.refs = np.ascontiguousarray(refs, dtype=np.int64)
        self.blocks = blocks if isinstance(blocks, dict) else all_blocks(blocks)
        self._bases = None

    @classmethod
    def none(cls, n: int) -> Context:
        return cls(np.zeros(n + 1, dtype=np.int64), _EMPTY, {})

    def __len__(self) -> int:
        return len(self.ref_offsets) - 1

    @property
    def n_sets(self) -> int:
        return sum(b.m for b in self.blocks.values())

    @property
    def nbytes(self) -> int:
        return self.ref_offsets.nbytes + self.refs.nbytes + sum(b.nbytes for b in self.blocks.values())

    def _locate(self, set_ids: np.ndarray) -> tuple[np.ndarray, list[SetBlock]]:
        if self._bases is None:
            self._bases = np.fromiter(self.blocks.keys(), dtype=np.int64, count=len(self.blocks))
        blist = list(self.blocks.values())
        which = np.searchsorted(self._bases, set_ids, side="right") - 1
        return which, blist

    def closure(self, set_ids: np.ndarray) -> np.ndarray:
        """Global row ids of the sets ``set_ids`` and of every set they refer to (with repeats)."""
        set_ids = np.asarray(set_ids, dtype=np.int64)
        return self.expand(np.zeros(len(set_ids), dtype=np.int64), set_ids)[1]

    def expand(self, owners: np.ndarray, set_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For (owner, set) pairs, the (owner, global row id) pairs of each set's closure.

        One vectorised step per block generation; an owner reaching a set twice expands it once.
        """
        owners = np.asarray(owners, dtype=np.int64)
        sets = np.asarray(set_ids, dtype=np.int64)
        out_o: list[np.ndarray] = []
        out_i: list[np.ndarray] = []
        seen = _EMPTY
        span = np.int64(max(self.n_sets_bound(), 1))
        while sets.size:
            key = np.unique(owners * span + (sets - self._min_base()))
            key = np.setdiff1d(key, seen, assume_unique=True)
            seen = np.union1d(seen, key)
            owners, sets = key // span, key % span + self._min_base()
            which, blist = self._locate(sets)
            nxt_o, nxt_s = [], []
            for k in np.unique(which).tolist():
                b = blist[k]
                sel = which == k
                local, own = sets[sel] - b.base, owners[sel]
                lengths = b.ends[local] - b.starts[local]
                out_i.append(b.pool[segments_flat(b.starts[local], b.ends[local])])
                out_o.append(np.repeat(own, lengths))
                rl = b.ref_ends[local] - b.ref_starts[local]
                nxt_s.append(b.set_refs(local))
                nxt_o.append(np.repeat(own, rl))
            owners = np.concatenate(nxt_o) if nxt_o else _EMPTY
            sets = np.concatenate(nxt_s) if nxt_s else _EMPTY
        if not out_i:
            return _EMPTY, _EMPTY
        return np.concatenate(out_o), np.concatenate(out_i)

    def _min_base(self) -> int:
        return next(iter(self.blocks)) if self.blocks else 0

    def n_sets_bound(self) -> int:
        """One past the largest global set id here, minus the smallest base (a key range)."""
        if not self.blocks:
            return 0
        last = next(reversed(self.blocks.values()))
        return last.base + last.m - self._min_base()

    def row_refs(self, rows: np.ndarray) -> np.ndarray:
        """Global set ids referred to by the given row positions (with repeats)."""
        rows = np.asarray(rows, dtype=np.int64)
        return self.refs[segments_flat(self.ref_offsets[rows], self.ref_offsets[rows + 1])]

    def hit_sets(self, ids: np.ndarray) -> np.ndarray:
        """Sorted global set ids whose closure contains any of the global row ids ``ids``."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        hits: list[np.ndarray] = []
        hit_so_far = _EMPTY
        for b in self.blocks.values():  # creation order: a block refers only to earlier ones
            seg_hit = segments_any(isin_ids(b.pool, ids), b.starts, b.ends)
            if b.ref_pool.size and hit_so_far.size:
                seg_hit |= segments_any(isin_ids(b.ref_pool, hit_so_far), b.ref_starts, b.ref_ends)
            new = b.base + np.flatnonzero(seg_hit)
            if new.size:
                hits.append(new)
                hit_so_far = np.concatenate(hits)
        return np.sort(hit_so_far)

    def rows_referring(self, set_ids: np.ndarray) -> np.ndarray:
        """Sorted row positions whose references include any of ``set_ids``."""
        if not self.refs.size or not len(set_ids):
            return _EMPTY
        hit = isin_ids(self.refs, set_ids)
        row_of = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.ref_offsets))
        return np.unique(row_of[hit])

    def labels(self, set_ids: np.ndarray) -> list[str]:
        which, blist = self._locate(np.asarray(set_ids, dtype=np.int64))
        return [blist[k].label for k in which.tolist()]


def merge_blocks(*contexts: Context | None) -> dict[int, SetBlock]:
    out: dict[int, SetBlock] = {}
    for c in contexts:
        if c is not None:
            out.update(c.blocks)
    return dict(sorted(out.items()))


def context_payload(ctx: Context) -> bytes:
    """Row references + set blocks as one ``.npz`` blob (no pickles: loaded with allow_pickle=False)."""
    arrays = {"row_ref_offsets": ctx.ref_offsets, "row_refs": ctx.refs}
    blocks = []
    for k, b in enumerate(ctx.blocks.values()):
        for name in ("pool", "starts", "ends", "ref_pool", "ref_starts", "ref_ends"):
            arrays[f"b{k}_{name}"] = getattr(b, name)
        blocks.append({"base": b.base, "m": b.m, "label": b.label})
    arrays["blocks_json"] = np.frombuffer(json.dumps(blocks).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def context_from_payload(payload: bytes, n_rows: int, remap_ids) -> Context:
    """Inverse of :func:`context_payload`: new set ids in this process, row ids through ``remap_ids``."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            meta = json.loads(bytes(z["blocks_json"]).decode())
            old_bases = np.array([b["base"] for b in meta], dtype=np.int64)
            sizes = np.array([b["m"] for b in meta], dtype=np.int64)
            new_bases = np.zeros(len(meta), dtype=np.int64)

            def remap_sets(refs: np.ndarray) -> np.ndarray:
                k = np.searchsorted(old_bases, refs, side="right") - 1
                if refs.size and (np.any(k < 0) or np.any(refs - old_bases[k] >= sizes[k])):
                    raise LineageFormatError("shared-set reference outside the saved blocks")
                return new_bases[k] + (refs - old_bases[k])

            built: list[SetBlock] = []
            for k, bm in enumerate(meta):
                refs = remap_sets(np.asarray(z[f"b{k}_ref_pool"], dtype=np.int64))
                b = SetBlock(remap_ids(np.asarray(z[f"b{k}_pool"], dtype=np.int64)), z[f"b{k}_starts"],
                             z[f"b{k}_ends"], bm["label"], refs, z[f"b{k}_ref_starts"], z[f"b{k}_ref_ends"],
                             tuple(built))  # fmt: skip
                new_bases[k] = b.base
                built.append(b)
            row_refs = remap_sets(np.asarray(z["row_refs"], dtype=np.int64))
            ctx = Context(z["row_ref_offsets"], row_refs, built)
    except LineageFormatError:
        raise
    except (KeyError, ValueError, OSError, TypeError, IndexError) as e:
        raise LineageFormatError(f"malformed shared-context part of a lineage artifact: {e}") from e
    if len(ctx) != n_rows:
        raise LineageFormatError(f"shared sets cover {len(ctx)} rows, the lineage {n_rows}")
    return ctx
