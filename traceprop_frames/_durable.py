"""Crash-safe file writes, shared by every layer (imports nothing else of the package).

A durable write goes to a temporary file in the target's own folder, is flushed and fsynced, then
``os.replace``-d over the target and the folder is fsynced: a reader (or a process restarted after a
crash) sees the old bytes or the new bytes, never a mix or a truncated file.

``fault_point`` is a test hook for the fault-injection harness (``tests/faults/``): when the
environment variable ``TRACEPROP_FAULT_AT=k`` is set, the process kills itself with SIGKILL at its
k-th durable-write step; ``TRACEPROP_FAULT_COUNT=file`` appends each step's label to ``file`` so a
harness can learn how many steps an operation has. Without those variables it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path

_FAULT_AT = int(os.environ.get("TRACEPROP_FAULT_AT", "0") or 0)
_FAULT_LOG = os.environ.get("TRACEPROP_FAULT_COUNT")
_steps = 0


def fault_point(label: str) -> None:
    """A step at which the fault-injection harness may kill this process (no-op in normal use)."""
    global _steps
    if not _FAULT_AT and not _FAULT_LOG:
        return
    _steps += 1
    if _FAULT_LOG:
        with open(_FAULT_LOG, "a") as f:
            f.write(f"{_steps}\t{label}\n")
    if _steps == _FAULT_AT:
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(path) -> None:
    """fsync a folder, so a rename or a new file in it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path) -> None:
    """fsync a file's data to disk."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_files(paths) -> None:
    """fsync many files' data, concurrently: the file system commits them in a few shared journal
    transactions (1,000 small files on ext4: 0.08 s instead of 3.5 s one after another). Each file is
    still fsynced before this returns."""
    paths = list(paths)
    if len(paths) < 4:
        for p in paths:
            fsync_file(p)
        return
    from concurrent.futures import ThreadPoolExecutor

    k = min(16, len(paths))  # k fsyncs in flight; one task per thread, not per file (1,000 futures cost
    # ~0.04 s of lock traffic: measured 0.09 s per-file against 0.05 s this way, 1,000 files of 4.6 kB)

    def run(i: int) -> None:
        for p in paths[i::k]:
            fsync_file(p)

    with ThreadPoolExecutor(max_workers=k) as pool:
        list(pool.map(run, range(k)))


def temp_path(path) -> Path:
    """A fresh temporary name next to ``path`` (same folder, so ``os.replace`` is atomic)."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def replace(src, dst) -> None:
    """``os.replace(src, dst)`` after fsyncing ``src``, then fsync the folder."""
    fsync_file(src)
    fault_point(f"replace {Path(dst).name}")
    os.replace(src, dst)
    fault_point(f"replaced {Path(dst).name}")
    fsync_dir(Path(dst).parent)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path to write ``path``'s new content to; on success it replaces ``path``.

    For writers that take a file name (``pq.write_table``, ``torch.save``, ``np.save``). On an exception
    the temporary file is removed and ``path`` is left as it was.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = pathlib.Path(tmp).write_text("hello")
    >>> target.read_text()
    'hello'
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(p)
    try:
        yield tmp
        fault_point(f"written {p.name}")
        replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns the path."""
    p = Path(path)
    with atomic_path(p) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
    return p


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_many(files: dict) -> list[Path]:
    """Write ``{path: bytes}``, each file atomically (temporary file, fsync, rename), with the fsyncs
    done together and each folder fsynced once after its renames; returns the paths.

    Every file holds its old bytes or its new ones after a crash (there is no all-or-none across the
    files: use :class:`Journal` for that). For many small files, e.g. the certificates of a batch.
    """
    temps = {}
    try:
        for path, data in files.items():
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            temps[p] = tmp = temp_path(p)
            with open(tmp, "wb") as f:
                f.write(data)
        fsync_files(temps.values())
        for p, tmp in temps.items():
            fault_point(f"replace {p.name}")
            os.replace(tmp, p)
    except BaseException:
        for tmp in temps.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    for d in {p.parent for p in temps}:
        fsync_dir(d)
    return list(temps)


def remove_stale_temps(folder) -> list[str]:
    """Delete temporary files a killed writer left in ``folder`` (names from :func:`temp_path`)."""
    out = []
    for t in Path(folder).glob(".*.tmp-*"):
        with contextlib.suppress(OSError):
            t.unlink()
            out.append(t.name)
    return out


class Journal:
    """Several files replaced together, all or none, across a crash: a two-phase journal.

    ``Journal(folder, targets)`` writes ``folder/journal.json`` in state ``prepare`` listing each target
    and the staged file its new content goes to (:meth:`staged`). :meth:`commit` fsyncs the staged files
    and rewrites the journal in state ``commit`` — the commit point — then moves every staged file over
    its target and deletes the journal. :func:`recover_journal` after a crash: ``prepare`` → the staged
    files are deleted (roll back: the targets were never touched); ``commit`` → the remaining moves are
    done (roll forward). Targets may live in other folders of the same file system (a gradient store).
    """

    NAME = "journal.json"

    def __init__(self, folder, targets) -> None:
        import json

        self.folder = Path(folder)
        self.path = self.folder / self.NAME
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists: an interrupted write must be recovered first")
        tx = uuid.uuid4().hex[:12]
        self.files = {}
        for t in targets:
            t = Path(t).absolute()
            self.files[t] = t.with_name(f".{t.name}.staged-{tx}")
        self._record = {"tx": tx, "files": [[str(s), str(t)] for t, s in self.files.items()]}
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"state": "prepare", **self._record}))

    def staged(self, target) -> Path:
        """Where to write ``target``'s new content (its parent folder is created)."""
        s = self.files[Path(target).absolute()]
        s.parent.mkdir(parents=True, exist_ok=True)
        return s

    def commit(self) -> None:
        import json

        missing = [str(t) for t, s in self.files.items() if not s.exists()]
        if missing:
            raise FileNotFoundError(f"journal commit: nothing staged for {missing}")
        fsync_files(self.files.values())
        for d in {s.parent for s in self.files.values()}:
            fsync_dir(d)
        fault_point("journal commit")
        atomic_write_text(self.path, json.dumps({"state": "commit", **self._record}))
        _apply(self.path, self._record)

    def state(self) -> str | None:
        """``"prepare"``, ``"commit"`` or None (done or aborted)."""
        import json

        try:
            return json.loads(self.path.read_text())["state"]
        except (OSError, ValueError, KeyError):
            return None

    def abort(self) -> None:
        _rollback(self.path, self._record)


