"""The original Traceprop program, as its preprint wrote it; only the import line is changed.

Run: ``python examples/seed_program.py [workdir]`` (writes credit_scores.csv, ./grad/ and
article26_cert.json into ``workdir``, default a temporary folder).
"""

import os
import sys
import tempfile

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

import traceprop_frames as tp
from traceprop_frames.attribution import GradientStore, TrainingContext, compute_influence_scores
from traceprop_frames.unlearn import approximate_unlearn, export_compliance


def make_data(path: str, n: int = 600, seed: int = 0) -> None:
    """A small seeded credit-score file: 6 numeric features and a default label."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    logit = X @ np.array([1.0, -0.8, 0.5, 0.7, 0.0, -0.3]) + 0.3 * rng.normal(size=n)
    df = pd.DataFrame(X.round(4), columns=[f"f{j}" for j in range(6)])
    df["default"] = (logit > 0).astype(float)
    df.to_csv(path, index=False)


def main(workdir: str) -> dict:
    os.chdir(workdir)
    make_data("credit_scores.csv")
    torch.manual_seed(0)

    # ---- the seed program (only the import line differs) ----
    X = tp.load_csv("credit_scores.csv")  # row-annotated numeric tensor (numpy)
    X_norm = (X - X.mean(axis=0)) / X.std(axis=0)  # auto-tracked
    X_filt = X_norm[X_norm[:, 3] > 0]
    print(X_filt.sources())  # {'credit_scores.csv': rows ...}: sufficient, so mean/std's rows are in it
    print(X_filt.sources(direct=True))  # exactly the rows that passed the filter
    print(X_filt.ops())  # readable
    print(X_filt.ancestors())  # the DAG

    # a user's model, loader, criterion, optimizer (features: f0..f5; label: the last column)
    X_t = X_filt[:, :6].to_torch()
    y = torch.tensor((np.asarray(X_filt)[:, 6] > 0).astype(np.float32)).reshape(-1, 1)
    loader = DataLoader(TensorDataset(X_t, y), batch_size=32, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    criterion = torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    epochs = 5
    declined_application = X_t[0]  # one applicant's features (a row of the row-carrying tensor)

    store = GradientStore(k=4096, path="./grad/")
    with TrainingContext(model, store) as ctx:  # no lineage argument: it comes with the batches
        for _epoch in range(epochs):
            for i, (Xb, yb) in enumerate(loader):  # loader = DataLoader(TensorDataset(X_t, y), shuffle=True)
                optimizer.zero_grad()
                ctx.backward(criterion(model(Xb), yb), i)
                optimizer.step()
    scores = compute_influence_scores(model, store, declined_application, top_k=5)
    for idx, score in scores:  # (training sample, score) pairs
        print(store.get_provenance(idx).trace_to_file(), score)  # 'credit_scores.csv row 4821'
    top_row = int(store.get_provenance(scores.indices[0]).rows[0].row)
    forget_set = store.samples_from_source("credit_scores.csv", rows=[top_row])
    theta_prime = approximate_unlearn(
        model, forget_set, data=(X_t, y)
    )  # a raw torch module: a corrected copy
    export_compliance(
        model_before=model,
        model_after=theta_prime,
        forget_set=forget_set,
        store=store,
        regulation="EU_AI_ACT_ART26",
    ).save("article26_cert.json")
    return {"X_filt": X_filt, "store": store, "scores": scores, "forget_set": forget_set, "top_row": top_row,
            "model": model, "theta_prime": theta_prime, "X_t": X_t}  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="traceprop_seed_"))
