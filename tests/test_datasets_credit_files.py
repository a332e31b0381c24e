"""make_credit_risk replaces its files whole: a reader never sees a half-written file, a failed write
leaves the previous file as it was."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from traceprop_frames.datasets import make_credit_risk


def _digests(paths: dict) -> dict:
    return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in paths.items()}


def test_made_again_the_same_bytes_and_no_temporary_files(tmp_path):
    first = _digests(make_credit_risk(tmp_path, applicants=300, seed=4))
    paths = make_credit_risk(tmp_path, applicants=300, seed=4)
    assert _digests(paths) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


def test_a_write_that_fails_leaves_the_previous_file(tmp_path, monkeypatch):
    paths = make_credit_risk(tmp_path, applicants=300, seed=4)
    before = _digests(paths)

    def broken(self, path, *args, **kwargs):  # writes part of the file, then fails
        with open(path, "w") as f:
            f.write("SK_ID_CURR,TA")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        make_credit_risk(tmp_path, applicants=300, seed=4)
    assert _digests(paths) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())