def _apply(path: Path, record: dict) -> None:
    """Move the staged files over their targets, then fsync each folder once (before the journal goes:
    after a power loss that undid a rename, the journal is still there to redo it)."""
    folders = set()
    for s, t in record["files"]:
        if os.path.exists(s):
            fault_point(f"apply {Path(t).name}")
            os.replace(s, t)
            folders.add(Path(t).parent)
    for d in folders:
        fsync_dir(d)
    fault_point("journal done")
    path.unlink()
    fsync_dir(path.parent)


def _rollback(path: Path, record: dict) -> None:
    for s, _ in record["files"]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(s)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fsync_dir(path.parent)


def pending_journal(folder) -> Path | None:
    """The journal an interrupted :class:`Journal` left in ``folder``, or None."""
    p = Path(folder) / Journal.NAME
    return p if p.exists() else None


def recover_journal(folder) -> str:
    """Finish or undo an interrupted :class:`Journal` in ``folder``.

    Returns ``"clean"`` (nothing to do), ``"rolled back"`` (the crash came before the commit point: the
    old files stand) or ``"rolled forward"`` (after it: the new files now stand). Call it while holding
    the folder's lock. Stale temporary files of :func:`atomic_path` are removed too.
    """
    import json

    remove_stale_temps(folder)
    p = pending_journal(folder)
    if p is None:
        return "clean"
    try:
        doc = json.loads(p.read_text())
    except ValueError:  # cannot happen with atomic_write_text; a journal damaged by hand
        raise ValueError(f"{p} is damaged; restore the folder from a backup") from None
    if doc["state"] == "commit":
        _apply(p, doc)
        return "rolled forward"
    _rollback(p, doc)
    return "rolled back"
