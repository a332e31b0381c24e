"""Erasure through a scikit-learn ``Pipeline``: its transformers refitted on the re-run's remaining rows.

A ``StandardScaler`` (or any transformer) learns statistics in ``fit`` from every training row; the
traced lineage of its output carries the rows but not those statistics (scikit-learn computes them
outside pandas). :func:`unlearn_pipeline` re-runs the user's raw-feature function without the erased
rows, refits *clones* of the pipeline's transformers on the result, transforms it, and corrects the
final estimator to that table (:func:`traceprop_frames.unlearn.rebuild.unlearn_with_rebuild`). The
pipeline's transformers are replaced by the refitted clones only once the erasure succeeded.
"""

from __future__ import annotations

from traceprop_frames.errors import UnlearningError


def unlearn_pipeline(pipe, source=None, rows=None, *, rebuild, **kwargs):
    """Erase source rows from a fitted ``Pipeline`` ending in a traceprop estimator; returns the Certificate.

    Parameters
    ----------
    pipe : sklearn.pipeline.Pipeline
        Fitted, with ``set_output(transform="pandas")`` so lineage flows through the transformers.
    source, rows
        The erasure request, as for ``est.unlearn``.
    rebuild : callable
        ``() -> (X_raw, y)``: the pipeline's *input* built with the traced readers, as for ``pipe.fit``.
    **kwargs
        Passed to :func:`~traceprop_frames.unlearn.rebuild.unlearn_with_rebuild`.
    """
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    from traceprop_frames.unlearn.rebuild import unlearn_with_rebuild

    if not isinstance(pipe, Pipeline) or len(pipe.steps) < 2:
        raise UnlearningError(
            "unlearn_pipeline needs a fitted sklearn Pipeline of transformers and an estimator"
        )
    est = pipe.steps[-1][1]
    refit = {}

    def rebuilt():
        X_raw, y = rebuild()
        head = clone(pipe[:-1])
        Xt = head.fit_transform(X_raw, y)
        refit["head"] = head
        return Xt, y

    rebuilt.__qualname__ = getattr(rebuild, "__qualname__", "rebuild") + " + refitted transformers"
    rebuilt.__module__ = getattr(rebuild, "__module__", None)

    def fitted(n_before: int, n_after: int) -> list[dict]:
        """Each transformer's ``fit`` read every training row; the re-run refitted it."""
        names = [f"{type(t).__name__}.fit (scikit-learn step {name!r})" for name, t in pipe.steps[:-1]]
        return [{"op": n, "sets_hit": 1, "sets_in_op": 1, "rows_read": n_before, "samples_affected": n_after}
                for n in names]  # fmt: skip

    cert = unlearn_with_rebuild(est, source, rows, rebuild=rebuilt, fitted_statistics=fitted, **kwargs)
    for k, (name, _) in enumerate(pipe.steps[:-1]):
        pipe.steps[k] = (name, refit["head"].steps[k][1])
    return cert
