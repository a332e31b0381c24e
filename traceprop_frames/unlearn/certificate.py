"""Signed erasure certificates: build, sign (Ed25519), save, load and verify.

File layout (validated against ``certificate.schema.json``, shipped next to this module, on save and
on load)::

    {"certificate": {...the record...},
     "signature": {"algorithm": "Ed25519", "key_id": sha256(raw public key),
                   "public_key_pem": "...", "value": base64(signature)}}

The signature covers the *canonical* JSON of ``certificate``: sorted keys, no whitespace, ASCII only.
The file itself is written in one deterministic pretty form (sorted keys, 2-space indent, ASCII,
trailing newline) and :func:`verify_certificate` also checks the file is byte-for-byte in that form, so
any altered byte — even whitespace — fails verification.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from traceprop_frames._durable import atomic_write_text
from traceprop_frames.errors import CertificateError, CertificateFormatError, CertificateSignatureError
from traceprop_frames.lineage.refs import sorted_unique, union_ids

SCHEMA_PATH = Path(__file__).with_name("certificate.schema.json")
ENV_KEY = "TRACEPROP_SIGNING_KEY"
# DER prefixes of an Ed25519 key (RFC 8410): PKCS#8 private key + 32-byte seed, SubjectPublicKeyInfo +
# 32-byte public key. Reading and writing these two fixed forms by hand spares a fresh process importing
# ``cryptography``'s serialization package (~25 ms, a large share of a first erasure); every other form
# (an encrypted key, another algorithm) still goes through it.
_PKCS8_ED25519 = bytes.fromhex("302e020100300506032b657004220420")
_SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")


# ---------------------------------------------------------------------------- keys
def generate_key() -> Ed25519PrivateKey:
    """A new Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def save_private_key(key: Ed25519PrivateKey, path, password: bytes | None = None) -> Path:
    """Write ``key`` as PKCS#8 PEM (encrypted when ``password`` is given), readable by the owner only."""
    from cryptography.hazmat.primitives import serialization

    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return p


def public_key_pem(key) -> str:
    """PEM (SubjectPublicKeyInfo) text of a public key, or of a private key's public half."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    if isinstance(pub, Ed25519PublicKey):
        return _pem("PUBLIC KEY", _SPKI_ED25519 + pub.public_bytes_raw())
    from cryptography.hazmat.primitives import serialization

    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return pub.public_bytes(serialization.Encoding.PEM, fmt).decode("ascii")


def _pem(label: str, der: bytes) -> str:
    """PEM text as OpenSSL writes it: base64 in lines of 64 characters."""
    b64 = base64.b64encode(der).decode("ascii")
    lines = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n"


def _ed25519_der(data: bytes, label: bytes, prefix: bytes) -> bytes | None:
    """The 32 key bytes of a PEM holding exactly one unencrypted Ed25519 ``label`` block; else None."""
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    text = data.strip()
    if not (text.startswith(begin) and text.endswith(end)) or text.count(b"-----BEGIN") != 1:
        return None
    try:
        der = base64.b64decode(b"".join(text[len(begin) : -len(end)].split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return der[len(prefix) :] if len(der) == len(prefix) + 32 and der.startswith(prefix) else None


def save_public_key(key, path) -> Path:
    """Write the public key (PEM) that verifiers need."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(public_key_pem(key))
    return p


