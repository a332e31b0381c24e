"""Bad-input corpus: every bad input gets a named project error (or pandas'/scikit-learn's own clear
error), never a traceback from deep inside numpy/torch/duckdb, and nothing on disk changes.

One row per case: ``(id, make(world, tmp) -> call, expected exception, message pattern)``. ``make`` builds
the bad input (copying the world's store/model folder before tampering with the copy); the test hashes
every file under the world and the case folder before and after ``call()``. The README's "Bad input"
table lists the same cases.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import traceprop_frames as tpf
from traceprop_frames.attribution import GradientStore, TRAKScorer
from traceprop_frames.errors import (
    CertificateFormatError,
    CertificateSignatureError,
    LineageFormatError,
    ModelFolderError,
    SourceFormatError,
    SourceMissingError,
    StoreError,
    TracepropError,
    UnknownRowError,
    UnknownSourceError,
)
from traceprop_frames.estimators import TorchLogisticRegression, TorchMLPClassifier
from traceprop_frames.unlearn import approximate_unlearn, export_compliance, generate_key, verify_certificate
from traceprop_frames.unlearn.bundle import load_lineage, load_model, load_parameters, save_model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=60), rng.normal(size=60)
    csv = root / "applicants.csv"
    csv.write_text("a,b,y\n" + "".join(f"{x},{z},{int(x > z)}\n" for x, z in zip(a, b)))
    train = tpf.read_csv(csv)
    est = TorchLogisticRegression(store=str(root / "store"), k=8).fit(train[["a", "b"]], train["y"])
    save_model(est, root / "model")
    key = generate_key()
    after = approximate_unlearn(est, [3])
    cert = export_compliance(model_before=est, model_after=after, forget_set=[3], key=key)
    cert.save(root / "erasure.json")
    return {"root": root, "csv": str(csv), "train": train, "est": est, "key": key}


def _copy(world, tmp, name):
    dst = tmp / name
    shutil.copytree(world["root"] / name, dst)
    return dst


def _write(tmp, name, data: bytes):
    p = tmp / name
    p.write_bytes(data)
    return str(p)


def _edit_json(path, **changes):
    doc = json.loads(Path(path).read_text())
    doc.update(changes)
    Path(path).write_text(json.dumps(doc))


def _truncate(path, keep: float = 0.5):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def _file(name, data: bytes, use):
    """A case reading a file with these bytes (written before the call)."""
    return lambda w, t: (lambda p: lambda: use(p))(_write(t, name, data))


def _on_model_copy(use):
    """A case acting on a copy of the world's model folder (copied before the call)."""
    return lambda w, t: (lambda d: lambda: use(w, d))(_copy(w, t, "model"))


def _ckpt(store_dir):
    """The first checkpoint's folder inside the store's current generation (manifest's data_dir)."""
    return store_dir / json.loads((store_dir / "manifest.json").read_text())["data_dir"] / "ckpt_000"


def _store_copy(world, tmp, tamper):
    d = _copy(world, tmp, "store")
    tamper(d)
    return lambda: GradientStore.open(d)


def _model_copy(world, tmp, tamper, load=load_model):
    d = _copy(world, tmp, "model")
    tamper(d)
    return lambda: load(d)


def _data(d, name):
    (path,) = (d / "data").glob(f"{name}-*.npy")
    return path


def _edit_data(d):
    """One value of the training matrix changed, the file otherwise valid (same dtype and shape)."""
    path = _data(d, "X_train")
    X = np.load(path)
    X[0, 0] += 1
    np.save(path, X)


def _other_params(d):
    torch.save({"linear.weight": torch.zeros(1, 2), "linear.bias": torch.zeros(1)}, d / "parameters.pt")


X_NAN = np.array([[0.0, np.nan], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0]])
X_INF = np.array([[0.0, np.inf], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0]])
X_STR = np.array([["a", "1"], ["b", "2"], ["c", "3"], ["d", "4"]], dtype=object)
Y4 = np.array([0, 1, 0, 1])

