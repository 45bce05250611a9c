"""Stage 6: score each forecast against X's realised production rates (DESIGN §6)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from depsim import stats
from depsim.forecast import check_comparable


def per_category(forecasts: pd.DataFrame, rates: pd.DataFrame, threshold: float = 1.5) -> pd.DataFrame:
    """Return one row per (category, method) with the forecast, the realised prod_new rate
    (Jeffreys) and counts, NLL and regret of the realised count (nats), SME and log10 error,
    whether the interval covers the realised rate, and direction scoring for categories whose
    realised rate moved by ≥ ``threshold``× between prod_prev and prod_new."""
    check_comparable(rates)
    real = rates[rates["target"] == "prod_new"].set_index("category")
    if real.empty:
        raise ValueError("no prod_new rates: post-release scoring needs X's production traffic")
    f = forecasts[forecasts["category"].isin(real.index)].copy()
    mismatch = f["grader_id"].to_numpy() != real.loc[f["category"], "grader_id"].to_numpy()
    if mismatch.any():
        raise ValueError(f"grader_id of forecast and realised rates differ for {set(f['category'][mismatch])}")
    f["realised"] = real.loc[f["category"], "rate"].to_numpy()
    f["k_real"] = real.loc[f["category"], "k"].to_numpy()
    f["n_real"] = real.loc[f["category"], "n"].to_numpy()
    f["nll"] = stats.binom_nll(f["k_real"].to_numpy(), f["n_real"].to_numpy(), f["rate"].to_numpy())
    f["regret"] = stats.regret(f["k_real"].to_numpy(), f["n_real"].to_numpy(), f["rate"].to_numpy())
    f["sme"] = stats.sme(f["rate"].to_numpy(), f["realised"].to_numpy())
    f["log10_error"] = stats.log10_error(f["rate"].to_numpy(), f["realised"].to_numpy())
    f["covered"] = (f["lo"] <= f["realised"]) & (f["realised"] <= f["hi"])
    change = f["realised"] / f["prev_rate"]
    f["realised_change"] = change
    f["large_shift"] = np.maximum(change, 1 / change) >= threshold
    f["direction_right"] = np.where(f["large_shift"] & (f["method"] != "prev_production"),
                                    np.sign(f["rate"] - f["prev_rate"]) == np.sign(f["realised"] - f["prev_rate"]),
                                    np.nan)
    return f.reset_index(drop=True)


def summary(scored: pd.DataFrame) -> pd.DataFrame:
    """Return one row per method: categories scored, summed NLL and regret (nats), SME
    median/mean/max, directional accuracy k/n on large shifts, interval coverage, and the
    log-scale Pearson r between forecast and realised rates."""
    rows = []
    for method, g in scored.groupby("method", sort=False):
        s = stats.sme_summary(g["rate"].to_numpy(), g["realised"].to_numpy())
        big = g[g["large_shift"]]
        right = int(np.nansum(big["direction_right"].astype(float))) if method != "prev_production" else 0
        rows.append({"method": method, "categories": len(g), "nll_sum": g["nll"].sum(),
                     "regret_sum": g["regret"].sum(), "sme_median": s["median"], "sme_mean": s["mean"],
                     "sme_max": s["max"], "direction_right": right, "large_shifts": len(big),
                     "direction": f"{right}/{len(big)}" if method != "prev_production" else "n/a (predicts no change)",
                     "coverage": g["covered"].mean(),
                     "log_pearson_r": stats.log_pearson(g["rate"].to_numpy(), g["realised"].to_numpy()) if len(g) > 2 else np.nan})
    return pd.DataFrame(rows)


def comparison(scored: pd.DataFrame, a: str = "deployment_sim") -> pd.DataFrame:
    """Return method ``a`` against each other method on the categories both forecast:
    NLL wins/losses/ties, the exact one-sided sign test and Wilcoxon signed-rank p-values."""
    wide = scored.pivot(index="category", columns="method", values="nll")
    rows = []
    for b in wide.columns:
        if b == a:
            continue
        both = wide[[a, b]].dropna()
        res = stats.method_comparison(both[a].to_numpy(), both[b].to_numpy())
        rows.append({"method": a, "against": b, "categories": len(both), **res})
    return pd.DataFrame(rows)
