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
- A :class:`Context` is the per-row side of it: which global set ids each row refers to, and the
  blocks those ids (and their own references, transitively) live in. The references are kept as
  compact layers (:mod:`~traceprop_frames.lineage.refs`: "row i refers to set base + i" for a shift or
  a cumsum, "every row refers to set s" for a statistic, group codes for a group transform) and
  expanded to one CSR (``ref_offsets``, ``refs``) only for readers that walk every row.
- A block made by :meth:`SetBlock.deferred` is a recipe until a reader first asks about its sets, so
  recording a cross-row call costs O(1); the first question lays the sets out, once.

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
from traceprop_frames.lineage.refs import AllRefs, CsrRefs, isin_ids, segments_flat, sorted_unique, union_csr

_EMPTY = np.zeros(0, dtype=np.int64)
LAYOUT_LOCK = threading.RLock()  # one lock for laying out deferred sets and composing deferred lineage
_base_lock = threading.Lock()
_base_cursor = [0]


def _allocate(m: int) -> int:
    with _base_lock:
        base = _base_cursor[0]
        _base_cursor[0] += max(int(m), 1)
    return base


def merge_segments(owners: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, ...]:
    """(owner, start, end) pieces covering the union of each owner's segments ``[starts, ends)``, each
    position once: segments sorted by (owner, start), each clipped to begin after the furthest end
    reached before it by the same owner."""
    keep = ends > starts
    if not keep.all():
        owners, starts, ends = owners[keep], starts[keep], ends[keep]
    if owners.size < 2:
        return owners, starts, ends
    order = np.lexsort((starts, owners))
    owners, starts, ends = owners[order], starts[order], ends[order]
    group = np.zeros(owners.size, dtype=np.int64)
    np.cumsum(owners[1:] != owners[:-1], out=group[1:])
    shift = group * np.int64(ends.max() + 1)  # the reach of earlier owners stays below this owner's shift
    reach = np.maximum.accumulate(shift + ends)
    lo = np.maximum(starts, np.concatenate(([-1], reach[:-1])) - shift)
    keep = lo < ends
    return owners[keep], lo[keep], ends[keep]


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


