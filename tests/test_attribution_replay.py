"""Replay attribution: exact metagradients of the training run, against finite differences of retrains."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from traceprop_frames.attribution.replay import SGD, Adam, fixed_batches, replay_scores
from traceprop_frames.attribution.replay_models import MLPRun
from traceprop_frames.errors import ReplayError
from traceprop_frames.estimators import TorchLogisticRegression, TorchMLPClassifier


@pytest.fixture(scope="module")
def tiny():
    X, y = make_classification(n_samples=36, n_features=3, n_informative=3, n_redundant=0, random_state=1)
    return X[:30], y[:30].astype(float), X[30:]


def _retrain_fd(run, X, y, w, Xt, h=1e-6):
    """Central finite differences of actual retrains (float64), one row's weight at a time."""

    def out(w):
        final, _ = run.run(X, y, w)
        return run.output(final[: run.n_params], run.tensor(Xt)).numpy()

    cols = []
    for i in range(len(w)):
        e = np.zeros(len(w))
        e[i] = h
        cols.append((out(w + e) - out(w - e)) / (2 * h))
    return np.stack(cols, axis=1)


@pytest.mark.parametrize(
    "activation, optimizer",
    [("softplus", Adam(0.05)), ("tanh", SGD(0.1, momentum=0.9)), ("relu", Adam(0.05))],
)
def test_replay_equals_finite_differences_of_retrains(tiny, activation, optimizer):
    X, y, Xt = tiny
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 3), torch.nn.Linear(3, 1))
    theta0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).double()
    run = MLPRun(
        [p.shape for p in net.parameters()], theta0, activation, 0.1, optimizer, fixed_batches(30, 8, 3, 0)
    )
    w = np.ones(30)
    w[[3, 7]] = 0  # deleted rows keep their slots; their scores are the effect of adding them back
    res = replay_scores(run, X, y, w, Xt, segment=4)
    fd = _retrain_fd(run, X, y, w, Xt)
    assert np.abs(fd).max() > 1e-2  # the run does depend on the weights
    np.testing.assert_allclose(res.scores, fd, rtol=0, atol=1e-6)
    # the checkpoint spacing changes the memory, never the numbers
    np.testing.assert_allclose(replay_scores(run, X, y, w, Xt, segment=1).scores, res.scores, atol=1e-12)


def test_estimator_replay_is_the_derivative_of_its_own_retrains(tiny):
    X, y, Xt = tiny
    est = TorchMLPClassifier(
        hidden_layer_sizes=(4,), activation="softplus", max_iter=4, batch_size=8, learning_rate_init=0.05,
        alpha=0.1, random_state=0,
    ).fit(X, y)  # fmt: skip
    S = est.influence_scores(Xt, method="replay", dtype=torch.float64)
    run = est._replay_run(3, 30, 0, torch.float64)  # the run fit trains with, in float64
    np.testing.assert_allclose(S, _retrain_fd(run, est.X_train_, est.y_train_, np.ones(30), Xt), atol=1e-6)
    # the default replays in the fit's float32, from the states fit kept (no forward pass)
    assert est.replay_states_ is not None
    np.testing.assert_allclose(
        est.influence_scores(Xt, method="replay"), S, rtol=0, atol=1e-4 * np.abs(S).max()
    )
    # fit(X, y, sample_weight=mask) IS that run at the mask (float32 fit vs float64 run)
    mask = np.ones(30)
    mask[[0, 5, 9]] = 0
    refit = TorchMLPClassifier(**est.get_params()).fit(X, y, sample_weight=mask)
    final, _ = run.run(est.X_train_, est.y_train_, mask)
    np.testing.assert_allclose(
        refit.decision_function(Xt), run.output(final[: run.n_params], run.tensor(Xt)).numpy(), atol=1e-5
    )
    # ... and not the fit on the remaining rows (other batches, fewer steps)
    other = TorchMLPClassifier(**est.get_params()).fit(X[mask > 0], y[mask > 0])
    assert np.abs(other.decision_function(Xt) - refit.decision_function(Xt)).max() > 1e-3
    # traced like the other methods; erased rows never appear
    top = (
        TorchMLPClassifier(**est.get_params())
        .fit(X, y, sample_weight=mask)
        .influence(Xt[:1], top_k=3, method="replay")
    )
    assert len(top) == 3 and not set(top["train_row"]) & {0, 5, 9}


