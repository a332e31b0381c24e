"""Write the generated reference pages from the code, or check that they are up to date.

    python .ci/gen_reference.py          # rewrite docs/reference/{cli,certificate}.md and the errors table
    python .ci/gen_reference.py --check  # exit 1 (naming the page) if a page differs from what the code says

Generated: the command-line reference (each command's ``--help``), the certificate schema's field tables
(``traceprop_frames/unlearn/certificate.schema.json``) and the table of exception classes on
docs/reference/errors.md and the facet field tables on docs/reference/openlineage-facets.md (between
``<!-- errors:begin -->`` / ``<!-- errors:end -->`` and ``<!-- facets:...`` markers).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "reference"
COMMANDS = ["", "demo", "trace", "erase", "verify", "recover", "keygen"]


def _help(cmd: str) -> str:
    from traceprop_frames import cli

    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal width: fix it
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        cli.main(([cmd] if cmd else []) + ["--help"])
    return buf.getvalue().rstrip()


def cli_page() -> str:
    out = ["# Command line reference", "",
           "Generated from `traceprop COMMAND --help`; how to use the commands is in the",
           "[command-line guide](../guides/cli.md).", ""]  # fmt: skip
    for cmd in COMMANDS:
        out += [f"## `traceprop{' ' + cmd if cmd else ''}`", "", "```text", _help(cmd), "```", ""]
    return "\n".join(out)


def _type(spec: dict) -> str:
    if "const" in spec:
        return f"`{json.dumps(spec['const'])}`"
    if "enum" in spec:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in spec["enum"])
    if "$ref" in spec:
        return spec["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in spec:
        return " or ".join(_type(s) for s in spec["anyOf"])
    t = spec.get("type", "any")
    if t == "array" and "items" in spec:
        return f"array of {_type(spec['items'])}"
    return " or ".join(t) if isinstance(t, list) else t


# What the main fields hold, where the schema itself has no description (the schema's own wins).
NOTES = {
    "certificate": "the signed record",
    "signature": "Ed25519 signature over the canonical JSON of `certificate`",
    "schema_version": "version of this schema",
    "certificate_id": "random id, 32 hex digits",
    "created_at": "UTC time of the erasure",
    "library": "name and version of the library that issued it",
    "regulations": "regulation tags the request is made under",
    "request": "the source files and rows asked for (path, sha256 at load and now, rows), or sample indices",
    "forget_set": "the training samples removed: indices, count, share, and the source rows behind them",
    "method": "newton / gradient / retrain / sketch, its parameters, iterations and time",
    "model": "estimator, convexity, parameter count, sha256 fingerprints of the parameters before and after",
    "evidence": "measured at erasure time: forget-set loss before/after, holdout, residual gradient, bound",
    "lineage": "the erase op added to the lineage DAG",
    "previous_certificates": "ids of earlier certificates of the same model",
    "not_guaranteed": "plain statements of what the certificate does not promise",
    "differential_privacy": "whether the model was trained with differential privacy",
    "key_id": "sha256 of the public key",
    "public_key_pem": "the signer's public key (never trusted on its own: verify with the issuer's key)",
    "value": "the signature, base64",
}


def _table(obj: dict, notes: dict | None = None) -> list[str]:
    req = set(obj.get("required", []))
    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, spec in obj.get("properties", {}).items():
        desc = spec.get("description", (notes or {}).get(name, "")).replace("|", "\\|")
        rows.append(f"| `{name}` | {_type(spec)} | {'yes' if name in req else 'no'} | {desc} |")
    return rows


def certificate_page() -> str:
    path = ROOT / "traceprop_frames" / "unlearn" / "certificate.schema.json"
    schema = json.loads(path.read_text())
    out = ["# Certificate schema", "",
           "Generated from `traceprop_frames/unlearn/certificate.schema.json` (JSON Schema "
           f"{schema['$schema'].split('/')[-2]}), which every certificate is validated against on save and load.",
           "What the fields mean for an auditor: [What a certificate promises](../auditors/promises.md).", "",
           schema["description"], "", "## Top level", ""]  # fmt: skip
    out += _table(schema, NOTES)
    sections = [
        ("certificate", schema["properties"]["certificate"]),
        ("signature", schema["properties"]["signature"]),
    ]
    cert = schema["properties"]["certificate"]["properties"]
    sections += [
        (f"certificate.{k}", v) for k, v in cert.items() if v.get("type") == "object" and "properties" in v
    ]
    sections += [(f"$defs.{k}", v) for k, v in schema.get("$defs", {}).items() if "properties" in v]
    for name, obj in sections:
        out += ["", f"## `{name}`", ""] + _table(obj, NOTES)
    return "\n".join(out) + "\n"


def errors_table() -> str:
    tree = ast.parse((ROOT / "traceprop_frames" / "errors.py").read_text())
    rows = ["| class | also a | meaning |", "|---|---|---|"]
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases = ", ".join(ast.unparse(b) for b in node.bases)
            doc = (ast.get_docstring(node) or "").split("\n\n")[0].replace("\n", " ")
            rows.append(f"| `{node.name}` | {bases} | {doc} |")
    return "\n".join(rows)


def _between(current: str, tag: str, body: str) -> str:
    """``current`` with the text between ``<!-- tag:begin -->`` and ``<!-- tag:end -->`` replaced."""
    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    head, rest = current.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def errors_page(current: str) -> str:
    return _between(current, "errors", errors_table())


def facets_tables() -> str:
    out = []
    for name in ("traceprop_rowLineage", "traceprop_erasure"):
        path = ROOT / "traceprop_frames" / "integrations" / "schemas" / f"{name}.json"
        schema = json.loads(path.read_text())
        out += [f"### `{name}`", "", f"{schema.get('title', name)}: `{path.relative_to(ROOT)}`.", ""]
        out += _table(schema) + [""]
        for key, spec in schema.get("properties", {}).items():
            item = spec.get("items", spec)
            if item.get("type") == "object" and "properties" in item:
                out += [f"`{key}`{'[]' if spec.get('type') == 'array' else ''}:", ""] + _table(item) + [""]
    return "\n".join(out).rstrip("\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="do not write; exit 1 if a page is out of date")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    errors, facets = DOCS / "errors.md", DOCS / "openlineage-facets.md"
    pages = {DOCS / "cli.md": cli_page(), DOCS / "certificate.md": certificate_page(),
             errors: errors_page(errors.read_text()),
             facets: _between(facets.read_text(), "facets", facets_tables())}  # fmt: skip
    stale = [p for p, text in pages.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)} is out of date: run `python .ci/gen_reference.py`", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(pages[p])
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