def pool_hits(blocks, ids: np.ndarray) -> list[np.ndarray]:
    """``isin_ids(b.pool, ids)`` for each block, one scan per distinct pool: a block whose pool holds the
    same ids as an earlier one's (a std and the mean it refers to) reuses that mask (compared, not
    assumed: one pass instead of one per id)."""
    out: list[np.ndarray] = []
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    for b in blocks:
        pool = b.pool
        for p, hit in seen:
            if p is pool or (len(p) == len(pool) and np.array_equal(p, pool)):
                out.append(hit)
                break
        else:
            hit = isin_ids(pool, ids)
            seen.append((pool, hit))
            out.append(hit)
    return out


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

    __slots__ = ("base", "m", "label", "deps", "_arrays", "_build")

    def __init__(self, pool, starts, ends, label: str, ref_pool=None, ref_starts=None, ref_ends=None,
                 deps=()) -> None:  # fmt: skip
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        self.m = len(starts)
        self.label = str(label)
        self.deps = tuple(deps)
        self._build = None
        self._arrays = self._checked(pool, starts, ends, ref_pool, ref_starts, ref_ends)
        self.base = _allocate(self.m)

    @classmethod
    def deferred(cls, m: int, build, label: str, deps=()) -> SetBlock:
        """``m`` sets whose arrays ``build()`` returns (``pool, starts, ends[, ref_pool, ref_starts,
        ref_ends]``) when a reader first needs them: recording a cross-row call costs O(1), the first
        question about its sets pays for laying them out (once; the result is kept). ``deps`` must be the
        blocks the built references point into, known now."""
        obj = cls.__new__(cls)
        obj.m, obj.label, obj.deps = int(m), str(label), tuple(deps)
        obj._arrays, obj._build = None, build
        obj.base = _allocate(obj.m)
        return obj

    def _checked(self, pool, starts, ends, ref_pool=None, ref_starts=None, ref_ends=None) -> tuple:
        pool = np.ascontiguousarray(pool, dtype=np.int64)
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        ends = np.ascontiguousarray(ends, dtype=np.int64)
        if starts.shape != ends.shape or len(starts) != self.m:
            raise ValueError("starts and ends must have the same length")
        if self.m and (starts.min() < 0 or ends.max() > len(pool)):
            raise ValueError("set segments outside the pool")
        if ref_pool is None:
            ref_pool, ref_starts, ref_ends = _EMPTY, np.zeros(self.m, np.int64), np.zeros(self.m, np.int64)
        ref_pool = np.ascontiguousarray(ref_pool, dtype=np.int64)
        ref_starts = np.ascontiguousarray(ref_starts, dtype=np.int64)
        ref_ends = np.ascontiguousarray(ref_ends, dtype=np.int64)
        if ref_starts.shape != (self.m,) or ref_ends.shape != (self.m,):
            raise ValueError("ref_starts and ref_ends need one entry per set")
        if self.m and (ref_starts.min() < 0 or ref_ends.max() > len(ref_pool)):
            raise ValueError("reference segments outside the reference pool")
        return pool, starts, ends, ref_pool, ref_starts, ref_ends

    def _get(self, k: int) -> np.ndarray:
        arrays = self._arrays
        if arrays is None:
            with LAYOUT_LOCK:
                if self._arrays is None:
                    self._arrays = self._checked(*self._build())
                    self._build = None  # release what the layout was computed from
                arrays = self._arrays
        return arrays[k]

    pool = property(
        lambda self: self._get(0), doc="int64 global row ids, in the order the operation read them"
    )
    starts = property(lambda self: self._get(1))
    ends = property(lambda self: self._get(2))
    ref_pool = property(lambda self: self._get(3))
    ref_starts = property(lambda self: self._get(4))
    ref_ends = property(lambda self: self._get(5))

    @property
    def is_laid_out(self) -> bool:
        """False while the sets are still a recipe (:meth:`deferred`) no reader has asked about."""
        return self._arrays is not None

    def __contains__(self, set_id: int) -> bool:
        return self.base <= set_id < self.base + self.m

    @property
    def nbytes(self) -> int:
        """Bytes of the laid-out arrays (0 while deferred: the recipe holds arrays of the lineage)."""
        return sum(a.nbytes for a in self._arrays) if self._arrays is not None else 0

    def set_refs(self, local: np.ndarray) -> np.ndarray:
        """The global set ids the sets ``local`` (0-based in this block) refer to, with repeats."""
        return self.ref_pool[segments_flat(self.ref_starts[local], self.ref_ends[local])]

    def __repr__(self) -> str:
        pool = (
            f"a pool of {len(self._arrays[0])} ids" if self._arrays is not None else "rows not laid out yet"
        )
        return f"SetBlock({self.label!r}, {self.m} sets over {pool})"


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
    """Per-row references to shared sets, and the blocks they live in.

    The references are a list of *layers* (:mod:`~traceprop_frames.lineage.refs`: compact forms such as
    "row i refers to set base + i"); a row refers to the union over the layers. ``ref_offsets`` /
    ``refs`` give them as one CSR (n + 1 offsets, global set ids), expanded on first use and kept;
    :meth:`row_refs`, :meth:`take` and :meth:`rows_referring` answer from the layers without expanding.
    """

    __slots__ = ("layers", "blocks", "n", "_csr", "_bases")

    MAX_LAYERS = 8  # more than this many compact layers are folded into one CSR layer

    def __init__(self, ref_offsets, refs, blocks) -> None:
        self._init((CsrRefs(ref_offsets, refs),), blocks)

    def _init(self, layers, blocks) -> None:
        self.layers = tuple(layer for layer in layers if layer.any()) or tuple(layers[:1])
        self.n = len(layers[0])
        self.blocks = blocks if isinstance(blocks, dict) else all_blocks(blocks)
        self._csr = None
        self._bases = None
        if len(self.layers) > self.MAX_LAYERS:
            self.layers = (CsrRefs(*union_csr(self.layers)),)

    @classmethod
    def layered(cls, layers, blocks) -> Context:
        """A context whose rows refer to the union of ``layers`` (all of the same length)."""
        if len({len(layer) for layer in layers}) != 1:
            raise ValueError("reference layers of different lengths")
        obj = cls.__new__(cls)
        obj._init(tuple(layers), blocks)
        return obj

    @classmethod
    def none(cls, n: int) -> Context:
        return cls(np.zeros(n + 1, dtype=np.int64), _EMPTY, {})

    def __len__(self) -> int:
        return self.n

    def has_refs(self) -> bool:
        """True if some row refers to a set (without expanding the layers)."""
        return any(layer.any() for layer in self.layers)

    def _expanded(self) -> tuple[np.ndarray, np.ndarray]:
        if self._csr is None:
            self._csr = union_csr(self.layers)
        return self._csr

    @property
    def ref_offsets(self) -> np.ndarray:
        return self._expanded()[0]

    @property
    def refs(self) -> np.ndarray:
        return self._expanded()[1]

    def with_layer(self, layer, blocks) -> Context:
        """These references plus ``layer``'s (rows refer to both); ``blocks``: the new layer's."""
        if len(layer) != self.n:
            raise ValueError(f"a reference layer of {len(layer)} rows for a context of {self.n}")
        merged = merge_blocks(self, Context.layered([layer], blocks))
        last = self.layers[-1] if self.layers and self.layers[-1].any() else None
        if isinstance(last, AllRefs) and isinstance(layer, AllRefs):  # statistics broadcast one by one
            layers = self.layers[:-1] + (AllRefs(self.n, np.concatenate([last.set_ids, layer.set_ids])),)
        else:
            layers = self.layers + (layer,)
        return Context.layered(layers, merged)

    def take(self, rows: np.ndarray) -> Context:
        """The references of the rows at positions ``rows`` (repeats allowed), layer by layer."""
        rows = np.asarray(rows, dtype=np.int64)
        return Context.layered([layer.take(rows) for layer in self.layers], self.blocks)

    def distinct_refs(self) -> np.ndarray:
        """The global set ids some row refers to (each once, unordered)."""
        parts = [layer.distinct() for layer in self.layers]
        return parts[0] if len(parts) == 1 else sorted_unique(np.concatenate(parts))

    @property
    def n_sets(self) -> int:
        return sum(b.m for b in self.blocks.values())

    @property
    def nbytes(self) -> int:
        refs = sum(layer.nbytes for layer in self.layers)
        if self._csr is not None and not (len(self.layers) == 1 and isinstance(self.layers[0], CsrRefs)):
            refs += self._csr[0].nbytes + self._csr[1].nbytes
        return refs + sum(b.nbytes for b in self.blocks.values())

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

        One vectorised step per block generation; an owner reaching a set twice expands it once, and
        the overlapping segments of its sets (prefixes, windows) are read once: a row that reaches all
        n prefixes of a column costs O(n log n), not O(n^2).
        """
        owners = np.asarray(owners, dtype=np.int64)
        sets = np.asarray(set_ids, dtype=np.int64)
        out_o: list[np.ndarray] = []
        out_i: list[np.ndarray] = []
        seen = _EMPTY
        span = np.int64(max(self.n_sets_bound(), 1))
        while sets.size:
            key = sorted_unique(owners * span + (sets - self._min_base()))
            key = np.setdiff1d(key, seen, assume_unique=True)
            seen = sorted_unique(np.concatenate([seen, key]))
            owners, sets = key // span, key % span + self._min_base()
            which, blist = self._locate(sets)
            nxt_o, nxt_s = [], []
            for k in np.unique(which).tolist():
                b = blist[k]
                sel = which == k
                local, own = sets[sel] - b.base, owners[sel]
                o, lo, hi = merge_segments(own, b.starts[local], b.ends[local])
                out_i.append(b.pool[segments_flat(lo, hi)])
                out_o.append(np.repeat(o, hi - lo))
                o, lo, hi = merge_segments(own, b.ref_starts[local], b.ref_ends[local])
                nxt_s.append(b.ref_pool[segments_flat(lo, hi)])
                nxt_o.append(np.repeat(o, hi - lo))
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
        parts = [layer.gather(rows)[1] for layer in self.layers]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def hit_sets(self, ids: np.ndarray) -> np.ndarray:
        """Sorted global set ids whose closure contains any of the global row ids ``ids``."""
        ids = sorted_unique(np.asarray(ids, dtype=np.int64))
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
        set_ids = np.asarray(set_ids, dtype=np.int64)
        if not set_ids.size:
            return _EMPTY
        parts = [layer.rows_referring(set_ids) for layer in self.layers if layer.any()]
        if not parts:
            return _EMPTY
        if len(parts) == 1:
            return parts[0]
        n = len(self)
        for p in parts:
            if len(p) == n:  # each part: sorted distinct positions in range(n), so this one is every row
                return p
        if sum(len(p) for p in parts) * 8 < n:  # few rows: sort them
            return sorted_unique(np.concatenate(parts))
        mark = np.zeros(n, dtype=bool)  # many rows: their union in a mask over the rows (no sort)
        for p in parts:
            mark[p] = True
        return np.flatnonzero(mark)

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
