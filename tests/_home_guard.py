"""An audit hook (PEP 578) that records writes under one folder: the test run's check that nothing lands
in the user's real home. Only Python-level writes are seen (a JVM or a C library writing by itself is not)."""

from __future__ import annotations

import os
from pathlib import Path

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {  # event -> positions of the paths it changes
    "os.mkdir": (0,),
    "os.rename": (0, 1),
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.symlink": (1,),
    "os.link": (1,),
    "os.truncate": (0,),
    "os.chmod": (0,),
    "shutil.copyfile": (1,),
    "shutil.rmtree": (0,),
}


class HomeWriteGuard:
    """Call as an audit hook; ``writes`` lists ``(event, path)`` for each write under ``home`` that is not
    under one of ``allowed``."""

    def __init__(self, home: Path, allowed: list[Path]) -> None:
        self.home = str(Path(home).resolve())
        self.allowed = tuple(str(Path(a).resolve()) for a in allowed)
        self.writes: list[tuple[str, str]] = []

    def __call__(self, event: str, args: tuple) -> None:
        if event == "open":
            if args and self._opens_for_writing(args):
                self._check(event, args[0])
        elif event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                if i < len(args):
                    self._check(event, args[i])

    @staticmethod
    def _opens_for_writing(args: tuple) -> bool:
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 else 0
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            return True
        return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)

    def _check(self, event: str, path) -> None:
        if isinstance(path, int) or path is None:  # a file descriptor: its path was checked when opened
            return
        try:
            full = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if _under(full, self.home) and not any(_under(full, a) for a in self.allowed):
            self.writes.append((event, full))


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