def key_id(key) -> str:
    """sha256 hex of the raw 32-byte public key."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return hashlib.sha256(pub.public_bytes_raw()).hexdigest()


def _pem_bytes(source) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode("ascii")
    try:
        return Path(source).read_bytes()
    except OSError as e:
        raise CertificateError(f"cannot read key file {os.fspath(source)!r}: {e.strerror}") from e


def load_private_key(source, password: bytes | None = None) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file path, PEM text/bytes, or a key object."""
    if isinstance(source, Ed25519PrivateKey):
        return source
    data = _pem_bytes(source)
    seed = None if password else _ed25519_der(data, b"PRIVATE KEY", _PKCS8_ED25519)
    if seed is not None:
        return Ed25519PrivateKey.from_private_bytes(seed)
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as e:
        raise CertificateError(
            f"not a usable PEM private key ({e}); generate one with `generate_key()`"
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise CertificateError(f"certificates are signed with Ed25519, not {type(key).__name__}")
    return key


def load_public_key(source) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file path, PEM text/bytes, a public or a private key object."""
    if isinstance(source, Ed25519PublicKey):
        return source
    if isinstance(source, Ed25519PrivateKey):
        return source.public_key()
    data = _pem_bytes(source)
    raw = _ed25519_der(data, b"PUBLIC KEY", _SPKI_ED25519)
    if raw is not None:
        try:
            return Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            pass  # cryptography's reader below words the error
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        return load_private_key(data).public_key()  # a private key PEM also names its public key
    if not isinstance(key, Ed25519PublicKey):
        raise CertificateError(f"certificates are verified with Ed25519 keys, not {type(key).__name__}")
    return key


def default_key_path() -> Path:
    """``$TRACEPROP_SIGNING_KEY``, else ``~/.config/traceprop/signing_key.pem``."""
    env = os.environ.get(ENV_KEY)
    return Path(env) if env else Path.home() / ".config" / "traceprop" / "signing_key.pem"


_KEY_CACHE: dict = {}  # path -> (mtime_ns, size, key): the default key, parsed once while its file stays


def default_key() -> Ed25519PrivateKey:
    """The signing key at :func:`default_key_path`, generated there (mode 0600) on first use. The parsed
    key is kept while the file's modification time and size stay the same (one parse per process)."""
    p = default_key_path()
    try:
        st = p.stat()
    except FileNotFoundError:
        st = None
    if st is not None:
        hit = _KEY_CACHE.get(str(p))
        if hit is not None and hit[:2] == (st.st_mtime_ns, st.st_size):
            return hit[2]
        key = load_private_key(p)
        _KEY_CACHE.clear()
        _KEY_CACHE[str(p)] = (st.st_mtime_ns, st.st_size, key)
        return key
    key = generate_key()
    save_private_key(key, p)
    save_public_key(key, p.with_name(p.stem + ".pub.pem"))
    return key


# ---------------------------------------------------------------------------- JSON forms
_PLAIN = frozenset({str, int, bool, type(None)})  # exact types: a numpy scalar or a float subclass is not


def _clean(v, done=()):
    """JSON-able copy: numpy scalars/arrays to Python, non-finite floats to None. Objects whose ``id`` is
    in ``done`` (sections cleaned already, see :class:`Signer`) are kept as they are."""
    if type(v) in _PLAIN:
        return v
    if done and id(v) in done:
        return v
    if isinstance(v, dict):
        return {str(k): _clean(x, done) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x, done) for x in v]
    if hasattr(v, "tolist"):
        return _clean(v.tolist())
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return v


