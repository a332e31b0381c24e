"""The scikit-learn estimator contract, checked by scikit-learn's own suite."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from traceprop_frames.estimators import TorchLogisticRegression, TorchMLPClassifier


def _expected_failures(est):
    if isinstance(est, TorchMLPClassifier):
        # stochastic mini-batch training: weight 2 is not the same as a duplicated row batch-wise
        return {
            "check_sample_weight_equivalence_on_dense_data": "mini-batch SGD is not weight/duplicate invariant"
        }
    return {}


@parametrize_with_checks(
    [
        TorchLogisticRegression(max_iter=100),
        TorchMLPClassifier(hidden_layer_sizes=(8,), max_iter=8, learning_rate_init=0.03, batch_size=128),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_contract(estimator, check):
    check(estimator)
