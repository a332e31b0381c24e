"""Fault injection: kill (SIGKILL) an operation at many points, reopen, check it is whole or untouched.

Six operations, each run in a forked child process on a fresh copy of a "before" state:

* ``erase``  — :func:`erase_in_folder` on a model folder with a gradient store and a ledger;
* ``batch``  — :func:`erase_requests_in_folder`: 20 requests, one solve, 20 ledger entries, one commit;
* ``save``   — :func:`save_model` of a model fit on other data over an existing folder (new training
  data files in ``data/``, the old ones deleted after the commit);
* ``store``  — filling a :class:`GradientStore` again over an existing one;
* ``parquet`` — ``df.tp.to_parquet`` over an existing traced Parquet file;
* ``sql``    — ``CREATE OR REPLACE TABLE ... AS SELECT`` in a persistent traced DuckDB database.

Kill points: every durable-write step of the operation (``TRACEPROP_FAULT_AT``-style hook in
``traceprop_frames._durable.fault_point``, one run per step), plus kills from the parent at times
spread evenly over the operation's measured duration (the SQL statement has no hook inside DuckDB,
so it is killed by time only). After each kill the state is reopened the way a user would (which runs
recovery) and classified: ``before`` (exactly the old state), ``after`` (exactly the new state),
``half`` (anything else, or an error on reopening: the goal is 0), and ``lost`` (the child had
reported the operation complete but the state is not ``after``: goal 0). A timed kill that comes after
the operation finished is not counted as a kill (its state must be ``after``, else it counts as lost).

Usage::

    python tests/faults/harness.py --kills 70          # per operation; `make faults` runs this
    python tests/faults/harness.py --kills 4 --ops erase
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout this harness belongs to
import traceprop_frames as tpf  # noqa: E402
from traceprop_frames import _durable  # noqa: E402
from traceprop_frames.attribution import GradientStore  # noqa: E402
from traceprop_frames.estimators import TorchLogisticRegression  # noqa: E402
from traceprop_frames.unlearn import generate_key, ledger, parameter_fingerprint  # noqa: E402
from traceprop_frames.unlearn.bundle import ModelFolder, final_estimator  # noqa: E402
from traceprop_frames.unlearn.folder import erase_in_folder, erase_requests_in_folder  # noqa: E402


# ---------------------------------------------------------------------------- the operations
class Erase:
    name = "erase"

    def setup(self, root: Path) -> Path:
        rng = np.random.default_rng(0)
        X = rng.normal(size=(400, 5))
        df = pd.DataFrame(X, columns=list("abcde")).assign(y=(X[:, 0] + rng.normal(size=400) > 0).astype(int))
        df.to_csv(root / "train.csv", index=False)
        frame = tpf.read_csv(root / "train.csv")
        clf = TorchLogisticRegression(store=str(root / "state" / "store"), k=16)
        clf.fit(frame[list("abcde")], frame["y"])
        self.key = generate_key()
        folder = ModelFolder(root / "state" / "model").save(clf)
        erase_in_folder(folder.path, samples=[1, 2], key=self.key)  # the ledger already holds one entry
        return root / "state"

    def run(self, state: Path) -> None:
        erase_in_folder(state / "model", samples=[10, 11, 12], key=self.key)

    def observe(self, state: Path):
        est = final_estimator(ModelFolder(state / "model").load())  # recovers an interrupted erasure
        certs = ledger.verify_chain(state / "model", self.key.public_key())
        return (
            parameter_fingerprint(est.module_),
            tuple(np.flatnonzero(est.store_.removed).tolist()),
            len(certs),
            tuple(np.flatnonzero(est.sample_weight_ == 0).tolist()),
            tuple(est.lineage_.ops()),
        )


class Batch(Erase):
    """``traceprop erase MODEL --requests``: 20 single-row requests, one solve, 20 chained ledger entries."""

    name = "batch"

    def setup(self, root: Path) -> Path:
        state = super().setup(root)
        self.requests = [
            {"request_id": f"r{i}", "source": str(root / "train.csv"), "rows": [30 + 3 * i], "received": ""}
            for i in range(20)
        ]
        return state

    def run(self, state: Path) -> None:
        erase_requests_in_folder(state / "model", self.requests, key=self.key)


class Save:
    """``save_model`` over a folder holding another model: model.pkl and the data files change together."""

    name = "save"

    def setup(self, root: Path) -> Path:
        rng = np.random.default_rng(1)
        X1, X2 = rng.normal(size=(400, 5)), rng.normal(size=(600, 5))
        ModelFolder(root / "state" / "model").save(TorchLogisticRegression().fit(X1, X1[:, 0] > 0))
        self.new = TorchLogisticRegression().fit(X2, X2[:, 1] > 0)
        return root / "state"

    def run(self, state: Path) -> None:
        ModelFolder(state / "model").save(self.new)

    def observe(self, state: Path):
        est = ModelFolder(state / "model").load()  # recovers; checks each data file's sha256
        return (
            parameter_fingerprint(est.module_),
            hashlib.sha256(np.ascontiguousarray(est.X_train_).tobytes()).hexdigest(),
            hashlib.sha256(np.ascontiguousarray(est.y_train_).tobytes()).hexdigest(),
        )


class Store:
    name = "store"

    def fill(self, path: Path, value: float, n: int) -> None:
        m = torch.nn.Linear(7, 1)
        store = GradientStore(k=None, path=str(path), dtype="float32")
        store.begin(m, n)
        for _ in range(2):
            c = store.add_checkpoint(dict(m.named_parameters()))
            store.write(c, np.arange(n), torch.full((n, 8), value), np.full(n, value), np.zeros(n))
        store.finalize(m, extra={"value": value})

    def setup(self, root: Path) -> Path:
        self.fill(root / "state" / "store", 1.0, 3000)
        return root / "state"

    def run(self, state: Path) -> None:
        self.fill(state / "store", 2.0, 5000)

    def observe(self, state: Path):
        s = GradientStore.open(state / "store")
        v = s.extra["value"]
        ok = all(
            np.all(np.asarray(s.features(c)) == v) and np.all(s.checkpoints[c].derivs[:, 0] == v)
            for c in range(s.n_checkpoints)
        )
        return (v, s.n_samples, s.n_checkpoints, bool(ok))


class Parquet:
    name = "parquet"

    def frame(self, root: Path, n: int):
        rng = np.random.default_rng(n)
        pd.DataFrame({"k": rng.integers(0, 50, n), "v": rng.normal(size=n)}).to_csv(
            root / f"src{n}.csv", index=False
        )
        df = tpf.read_csv(root / f"src{n}.csv")
        return df[df["v"] > 0].tp.groupby("k").agg(v=("v", "sum"))

    def setup(self, root: Path) -> Path:
        (root / "state").mkdir()
        self.frame(root, 20_000).tp.to_parquet(root / "state" / "out.parquet")
        self.new = self.frame(root, 200_000)
        return root / "state"

    def run(self, state: Path) -> None:
        self.new.tp.to_parquet(state / "out.parquet")

    def observe(self, state: Path):
        df = tpf.read_traced(state / "out.parquet")
        src = {Path(p).name: len(r) for p, r in df.tp.sources().items()}
        return (len(df), round(float(df["v"].sum()), 6), tuple(sorted(src.items())))


class SQL:
    name = "sql"

    def setup(self, root: Path) -> Path:
        rng = np.random.default_rng(3)
        n = 300_000
        pd.DataFrame({"k": rng.integers(0, 1000, n), "v": rng.normal(size=n)}).to_csv(
            root / "src.csv", index=False
        )
        (root / "state").mkdir()
        with tpf.connect(str(root / "state" / "db.duckdb")) as con:
            con.read_csv(root / "src.csv", "src")
            con.execute("CREATE TABLE t AS SELECT k, v FROM src WHERE v > 2")
        return root / "state"

    def run(self, state: Path) -> None:
        with tpf.connect(str(state / "db.duckdb")) as con:
            con.execute("CREATE OR REPLACE TABLE t AS SELECT k, sum(v) AS v FROM src WHERE v > 0 GROUP BY k")

    def observe(self, state: Path):
        with tpf.connect(str(state / "db.duckdb")) as con:
            df = con.execute("SELECT * FROM t")
            lin = df.tp.lineage()
            # the lineage is whole: every row's source rows are exactly the ones the statement reads
            return (len(df), round(float(df["v"].sum()), 4), int(lin.n_ids))


OPS = {c.name: c for c in (Erase, Batch, Save, Store, Parquet, SQL)}


# ---------------------------------------------------------------------------- running and killing
def _child(op, state: Path, fault_at: int, log: str | None, done: Path) -> None:
    _durable._FAULT_AT, _durable._FAULT_LOG, _durable._steps = fault_at, log, 0
    try:
        op.run(state)
        done.write_text("done")
        code = 0
    except BaseException as e:  # noqa: BLE001 - report any failure of the child as such
        print(f"child failed: {type(e).__name__}: {e}", file=sys.stderr)
        code = 3
    os._exit(code)


def _fork_run(op, base: Path, work: Path, fault_at=0, log=None, kill_after=None):
    """Copy the before state, run the op in a forked child, kill it; returns (killed, completed, seconds)."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(base, work, symlinks=True)
    _fix_paths(work)
    done = work.parent / (work.name + ".done")
    done.unlink(missing_ok=True)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _child(op, work, fault_at, log, done)
    status = None
    if kill_after is not None:
        t_end = t0 + kill_after
        while time.perf_counter() < t_end:
            r, st = os.waitpid(pid, os.WNOHANG)
            if r:
                status = st
                break
            time.sleep(0.0005)
        else:
            os.kill(pid, signal.SIGKILL)
    deadline = time.perf_counter() + 300
    while status is None:  # a child that hangs (it should never) is killed and reported, not waited on
        r, st = os.waitpid(pid, os.WNOHANG)
        if r:
            status = st
        elif time.perf_counter() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise RuntimeError(f"{op.name}: the child hung for 300 s")
        else:
            time.sleep(0.005)
    seconds = time.perf_counter() - t0
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3:
        raise RuntimeError(f"{op.name}: the operation itself failed (not a fault); see stderr")
    return killed, done.exists(), seconds


