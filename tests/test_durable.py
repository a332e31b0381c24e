"""Crash safety of model folders: the two-phase journal, recovery both ways, the folder lock."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from sklearn.datasets import make_classification

from traceprop_frames._durable import Journal, atomic_write_text, recover_journal
from traceprop_frames.errors import FolderLockedError, InterruptedWriteError, LedgerError, ModelFolderError
from traceprop_frames.estimators import TorchLogisticRegression
from traceprop_frames.unlearn import generate_key, ledger, parameter_fingerprint
from traceprop_frames.unlearn.bundle import load_model, locked, recover, save_model
from traceprop_frames.unlearn.folder import erase_in_folder


def _journal(folder, targets, content):
    j = Journal(folder, targets)
    for t, c in zip(targets, content):
        j.staged(t).write_text(c)
    return j


def test_journal_rolls_back_before_and_forward_after_the_commit_point(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "sub" / "b.txt"
    atomic_write_text(a, "old a")
    # crash before the commit point: staged files exist, journal says "prepare" -> roll back
    _journal(tmp_path, [a, b], ["new a", "new b"])
    assert recover_journal(tmp_path) == "rolled back"
    assert (
        a.read_text() == "old a"
        and not b.exists()
        and sorted(p.name for p in tmp_path.iterdir())
        == [
            "a.txt",
            "sub",
        ]
    )
    assert list((tmp_path / "sub").iterdir()) == []
    # crash after the commit point, one file already moved: recovery finishes the other
    j = _journal(tmp_path, [a, b], ["new a", "new b"])
    atomic_write_text(j.path, json.dumps({"state": "commit", **j._record}))
    staged_a = j.files[a.absolute()]
    staged_a.replace(a)
    assert recover_journal(tmp_path) == "rolled forward"
    assert (a.read_text(), b.read_text()) == ("new a", "new b") and not j.path.exists()
    assert recover_journal(tmp_path) == "clean"


@pytest.fixture
def folder(tmp_path):
    X, y = make_classification(n_samples=120, n_features=4, random_state=0)
    clf = TorchLogisticRegression(store=str(tmp_path / "store"), k=8).fit(X, y)
    return save_model(clf, tmp_path / "model")


def test_erase_in_folder_commits_model_store_and_ledger_together(folder):
    key = generate_key()
    before = parameter_fingerprint(load_model(folder).module_)
    cert = erase_in_folder(folder, samples=[3, 5], key=key)
    est = load_model(folder)
    assert cert.body["model"]["fingerprint_before"] == before
    assert parameter_fingerprint(est.module_) == cert.body["model"]["fingerprint_after"] != before
    assert np.flatnonzero(est.store_.removed).tolist() == [3, 5]
    assert [c.id for c in ledger.verify_chain(folder, key.public_key())] == [cert.id]
    dry = erase_in_folder(folder, samples=[7], key=key, dry_run=True)
    assert dry.status == "erased" and len(ledger.entries(folder)) == 1  # nothing on disk changed
    assert np.flatnonzero(load_model(folder).store_.removed).tolist() == [3, 5]
    # a certificate that does not continue the ledger is refused
    with pytest.raises(LedgerError, match="another erasure was recorded in between"):
        ledger.append(folder, cert)


def test_interrupted_erasure_is_reported_then_recovered(folder):
    key = generate_key()
    erase_in_folder(folder, samples=[1], key=key)
    state = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    # stage a second erasure's files as a crash would leave them, before the commit point
    j = Journal(folder, [folder / "model.pkl", ledger.entry_path(folder, 2)])
    j.staged(folder / "model.pkl").write_bytes(b"half")
    with pytest.raises(InterruptedWriteError, match="traceprop recover"):
        load_model(folder, recover=False)
    with pytest.raises(InterruptedWriteError):
        ledger.verify_chain(folder, key.public_key())  # a verifier changes nothing
    assert recover(folder) == "rolled back"
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == state
    assert len(ledger.verify_chain(folder, key.public_key())) == 1


def test_truncated_model_file_is_a_named_error(folder):
    (folder / "model.pkl").write_bytes((folder / "model.pkl").read_bytes()[:100])
    with pytest.raises(ModelFolderError, match="truncated or corrupt"):
        load_model(folder)


_HOLD = """
import os, sys, time, filelock
with filelock.FileLock(os.path.join(sys.argv[1], ".lock")):  # the lock erase_in_folder takes
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""

_ERASE = """
import sys
from traceprop_frames.unlearn import load_private_key
from traceprop_frames.unlearn.folder import erase_in_folder
erase_in_folder(sys.argv[1], samples=[int(sys.argv[2])], key=load_private_key(sys.argv[3]))
"""


def test_second_process_waits_or_fails_clearly_and_no_request_is_lost(folder, tmp_path):
    from traceprop_frames.unlearn import save_private_key

    key = generate_key()
    kp = save_private_key(key, tmp_path / "k.pem")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder), "3"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    t0 = time.perf_counter()
    with pytest.raises(FolderLockedError, match="another process is writing"), locked(folder, timeout=0.2):
        pass
    assert time.perf_counter() - t0 < 2.5
    holder.wait(timeout=30)
    # two real processes erase different samples at once: both erasures land, chained
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(_ERASE), str(folder), str(s), str(kp)])
        for s in (10, 20)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    certs = ledger.verify_chain(folder, key.public_key())
    assert sorted(c.body["forget_set"]["training_indices"][0] for c in certs) == [10, 20]
    assert np.flatnonzero(load_model(folder).store_.removed).tolist() == [10, 20]


_FILL = """
import sys, numpy as np, torch
from traceprop_frames.attribution import GradientStore
torch.manual_seed(0)
m = torch.nn.Linear(3, 1)
for g in range(1, int(sys.argv[2]) + 1):
    store = GradientStore(k=None, path=sys.argv[1], dtype="float32")
    n = 40 + 3 * g
    store.begin(m, n)
    c = store.add_checkpoint(dict(m.named_parameters()))
    store.write(c, np.arange(n), torch.full((n, 4), float(g)), np.zeros(n), np.zeros(n))
    store.finalize(m, extra={"gen": g})
"""

_READ = """
import sys, time, numpy as np
from traceprop_frames.attribution import GradientStore
seen, last, t_end = set(), int(sys.argv[2]), time.time() + 300
while last not in seen and time.time() < t_end:  # until the writer's final generation is read
    s = GradientStore.open(sys.argv[1])
    g = s.extra["gen"]
    f = np.asarray(s.features(0))
    assert s.n_samples == 40 + 3 * g and f.shape == (s.n_samples, 4), (g, f.shape)
    assert np.all(f == g) and len(s.checkpoints[0].derivs) == s.n_samples, (g, np.unique(f))
    if not seen:
        print("ready", flush=True)
    seen.add(g)
print(len(seen), flush=True)
"""


def test_store_reader_sees_whole_generations_while_another_process_refills(tmp_path):
    path = str(tmp_path / "store")
    subprocess.run([sys.executable, "-c", _FILL, path, "1"], check=True)
    reader = subprocess.Popen([sys.executable, "-c", _READ, path, "25"], stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready"  # it has read generation 1 before the refills start
    writer = subprocess.run([sys.executable, "-c", _FILL, path, "25"], capture_output=True, text=True)
    assert writer.returncode == 0, writer.stderr
    out, _ = reader.communicate(timeout=300)
    assert reader.returncode == 0 and int(out) >= 2  # it read several generations, each one whole
    assert len(list((tmp_path / "store").glob("data-*"))) == 1  # earlier generations were removed
