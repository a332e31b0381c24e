"""pandas integration: readers, the ``df.tp`` accessor, merge / group-by / concat with lineage."""

from traceprop_frames.frames import accessor as _accessor  # noqa: F401  (registers df.tp)
from traceprop_frames.frames.carrier import LID, attach, has_lineage, resolve
from traceprop_frames.frames.cross_row import install as _install_cross_row
from traceprop_frames.frames.ops import TracedGroupBy, concat, merge
from traceprop_frames.frames.persist import read_traced, write_traced
from traceprop_frames.frames.readers import read_csv, read_parquet, track
from traceprop_frames.frames.sklearn_compat import install as _install_sklearn_compat

_install_sklearn_compat()
_install_cross_row()

__all__ = [
    "LID",
    "TracedGroupBy",
    "attach",
    "concat",
    "has_lineage",
    "merge",
    "read_csv",
    "read_parquet",
    "read_traced",
    "resolve",
    "track",
    "write_traced",
]