def canonical_json(obj) -> bytes:
    """The bytes that are signed: sorted keys, no whitespace, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def file_text(doc: dict, shared: dict | None = None) -> str:
    """The one form certificate files are written in: byte for byte
    ``json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\\n"``.

    Built here rather than by ``json.dumps``, whose ``indent`` runs the pure-Python encoder token by
    token: strings go through the C string encoder, and a certificate takes about a third less time
    (a batch writes 1,000). ``shared`` (``{id(section): (section, {})}``, kept by a :class:`Signer`)
    memoises the text of sections many documents share, per indentation.

    Examples
    --------
    >>> doc = {"b": [1, 2.5, None], "a": {"x": "é", "y": []}, "c": True}
    >>> file_text(doc) == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=True) + "\\n"
    True
    """
    return _pretty(doc, "\n", shared) + "\n"


_STR = json.encoder.encode_basestring_ascii


def _pretty(v, nl: str, shared: dict | None = None) -> str:
    """``v`` as ``json.dumps(indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False)`` writes it, at
    the indentation ``nl`` (a newline and the current indent); texts of ``shared`` sections memoised."""
    t = type(v)
    if t is str:
        return _STR(v)
    if shared and id(v) in shared:
        texts = shared[id(v)][1]
        if nl not in texts:
            texts[nl] = _pretty(v, nl)
        return texts[nl]
    inner = nl + "  "
    if t is dict and v:
        sep = "," + inner
        items = [_STR(k) + ": " + _pretty(v[k], inner, shared) for k in sorted(v)]
        return "{" + inner + sep.join(items) + nl + "}"
    if (t is list or t is tuple) and v:
        return "[" + inner + ("," + inner).join([_pretty(x, inner, shared) for x in v]) + nl + "]"
    if t is int:
        return int.__repr__(v)
    if t is float and math.isfinite(v):
        return float.__repr__(v)
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    if t is dict or t is list:  # empty
        return "{}" if t is dict else "[]"
    # everything else (an empty tuple, subclasses, non-finite floats, which raise) as
    # json writes it; its only raw newlines are the indentation's
    return json.dumps(v, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False).replace("\n", nl)


@lru_cache(maxsize=1)
def schema() -> dict:
    """The published JSON Schema of certificate files."""
    return json.loads(SCHEMA_PATH.read_text())


def _validator():
    """The schema compiled to Python ahead of time (``_certificate_validator.py``, generated by
    ``make validator`` with ``fastjsonschema``; the schema itself is checked against its meta-schema there
    and in the tests, not at run time). Validating a certificate costs ~25 µs instead of ~0.6 ms
    interpreting the schema tree, which matters for batches of 1,000 requests, and a fresh process pays
    no compilation."""
    from traceprop_frames.unlearn import _certificate_validator

    return _certificate_validator.validate


@lru_cache(maxsize=1)
def _explainer():
    """The interpreting validator (``jsonschema``): only to word the error of a document that failed."""
    import jsonschema

    return jsonschema.validators.validator_for(schema())(schema())


def validate(doc: dict) -> None:
    """Raise :class:`CertificateFormatError` if ``doc`` does not match the schema."""
    from traceprop_frames.unlearn._certificate_validator import JsonSchemaValueException

    try:
        _validator()(doc)
        return
    except JsonSchemaValueException as e:
        first = e
    err = next(iter(sorted(_explainer().iter_errors(doc), key=lambda e: list(e.path))), None)
    if err is None:  # the two validators disagree: still refuse, with the compiled one's words
        where, message = "/".join(str(p) for p in first.path[1:]) or "(top level)", first.message
    else:
        where, message = "/".join(str(p) for p in err.absolute_path) or "(top level)", err.message
    raise CertificateFormatError(f"certificate does not match its JSON Schema at {where}: {message}")


# ---------------------------------------------------------------------------- the certificate
class Certificate:
    """A signed erasure certificate. ``save(path)`` writes it; :func:`verify_certificate` checks one.

    Treat ``body`` as read-only once signed: the signature covers it.
    """

    def __init__(self, body: dict, signature: dict, _shared: dict | None = None) -> None:
        self.body = body
        self.signature = signature
        self._text: str | None = None  # the file form, made once: a signed record does not change
        self._shared = _shared  # memoised texts of sections shared with other certificates (Signer)

    @classmethod
    def sign(cls, body: dict, key: Ed25519PrivateKey | None = None) -> Certificate:
        """Sign ``body`` with ``key`` (default: :func:`default_key`); validates against the schema."""
        return Signer(key).sign(body)

    def to_dict(self) -> dict:
        return {"certificate": self.body, "signature": self.signature}

    def to_json(self) -> str:
        """The file's text (:func:`file_text`); computed once per certificate (its ledger hash, the ledger
        entry and the requester's copy are all this one text)."""
        if self._text is None:
            self._text = file_text(self.to_dict(), self._shared)
        return self._text

    def save(self, path) -> Path:
        """Validate against the schema and write the file; returns its path."""
        validate(self.to_dict())
        return atomic_write_text(path, self.to_json(), encoding="ascii")  # never a truncated certificate

    @classmethod
    def load(cls, path) -> Certificate:
        """Parse and schema-check a certificate file (the signature is checked by :meth:`verify`)."""
        return _parse(Path(path).read_bytes(), str(path))[0]

    def verify(self, public_key) -> Certificate:
        """Raise :class:`CertificateSignatureError` unless ``public_key`` signed exactly this record."""
        pub = load_public_key(public_key)
        if self.signature["key_id"] != key_id(pub) or self.signature["public_key_pem"] != public_key_pem(pub):
            raise CertificateSignatureError(
                f"certificate was signed by key {self.signature['key_id'][:16]}…, not by the given key "
                f"{key_id(pub)[:16]}…; check you have the issuer's public key"
            )
        try:
            pub.verify(base64.b64decode(self.signature["value"]), canonical_json(self.body))
        except InvalidSignature:
            raise CertificateSignatureError(
                "signature does not match the certificate's content: the certificate was altered after "
                "signing. Request a fresh copy from the issuer."
            ) from None
        return self

    # convenience views
    @property
    def id(self) -> str:
        return self.body["certificate_id"]

    @property
    def status(self) -> str:
        return self.body["status"]

    def summary(self) -> list[tuple[str, str]]:
        """(label, value) pairs for humans (CLI, HTML report)."""
        b = self.body
        ev, fs = b["evidence"], b["forget_set"]

        def fmt(x, spec=".4g"):
            return "n/a" if x is None else format(x, spec)

        req = "; ".join(f"{s['path']} rows {s['rows']}" for s in b["request"]["sources"]) or str(
            b["request"]["samples"]
        )
        out = [
            ("certificate", b["certificate_id"]),
            ("status", b["status"]),
            ("created", b["created_at"]),
            ("regulations", ", ".join(b["regulations"])),
            ("request", req),
            ("forgotten samples", f"{fs['count']} of {fs['n_train']} ({fs['share']:.4%})"),
            ("already erased earlier", str(len(fs["already_removed"]))),
            ("method", f"{b['method']['name']} {b['method']['parameters']} ({b['method']['seconds']:.3f} s)"),
            ("model before", b["model"]["fingerprint_before"][:16] + "…"),
            ("model after", b["model"]["fingerprint_after"][:16] + "…"),
            ("forget-set loss", f"{fmt(ev['forget_loss_before'])} → {fmt(ev['forget_loss_after'])}"),
            ("residual gradient norm", fmt(ev["residual_grad_norm"], ".3e")),
            ("certified ‖θ′−θ*‖ bound", fmt(ev["certified_bound"], ".3e")),
            ("signed by key", self.signature["key_id"][:16] + "…"),
        ]
        want = b["method"]["parameters"].get("bound")
        if want is not None and ev["certified_bound"] is not None:
            met = ev["certified_bound"] <= want
            out.append(("requested bound", f"{want:.3e} ({'met' if met else 'NOT met: see not_guaranteed'})"))
        if ev["holdout"]:
            h = ev["holdout"]
            out.append(("holdout accuracy", f"{h['accuracy_before']:.4f} → {h['accuracy_after']:.4f}"))
        from traceprop_frames.unlearn.shared_effects import summary_lines

        return out + summary_lines(b)

    def __repr__(self) -> str:
        fs = self.body["forget_set"]
        return (
            f"Certificate({self.id[:8]}…, {self.status}, {fs['count']} samples, "
            f"method={self.body['method']['name']!r})"
        )