def _fix_paths(work: Path) -> None:
    """A model folder records its store's absolute path: point the copy at its own store."""
    b = work / "model" / "bundle.json"
    if b.exists():
        meta = json.loads(b.read_text())
        meta["store"] = str(work / "store")
        b.write_text(json.dumps(meta))


def campaign(op, kills: int, root: Path) -> Counter:
    base = op.setup(root)
    work = root / "work"
    before = op.observe(base)
    # a clean run: the "after" state, the op's durable-write steps and its duration
    log = root / "steps.log"
    _fork_run(op, base, work, log=str(log))
    after = op.observe(work)
    duration = min(_fork_run(op, base, work)[2] for _ in range(3))  # without the step log
    assert after != before, f"{op.name}: the operation changes nothing observable"
    steps = len(log.read_text().splitlines()) if log.exists() else 0
    hooks = (
        sorted(set(np.linspace(1, steps, min(steps, kills // 2)).round().astype(int).tolist()))
        if steps
        else []
    )
    n_timed = kills - len(hooks)
    times = [duration * (i + 0.5) / n_timed for i in range(n_timed)]  # spread over the operation
    counts = Counter(steps=steps, duration_ms=int(duration * 1000))
    for k in hooks + [None] * n_timed:
        kill_after = None if k is not None else times.pop(0)
        killed, completed, _ = _fork_run(op, base, work, fault_at=k or 0, kill_after=kill_after)
        try:
            state = op.observe(work)
        except Exception as e:  # noqa: BLE001 - any error on reopening is a half-done state
            print(f"  {op.name} k={k} t={kill_after}: reopening failed: {type(e).__name__}: {e}")
            state = "error"
        if not killed:  # it finished before its kill time: it must have left the "after" state
            counts["finished before the kill"] += 1
            counts["lost"] += state != after
            continue
        counts["kills"] += 1
        verdict = "before" if state == before else "after" if state == after else "half"
        counts[verdict] += 1
        counts["lost"] += completed and verdict != "after"
        if verdict == "half" and state != "error":
            print(f"  {op.name} k={k} t={kill_after}: half-done state {state}")
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=70, help="kill attempts per operation (default 70)")
    p.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # forked children: no inherited thread pools
    total = Counter()
    t0 = time.perf_counter()
    print(
        f"{'operation':>9} {'steps':>5} {'op ms':>6} {'kills':>5} {'before':>6} {'after':>5} {'half':>4} {'lost':>4}"
    )
    for name in args.ops:
        with tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as d:
            c = campaign(OPS[name](), args.kills, Path(d))
        total.update({k: v for k, v in c.items() if k in ("kills", "before", "after", "half", "lost")})
        print(f"{name:>9} {c['steps']:>5} {c['duration_ms']:>6} {c['kills']:>5} {c['before']:>6} {c['after']:>5} "
              f"{c['half']:>4} {c['lost']:>4}" + (f"  ({c['finished before the kill']} runs finished before "
              "their kill time)" if c["finished before the kill"] else ""))  # fmt: skip
    print(f"{'total':>9} {'':>5} {'':>6} {total['kills']:>5} {total['before']:>6} {total['after']:>5} "
          f"{total['half']:>4} {total['lost']:>4}   in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    return 0 if total["half"] == 0 and total["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
