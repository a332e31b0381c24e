"""Framework-free lineage core: numpy arrays in, numpy arrays out."""

from traceprop_frames.lineage.graph import LineageDAG, OpNode
from traceprop_frames.lineage.rowsets import RowLineage, SourceRow
from traceprop_frames.lineage.sources import REGISTRY, Source, SourceRegistry, decode, encode

__all__ = [
    "REGISTRY",
    "LineageDAG",
    "OpNode",
    "RowLineage",
    "Source",
    "SourceRegistry",
    "SourceRow",
    "decode",
    "encode",
]
