"""Signed certificates: round trip, tampering, truncation, keys, schema."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_unlearn_correction import StandInLogReg, make_data

import traceprop_frames as tpf
from traceprop_frames.errors import CertificateError, CertificateFormatError, CertificateSignatureError
from traceprop_frames.unlearn import (
    Certificate,
    approximate_unlearn,
    export_compliance,
    generate_key,
    load_private_key,
    load_public_key,
    save_private_key,
    save_public_key,
)
from traceprop_frames.unlearn.certificate import canonical_json, default_key, file_text, schema, validate


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    X, y = make_data(n=200, d=4)
    est = StandInLogReg().fit(X, y)
    key = generate_key()
    after = approximate_unlearn(est, [1, 2, 3], holdout=(X[:50], y[:50]))
    cert = export_compliance(model_before=est, model_after=after, forget_set=[1, 2, 3], key=key,
                             regulation=["EU_AI_ACT_ART26", "GDPR_ART17"])  # fmt: skip
    path = tmp_path_factory.mktemp("cert") / "certificate.json"
    cert.save(path)
    return path, key, cert


def test_round_trip_and_content(signed):
    path, key, cert = signed
    got = tpf.verify_certificate(path, key.public_key())
    assert got.body == cert.body and got.id == cert.id
    b = got.body
    assert b["status"] == "erased" and b["forget_set"]["training_indices"] == [1, 2, 3]
    assert b["forget_set"]["count"] == 3 and b["forget_set"]["share"] == pytest.approx(3 / 200)
    assert b["method"]["name"] == "newton" and b["evidence"]["certified_bound"] < 1e-4
    assert b["evidence"]["holdout"]["n"] == 50
    assert b["model"]["fingerprint_before"] != b["model"]["fingerprint_after"]
    assert b["regulations"] == ["EU_AI_ACT_ART26", "GDPR_ART17"] and not b["differential_privacy"]
    assert any("differential" in s for s in b["not_guaranteed"])
    assert Certificate.load(path).body == cert.body
    labels = dict(got.summary())
    assert labels["status"] == "erased"


def test_every_flipped_byte_fails(signed):
    path, key, _ = signed
    data = path.read_bytes()
    pub = key.public_key()
    bad = path.with_name("tampered.json")
    for i in range(len(data)):
        for mask in (0x01, 0x20) if i % 5 == 0 else (0x01,):
            b = bytearray(data)
            b[i] ^= mask
            bad.write_bytes(bytes(b))
            with pytest.raises(CertificateError):
                tpf.verify_certificate(bad, pub)


def test_altered_values_fail_the_signature(signed):
    path, key, _ = signed
    doc = json.loads(path.read_text())
    doc["certificate"]["forget_set"]["training_indices"] = [1, 2]
    bad = path.with_name("edited.json")
    bad.write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n")
    with pytest.raises(CertificateSignatureError, match="altered"):
        tpf.verify_certificate(bad, key.public_key())
    # re-indenting an intact certificate is detected too
    bad.write_text(json.dumps(json.loads(path.read_text()), sort_keys=True, indent=4) + "\n")
    with pytest.raises(CertificateFormatError, match="edited"):
        tpf.verify_certificate(bad, key.public_key())


def test_truncated_and_malformed_files(signed, tmp_path):
    path, key, _ = signed
    data = path.read_bytes()
    bad = tmp_path / "bad.json"
    for n in (0, 1, 10, len(data) // 2, len(data) - 3):
        bad.write_bytes(data[:n])
        with pytest.raises(CertificateFormatError, match="truncated or not valid JSON"):
            tpf.verify_certificate(bad, key.public_key())
    bad.write_bytes(b"\xff\xfe binary")
    with pytest.raises(CertificateFormatError):
        tpf.verify_certificate(bad, key.public_key())
    bad.write_text("[1, 2]")
    with pytest.raises(CertificateFormatError, match="not a JSON object"):
        tpf.verify_certificate(bad, key.public_key())
    doc = json.loads(data)
    del doc["certificate"]["evidence"]
    bad.write_text(json.dumps(doc))
    with pytest.raises(CertificateFormatError, match="JSON Schema"):
        Certificate.load(bad)


def test_wrong_key_fails(signed):
    path, _, _ = signed
    with pytest.raises(CertificateSignatureError, match="signed by key"):
        tpf.verify_certificate(path, generate_key().public_key())


def test_keys_round_trip(tmp_path, signed):
    path, key, _ = signed
    save_private_key(key, tmp_path / "k.pem")
    save_public_key(key, tmp_path / "k.pub.pem")
    save_private_key(key, tmp_path / "enc.pem", password=b"pw")
    assert (tmp_path / "k.pem").stat().st_mode & 0o077 == 0
    assert tpf.verify_certificate(path, tmp_path / "k.pub.pem").status == "erased"
    assert tpf.verify_certificate(path, str(tmp_path / "k.pem")).status == "erased"
    assert load_private_key(tmp_path / "enc.pem", password=b"pw").public_key() == key.public_key()
    assert load_public_key((tmp_path / "k.pub.pem").read_bytes()) == key.public_key()
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(CertificateError):
        load_public_key(tmp_path / "junk.pem")
    with pytest.raises(CertificateError, match="cannot read key file"):
        load_public_key(tmp_path / "missing.pem")


def test_default_key_is_created_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEPROP_SIGNING_KEY", str(tmp_path / "keys" / "sign.pem"))
    k1 = default_key()
    k2 = default_key()
    assert k1.public_key() == k2.public_key()
    assert (tmp_path / "keys" / "sign.pub.pem").exists()


def test_schema_is_shipped_and_canonical_form(signed):
    _, _, cert = signed
    assert schema()["title"].startswith("traceprop_frames")
    validate(cert.to_dict())
    blob = canonical_json(cert.body)
    assert b"\n" not in blob and blob.isascii()
    assert blob == json.dumps(cert.body, sort_keys=True, separators=(",", ":")).encode()
    assert list(json.loads(blob)) == sorted(cert.body)


def test_compiled_validator_agrees_with_jsonschema_on_every_mutation(signed):
    """Certificates are validated by the schema compiled ahead of time to code (fastjsonschema); the
    reference is the interpreting ``jsonschema`` validator: both must accept and reject exactly the same
    documents."""
    import copy

    import jsonschema

    from traceprop_frames.unlearn._certificate_validator import JsonSchemaValueException
    from traceprop_frames.unlearn.certificate import _validator

    doc = copy.deepcopy(signed[2].to_dict())
    body = doc["certificate"]
    body["chain"] = {"sequence": 2, "previous_sha256": "ab" * 32}
    body["batch"] = {"request_id": "r1", "received": "2026-12-01", "solve_id": "c" * 32, "n_requests": 3,
                     "n_samples": 3, "fingerprint_before": body["model"]["fingerprint_before"],
                     "fingerprint_after": body["model"]["fingerprint_after"]}  # fmt: skip
    reference = jsonschema.Draft202012Validator(schema())

    def compiled_accepts(d) -> bool:
        try:
            _validator()(d)
        except JsonSchemaValueException:
            return False
        return True

    wrong = [None, -1, 0, 2.5, 1.0, True, "x", "", "ab" * 32, [], [-1], ["x"], [1, 1], {}, {"x": 1}]
    mutants = []

    def walk(node, put):  # every value replaced by each wrong value; every key dropped; an extra key added
        for w in wrong:
            mutants.append(put(copy.deepcopy(w)))
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, lambda x, k=k: put({**node, k: x}))
                mutants.append(put({kk: vv for kk, vv in node.items() if kk != k}))
            mutants.append(put({**node, "unexpected": 1}))
        elif isinstance(node, list) and node:
            walk(node[0], lambda x: put([x, *node[1:]]))

    walk(doc, lambda x: x)
    verdicts = [(reference.is_valid(m), compiled_accepts(m)) for m in mutants]
    assert all(ref == fast for ref, fast in verdicts), [i for i, (r, f) in enumerate(verdicts) if r != f][:5]
    assert (
        reference.is_valid(doc) and sum(not r for r, _ in verdicts) > 500 and sum(r for r, _ in verdicts) > 50
    )
    bad = copy.deepcopy(doc)
    bad["certificate"]["forget_set"]["count"] = -1
    with pytest.raises(CertificateFormatError, match="forget_set/count: -1 is less than the minimum of 0"):
        validate(bad)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=30,
)


@given(_json_values)
def test_file_text_is_byte_for_byte_json_dumps(value):
    # oracle: the standard library's encoder with the options the file form is defined by
    assert file_text(value) == json.dumps(value, sort_keys=True, indent=2, ensure_ascii=True) + "\n"


def test_ed25519_pem_read_and_written_by_hand_match_cryptography(tmp_path):
    """Keys in the two fixed Ed25519 PEM forms are read and written without cryptography's serialization
    package (a fresh process's import cost); the reference is that package."""
    from cryptography.hazmat.primitives import serialization

    from traceprop_frames.unlearn.certificate import key_id, public_key_pem

    for _ in range(20):
        key = generate_key()
        pub = key.public_key()
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        assert public_key_pem(key) == pub.public_bytes(serialization.Encoding.PEM, spki).decode()
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        assert key_id(pub) == hashlib.sha256(raw).hexdigest()
        pkcs8 = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        assert load_private_key(pkcs8).public_key() == pub
        assert load_public_key(public_key_pem(key)) == pub
        assert load_public_key(pkcs8) == pub  # a private key PEM names its public key
    assert load_private_key(b"\n" + pkcs8.replace(b"\n", b"\r\n") + b"\n").public_key() == pub
    enc = save_private_key(key, tmp_path / "enc.pem", password=b"pw")
    assert load_private_key(enc, password=b"pw").public_key() == pub  # encrypted: the library's reader
    with pytest.raises(CertificateError):
        load_private_key(pkcs8.replace(b"PRIVATE KEY", b"PUBLIC KEY"))


def test_signing_with_a_key_file_needs_no_serialization_import(tmp_path):
    save_private_key(generate_key(), tmp_path / "k.pem")
    code = (
        "import sys\n"
        "from traceprop_frames.unlearn.certificate import load_private_key, public_key_pem, key_id\n"
        f"k = load_private_key({str(tmp_path / 'k.pem')!r}); public_key_pem(k); key_id(k)\n"
        "print('cryptography.hazmat.primitives.serialization' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False", out.stderr
