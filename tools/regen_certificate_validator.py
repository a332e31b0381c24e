"""Regenerate ``traceprop_frames/unlearn/_certificate_validator.py`` from ``certificate.schema.json``.

    python tools/regen_certificate_validator.py          # write the module (``make validator``)
    python tools/regen_certificate_validator.py --check  # exit 1 if the shipped module is out of date

The certificate schema is compiled ahead of time to plain Python by ``fastjsonschema.compile_to_code``
(a development dependency only), after checking the schema against its meta-schema with ``jsonschema``.
The generated module needs nothing but the standard library: the ``fastjsonschema`` exception it raises
is replaced by a small class of the same shape. ``tests/test_certificate_validator.py`` fails when the
schema changes without regenerating.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "traceprop_frames" / "unlearn" / "certificate.schema.json"
TARGET = ROOT / "traceprop_frames" / "unlearn" / "_certificate_validator.py"

_IMPORT = "from fastjsonschema import JsonSchemaValueException, JsonSchemaValuesException"
_HEADER = '''"""The certificate JSON Schema compiled to Python (generated: do not edit).

Regenerate with ``make validator`` (``python tools/regen_certificate_validator.py``) after changing
``certificate.schema.json``; ``validate(doc)`` raises ``JsonSchemaValueException`` on the first mismatch.
"""
# ruff: noqa
# fmt: off
import re

SCHEMA_SHA256 = "{sha}"
GENERATOR = "fastjsonschema {version}"


class JsonSchemaValueException(ValueError):
    """A document that does not match: ``message``, ``value``, ``name`` (``data.a[0]``), ``path``."""

    def __init__(self, message, value=None, name=None, definition=None, rule=None):
        super().__init__(message)
        self.message, self.value, self.name, self.definition, self.rule = message, value, name, definition, rule

    @property
    def path(self):
        return [p for p in re.split(r"[\\.\\[\\]]+", self.name or "") if p != ""]


class JsonSchemaValuesException(ValueError):
    """Several mismatches (only raised by validators built without fast failing; kept for the code below)."""

    def __init__(self, errors):
        super().__init__(errors)
        self.errors = errors

'''


def schema_sha256(path: Path = SCHEMA) -> str:
    """sha256 of the schema file's bytes (what the generated module records)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate(path: Path = SCHEMA) -> str:
    """The validator module's source for the schema at ``path``."""
    import fastjsonschema
    import jsonschema

    schema = json.loads(path.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    code = fastjsonschema.compile_to_code(schema, use_default=False)
    if _IMPORT not in code:
        raise SystemExit(f"fastjsonschema {fastjsonschema.VERSION} generated an unexpected import line")
    head = _HEADER.format(sha=schema_sha256(path), version=fastjsonschema.VERSION)
    body = code.replace(_IMPORT, "").replace("VERSION = ", "FASTJSONSCHEMA_VERSION = ", 1)
    entry = body.split("def ", 1)[1].split("(", 1)[0]  # the top-level function comes first
    lines = [ln.rstrip() for ln in (head + body).splitlines()]
    return "\n".join(lines).rstrip() + f"\n\n\nvalidate = {entry}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the shipped module is out of date")
    args = ap.parse_args()
    code = generate()
    if args.check:
        if TARGET.read_text() != code:
            sys.exit(f"{TARGET.relative_to(ROOT)} is out of date: run `make validator`")
        print(f"{TARGET.relative_to(ROOT)} is up to date")
        return
    TARGET.write_text(code)
    print(f"wrote {TARGET.relative_to(ROOT)} ({len(code):,} characters)")


if __name__ == "__main__":
    main()