CASES = [
    # ---- source files
    ("ragged CSV", _file("r.csv", b"a,b\n1,2\n3,4,5\n", tpf.read_csv),
     SourceFormatError, "Expected 2 fields in line 3"),
    ("CSV not in UTF-8", _file("e.csv", b"a,b\n\xe9t\xe9,1\n", tpf.read_csv),
     SourceFormatError, "encoding="),
    ("empty file", _file("z.csv", b"", tpf.read_csv), SourceFormatError, "is empty"),
    ("CSV passed to read_parquet", _file("x.parquet", b"a,b\n1,2\n", tpf.read_parquet),
     SourceFormatError, "as Parquet"),
    ("unknown path", lambda w, t: lambda: tpf.read_csv(t / "nope.csv"), SourceMissingError, "no such file"),
    ("row of a header-only file", _file("h.csv", b"a,b\n", lambda p: tpf.read_csv(p).tp.trace(0)),
     UnknownRowError, "outside a frame of 0 rows"),
    # ---- estimators (scikit-learn's own validation)
    ("NaN feature", lambda w, t: lambda: TorchLogisticRegression().fit(X_NAN, Y4), ValueError, "NaN"),
    ("inf feature", lambda w, t: lambda: TorchMLPClassifier().fit(X_INF, Y4), ValueError, "infinity"),
    ("NaN at predict", lambda w, t: lambda: w["est"].predict_proba(X_NAN), ValueError, "NaN"),
    ("strings as features", lambda w, t: lambda: TorchLogisticRegression().fit(X_STR, Y4),
     ValueError, "could not convert string to float"),
    ("one class only", lambda w, t: lambda: TorchLogisticRegression().fit(X_INF[1:], [1, 1, 1]),
     ValueError, "2 classes"),
    # ---- source rows
    ("negative source row", lambda w, t: lambda: w["train"].tp.rows_from_source(w["csv"], [-1]),
     UnknownRowError, r"unknown row numbers: \[-1\]"),
    ("source row past the end", lambda w, t: lambda: w["train"].tp.rows_from_source(w["csv"], [60]),
     UnknownRowError, r"has data rows 0\.\.59"),
    ("fractional source row", lambda w, t: lambda: w["train"].tp.rows_from_source(w["csv"], [1.5]),
     UnknownRowError, "must be integers"),
    ("unknown source path", lambda w, t: lambda: w["train"].tp.rows_from_source("other.csv", [0]),
     UnknownSourceError, "no lineage refers to source"),
    ("trace past the end", lambda w, t: lambda: w["train"].tp.trace(60), UnknownRowError, "outside a frame"),
    ("trace before the start", lambda w, t: lambda: w["train"].tp.trace(-61), UnknownRowError, "outside a frame"),
    ("erase a negative row", _on_model_copy(lambda w, d: load_model(d).unlearn(w["csv"], [-1])),
     UnknownRowError, "nothing was changed"),
    ("erase an unknown source", _on_model_copy(lambda w, d: load_model(d).unlearn("x.csv", [0])),
     UnknownSourceError, "nothing was changed"),
    ("provenance of sample -1", lambda w, t: lambda: w["est"].store_.get_provenance(-1),
     UnknownRowError, "outside 0..59"),
    ("erase sample 60 of 60", lambda w, t: lambda: w["est"].store_.mark_removed([60]),
     UnknownRowError, "outside 0..59"),
    # ---- gradient stores
    ("store at an unknown path", lambda w, t: lambda: GradientStore.open(t / "nope"), StoreError, "no gradient store"),
    ("store manifest truncated", lambda w, t: _store_copy(w, t, lambda d: _truncate(d / "manifest.json")),
     StoreError, "not valid JSON"),
    ("store manifest: removed out of range",
     lambda w, t: _store_copy(w, t, lambda d: _edit_json(d / "manifest.json", removed=[10**6])),
     StoreError, "inconsistent"),
    ("store manifest: key deleted",
     lambda w, t: _store_copy(w, t, lambda d: _edit_json(d / "manifest.json", k=None)), StoreError, "malformed"),
    ("store from a newer format",
     lambda w, t: _store_copy(w, t, lambda d: _edit_json(d / "manifest.json", format_version=99)),
     StoreError, "newer traceprop-frames"),
    ("memmap shorter than the manifest says",
     lambda w, t: _store_copy(w, t, lambda d: _truncate(_ckpt(d) / "features.bin")), StoreError, "truncated"),
    ("rows.npy truncated", lambda w, t: _store_copy(w, t, lambda d: _truncate(_ckpt(d) / "rows.npy")),
     StoreError, "truncated or corrupt"),
    ("params.pt missing", lambda w, t: _store_copy(w, t, lambda d: (_ckpt(d) / "params.pt").unlink()),
     StoreError, "params.pt is missing"),
    ("store scored with another model",
     lambda w, t: lambda: TRAKScorer(w["est"].store_).top_k(torch.nn.Linear(3, 1), torch.zeros(2, 3), 2),
     StoreError, "filled for another model"),
    # ---- certificates
    ("certificate signed by another key",
     lambda w, t: lambda: verify_certificate(w["root"] / "erasure.json", generate_key().public_key()),
     CertificateSignatureError, "signed by key"),
    ("certificate truncated",
     lambda w, t: (lambda p: lambda: verify_certificate(p, w["key"].public_key()))(
         _write(t, "c.json", (w["root"] / "erasure.json").read_bytes()[:300])),
     CertificateFormatError, ""),
    # ---- model folders
    ("model folder at an unknown path", lambda w, t: lambda: load_model(t / "nope"), ModelFolderError, "no model folder"),
    ("model folder from a newer format",
     lambda w, t: _model_copy(w, t, lambda d: _edit_json(d / "bundle.json", format=99)),
     ModelFolderError, "newer traceprop-frames"),
    ("bundle.json missing", lambda w, t: _model_copy(w, t, lambda d: (d / "bundle.json").unlink()),
     ModelFolderError, "no bundle.json"),
    ("model.pkl truncated", lambda w, t: _model_copy(w, t, lambda d: _truncate(d / "model.pkl")),
     ModelFolderError, "truncated or corrupt"),
    ("parameters.pt of another model", lambda w, t: _model_copy(w, t, _other_params),
     ModelFolderError, "different weights"),
    ("parameters.pt truncated",
     lambda w, t: _model_copy(w, t, lambda d: _truncate(d / "parameters.pt"), load=load_parameters),
     ModelFolderError, "truncated or corrupt"),
    ("lineage.parquet truncated",
     lambda w, t: _model_copy(w, t, lambda d: _truncate(d / "lineage.parquet"), load=load_lineage),
     LineageFormatError, "cannot read lineage file"),
    ("training data file edited", lambda w, t: _model_copy(w, t, _edit_data), ModelFolderError,
     "not the X_train_ this model was saved with"),
    ("training data file missing", lambda w, t: _model_copy(w, t, lambda d: _data(d, "X_train").unlink()),
     ModelFolderError, "is missing"),
    ("training data file truncated", lambda w, t: _model_copy(w, t, lambda d: _truncate(_data(d, "y_train"))),
     ModelFolderError, "truncated or corrupt"),
    ("bundle.json data points outside the folder",
     lambda w, t: _model_copy(w, t, lambda d: _edit_json(d / "bundle.json", data={"X_train_": {"file": "../x.npy"}})),
     ModelFolderError, r"malformed \(data field\)"),
]  # fmt: skip


