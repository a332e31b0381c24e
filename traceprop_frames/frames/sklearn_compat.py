"""Keep lineage alive through scikit-learn's pandas output (``set_output(transform="pandas")``).

scikit-learn wraps a transformer's output in a new DataFrame with the input's index (so the ``tp_lid``
keys survive) but without the input's ``attrs``, which is where the handle that keeps the lineage table
alive lives. Without help, the output resolves only while some frame of the same table is still alive:
a feature-building function that returns ``ct.fit_transform(df)`` would lose its lineage when ``df`` goes.
This module wraps scikit-learn's pandas container adapter so the handle is copied along. It is
installed when :mod:`sklearn.utils._set_output` is imported (or at once, if it already was), so
``import traceprop_frames`` does not import scikit-learn.
"""

from __future__ import annotations

import importlib.abc
import sys

_TARGET = "sklearn.utils._set_output"


def _patch(module) -> None:
    import pandas as pd

    from traceprop_frames.frames.carrier import ATTRS_KEY, _Handle

    try:
        adapter = module.ADAPTERS_MANAGER.adapters["pandas"]
    except (AttributeError, KeyError):  # a scikit-learn without the adapter registry: nothing to do
        return
    cls = type(adapter)
    original = cls.create_container
    if getattr(original, "_traceprop", False):
        return

    def create_container(self, X_output, X_original, columns, inplace=True):
        out = original(self, X_output, X_original, columns, inplace)
        handle = getattr(X_original, "attrs", {}).get(ATTRS_KEY) if X_original is not None else None
        if isinstance(handle, _Handle) and isinstance(out, pd.DataFrame) and ATTRS_KEY not in out.attrs:
            out.attrs[ATTRS_KEY] = handle
        return out

    create_container._traceprop = True
    cls.create_container = create_container


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                exec_module = spec.loader.exec_module

                def exec_and_patch(module, _exec=exec_module):
                    _exec(module)
                    _patch(module)

                spec.loader.exec_module = exec_and_patch
                return spec
        return None


def install() -> None:
    """Patch now if scikit-learn's output module is loaded, else when it is imported."""
    if _TARGET in sys.modules:
        _patch(sys.modules[_TARGET])
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
