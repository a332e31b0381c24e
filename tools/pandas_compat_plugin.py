"""pytest plugin for ``tools/pandas_compat.py``: it only imports traceprop_frames before pandas' tests run.

Loaded with ``-p pandas_compat_plugin``; nothing else: no fixture, no hook, no option.
"""

import traceprop_frames  # noqa: F401
