"""Seeded synthetic data sets (no download is ever needed).

``make_credit_risk`` writes Home-Credit-like tables: ``application.csv`` (one row per applicant,
with the label ``TARGET``), ``bureau.csv`` (previous credits at other institutions, 0..12 per
applicant, mean 5) and ``previous_application.parquet`` (earlier applications here, 0..7, mean 2.5).
At the default sizes an applicant's training row depends on 8.5 source rows on average.
The label depends on the bureau debt, income, credit ratio and refused previous applications, so a
model trained on the joined table has signal in every source.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def make_credit_risk(out_dir, applicants: int = 20_000, seed: int = 0) -> dict[str, Path]:
    """Write the three tables into ``out_dir``; returns ``{"application", "bureau", "previous_application"}``
    paths. The same ``(applicants, seed)`` always gives byte-identical files.

    Examples
    --------
    >>> import tempfile
    >>> paths = make_credit_risk(tempfile.mkdtemp(), applicants=100, seed=1)
    >>> sorted(paths)
    ['application', 'bureau', 'previous_application']
    """
    if applicants < 1:
        raise ValueError("applicants must be at least 1")
    out = Path(out_dir)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(applicants)
    ids = np.arange(100_001, 100_001 + n, dtype=np.int64)

    income = np.round(np.exp(rng.normal(11.9, 0.5, n)), -2)
    credit = np.round(income * rng.uniform(0.5, 6.0, n), -2)
    annuity = np.round(credit / rng.uniform(10, 40, n), 2)
    age_days = -rng.integers(21 * 365, 69 * 365, n)
    employed = np.where(rng.random(n) < 0.15, 365243, -rng.integers(0, 40 * 365, n))
    gender = rng.choice(np.array(["F", "M"]), n, p=[0.62, 0.38])
    contract = rng.choice(np.array(["Cash loans", "Revolving loans"]), n, p=[0.9, 0.1])
    education = rng.choice(
        np.array(["Secondary", "Higher education", "Incomplete higher", "Lower secondary"]),
        n,
        p=[0.7, 0.22, 0.05, 0.03],
    )
    ext_source = np.clip(rng.beta(4, 3, n), 0, 1)

    bureau, b_owner, b_debt, n_bureau = _bureau(rng, ids)  # the draws in this order: files stay identical
    prev, p_owner, p_status = _previous(rng, ids)

    # label: logistic in features from all three sources
    debt_by = pd.Series(np.nan_to_num(b_debt), index=b_owner).groupby(level=0).sum()
    refused_by = pd.Series((p_status == "Refused").astype(float), index=p_owner).groupby(level=0).sum()
    debt = debt_by.reindex(ids, fill_value=0).to_numpy()
    refused = refused_by.reindex(ids, fill_value=0).to_numpy()
    z = (
        -2.2
        + 0.9 * np.log1p(debt / income)
        + 0.35 * refused
        + 0.25 * np.log(credit / income)
        - 2.5 * (ext_source - 0.57)
        + 0.3 * (n_bureau > 8)
        + rng.normal(0, 0.5, n)
    )
    target = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)

    app = pd.DataFrame(
        {
            "SK_ID_CURR": ids,
            "TARGET": target,
            "NAME_CONTRACT_TYPE": contract,
            "CODE_GENDER": gender,
            "NAME_EDUCATION_TYPE": education,
            "AMT_INCOME_TOTAL": income,
            "AMT_CREDIT": credit,
            "AMT_ANNUITY": annuity,
            "DAYS_BIRTH": age_days,
            "DAYS_EMPLOYED": employed,
            "EXT_SOURCE": np.round(ext_source, 6),
        }
    )
    app.loc[rng.random(n) < 0.003, "AMT_INCOME_TOTAL"] = 0.0  # a few bad records, filtered by the ETL

    paths = {
        "application": out / "application.csv",
        "bureau": out / "bureau.csv",
        "previous_application": out / "previous_application.parquet",
    }
    _replace(paths["application"], lambda tmp: app.to_csv(tmp, index=False))
    _replace(paths["bureau"], lambda tmp: bureau.to_csv(tmp, index=False))
    _replace(paths["previous_application"], lambda tmp: prev.to_parquet(tmp, index=False))
    return paths


def _replace(path: Path, write) -> None:
    """Write ``path`` through a temporary file in its folder, then rename it into place: a process that
    reads the file while another one makes it again (the same bytes) never sees it half written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _bureau(rng, ids: np.ndarray):
    """The bureau table (drawn from ``rng`` after the application columns); returns it, each row's owner,
    the debts and each applicant's number of credits."""
    n = len(ids)
    # bureau: previous credits elsewhere
    n_bureau = rng.poisson(5.0, n).clip(0, 12)
    b_owner = np.repeat(ids, n_bureau)
    nb = len(b_owner)
    b_credit = np.round(np.exp(rng.normal(11.5, 0.9, nb)), -2)
    b_active = rng.random(nb) < 0.4
    b_debt = np.where(b_active, np.round(b_credit * rng.uniform(0, 1, nb), 2), 0.0)
    b_debt[rng.random(nb) < 0.05] = np.nan  # missing values, as in the real data
    bureau = pd.DataFrame(
        {
            "SK_ID_CURR": b_owner,
            "SK_ID_BUREAU": np.arange(5_000_000, 5_000_000 + nb, dtype=np.int64),
            "CREDIT_ACTIVE": np.where(b_active, "Active", "Closed"),
            "DAYS_CREDIT": -rng.integers(0, 3000, nb),
            "AMT_CREDIT_SUM": b_credit,
            "AMT_CREDIT_SUM_DEBT": b_debt,
        }
    )
    # shuffle so an applicant's rows are scattered through the file, as in real exports
    bureau = bureau.iloc[rng.permutation(nb)].reset_index(drop=True)
    return bureau, b_owner, b_debt, n_bureau


def _previous(rng, ids: np.ndarray):
    """The previous-applications table (drawn after the bureau); returns it, each row's owner and status."""
    n = len(ids)
    # previous applications here
    n_prev = rng.poisson(2.5, n).clip(0, 7)
    p_owner = np.repeat(ids, n_prev)
    npv = len(p_owner)
    p_amt = np.round(np.exp(rng.normal(11.0, 0.8, npv)), -2)
    p_status = rng.choice(np.array(["Approved", "Refused", "Canceled"]), npv, p=[0.65, 0.25, 0.10])
    prev = pd.DataFrame(
        {
            "SK_ID_CURR": p_owner,
            "SK_ID_PREV": np.arange(2_000_000, 2_000_000 + npv, dtype=np.int64),
            "NAME_CONTRACT_STATUS": p_status,
            "AMT_APPLICATION": p_amt,
            "AMT_CREDIT": np.round(p_amt * rng.uniform(0.8, 1.2, npv), 2),
        }
    )
    prev = prev.iloc[rng.permutation(npv)].reset_index(drop=True)
    return prev, p_owner, p_status