class Signer:
    """Signs certificates with one key; for a batch, what its certificates share is done once.

    The key's id and PEM are computed once per signer (not per certificate). :meth:`share` registers a
    section (a dict or list) that many bodies will hold by reference: it is cleaned once, and its file
    text is made once per indentation. Each body is still cleaned (shared sections aside), signed over its
    canonical JSON and validated against the schema; a shared section must not change once shared.

    Examples
    --------
    >>> signer = Signer(generate_key())
    >>> statements = signer.share(["a statement every certificate of the batch makes"])
    >>> signer.key_id == key_id(signer.key)
    True
    """

    def __init__(self, key: Ed25519PrivateKey | None = None) -> None:
        self.key = default_key() if key is None else load_private_key(key)
        self.key_id, self.public_key_pem = _public_parts(self.key)
        self._shared: dict = {}  # id(section) -> (section, {indentation: text}); holds the section alive

    def share(self, section):
        """``section`` cleaned, registered as shared by the certificates this signer signs next."""
        section = _clean(section)
        self._shared[id(section)] = (section, {})
        return section

    def sign(self, body: dict) -> Certificate:
        """Sign ``body`` (cleaned, shared sections aside) and validate it against the schema."""
        body = _clean(body, self._shared)
        sig = {
            "algorithm": "Ed25519",
            "key_id": self.key_id,
            "public_key_pem": self.public_key_pem,
            "value": base64.b64encode(self.key.sign(canonical_json(body))).decode("ascii"),
        }
        cert = Certificate(body, sig, self._shared or None)
        validate(cert.to_dict())
        return cert


