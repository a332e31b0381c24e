"""Attribution: projected per-sample gradients, a memory-mapped GradientStore, influence scores, LDS.

Public API: :class:`GradientStore`, :class:`TrainingContext`, :func:`compute_influence_scores`,
:class:`TRAKScorer`, :func:`exact_influence_scores`, the projectors, :mod:`.lds`, and the sketched
training runs (:class:`TrainingSketch`, :func:`fit_sketch`, :func:`predict_deletion`,
:class:`WeightedTraining`).
"""

from traceprop_frames.attribution.context import TrainingContext
from traceprop_frames.attribution.gradients import fingerprint, per_sample_output_grads
from traceprop_frames.attribution.projection import (
    GaussianProjector,
    IdentityProjector,
    SparseJLProjector,
    make_projector,
)
from traceprop_frames.attribution.scoring import (
    TopK,
    TRAKScorer,
    compute_influence_scores,
    exact_influence_scores,
    fill_checkpoint,
    top_k_scores,
)
from traceprop_frames.attribution.sketch import (
    DeletionPrediction,
    Measurement,
    TrainingSketch,
    fit_sketch,
    predict_deletion,
)
from traceprop_frames.attribution.store import GradientStore, Provenance, StoreError
from traceprop_frames.attribution.weighted import WeightedTraining

__all__ = [
    "DeletionPrediction",
    "Measurement",
    "TrainingSketch",
    "WeightedTraining",
    "fit_sketch",
    "predict_deletion",
    "GaussianProjector",
    "GradientStore",
    "IdentityProjector",
    "Provenance",
    "SparseJLProjector",
    "StoreError",
    "TRAKScorer",
    "TopK",
    "TrainingContext",
    "compute_influence_scores",
    "exact_influence_scores",
    "fill_checkpoint",
    "fingerprint",
    "make_projector",
    "per_sample_output_grads",
    "top_k_scores",
]
