"""The append-only erasure ledger of a model folder: every certificate issued for the model, chained.

Layout: ``MODEL/ledger/000001.json``, ``000002.json``, ... — each file is a signed certificate, byte for
byte as :meth:`Certificate.save` writes it. Certificate ``n`` carries (inside the signed record)
``chain = {"sequence": n, "previous_sha256": sha256 of file n-1}`` and the model's parameter
fingerprint before and after its erasure. :func:`verify_chain` checks that

* files are numbered 1..n without a gap and each one verifies against the issuer's public key;
* each ``chain.sequence`` is its file number and ``previous_sha256`` the hash of the file before it
  (so a deleted, reordered or replaced certificate breaks the chain);
* each ``fingerprint_before`` equals the previous ``fingerprint_after`` (the model did not change
  between erasures) and the last ``fingerprint_after`` is the fingerprint of the model on disk (it did
  not change since);
* the certificates of one batch solve (``traceprop erase --requests``, a ``batch`` section with its
  ``solve_id``) are consecutive, all ``n_requests`` of them, and name the solve's fingerprints: the
  chain's "previous after = next before" rule applies between solves, not inside one.

API: :func:`next_link` (the ``chain`` record the next certificate must carry), :func:`append`,
:func:`entries`, :func:`verify_chain`.

Examples
--------
>>> import tempfile
>>> from sklearn.datasets import make_classification
>>> from traceprop_frames.estimators import TorchLogisticRegression
>>> from traceprop_frames.unlearn import generate_key
>>> from traceprop_frames.unlearn.bundle import save_model
>>> X, y = make_classification(n_samples=200, n_features=4, random_state=0)
>>> clf = TorchLogisticRegression().fit(X, y)
>>> key = generate_key()
>>> cert = clf.unlearn(samples=[3, 7], key=key)
>>> folder = save_model(clf, tempfile.mkdtemp())
>>> append(folder, cert).name
'000001.json'
>>> [c.body["chain"]["sequence"] for c in verify_chain(folder, key.public_key())]
[1]
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from traceprop_frames._durable import atomic_write_text, fsync_dir
from traceprop_frames.errors import CertificateError, LedgerError
from traceprop_frames.unlearn.certificate import Certificate, verify_certificate

DIR = "ledger"
_NAME = re.compile(r"^(\d{6})\.json$")


def _files(model_dir) -> list[tuple[int, Path]]:
    d = Path(model_dir) / DIR
    if not d.is_dir():
        return []
    out = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name)))
    return out


def head(model_dir) -> tuple[int, str | None]:
    """(number of certificates in the ledger, sha256 of the last file or None)."""
    files = _files(model_dir)
    if not files:
        return 0, None
    n, p = files[-1]
    return n, hashlib.sha256(p.read_bytes()).hexdigest()


def next_link(model_dir) -> dict:
    """The ``chain`` record the next certificate of this folder must carry (pass it to the erasure)."""
    n, h = head(model_dir)
    return {"sequence": n + 1, "previous_sha256": h}


def entry_path(model_dir, sequence: int) -> Path:
    return Path(model_dir) / DIR / f"{sequence:06d}.json"


def link_of(cert: Certificate) -> dict:
    """The link a certificate's successor carries: its sequence and the sha256 of its file bytes."""
    return {"sequence": cert.body["chain"]["sequence"] + 1, "previous_sha256": file_sha256(cert)}


def file_sha256(cert: Certificate) -> str:
    return hashlib.sha256(cert.to_json().encode("ascii")).hexdigest()


def append(model_dir, certificate: Certificate) -> Path:
    """Add ``certificate`` at the end of the model folder's ledger; returns its file.

    Raises
    ------
    LedgerError
        The certificate carries no ``chain`` record, or not the one :func:`next_link` expects (another
        erasure was recorded in between, or it belongs to another model folder).
    """
    chain = certificate.body.get("chain")
    want = next_link(model_dir)
    if chain is None:
        raise LedgerError(
            "this certificate carries no ledger link (it was issued by export_compliance, not by an erasure "
            "of a model); only erasures of a model (est.unlearn / traceprop erase) go into its ledger"
        )
    if chain != want:
        raise LedgerError(
            f"certificate {certificate.id[:8]}… links to ledger entry {chain['sequence'] - 1} with hash "
            f"{str(chain['previous_sha256'])[:12]}…, but the ledger of {Path(model_dir)} ends at entry "
            f"{want['sequence'] - 1} ({str(want['previous_sha256'])[:12]}…): it belongs to another model "
            "or another erasure was recorded in between. Re-run the erasure on the folder as it is now."
        )
    p = entry_path(model_dir, want["sequence"])
    p.parent.mkdir(parents=True, exist_ok=True)
    fsync_dir(p.parent.parent)
    return atomic_write_text(p, certificate.to_json(), encoding="ascii")


def entries(model_dir) -> list[Path]:
    """The ledger's certificate files, in order."""
    return [p for _, p in _files(model_dir)]


