"""JSON Schemas shipped with the package: the OpenLineage RunEvent as we emit it and our two custom facets.

``SCHEMA_BASE`` is the URL prefix in the facets' ``_schemaURL``; its ``.invalid`` host says that no server
serves them: read them with :func:`load` (they are package data).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from traceprop_frames.errors import LineageEventError

SCHEMA_BASE = "https://traceprop-frames.invalid/spec/1-0-0/"
NAMES = ("openlineage_runevent.json", "traceprop_rowLineage.json", "traceprop_erasure.json")


def load(name: str) -> dict:
    """One shipped schema, e.g. ``load("traceprop_rowLineage.json")``.

    Examples
    --------
    >>> load("traceprop_erasure.json")["title"]
    'traceprop_erasure run facet'
    """
    if name not in NAMES:
        raise LineageEventError(f"no shipped schema {name!r}; there are {list(NAMES)}")
    return json.loads(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


@cache
def _validator():
    from jsonschema import Draft202012Validator, FormatChecker
    from referencing import Registry, Resource

    registry = Registry().with_resources((SCHEMA_BASE + n, Resource.from_contents(load(n))) for n in NAMES)
    return Draft202012Validator(load(NAMES[0]), registry=registry, format_checker=FormatChecker())


def validate_event(event: dict) -> None:
    """Raise :class:`~traceprop_frames.errors.LineageEventError` unless ``event`` (a RunEvent as a dict)
    matches the shipped OpenLineage RunEvent schema and, where present, our facets' schemas.

    Examples
    --------
    >>> validate_event({"eventTime": "now"})
    Traceback (most recent call last):
    ...
    traceprop_frames.errors.LineageEventError: OpenLineage event does not match its JSON Schema at (top level): 'producer' is a required property
    """
    err = next(iter(sorted(_validator().iter_errors(event), key=lambda e: list(e.absolute_path))), None)
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise LineageEventError(f"OpenLineage event does not match its JSON Schema at {where}: {err.message}")
