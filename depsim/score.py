"""Stage 6: score each forecast against X's realised production rates (docs/design.md §6)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from depsim import stats
from depsim.forecast import check_comparable


def per_category(forecasts: pd.DataFrame, rates: pd.DataFrame, threshold: float = 1.5) -> pd.DataFrame:
    """Return :func:`score_rows` of the forecasts against X's realised prod_new rates, after
    checking that forecast and realised rates come from the same frozen graders."""
    check_comparable(rates)
    real = rates[rates["target"] == "prod_new"].set_index("category")
    if real.empty:
        raise ValueError("no prod_new rates: post-release scoring needs X's production traffic")
    f = forecasts[forecasts["category"].isin(real.index)].copy()
    mismatch = f["grader_id"].to_numpy() != real.loc[f["category"], "grader_id"].to_numpy()
    if mismatch.any():
        raise ValueError(f"grader_id of forecast and realised rates differ for {set(f['category'][mismatch])}")
    f["k_real"] = real.loc[f["category"], "k"].to_numpy()
    f["n_real"] = real.loc[f["category"], "n"].to_numpy()
    return score_rows(f.reset_index(drop=True), threshold)


def score_rows(f: pd.DataFrame, threshold: float = 1.5) -> pd.DataFrame:
    """Return ``f`` (one row per forecast: rate, lo, hi, prev_rate, method, k_real, n_real)
    with: realised (Jeffreys rate of k_real/n_real), NLL and regret of the realised count
    (nats), SME and log10 error, whether the interval covers the realised rate, the realised
    change against prev_rate, and direction scoring for categories whose realised rate moved
    by ≥ ``threshold``× (prev_production predicts no change and is not scored on it)."""
    f = f.copy()
    k, n, rate = f["k_real"].to_numpy(float), f["n_real"].to_numpy(float), f["rate"].to_numpy(float)
    f["realised"] = stats.jeffreys(k, n)["rate"].to_numpy()
    f["nll"] = stats.binom_nll(k, n, rate)
    f["regret"] = stats.regret(k, n, rate)
    f["sme"] = stats.sme(rate, f["realised"].to_numpy())
    f["log10_error"] = stats.log10_error(rate, f["realised"].to_numpy())
    f["covered"] = (f["lo"] <= f["realised"]) & (f["realised"] <= f["hi"])
    if "pred_lo" in f:
        f["covered_predictive"] = (f["pred_lo"] <= f["realised"]) & (f["realised"] <= f["pred_hi"])
    change = f["realised"] / f["prev_rate"]
    f["realised_change"] = change
    f["large_shift"] = np.maximum(change, 1 / change) >= threshold
    f["direction_right"] = np.where(f["large_shift"] & (f["method"] != "prev_production"),
                                    np.sign(f["rate"] - f["prev_rate"]) == np.sign(f["realised"] - f["prev_rate"]),
                                    np.nan)
    return f


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
                     **({"coverage_predictive": g["covered_predictive"].mean()} if "covered_predictive" in g else {}),
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


def decomposition(rates: pd.DataFrame) -> pd.DataFrame | None:
    """Return the error decomposition per category (None without ``sim_self``):
    environment = SME(sim_self, prod_new), prefix = SME(sim, sim_self), full = SME(sim,
    prod_new), and, when the reweighted target ``sim_rw`` exists, prefix_reweighted =
    SME(sim_rw, sim_self) and full_reweighted = SME(sim_rw, prod_new)."""
    r = rates.pivot(index="category", columns="target", values="rate")
    if not {"sim", "sim_self", "prod_new"} <= set(r.columns):
        return None
    out = stats.decompose_error(r["sim"], r["sim_self"], r["prod_new"])
    if "sim_rw" in r:
        out["prefix_reweighted"] = stats.sme(r["sim_rw"], r["sim_self"])
        out["full_reweighted"] = stats.sme(r["sim_rw"], r["prod_new"])
    return out.reset_index()


def prefix_error_removed(decomp: pd.DataFrame) -> float:
    """Return the share of the prefix error (mean log SME(sim, sim_self) over categories)
    that reweighting removes: 1 − mean log SME(sim_rw, sim_self) / mean log SME(sim, sim_self)."""
    return float(1 - np.log(decomp["prefix_reweighted"]).mean() / np.log(decomp["prefix"]).mean())


def nll_table(scored: pd.DataFrame) -> pd.DataFrame:
    """Return NLL (nats) per category (rows) and method (columns), with a last row summing
    each method over the categories every method forecast."""
    nll = scored.pivot(index="category", columns="method", values="nll")
    nll.loc["SUM (shared categories)"] = nll.dropna().sum()
    nll.columns.name = None
    return nll.reset_index()


def large_shifts(scored: pd.DataFrame) -> pd.DataFrame:
    """Return the rows of categories whose realised rate moved ≥ the threshold, per forecasting
    method (not the previous-production baseline): rates, realised change, direction right."""
    big = scored[scored["large_shift"] & (scored["method"] != "prev_production")]
    return big[["category", "method", "prev_rate", "rate", "realised", "realised_change", "direction_right"]]
