"""Earlier releases: their forecasts and realised rates, for metrics across releases (as in
the paper's four-release analysis) and for fitting predictive intervals.

``params/history.csv`` holds one row per (release, category, method): the forecast rate and
interval, Y's previous production rate, and the realised count k_real of n_real graded items
of X in production. The shipped file is simulated (:mod:`depsim.sim.history`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from depsim import stats
from depsim.score import score_rows

COLUMNS = ["release", "category", "group", "method", "rate", "lo", "hi", "prev_rate", "k_real", "n_real"]


def load_history(path: str | Path) -> pd.DataFrame:
    """Return the history table of ``path``; raise ValueError naming the file, line and
    problem for missing columns or invalid values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    df = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        raise ValueError(f"{path}:1: missing columns {missing}")
    bad = ~((df["lo"] <= df["rate"]) & (df["rate"] <= df["hi"]) & (df["rate"] > 0) & (df["prev_rate"] > 0)
            & (df["k_real"] >= 0) & (df["k_real"] <= df["n_real"]) & (df["n_real"] > 0))
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 2  # header is line 1
        raise ValueError(f"{path}:{line}: invalid row (need 0 < lo ≤ rate ≤ hi, prev_rate > 0, 0 ≤ k_real ≤ n_real > 0)")
    return df


def loo_coverage(scored: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Return, per method, interval coverage across releases validated leave-one-release-out:
    for each release, σ of :func:`depsim.stats.fit_log_error` is fitted on the *other*
    releases, and its predictive interval is checked on this one (methods seen in fewer than
    two releases are left out). Columns: method, rows, jeffreys_coverage,
    predictive_coverage, mean_sigma."""
    out = []
    for method, g in scored.groupby("method", sort=False):
        if g["release"].nunique() < 2:
            continue  # nothing to fit on: a method with a single release has no history
        inside_j, inside_p, sigmas = [], [], []
        for rel, test in g.groupby("release"):
            train = g[g["release"] != rel]
            if train.empty:
                continue
            sigma = stats.fit_log_error(train["rate"], train["realised"], train["lo"], train["hi"], level)
            lo, hi = stats.predictive_interval(test["rate"].to_numpy(), test["lo"].to_numpy(), test["hi"].to_numpy(),
                                               sigma, level)
            inside_p += list((lo <= test["realised"].to_numpy()) & (test["realised"].to_numpy() <= hi))
            inside_j += list(test["covered"])
            sigmas.append(sigma)
        out.append({"method": method, "rows": len(inside_j), "jeffreys_coverage": float(np.mean(inside_j)),
                    "predictive_coverage": float(np.mean(inside_p)), "mean_sigma": float(np.mean(sigmas))})
    return pd.DataFrame(out)


def with_history(history: pd.DataFrame, scored: pd.DataFrame, release: str) -> pd.DataFrame:
    """Return earlier releases' scored rows and this release's, in one table (column
    ``release``), for metrics across releases."""
    cols = [c for c in COLUMNS if c != "release"]
    return pd.concat([score_rows(history), scored[cols].pipe(score_rows).assign(release=release)],
                     ignore_index=True)


def predictive_bounds(forecasts: pd.DataFrame, history_scored: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Return ``forecasts`` with ``sigma``, ``pred_lo`` and ``pred_hi``: each method's
    interval widened by the multiplicative error fitted on the history (see
    :func:`depsim.stats.predictive_interval`); methods without history keep σ = 0."""
    fc = forecasts.copy()
    sig = {m: stats.fit_log_error(g["rate"], g["realised"], g["lo"], g["hi"], level)
           for m, g in history_scored.groupby("method")}
    fc["sigma"] = fc["method"].map(sig).fillna(0.0)
    lo, hi = [], []
    for (_, row) in fc.iterrows():
        a, b = stats.predictive_interval(row["rate"], row["lo"], row["hi"], row["sigma"], level)
        lo.append(a)
        hi.append(b)
    fc["pred_lo"], fc["pred_hi"] = lo, hi
    return fc