def verify_chain(model_dir, public_key, *, model_fingerprint: str | None = None) -> list[Certificate]:
    """Check the whole ledger of ``model_dir`` against ``public_key`` and the model on disk.

    Parameters
    ----------
    model_dir : path
        A model folder (``save_model`` / ``traceprop erase``).
    public_key : path, PEM or key object
        The issuer's Ed25519 public key.
    model_fingerprint : str, optional
        The parameter fingerprint of the model in the folder; default: load the model and compute it.

    Returns
    -------
    list of Certificate
        In ledger order (empty when no erasure was recorded).

    Raises
    ------
    LedgerError
        A gap in the numbering, a broken hash link, a fingerprint that does not continue from the
        previous certificate, or a model on disk that differs from the last certificate's "after".
    CertificateError
        A certificate that does not verify against ``public_key`` (altered, or signed by another key).
    InterruptedWriteError
        A crash interrupted an erasure; ``traceprop recover MODEL`` first (verification changes nothing).
    """
    from traceprop_frames.unlearn.bundle import ModelFolder

    with ModelFolder(model_dir).lock():  # the ledger and the model are read as one snapshot
        return _verify(model_dir, public_key, model_fingerprint)


def _verify(model_dir, public_key, model_fingerprint) -> list[Certificate]:
    files = _files(model_dir)
    certs: list[Certificate] = []
    prev_hash, prev_after = None, None
    solve: dict | None = None  # the batch solve the previous entries belong to, and how many were seen
    for i, (n, p) in enumerate(files, start=1):
        if n != i:
            raise LedgerError(
                f"ledger of {Path(model_dir)}: certificate {i:06d}.json is missing (next is {n:06d}.json); "
                "an erasure record was removed — restore it from a backup of the folder"
            )
        try:
            cert = verify_certificate(p, public_key)
        except CertificateError as e:
            raise type(e)(f"ledger entry {p.name}: {e}") from None
        chain = cert.body.get("chain") or {}
        if chain.get("sequence") != n or chain.get("previous_sha256") != prev_hash:
            raise LedgerError(
                f"ledger entry {p.name} does not link to the entry before it (it records sequence "
                f"{chain.get('sequence')!r} after a file with hash {str(chain.get('previous_sha256'))[:12]}…): "
                "a certificate was removed, replaced or moved in from another model"
            )
        model, batch = cert.body["model"], cert.body.get("batch")
        if solve is not None and (batch is None or batch["solve_id"] != solve["solve_id"]):
            _check_batch_complete(model_dir, solve)
            solve = None
        if solve is None and prev_after is not None and model["fingerprint_before"] != prev_after:
            raise LedgerError(
                f"ledger entry {p.name}: the model it started from ({model['fingerprint_before'][:12]}…) is "
                f"not the model the previous erasure left ({prev_after[:12]}…): the parameters were changed "
                "between these two erasures, outside an erasure"
            )
        if batch is not None:
            solve = _continue_batch(p, model, batch, solve)
        prev_hash = hashlib.sha256(p.read_bytes()).hexdigest()
        prev_after = model["fingerprint_after"]
        certs.append(cert)
    if solve is not None:
        _check_batch_complete(model_dir, solve)
    if prev_after is not None:
        fp = model_fingerprint if model_fingerprint is not None else _fingerprint_on_disk(model_dir)
        if fp != prev_after:
            raise LedgerError(
                f"the model in {Path(model_dir)} (fingerprint {fp[:12]}…) is not the model the last recorded "
                f"erasure left ({prev_after[:12]}…): its parameters were changed outside an erasure"
            )
    return certs


def _continue_batch(path: Path, model: dict, batch: dict, solve: dict | None) -> dict:
    """One more certificate of a batch (``traceprop erase --requests``): the certificates of one solve are
    consecutive entries, all name the solve's model before and after, and there are ``n_requests`` of them.
    """
    if (model["fingerprint_before"], model["fingerprint_after"]) != (
        batch["fingerprint_before"],
        batch["fingerprint_after"],
    ):
        raise LedgerError(f"ledger entry {path.name}: its model fingerprints differ from its batch solve's")
    if solve is None:
        return {**batch, "seen": 1, "first": path.name}
    if (batch["fingerprint_before"], batch["n_requests"]) != (
        solve["fingerprint_before"],
        solve["n_requests"],
    ):
        raise LedgerError(f"ledger entry {path.name}: it disagrees with the rest of its batch solve")
    return {**solve, "seen": solve["seen"] + 1}


def _check_batch_complete(model_dir, solve: dict) -> None:
    if solve["seen"] != solve["n_requests"]:
        raise LedgerError(
            f"ledger of {Path(model_dir)}: the batch solve {solve['solve_id'][:12]}… starting at {solve['first']} "
            f"served {solve['n_requests']} requests, but {solve['seen']} of their certificates are in the "
            "ledger: an erasure record was removed — restore it from a backup of the folder"
        )


def _fingerprint_on_disk(model_dir) -> str:
    """From ``parameters.pt`` (tensors only): verifying a folder someone sent you runs no code from it."""
    from traceprop_frames.unlearn.bundle import ModelFolder
    from traceprop_frames.unlearn.objective import state_fingerprint

    return state_fingerprint(ModelFolder(model_dir).parameters())