_PUBLIC: list[tuple] = []  # (key, key id, public PEM) of the last few signing keys: derived once each


def _public_parts(key) -> tuple[str, str]:
    """``(key_id(key), public_key_pem(key))``, remembered for the last 8 key objects (each erasure signs
    with the same default key: its public half is derived once, not twice per certificate)."""
    for k, kid, pem in _PUBLIC:
        if k is key:
            return kid, pem
    parts = (key_id(key), public_key_pem(key))
    _PUBLIC.insert(0, (key, *parts))
    del _PUBLIC[8:]
    return parts


def _parse(data: bytes, name: str, check_schema: bool = True) -> tuple[Certificate, dict]:
    try:
        text = data.decode("ascii")
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CertificateFormatError(
            f"{name} is not a certificate: truncated or not valid JSON ({e}). Request a fresh copy."
        ) from None
    if not isinstance(doc, dict):
        raise CertificateFormatError(f"{name} is not a certificate: top level is not a JSON object")
    if check_schema:
        validate(doc)
    elif not (
        isinstance(doc.get("certificate"), dict)
        and isinstance(doc.get("signature"), dict)
        and all(isinstance(doc["signature"].get(k), str) for k in ("key_id", "public_key_pem", "value"))
    ):
        validate(doc)  # raises with the schema's precise message
    return Certificate(doc["certificate"], doc["signature"]), doc


def verify_certificate(path, public_key) -> Certificate:
    """Check a certificate file against the issuer's public key; returns the :class:`Certificate`.

    Parameters
    ----------
    path : str or Path
        The certificate JSON file.
    public_key : path, PEM text/bytes, or key object
        The issuer's Ed25519 public key (a private key works too). The key embedded in the file is
        not trusted on its own.

    Raises
    ------
    CertificateFormatError
        Truncated, not JSON, not matching the schema, or not in the canonical form the library writes.
    CertificateSignatureError
        Signed by another key, or the content was altered after signing.

    Examples
    --------
    >>> import os, tempfile
    >>> from sklearn.datasets import make_classification
    >>> from traceprop_frames.estimators import TorchLogisticRegression
    >>> from traceprop_frames.unlearn import approximate_unlearn
    >>> X, y = make_classification(n_samples=200, n_features=4, random_state=0)
    >>> clf = TorchLogisticRegression().fit(X, y)
    >>> key = generate_key()
    >>> cert = export_compliance(model_before=clf, model_after=approximate_unlearn(clf, [5]), forget_set=[5],
    ...                          regulation="GDPR_ART17", key=key)
    >>> path = cert.save(os.path.join(tempfile.mkdtemp(), "erasure.json"))
    >>> verify_certificate(path, key.public_key()).body["forget_set"]["training_indices"]
    [5]
    >>> verify_certificate(path, generate_key().public_key())
    Traceback (most recent call last):
    ...
    traceprop_frames.errors.CertificateSignatureError: certificate was signed by key ...
    """
    data = Path(path).read_bytes()
    cert, doc = _parse(data, os.fspath(path), check_schema=False)
    try:
        cert.verify(public_key)  # cheap; the schema is checked below, on authentic content only
    except (binascii.Error, ValueError):
        raise CertificateFormatError(f"{os.fspath(path)}: the signature value is not valid base64") from None
    if data != file_text(doc).encode("ascii"):
        raise CertificateFormatError(
            f"{os.fspath(path)} was edited after it was written (its bytes are not in the canonical form); "
            "the signed content is intact, but the file is not the one the issuer produced."
        )
    validate(doc)
    return cert


