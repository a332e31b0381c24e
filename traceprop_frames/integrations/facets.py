"""OpenLineage facets and datasets built from traceprop objects; shared by the emitter and the step
describers (:mod:`traceprop_frames.integrations.steps`)."""

from __future__ import annotations

import hashlib

import attr
from openlineage.client.event_v2 import InputDataset
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    column_lineage_dataset,
    dataset_version_dataset,
    schema_dataset,
)
from openlineage.client.naming.dataset import LocalFileSystem

from traceprop_frames.integrations.schemas import SCHEMA_BASE
from traceprop_frames.lineage.sources import ROW_BITS

PRODUCER = "https://pypi.org/project/traceprop-frames/"


@attr.define
class RowLineageDatasetFacet(DatasetFacet):
    """``traceprop_rowLineage``: where each row's source rows are, and how to read them."""

    rowCount: int  # noqa: N815
    lineageIdCount: int  # noqa: N815
    sources: list  # noqa: N815
    sourceRowIdEncoding: dict = attr.field(  # noqa: N815
        factory=lambda: {
            "type": "int64",
            "sourceBits": 63 - ROW_BITS,
            "rowBits": ROW_BITS,
            "formula": f"id = sourceId << {ROW_BITS} | rowNumber",
            "rowNumber": "0-based data row of the source file (header excluded)",
        }
    )
    sharedContext: bool = attr.field(default=False)  # noqa: N815
    artifact: dict | None = attr.field(default=None)
    ops: list | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_BASE + "traceprop_rowLineage.json"


@attr.define
class ErasureRunFacet(RunFacet):
    """``traceprop_erasure``: the certificate that proves an erasure run."""

    certificateId: str  # noqa: N815
    certificateSha256: str  # noqa: N815
    forgetSetSize: int  # noqa: N815
    method: str
    status: str
    certifiedBound: float | None = attr.field(default=None)  # noqa: N815
    boundStatement: str | None = attr.field(default=None)  # noqa: N815
    fingerprintBefore: str | None = attr.field(default=None)  # noqa: N815
    fingerprintAfter: str | None = attr.field(default=None)  # noqa: N815
    regulations: list | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_BASE + "traceprop_erasure.json"


def file_dataset(src) -> InputDataset:
    """A source file as an input: ``file`` namespace, absolute path, sha256 version, schema."""
    naming = LocalFileSystem(path=src.abspath or src.path)
    facets = {"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=src.sha256)}
    if src.schema:
        facets["schema"] = schema_facet(src.schema)
    return InputDataset(naming.get_namespace(), naming.get_name(), facets=facets)


def schema_facet(columns: dict[str, str]) -> schema_dataset.SchemaDatasetFacet:
    return schema_dataset.SchemaDatasetFacet(
        fields=[schema_dataset.SchemaDatasetFacetFields(name=str(c), type=str(t)) for c, t in columns.items()]
    )


def column_lineage_facet(
    fields: dict, dataset: list, inputs: list
) -> column_lineage_dataset.ColumnLineageDatasetFacet:
    """The OpenLineage column-lineage facet from :mod:`~traceprop_frames.integrations.columns` edges;
    ``inputs[i]`` is the (namespace, name) of input ``i``."""

    def field(i, col, typ, sub):
        ns, name = inputs[i]
        t = column_lineage_dataset.Transformation(type=typ, subtype=sub)
        return column_lineage_dataset.InputField(namespace=ns, name=name, field=col, transformations=[t])

    return column_lineage_dataset.ColumnLineageDatasetFacet(
        fields={
            c: column_lineage_dataset.Fields(inputFields=[field(*e) for e in es]) for c, es in fields.items()
        },
        dataset=[field(*e) for e in dataset],
    )


def certificate_sha256(body: dict) -> str:
    """sha256 of a certificate body's canonical JSON (the bytes its signature covers)."""
    from traceprop_frames.unlearn.certificate import canonical_json

    return hashlib.sha256(canonical_json(body)).hexdigest()
