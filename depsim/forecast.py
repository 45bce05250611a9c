"""Stage 5: the forecasts of X's post-release rate per category (docs/design.md §1, §6).

- ``deployment_sim``: X's rate on Y's prefixes (target ``sim``);
- ``challenging``: X's rate on the challenging set, for ``baseline: true`` categories only;
- ``prev_production``: Y's production rate (target ``prod_prev``): "nothing changes";
- ``deployment_sim_reweighted``: the deployment simulation with its prefixes reweighted
  towards a declared forecast of the traffic mix (target ``sim_rw``), when the release asks.

Each forecast's direction against Y's rate needs evidence (docs/design.md §6): "up" or
"down" only when the exact interval of the rate ratio excludes 1, else "no change".
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from depsim import stats

METHODS = {"deployment_sim": "sim", "challenging": "challenging", "prev_production": "prod_prev",
           "deployment_sim_reweighted": "sim_rw"}


class GraderMismatch(ValueError):
    """Rates measured by different graders (grader_ids differ) cannot be compared."""


def check_comparable(rates: pd.DataFrame) -> None:
    """Raise GraderMismatch when one category was graded by different grader_ids across
    targets."""
    ids = rates.groupby("category")["grader_id"].nunique()
    bad = ids[ids > 1]
    if len(bad):
        raise GraderMismatch(f"categories graded by different graders across targets, refusing to compare: "
                             f"{', '.join(bad.index)}")


def forecasts(rates: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Return one row per (category, method): forecast rate and Jeffreys interval (fractions),
    k of n, ``label`` ("k of n (rate per 100k)", or "0 of N (≤ bound per 100k)"), grader_id,
    group, Y's production count prev_k of prev_n and rate prev_rate, the rate ratio
    forecast/prev with its exact ``level`` interval (ratio, ratio_lo, ratio_hi), and the
    forecast ``direction`` against Y ("up", "down" or "no change"; prev_production itself
    predicts "no change"), ``rises`` (the forecast rate is significantly above Y's: exact
    one-sided test, Holm-adjusted across each method's categories at 1 − level; p-values in
    rises_p / rises_p_holm) and, when the rates count failed grades, ``failed``,
    ``worst_case_hi`` (upper bound if every failed grade were positive) and
    ``failed_warning`` (more than 5% of grades failed)."""
    check_comparable(rates)
    r = rates.set_index(["target", "category"])
    has_prev = "prod_prev" in r.index.get_level_values(0)
    prev = r.loc["prod_prev"] if has_prev else pd.DataFrame(columns=["k", "n", "rate"])
    rows = []
    for method, target in METHODS.items():
        if target not in r.index.get_level_values(0):
            continue
        for cat, x in r.loc[target].iterrows():
            if method == "challenging" and not x["baseline"]:
                continue
            rows.append({"category": cat, "method": method, "rate": x["rate"], "lo": x["lo"], "hi": x["hi"],
                         "k": x["k"], "n": x["n"], "failed": x.get("failed", 0), "grader_id": x["grader_id"],
                         "group": x["group"],
                         "prev_k": prev["k"].get(cat, np.nan), "prev_n": prev["n"].get(cat, np.nan),
                         "prev_rate": prev["rate"].get(cat, np.nan)})
    fc = pd.DataFrame(rows)
    if fc.empty:
        return fc
    fc["label"] = stats.count_label(fc["k"].to_numpy(float), fc["n"].to_numpy(float))
    ok = fc["prev_n"].notna() & (fc["prev_n"] > 0)
    fc["ratio"] = fc["ratio_lo"] = fc["ratio_hi"] = np.nan
    fc["direction"] = "no change"
    if ok.any():
        a = fc.loc[ok]
        rr = stats.rate_ratio(a["k"].to_numpy(float), a["n"].to_numpy(float),
                              a["prev_k"].to_numpy(float), a["prev_n"].to_numpy(float), level)
        fc.loc[ok, ["ratio", "ratio_lo", "ratio_hi"]] = rr[["ratio", "lo", "hi"]].to_numpy()
        fc.loc[ok, "direction"] = np.where(rr["lo"] > 1, "up", np.where(rr["hi"] < 1, "down", "no change"))
    fc.loc[fc["method"] == "prev_production", "direction"] = "no change"
    # "rises significantly" against Y, Holm-adjusted across the categories of each method
    fc["rises_p"] = fc["rises_p_holm"] = np.nan
    fc["rises"] = False
    for method, g in fc[ok & (fc["method"] != "prev_production")].groupby("method"):
        rs = stats.rises_significantly(g["k"].to_numpy(float), g["n"].to_numpy(float),
                                       g["prev_k"].to_numpy(float), g["prev_n"].to_numpy(float), 1 - level, "holm")
        fc.loc[g.index, "rises_p"], fc.loc[g.index, "rises_p_holm"] = rs["p_value"].to_numpy(), rs["p_adjusted"].to_numpy()
        fc.loc[g.index, "rises"] = rs["rises"].to_numpy()
    # failed grades bound the rate: best case all negative, worst case all positive
    if "failed" in fc:
        fb = stats.failed_bounds(fc["k"].to_numpy(float), fc["n"].to_numpy(float), fc["failed"].fillna(0).to_numpy(float),
                                 level)
        fc["worst_case_hi"], fc["failed_warning"] = fb["hi"].to_numpy(), fb["warning"].to_numpy()
    return fc


def gate_table(rates: pd.DataFrame, gates: dict[str, float], alpha: float = 0.025) -> pd.DataFrame:
    """Return, per (target, category) with a release gate (a rate, fraction), k of n, the
    exact one-sided upper bound ``gate_upper`` (Clopper–Pearson at 1 − ``alpha``; with failed
    grades, of the worst case that counts them all as positive) and ``gate_status`` ("breach":
    even the lower bound exceeds the gate; "may breach": the upper bound does; "below")."""
    r = rates[rates["category"].isin(list(gates)) & (rates["n"] > 0)].copy()
    f = r["failed"].fillna(0).to_numpy(float) if "failed" in r else np.zeros(len(r))
    k, n = r["k"].to_numpy(float) + f, r["n"].to_numpy(float) + f
    r["gate"] = r["category"].map(gates).astype(float)
    r["label"] = stats.count_label(r["k"].to_numpy(float), r["n"].to_numpy(float))
    r["gate_upper"] = np.atleast_1d(np.asarray(stats.gate_upper(k, n, alpha)))
    r["gate_status"] = np.atleast_1d(stats.gate_status(r["k"].to_numpy(float), r["n"].to_numpy(float),
                                                       r["gate"].to_numpy(), alpha))
    worst = np.atleast_1d(stats.gate_status(k, n, r["gate"].to_numpy(), alpha))
    r.loc[(worst != "below") & (r["gate_status"] == "below"), "gate_status"] = "may breach"
    return r