def export_compliance(model_before, model_after, forget_set, store=None, regulation="EU_AI_ACT_ART26", *,
                      request=None, key=None) -> Certificate:  # fmt: skip
    """Certify an erasure done with :func:`~traceprop_frames.unlearn.approximate_unlearn`.

    Parameters
    ----------
    model_before : fitted estimator
        The model the samples were erased from.
    model_after : estimator
        What ``approximate_unlearn(model_before, forget_set, ...)`` returned (it carries the measured
        evidence in ``unlearn_result_``).
    forget_set : array-like of int
        The training indices that were passed to ``approximate_unlearn``.
    store : GradientStore, optional
        Marked so influence never returns the forgotten samples again (the certificate says it).
    regulation : str or sequence of str
        ``"EU_AI_ACT_ART26"``, ``"GDPR_ART17"`` or both.
    request : dict, optional
        ``{path: rows}`` the data subject named; recorded (with file hashes) in the certificate.
    key : signing key, optional
        Default :func:`default_key`.

    Returns
    -------
    Certificate
        Signed; ``.save(path)`` writes it.

    Raises
    ------
    UnlearningError
        ``model_after`` does not come from ``approximate_unlearn`` of ``model_before`` and ``forget_set``.
    """
    import numpy as np
    import torch

    from traceprop_frames.errors import UnlearningError
    from traceprop_frames.unlearn.objective import parameter_fingerprint
    from traceprop_frames.unlearn.request import _record_erasure, certificate_body, forget_from_request

    if isinstance(model_before, torch.nn.Module) and hasattr(model_after, "_tp_before"):
        model_before = model_after._tp_before  # a raw module: certify against its wrapped training data
    result = getattr(model_after, "unlearn_result_", None)
    if result is None:
        raise UnlearningError(
            "model_after carries no unlearning evidence: pass what approximate_unlearn returned"
        )
    if parameter_fingerprint(model_before.module_) != result.fingerprint_before:
        raise UnlearningError(
            "model_before is not the model approximate_unlearn started from (fingerprints differ)"
        )
    asked = sorted_unique(np.asarray(forget_set, dtype=np.int64))
    if not np.array_equal(asked, union_ids(result.forget, result.already_removed)):
        raise UnlearningError("forget_set differs from the samples approximate_unlearn removed")
    lineage = getattr(model_before, "lineage_", None)
    if lineage is None and store is not None:
        lineage = getattr(store, "lineage", None)
    sources = forget_from_request(lineage, request)[1] if request else []
    body = certificate_body(
        model_before, result, lineage=lineage, request_sources=sources, samples=asked.tolist(),
        regulations=[regulation] if isinstance(regulation, str) else list(regulation),
    )  # fmt: skip
    new_lineage = _record_erasure(model_after, lineage, body)
    cert = Certificate.sign(body, key)
    if new_lineage is not None and hasattr(model_after, "lineage_"):
        model_after.lineage_ = new_lineage
    if store is not None and result.forget.size:
        store.mark_removed(result.forget)
    return cert