def _hashes(*roots) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in roots
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("make, expected, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error_and_changes_nothing(world, tmp_path, make, expected, pattern):
    call = make(world, tmp_path)
    before = _hashes(world["root"], tmp_path)
    with pytest.raises(expected, match=pattern) as info:
        call()
    err = info.value
    # a project error, or a ValueError raised by scikit-learn's validation or the estimator's own checks --
    # never an error thrown from inside numpy/torch/duckdb
    assert isinstance(err, TracepropError) or expected is ValueError, type(err)
    raised_in = str(info.traceback[-1].path)
    assert isinstance(err, TracepropError) or "sklearn" in raised_in or "traceprop_frames" in raised_in, (
        raised_in
    )
    assert _hashes(world["root"], tmp_path) == before


def test_zero_row_frames_flow_through_accessor_ops(tmp_path):
    """A header-only file is not an error: 0-row frames go through every op and trace to nothing."""
    empty = tpf.read_csv(_write(tmp_path, "h.csv", b"k,x\n"))
    full = tpf.read_csv(_write(tmp_path, "f.csv", b"k,x\n1,2\n3,4\n"))
    results = {
        "filter": empty[empty["x"] > 0],
        "merge": empty.tp.merge(full, on="k"),
        "groupby": empty.tp.groupby("k").agg(s=("x", "sum")),
        "concat": tpf.concat([empty, empty]),
        "sql": _sql_group(empty),
    }
    for name, df in results.items():
        assert len(df) == 0 and df.tp.sources() == {}, name
        assert len(df.tp.lineage_frame()) == 0, name
    left = full.tp.merge(empty, on="k", how="left")  # the empty side adds no lineage
    assert {k: v.tolist() for k, v in left.tp.sources().items()} == {str(tmp_path / "f.csv"): [0, 1]}


def _sql_group(df):
    con = tpf.connect()
    con.register("t", df)
    return con.sql("SELECT k, sum(x) AS s FROM t GROUP BY k")


class _Boom:
    """Unpickling this creates a marker file: stands for code a hostile model.pkl would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_trace_never_unpickles_a_received_model_folder(world, tmp_path, capsys):
    from traceprop_frames.cli import main

    d = _copy(world, tmp_path, "model")
    marker = tmp_path / "code_ran"
    (d / "model.pkl").write_bytes(pickle.dumps(_Boom(marker)))
    assert main(["trace", str(d), "--sample", "0"]) == 0
    assert "applicants.csv row" in capsys.readouterr().out
    assert not marker.exists()
    with pytest.raises(ModelFolderError):  # load_model (trusted input) does unpickle, then sees no model
        load_model(d)
    assert marker.exists()  # ... which is why it is documented as trusted input