def test_fit_is_torch_adam_on_autograd_gradients(tiny):
    """The hand-written batch gradient and update reproduce torch.optim.Adam on autograd gradients."""
    X, y, Xt = tiny
    kw = dict(
        hidden_layer_sizes=(6,), max_iter=3, batch_size=7, learning_rate_init=0.03, alpha=0.2, random_state=3
    )
    est = TorchMLPClassifier(**kw).fit(X, y)
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.ReLU(), torch.nn.Linear(6, 1)).double()
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    Xt64, y64 = torch.as_tensor(X), torch.as_tensor(y)
    for B in fixed_batches(30, 7, 3, 3):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(Xt64[B])[:, 0], y64[B])
        (loss + 0.2 * (net[0].weight.square().sum() + net[2].weight.square().sum()) / 60).backward()
        opt.step()
    with torch.no_grad():
        ref = net(torch.as_tensor(Xt))[:, 0].numpy()
    np.testing.assert_allclose(est.decision_function(Xt), ref, atol=1e-5)


def test_convex_replay_converges_to_the_exact_influence_function():
    X, y = make_classification(n_samples=80, n_features=4, n_informative=3, n_redundant=0, random_state=3)
    Xtr, ytr, Xte = X[:70], y[:70], X[70:]
    errs = []
    exact = TorchLogisticRegression(C=0.5).fit(Xtr, ytr).influence_scores(Xte, method="exact")
    for it in (1, 2, 3, 100):
        est = TorchLogisticRegression(C=0.5, max_iter=it).fit(Xtr, ytr)
        errs.append(np.abs(est.influence_scores(Xte, method="replay") - exact).max() / np.abs(exact).max())
    assert errs[0] > 1e-2 and errs[1] < errs[0] and errs[2] < errs[1]
    assert errs[-1] < 1e-6


def test_replay_needs_a_seeded_run(tiny):
    X, y, Xt = tiny
    est = TorchMLPClassifier(hidden_layer_sizes=(3,), max_iter=2, batch_size=8).fit(X, y)
    with pytest.raises(ReplayError, match="integer random_state"):
        est.influence_scores(Xt, method="replay")


def _loop(X, y, *, optimizer_for_ctx=True, clip=False, lr_drop=False):
    """A user's own loop (float64, mean BCE) under a TrainingContext; returns (ctx, model)."""
    from traceprop_frames.attribution import GradientStore, TrainingContext

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Softplus(), torch.nn.Linear(4, 1)).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    with TrainingContext(
        model, GradientStore(k=8), n_samples=len(X), optimizer=opt if optimizer_for_ctx else None
    ) as ctx:
        for k, idx in enumerate(fixed_batches(len(X), 8, 3, 1)):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(Xt[idx])[:, 0], yt[idx])
            ctx.backward(loss, batch_idx=idx)
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
            if lr_drop and k == 5:
                opt.param_groups[0]["lr"] = 0.01
            opt.step()
    return ctx, model


def test_training_context_replays_a_users_loop(tiny):
    X, y, Xt = tiny
    ctx, model = _loop(X, y)
    S = ctx.replay_scores(X, y, Xt)
    rec = ctx.loop_record
    from traceprop_frames.attribution.replay_loop import mlp_spec, optimizer_spec

    shapes, act = mlp_spec(model)
    run = MLPRun(shapes, rec.theta0, act, 0.0, optimizer_spec(ctx.optimizer), rec.batches)
    np.testing.assert_allclose(S, _retrain_fd(run, X, y, np.ones(30), Xt), atol=1e-6)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(optimizer_for_ctx=False), "optimizer="),
        (dict(clip=True), "does not reproduce the trained parameters"),
        (dict(lr_drop=True), "learning rate changed"),
    ],
)
def test_training_context_says_what_it_could_not_record(tiny, kw, match):
    X, y, Xt = tiny
    ctx, _ = _loop(X, y, **kw)
    with pytest.raises(ReplayError, match=match):
        ctx.replay_scores(X, y, Xt)
