"""The suite writes nothing into the user's home: keys and folders go to a private temporary home, and an
audit hook (conftest) fails the run on any write under the real one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _home_guard import HomeWriteGuard
from conftest import REAL_HOME

from traceprop_frames.unlearn.certificate import default_key, default_key_path


def test_default_signing_key_lives_in_the_private_home():
    assert Path.home().resolve() != REAL_HOME
    path = default_key_path().resolve()
    assert REAL_HOME not in path.parents
    default_key()
    assert path.exists() and REAL_HOME not in path.parents


def test_subprocesses_inherit_the_private_home():
    code = (
        "from pathlib import Path; import os; print(Path.home()); print(os.environ['TRACEPROP_SIGNING_KEY'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    home, key = out.split()
    assert Path(home).resolve() != REAL_HOME and REAL_HOME not in Path(key).resolve().parents


def test_guard_records_writes_under_home_and_ignores_reads_and_allowed(tmp_path):
    home, repo = tmp_path / "home", tmp_path / "home" / "repo"
    guard = HomeWriteGuard(home, allowed=[repo])
    guard("open", (str(home / ".config" / "k.pem"), "r", os.O_RDONLY))
    guard("open", (str(repo / "x.txt"), "w", 0))
    guard("open", (str(tmp_path / "elsewhere.txt"), "w", 0))
    guard("open", (3, "w", 0))
    assert guard.writes == []
    guard("open", (str(home / ".config" / "traceprop" / "signing_key.pem"), "wb", 0))
    guard("open", (os.fsencode(home / "a"), None, os.O_WRONLY | os.O_CREAT))
    guard("os.mkdir", (str(home / ".config"), 0o777, -1))
    guard("os.rename", (str(tmp_path / "t"), str(home / "b"), -1, -1))
    assert [e for e, _ in guard.writes] == ["open", "open", "os.mkdir", "os.rename"]
    assert guard.writes[-1][1] == str((home / "b").resolve())


def test_guard_sees_a_real_write(tmp_path):
    import sys as _sys

    guard = HomeWriteGuard(tmp_path, allowed=[])
    _sys.addaudithook(guard)  # stays installed; it records only under this test's own folder
    (tmp_path / "made.txt").write_text("x")
    (tmp_path / "d").mkdir()
    assert {e for e, _ in guard.writes} >= {"open", "os.mkdir"}
