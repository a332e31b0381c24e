"""The certificate validator is compiled ahead of time (``make validator``): the shipped module matches the
shipped schema, the schema is a valid JSON Schema, and erasing in a fresh process neither compiles nor
checks the schema."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from traceprop_frames.unlearn import _certificate_validator
from traceprop_frames.unlearn.certificate import SCHEMA_PATH

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("regen", ROOT / "tools" / "regen_certificate_validator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_validator_was_generated_from_the_shipped_schema():
    tool = _tool()
    assert _certificate_validator.SCHEMA_SHA256 == tool.schema_sha256(SCHEMA_PATH), (
        "certificate.schema.json changed without regenerating the validator: run `make validator`"
    )


def test_regenerating_reproduces_the_shipped_module():
    fastjsonschema = pytest.importorskip("fastjsonschema")
    if _certificate_validator.GENERATOR != f"fastjsonschema {fastjsonschema.VERSION}":
        pytest.skip(
            f"generated with {_certificate_validator.GENERATOR}, fastjsonschema {fastjsonschema.VERSION} here"
        )
    assert _tool().generate(SCHEMA_PATH) == Path(_certificate_validator.__file__).read_text()


def test_a_changed_schema_gives_another_module(tmp_path):
    pytest.importorskip("fastjsonschema")
    changed = json.loads(SCHEMA_PATH.read_text())
    changed["properties"]["certificate"]["properties"]["forget_set"]["properties"]["count"]["minimum"] = 1
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(changed))
    tool = _tool()
    assert tool.schema_sha256(path) != _certificate_validator.SCHEMA_SHA256
    assert tool.generate(path) != Path(_certificate_validator.__file__).read_text()


def test_schema_is_a_valid_json_schema():
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert schema["$schema"].endswith("2020-12/schema")


def test_the_generated_exception_names_the_path():
    with pytest.raises(_certificate_validator.JsonSchemaValueException) as e:
        _certificate_validator.validate({"certificate": {}, "signature": []})
    assert e.value.path[0] == "data" and isinstance(e.value.message, str)


def test_erasing_in_a_fresh_process_compiles_and_checks_no_schema():
    code = (
        "import sys, numpy as np\n"
        "from traceprop_frames.estimators import TorchLogisticRegression\n"
        "rng = np.random.default_rng(0); X = rng.standard_normal((200, 3)).astype('float32')\n"
        "est = TorchLogisticRegression().fit(X, (X[:, 0] > 0).astype(int))\n"
        "from traceprop_frames.unlearn import generate_key\n"
        "cert = est.unlearn(samples=[0, 1], key=generate_key())\n"
        "print(sorted(m for m in ('fastjsonschema', 'jsonschema') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
