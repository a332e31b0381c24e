"""GradientStore: projected per-sample gradients on disk (memory-mapped), with their lineage.

Sample ``i`` of the store is row ``i`` of the training data, so provenance questions are lineage
look-ups (:meth:`GradientStore.get_provenance`, :meth:`GradientStore.samples_from_source`).

File layout (``path/``)::

    manifest.json                 k, seed, dtype, variant, projection, n_samples, fingerprints, damping,
                                  parameter names, removed samples, checkpoints, lineage link, data_dir
    data-ID/lineage.parquet       RowLineage of the training rows (traceprop_frames.lineage.persist)
    data-ID/ckpt_000/features.bin raw C-order (n_rows, k) array of ``dtype`` (float16 or float32), memmapped
    data-ID/ckpt_000/derivs.npy   float32 (n_rows, 2): dℓ/df and d²ℓ/df² of each row at this checkpoint
    data-ID/ckpt_000/rows.npy     int64 (n_samples,): the feature row of each sample (identity unless "BM")
    data-ID/ckpt_000/params.pt    the checkpoint's parameters (test features are computed with them)

Crash safety: ``data-ID`` is one generation of files; filling the store again writes a new generation
and ``manifest.json`` (replaced atomically, last) is the commit point, so a crash mid-fill leaves the
previous store intact and a reader that opened the store keeps a consistent snapshot.

Bytes per sample: ``n_checkpoints * (k * itemsize + 8 + 8)`` — with k = 4096 in float16, 8,208 bytes
per sample and checkpoint (the "BM" variant stores one feature row per batch instead of per sample).
Feature files are written in chunks and read through ``np.memmap``, so a store larger than RAM works:
scoring streams it in row blocks. ``path=None`` keeps everything in memory (same API).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from traceprop_frames._durable import atomic_path, atomic_write_text, fsync_file
from traceprop_frames.attribution.gradients import VARIANTS, check_variant, fingerprint, n_coords, param_names
from traceprop_frames.attribution.projection import Projector, make_projector, projector_from_record
from traceprop_frames.errors import StoreError, UnknownRowError

FORMAT_VERSION = 1
DTYPES = {"float16": np.float16, "float32": np.float32}


@dataclass
class Provenance:
    """The source rows behind one training sample of a store."""

    sample: int
    rows: list = field(default_factory=list)  # list[SourceRow]

    def trace_to_file(self) -> str:
        """``"bureau.csv row 4821"``; several source rows are joined with ``"; "``."""
        if not self.rows:
            return f"training sample {self.sample} (no lineage recorded)"
        return "; ".join(r.trace_to_file() for r in self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        return self.trace_to_file()


class _Checkpoint:
    """Feature rows, loss derivatives, sample→row map and parameters of one checkpoint."""

    def __init__(self, store: GradientStore, index: int, n_rows: int, rows: np.ndarray, params: dict):
        self.store, self.index = store, index
        self.rows = np.asarray(rows, dtype=np.int64)
        self.params = {k: v.detach().cpu().clone() for k, v in params.items()}
        self.derivs = np.zeros((n_rows, 2), dtype=np.float32)
        self.n_rows = n_rows
        self.features = store._alloc(index, n_rows)

    @property
    def dir(self) -> Path:
        return Path(self.store.path) / self.store.data_dir / f"ckpt_{self.index:03d}"

    def grow(self, n_rows: int) -> None:
        if n_rows <= self.features.shape[0]:
            self.n_rows = max(self.n_rows, n_rows)
            return
        cap = max(n_rows, 2 * self.features.shape[0], 256)
        self.features = self.store._alloc(self.index, cap, old=self.features)
        d = np.zeros((cap, 2), dtype=np.float32)
        d[: len(self.derivs)] = self.derivs
        self.derivs = d
        self.n_rows = n_rows


class GradientStore:
    """Projected per-sample gradients plus lineage; see the module docstring for the file layout.

    Parameters
    ----------
    k : int or None, default=1024
        Projection dimension; ``None`` stores unprojected gradients (identity projection).
    path : str or None, default=None
        Directory of the store; ``None`` keeps it in memory.
    seed : int, default=0
        Seed of the projection matrix (regenerated, never stored).
    dtype : {"float16", "float32"}, default="float16"
    variant : {"TRAK", "LL", "BM"}, default="TRAK"
        Full gradient, last layer, or batch mean (one row per batch).
    projection : {"sparse", "gaussian", "identity"}, default="sparse"

    Examples
    --------
    >>> store = GradientStore(k=256)
    >>> store.variant, store.k, store.n_samples
    ('TRAK', 256, 0)
    """

    def __init__(
        self,
        k: int | None = 1024,
        path: str | os.PathLike | None = None,
        seed: int = 0,
        dtype: str = "float16",
        variant: str = "TRAK",
        projection: str = "sparse",
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.k = None if k is None else int(k)
        self.path = None if path is None else str(path)
        self.seed = int(seed)
        self.dtype = dtype
        self.variant = check_variant(variant)
        self.projection = projection if k is not None else "identity"
        self.read_only = False
        self.n_samples = 0
        self.param_names: list[str] = []
        self.projector: Projector | None = None
        self.checkpoints: list[_Checkpoint] = []
        self.damping = 0.0
        self.model_fingerprint: str | None = None
        self.lineage = None
        self.removed = np.zeros(0, dtype=bool)
        self.extra: dict = {}
        self.data_dir = ""  # the generation folder of the checkpoint files (see finalize)
        self._cache: dict = {}

    # ------------------------------------------------------------------ writing
    def begin(self, module: torch.nn.Module, n_samples: int, lineage=None, damping: float = 0.0) -> None:
        """Start (or restart) filling for ``module`` with ``n_samples`` training samples."""
        if self.read_only:
            raise StoreError("this store was opened read-only; create a new GradientStore to fill one")
        if lineage is not None and len(lineage) != n_samples:
            raise ValueError(f"lineage has {len(lineage)} rows but the training data has {n_samples}")
        self.param_names = param_names(module, self.variant)
        d = n_coords(module, self.param_names)
        self.projector = make_projector(self.projection, d, self.k, self.seed)
        self.k = self.projector.k
        self.n_samples = int(n_samples)
        self.lineage = lineage
        self.damping = float(damping)
        self.removed = np.zeros(self.n_samples, dtype=bool)
        self.checkpoints = []
        self._cache.clear()
        if self.path is not None:  # a new generation: the committed store stays readable until finalize
            os.makedirs(self.path, exist_ok=True)
            self.data_dir = f"data-{uuid.uuid4().hex[:12]}"

    def add_checkpoint(self, params: dict[str, torch.Tensor], n_rows: int | None = None) -> int:
        """Open a new checkpoint slot (per-sample variants: one row per sample); returns its index."""
        if self.projector is None:
            raise StoreError("call store.begin(module, n_samples) before adding checkpoints")
        per_sample = self.variant != "BM"
        n_rows = self.n_samples if per_sample else (n_rows or 0)
        rows = np.arange(self.n_samples) if per_sample else np.full(self.n_samples, -1, dtype=np.int64)
        ck = _Checkpoint(self, len(self.checkpoints), n_rows, rows, params)
        self.checkpoints.append(ck)
        self._cache.clear()
        return ck.index

    def set_params(self, c: int, params: dict[str, torch.Tensor]) -> None:
        self.checkpoints[c].params = {k: v.detach().cpu().clone() for k, v in params.items()}

    def write(self, c: int, rows, feats: torch.Tensor, dloss, d2loss) -> None:
        """Write projected feature rows (and loss derivatives) at ``rows`` of checkpoint ``c``."""
        ck = self.checkpoints[c]
        rows = np.asarray(rows, dtype=np.int64)
        ck.features[rows] = torch.as_tensor(feats).detach().cpu().numpy().astype(self.dtype, copy=False)
        ck.derivs[rows, 0] = np.asarray(torch.as_tensor(dloss).detach().cpu(), dtype=np.float32)
        ck.derivs[rows, 1] = np.asarray(torch.as_tensor(d2loss).detach().cpu(), dtype=np.float32)
        self._cache.clear()

    def append_batch(self, c: int, samples, feat: torch.Tensor) -> int:
        """For the "BM" variant: append one row (the batch's projected mean-loss gradient) for ``samples``."""
        ck = self.checkpoints[c]
        r = ck.n_rows
        ck.grow(r + 1)
        self.write(c, [r], torch.as_tensor(feat).reshape(1, -1), [1.0], [1.0])
        ck.rows[np.asarray(samples, dtype=np.int64)] = r
        return r

    def finalize(self, module: torch.nn.Module, extra: dict | None = None) -> None:
        """Record the final model's fingerprint and write the manifest (and lineage) to disk."""
        self.model_fingerprint = fingerprint(module)
        if extra:
            self.extra.update(extra)
        if self.path is None:
            return
        for ck in self.checkpoints:
            os.makedirs(ck.dir, exist_ok=True)
            if isinstance(ck.features, np.memmap):
                ck.features.flush()
                fsync_file(ck.dir / "features.bin")
            with atomic_path(ck.dir / "derivs.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, ck.derivs[: ck.n_rows])
            with atomic_path(ck.dir / "rows.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, ck.rows)
            with atomic_path(ck.dir / "params.pt") as tmp:
                torch.save(ck.params, tmp)
        if self.lineage is not None:
            from traceprop_frames.lineage.persist import save

            save(self.lineage, os.path.join(self.path, self._lineage_name()))
        self._write_manifest()  # the commit point: readers see the new generation from here on
        for old in Path(self.path).glob("data-*"):  # earlier generations (open memmaps keep their pages)
            if old.name != self.data_dir:
                shutil.rmtree(old, ignore_errors=True)
        for old in Path(self.path).glob("ckpt_*"):  # layout of stores written before generations
            shutil.rmtree(old, ignore_errors=True)
        if self.data_dir:
            Path(self.path, "lineage.parquet").unlink(missing_ok=True)

    def _lineage_name(self) -> str:
        return f"{self.data_dir}/lineage.parquet" if self.data_dir else "lineage.parquet"

    def manifest(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "k": self.k,
            "seed": self.seed,
            "dtype": self.dtype,
            "variant": self.variant,
            "projection": None if self.projector is None else self.projector.to_record(),
            "n_samples": self.n_samples,
            "n_checkpoints": len(self.checkpoints),
            "checkpoint_rows": [ck.n_rows for ck in self.checkpoints],
            "checkpoint_capacity": [int(ck.features.shape[0]) for ck in self.checkpoints],
            "checkpoint_fingerprints": [_params_fingerprint(ck.params) for ck in self.checkpoints],
            "model_fingerprint": self.model_fingerprint,
            "param_names": self.param_names,
            "damping": self.damping,
            "removed": np.flatnonzero(self.removed).tolist(),
            "lineage": self._lineage_name() if self.lineage is not None else None,
            "data_dir": self.data_dir,
            "bytes_per_sample": self.bytes_per_sample,
            "extra": self.extra,
        }

    def manifest_json(self) -> str:
        """The manifest as the text of ``manifest.json``."""
        return json.dumps(self.manifest(), indent=1)

    def _write_manifest(self) -> None:
        atomic_write_text(os.path.join(self.path, "manifest.json"), self.manifest_json())

    def _alloc(self, c: int, n_rows: int, old=None):
        shape = (max(n_rows, 0), self.k)
        np_dtype = DTYPES[self.dtype]
        if self.path is None:
            arr = np.zeros(shape, dtype=np_dtype)
            if old is not None:
                arr[: len(old)] = old
            return arr
        d = Path(self.path) / self.data_dir / f"ckpt_{c:03d}"
        os.makedirs(d, exist_ok=True)
        f = d / "features.bin"
        if old is not None and isinstance(old, np.memmap):
            old.flush()
            del old
        nbytes = shape[0] * shape[1] * np.dtype(np_dtype).itemsize
        with open(f, "ab") as fh:  # create or extend; np.memmap cannot grow a file itself
            fh.truncate(max(nbytes, 1))
        if shape[0] == 0:
            return np.zeros(shape, dtype=np_dtype)
        return np.memmap(f, dtype=np_dtype, mode="r+", shape=shape)

    # ------------------------------------------------------------------ reading
    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> GradientStore:
        """Re-open a store written by :meth:`finalize` (``mode="r"``: features are read-only memmaps).

        The store is a snapshot: the manifest names the generation of files it reads, and a process
        that fills the store again writes a new generation and switches the manifest to it atomically.
        """
        for attempt in range(5):
            gen = _generation(path)
            try:
                return cls._open(path, mode)
            except (FileNotFoundError, StoreError):
                if attempt == 4 or _generation(path) == gen:
                    raise
                # another process committed a new generation while we read: read that one
        raise AssertionError("unreachable")

    @classmethod
    def _open(cls, path, mode: str) -> GradientStore:
        m = _read_manifest(path)
        self = cls(k=m["k"], path=str(path), seed=m["seed"], dtype=m["dtype"], variant=m["variant"])
        self.read_only = mode == "r"
        proj = m.get("projection")
        try:
            self.projector = projector_from_record(proj) if proj else None
            self.projection = proj["kind"] if proj else "identity"
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(
                f"{os.fspath(path)!r}: malformed projection record in manifest.json ({e!r})"
            ) from None
        self.n_samples = m["n_samples"]
        self.param_names = m["param_names"]
        self.damping = m["damping"]
        self.model_fingerprint = m.get("model_fingerprint")
        self.extra = m.get("extra", {})
        self.data_dir = m.get("data_dir", "")
        self.removed = np.zeros(self.n_samples, dtype=bool)
        self.removed[np.asarray(m["removed"], dtype=np.int64)] = True
        np_dtype = DTYPES[self.dtype]
        for c, (n_rows, cap) in enumerate(zip(m["checkpoint_rows"], m["checkpoint_capacity"])):
            ck = _Checkpoint.__new__(_Checkpoint)
            ck.store, ck.index, ck.n_rows = self, c, n_rows
            ck.rows, ck.derivs, ck.params = _read_checkpoint(ck.dir, self.n_samples, n_rows)
            _check_features_file(ck.dir / "features.bin", cap * self.k * np.dtype(np_dtype).itemsize)
            fmode = "r" if self.read_only else "r+"
            ck.features = (
                np.memmap(ck.dir / "features.bin", dtype=np_dtype, mode=fmode, shape=(cap, self.k))
                if cap
                else np.zeros((0, self.k), dtype=np_dtype)
            )
            self.checkpoints.append(ck)
        if m.get("lineage"):
            from traceprop_frames.lineage.persist import load

            self.lineage = load(os.path.join(path, m["lineage"]))
        return self

    @property
    def n_checkpoints(self) -> int:
        return len(self.checkpoints)

    @property
    def bytes_per_sample(self) -> int:
        """Bytes on disk per training sample (features + loss derivatives + row map), all checkpoints."""
        item = np.dtype(DTYPES[self.dtype]).itemsize
        return int(len(self.checkpoints) * ((self.k or 0) * item + 8 + 8))

    def features(self, c: int = 0) -> np.ndarray:
        ck = self.checkpoints[c]
        return ck.features[: ck.n_rows]

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        where = self.path or "memory"
        return (
            f"GradientStore({self.n_samples} samples, k={self.k}, {self.variant}, {self.dtype}, "
            f"{len(self.checkpoints)} checkpoint(s), {where})"
        )

    def check_model(self, module: torch.nn.Module) -> None:
        """Raise :class:`StoreError` unless ``module`` has the parameters (names, shapes) the store was
        filled with. Scores use the store's own checkpoint weights, so a model of the same architecture
        (e.g. the model after an erasure) is fine; another architecture cannot be scored."""
        if not self.checkpoints:
            return
        have = {n: tuple(p.shape) for n, p in module.named_parameters()}
        want = {n: tuple(t.shape) for n, t in self.checkpoints[0].params.items()}
        diff = sorted(n for n in want if have.get(n) != want[n])
        if diff:
            raise StoreError(
                f"this gradient store was filled for another model: parameters {diff[:4]} have shapes "
                f"{[want[n] for n in diff[:4]]} in the store but {[have.get(n) for n in diff[:4]]} in the "
                "model. Score with the model the store was filled for, or refit with store=..."
            )

    # ------------------------------------------------------------------ erasure
    def mark_removed(self, indices, persist: bool = True) -> None:
        """Mark training samples as erased: they leave the kernel and never appear in influence results.

        Persisted in the manifest (``"removed"``) when the store lives on disk, unless ``persist=False``
        (the caller commits :meth:`manifest_json` itself, with the rest of an erasure).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_samples):
            raise UnknownRowError(f"sample indices outside 0..{self.n_samples - 1}")
        self.removed[idx] = True
        self._cache.clear()
        if persist and self.path is not None and os.path.exists(os.path.join(self.path, "manifest.json")):
            self._write_manifest()

    @property
    def active(self) -> np.ndarray:
        return ~self.removed

    # ------------------------------------------------------------------ lineage
    def _need_lineage(self):
        if self.lineage is None:
            raise StoreError(
                "this store has no lineage: fit on a traced frame (tpf.read_csv / tpf.track, or a Pipeline "
                "with set_output(transform='pandas')) or pass lineage= to TrainingContext"
            )
        return self.lineage

    def samples_from_source(self, path: str, rows, direct: bool = True) -> np.ndarray:
        """Training sample indices (sorted) that carry any of ``rows`` of source ``path``.

        ``direct=True`` (default): the samples whose values come from those rows — what an erasure
        forgets. ``direct=False`` adds samples that read them only through a shared statistic (e.g. a
        column mean used to normalise every sample). Removed samples are included (so an erasure can be
        checked); see :attr:`removed`.
        """
        return self._need_lineage().rows_from_source(path, np.atleast_1d(rows), direct=direct)

    def get_provenance(self, i: int, strict: bool = False, direct: bool = True) -> Provenance:
        """The source rows behind training sample ``i`` (``.trace_to_file()`` -> ``"bureau.csv row 4821"``).

        ``direct=True`` (default): the rows whose values the sample carries; ``direct=False`` adds the rows
        read by shared statistics that went into it (sufficient lineage, see ``RowLineage``)."""
        i = int(i)
        if not 0 <= i < self.n_samples:
            raise UnknownRowError(f"sample {i} outside 0..{self.n_samples - 1}")
        if self.lineage is None:
            return Provenance(i, [])
        return Provenance(i, self.lineage.trace(i, strict=strict, direct=direct))


def _params_fingerprint(params: dict) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, t in params.items():
        a = t.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------- load-side checks
_MANIFEST_KEYS = {
    "k": int, "seed": int, "dtype": str, "variant": str, "n_samples": int, "checkpoint_rows": list,
    "checkpoint_capacity": list, "param_names": list, "damping": (int, float), "removed": list,
}  # fmt: skip


def _generation(path) -> str | None:
    """The ``data_dir`` the store's manifest names now (None if unreadable)."""
    try:
        with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
            return json.load(f).get("data_dir")
    except (OSError, ValueError, AttributeError):
        return None


def _read_manifest(path) -> dict:
    """``manifest.json`` of the store at ``path``, checked; :class:`StoreError` says what is wrong."""
    mpath = os.path.join(path, "manifest.json")
    if not os.path.exists(mpath):
        raise StoreError(f"{os.fspath(path)!r} holds no gradient store (manifest.json missing)")
    try:
        with open(mpath, encoding="utf-8") as f:
            m = json.load(f)
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StoreError(
            f"{mpath} is not valid JSON ({e}): the store is truncated or was edited. Refit the model with "
            "store=... to write a new one."
        ) from None
    version = m.get("format_version") if isinstance(m, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise StoreError(
            f"{os.fspath(path)!r} was written by a newer traceprop-frames (store format {version}; this "
            f"version reads {FORMAT_VERSION}): upgrade traceprop-frames to read it."
        )
    if version != FORMAT_VERSION or m.get("variant") not in VARIANTS or m.get("dtype") not in DTYPES:
        raise StoreError(f"{os.fspath(path)!r}: unsupported gradient store format {version!r}")
    bad = [k for k, t in _MANIFEST_KEYS.items() if not isinstance(m.get(k), t) or isinstance(m.get(k), bool)]
    if bad:
        raise StoreError(f"{mpath} is malformed (missing or mistyped: {bad})")
    n, rows, caps = m["n_samples"], m["checkpoint_rows"], m["checkpoint_capacity"]
    removed = np.asarray(m["removed"])
    ok = (
        n >= 0 and m["k"] > 0 and len(rows) == len(caps)
        and all(isinstance(r, int) and isinstance(c, int) and 0 <= r <= c for r, c in zip(rows, caps))
        and (removed.size == 0 or (removed.dtype.kind == "i" and removed.min() >= 0 and removed.max() < n))
    )  # fmt: skip
    if not ok:
        raise StoreError(
            f"{mpath} is inconsistent (sample, row or removed counts out of range): it was edited"
        )
    return m


def _read_checkpoint(d: Path, n_samples: int, n_rows: int):
    """``rows.npy``, ``derivs.npy`` and ``params.pt`` of one checkpoint folder, checked against the manifest.
    Nothing here unpickles: ``np.load`` refuses pickled arrays, ``torch.load`` reads weights only."""
    try:
        rows = np.load(d / "rows.npy")
        derivs = np.load(d / "derivs.npy")
        params = torch.load(d / "params.pt", weights_only=True)
    except FileNotFoundError as e:
        raise StoreError(f"gradient store checkpoint {d} is incomplete: {e.filename} is missing") from None
    except Exception as e:  # truncated/garbled: numpy, torch and pickle raise many kinds
        raise StoreError(
            f"gradient store checkpoint {d} is truncated or corrupt ({type(e).__name__}: {e})"
        ) from None
    ok = (
        rows.dtype == np.int64 and rows.shape == (n_samples,) and derivs.shape == (n_rows, 2)
        and bool(np.all(rows < n_rows)) and isinstance(params, dict)
    )  # fmt: skip
    if not ok:
        raise StoreError(
            f"gradient store checkpoint {d} does not match its manifest ({n_samples} samples, {n_rows} rows): "
            "it was edited or comes from another store"
        )
    return rows, derivs, params


def _check_features_file(f: Path, nbytes: int) -> None:
    """A memmapped feature file must hold at least the bytes the manifest says (else reads would fault)."""
    size = os.path.getsize(f) if os.path.exists(f) else -1
    if nbytes and size < nbytes:
        raise StoreError(
            f"{f} holds {max(size, 0)} bytes but the manifest needs {nbytes}: the store is truncated "
            "(interrupted write or partial copy). Refit the model with store=... to write a new one."
        )
