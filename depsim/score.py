"""Stage 6: score each forecast against X's realised production rates (docs/design.md §6)."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from depsim import errormodel, forecast, stats
from depsim.forecast import check_comparable


def per_category(forecasts: pd.DataFrame, rates: pd.DataFrame, threshold: float = 1.5,
                 level: float = 0.95) -> pd.DataFrame:
    """Return :func:`score_rows` of the forecasts against X's realised prod_new rates at
    ``level`` (the report's level: the forecasts' predictive intervals were drawn at it), after
    checking that forecast and realised rates come from the same frozen graders. Forecasts
    that cannot be scored are listed, never dropped silently, in ``.attrs["unscored"]``
    (``unit``, ``reason``): a category with no usable realised grade, or a forecast whose
    every grade failed."""
    check_comparable(rates)
    real = rates[(rates["target"] == "prod_new") & (rates["n"].fillna(0) > 0)].set_index("category")
    if not (rates["target"] == "prod_new").any():
        raise ValueError("no prod_new rates: post-release scoring needs X's production traffic")
    no_real = ~forecasts["category"].isin(real.index)
    no_forecast = ~no_real & ~(forecasts["n"].fillna(0) > 0) if "n" in forecasts else ~no_real & forecasts["rate"].isna()
    reasons = [(c, "no usable realised grade (prod_new)") for c in pd.unique(forecasts.loc[no_real, "category"])]
    reasons += [(c, f"{m}: every grade failed, no forecast") for c, m in
                zip(forecasts.loc[no_forecast, "category"], forecasts.loc[no_forecast, "method"])]
    f = forecasts[~no_real & ~no_forecast].copy()
    mismatch = f["grader_id"].to_numpy() != real.loc[f["category"], "grader_id"].to_numpy()
    if mismatch.any():
        raise ValueError(f"grader_id of forecast and realised rates differ for {set(f['category'][mismatch])}")
    f["k_real"] = real.loc[f["category"], "k"].to_numpy()
    f["n_real"] = real.loc[f["category"], "n"].to_numpy()
    if "failed" in real:
        f["failed_real"] = real.loc[f["category"], "failed"].to_numpy()
    out = score_rows(f.reset_index(drop=True), threshold, level)
    out.attrs["unscored"] = pd.DataFrame(reasons, columns=["unit", "reason"])
    return out


def score_rows(f: pd.DataFrame, threshold: float = 1.5, level: float = 0.95) -> pd.DataFrame:
    """Return ``f`` (one row per forecast: rate, k, n, prev_k, prev_n, prev_rate, method,
    k_real, n_real; optionally direction and the error model's err_loc/err_scale/err_df) with:

    * realised (Jeffreys rate of k_real of n_real), ``realised_label`` (k of n text), NLL and
      regret of the realised count (nats), SME and log10 error; ``covered`` (realised point
      inside the forecast's confidence interval: kept for callers, but it is not calibration);
    * the realised change against Y (realised_change = realised / prev_rate); for scoring,
      Y's count is split at random into two halves (:func:`depsim.stats.split_count`, seeded
      by the category, the same for every method): ``direction_scored`` is the forecast's call
      against half A and ``realised_direction`` the outcome's against half B, both with the
      evidence rule ("up"/"down" only when the exact ``level`` interval of the ratio excludes
      1); ``large_shift`` (≥ ``threshold``× and supported) and ``direction_right`` on large
      shifts (NaN elsewhere and for prev_production, which predicts no change). ``direction``
      (the forecast's call against all of Y's sample, as shown before release) is kept;
    * when the error model's columns are present, posterior-predictive calibration of the
      realised count at ``level``: ``pred_covered`` (fraction; a perfect forecaster averages
      ``level``), ``pred_inside`` (integer interval) and ``pit``."""
    f = f.copy()
    k, n, rate = f["k_real"].to_numpy(float), f["n_real"].to_numpy(float), f["rate"].to_numpy(float)
    f["realised"] = stats.jeffreys(k, n)["rate"].to_numpy()
    f["realised_label"] = stats.count_label(k, n)
    f["nll"] = stats.binom_nll(k, n, rate)
    f["regret"] = stats.regret(k, n, rate)
    f["sme"] = stats.sme(rate, f["realised"].to_numpy())
    f["log10_error"] = stats.log10_error(rate, f["realised"].to_numpy())
    # kept for callers; NOT calibration (a perfect forecaster scores about 83%): see pred_covered
    f["covered"] = (f["lo"] <= f["realised"]) & (f["realised"] <= f["hi"])
    f["realised_change"] = f["realised"] / f["prev_rate"]
    # no counts for Y (none at all, or not for this category): the change cannot be tested, so
    # no shift counts as large there
    need = "direction" not in f or f["direction"].isna().any()
    f["realised_direction"] = f["direction_scored"] = "no change"
    if need:
        f["direction"] = "no change"
    pk, pn = (f[c].to_numpy(float) if c in f else np.full(len(f), np.nan) for c in ("prev_k", "prev_n"))
    has = np.isfinite(pk) & np.isfinite(pn) & (pn >= 2)
    if has.any():
        kf, nf = f.loc[has, "k"].to_numpy(float), f.loc[has, "n"].to_numpy(float)
        if need:
            f.loc[has, "direction"] = stats.direction(kf, nf, pk[has], pn[has], level)
            f.loc[f["method"] == "prev_production", "direction"] = "no change"
        # Y's sample split in two (the same split for every method of a category): the forecast
        # is scored against one half and the outcome against the other, so noise in Y's
        # measurement cannot make a forecaster with no skill look right
        unit = (_unit(f) if "release" in f else f["category"].astype(str))[has]
        ka, na, kb, nb = stats.split_count(pk[has], pn[has], [zlib.crc32(u.encode()) for u in unit])
        f.loc[has, "direction_scored"] = stats.direction(kf, nf, ka, na, level)
        f.loc[has, "realised_direction"] = stats.direction(k[has], n[has], kb, nb, level)
        f.loc[f["method"] == "prev_production", "direction_scored"] = "no change"
    sc = stats.direction_scores(f["direction_scored"], f["realised_direction"], f["realised_change"], threshold)
    f["large_shift"] = sc["large"]
    f["direction_right"] = np.where(sc["large"] & (f["method"] != "prev_production"), sc["right"], np.nan)
    if {"err_loc", "err_scale", "err_df"} <= set(f.columns):
        cal = errormodel.calibration(k, f["k"].to_numpy(float), f["n"].to_numpy(float), n,
                                     f["err_loc"].to_numpy(), f["err_scale"].to_numpy(), f["err_df"].to_numpy(), level)
        f["pred_covered"], f["pred_inside"], f["pit"] = cal["covered"].to_numpy(), cal["inside"].to_numpy(), cal["pit"].to_numpy()
    return f


def _unit(scored: pd.DataFrame) -> pd.Series:
    """A category, or (release, category) when rows span releases."""
    if "release" in scored and scored["release"].nunique() > 1:
        return scored["release"].astype(str) + " / " + scored["category"].astype(str)
    return scored["category"].astype(str)


def common_set(scored: pd.DataFrame, methods=None) -> tuple[pd.Series, pd.DataFrame]:
    """Return (mask over ``scored``'s rows, excluded): the one common set of categories (or
    release/category units) on which headline metrics compare methods: forecast by every
    method in ``methods`` (default: all present) and with ≥ 1 event somewhere (forecast,
    Y's production or realised). ``excluded`` lists the others with the reason."""
    methods = list(pd.unique(scored["method"])) if methods is None else list(methods)
    s = scored[scored["method"].isin(methods)]
    unit = _unit(s)
    ev = s[[c for c in ("k", "prev_k", "k_real") if c in s]].fillna(0).sum(axis=1) > 0
    events = ev.groupby(unit).any()
    have = s.groupby(unit)["method"].agg(set)
    rows = []
    for u in have.index:
        missing = [m for m in methods if m not in have[u]]
        if missing:
            rows.append({"unit": u, "reason": "not forecast by " + ", ".join(missing)})
        elif not events[u]:
            rows.append({"unit": u, "reason": "no event in any pool"})
    excluded = pd.DataFrame(rows, columns=["unit", "reason"])
    mask = scored["method"].isin(methods) & ~_unit(scored).isin(excluded["unit"])
    return mask, excluded


def summary(scored: pd.DataFrame, methods=None, reps: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Return one row per method, all on the one :func:`common_set` (the excluded units are in
    ``.attrs["excluded"]``): categories scored, summed NLL and regret (nats), SME median /
    mean / max with percentile-bootstrap 95% intervals over categories (``_lo``/``_hi``),
    directional accuracy k/n on large shifts beside its no-skill permutation null
    (``direction_null`` mean, ``direction_p``), ``coverage`` (posterior-predictive coverage of
    the realised count at the scoring level; NaN without the error model's columns),
    ``untracked`` (how many of those forecasts' predictive intervals say nothing:
    :func:`untracked`) and the log-scale Pearson r between forecast and realised rates."""
    mask, excluded = common_set(scored, methods)
    s = scored[mask]
    rows = []
    for method, g in s.groupby("method", sort=False):
        sm = stats.sme(g["rate"].to_numpy(), g["realised"].to_numpy())
        med = stats.bootstrap_summary(sm, np.median, reps, seed)
        mean = stats.bootstrap_summary(sm, np.mean, reps, seed)
        big = g[g["large_shift"]]
        row = {"method": method, "categories": len(g), "nll_sum": g["nll"].sum(), "regret_sum": g["regret"].sum(),
               "sme_median": med["value"], "sme_median_lo": med["lo"], "sme_median_hi": med["hi"],
               "sme_mean": mean["value"], "sme_mean_lo": mean["lo"], "sme_mean_hi": mean["hi"],
               "sme_max": float(np.max(sm)) if len(sm) else np.nan, "large_shifts": len(big)}
        if method == "prev_production":
            row.update(direction="n/a (predicts no change)", direction_right=0, direction_null=np.nan, direction_p=np.nan)
        else:
            right = int(big["direction_right"].astype(bool).sum())
            null = stats.direction_null(big["direction_scored"], big["realised_direction"], seed=seed)
            row.update(direction=f"{right}/{len(big)}", direction_right=right, direction_null=null["null_mean"],
                       direction_p=null["p_value"])
        # posterior-predictive coverage of the realised count (NaN without an error model)
        row["coverage"] = g["pred_covered"].mean() if "pred_covered" in g else np.nan
        row["untracked"] = int(untracked(g).sum())
        row["log_pearson_r"] = (stats.log_pearson(g["rate"].to_numpy(), g["realised"].to_numpy())
                                if len(g) > 2 else np.nan)
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["excluded"] = excluded
    return out


#: a predictive interval from 0 to at least this share of the realised sample excludes nothing
#: a reviewer would call plausible: covering the realised count then says nothing
UNINFORMATIVE_SHARE = 0.5


def untracked(scored: pd.DataFrame) -> pd.Series:
    """Return, per row of ``scored`` (bool), whether its predictive interval says nothing about
    the forecast's skill: it was fitted on no earlier release (``err_releases`` = 0: the error
    model's prior alone) or it spans from 0 to at least :data:`UNINFORMATIVE_SHARE` of the
    realised sample (``pred_k_lo``/``pred_k_hi`` of ``pred_n``). Such an interval covers almost
    any realised count, so its coverage is no evidence of calibration. False where the columns
    are missing (no error model: no coverage is shown then)."""
    out = pd.Series(False, index=scored.index)
    if "err_releases" in scored:
        out |= scored["err_releases"].fillna(0).to_numpy() == 0
    if {"pred_k_lo", "pred_k_hi", "pred_n"} <= set(scored.columns):
        out |= (scored["pred_k_lo"] <= 0) & (scored["pred_k_hi"] >= UNINFORMATIVE_SHARE * scored["pred_n"])
    return out


def every_category(scored: pd.DataFrame) -> pd.DataFrame:
    """Return one row per method over EVERY category it forecasts with ≥ 1 event somewhere
    (forecast, Y's production or realised; a category with none anywhere says nothing about
    error), not only the :func:`common_set`: ``categories``, ``outside_common`` (how many of
    them the common set leaves out), SME ``sme_median`` and ``sme_max`` with the category of
    the worst miss (``worst``; ``worst_forecast`` and ``worst_realised`` its rates, fractions;
    ``worst_k``/``worst_n`` and ``worst_k_real``/``worst_n_real`` its counts),
    ``coverage`` (posterior-predictive coverage of the realised count at the scoring level;
    NaN without the error model) and ``untracked`` (:func:`untracked` rows among them).
    Methods forecast different sets, so these figures do not compare methods: they show each
    method's own worst miss, which the common set may hide."""
    mask, _ = common_set(scored)
    ev = scored[[c for c in ("k", "prev_k", "k_real") if c in scored]].fillna(0).sum(axis=1) > 0
    s = scored[ev].assign(_common=mask[ev], _unit=_unit(scored[ev]))
    rows = []
    for method, g in s.groupby("method", sort=False):
        sm = stats.sme(g["rate"].to_numpy(), g["realised"].to_numpy())
        w = int(np.argmax(sm))
        rows.append({"method": method, "categories": len(g), "outside_common": int((~g["_common"]).sum()),
                     "sme_median": float(np.median(sm)), "sme_max": float(sm[w]), "worst": g["_unit"].iloc[w],
                     "worst_forecast": float(g["rate"].iloc[w]), "worst_realised": float(g["realised"].iloc[w]),
                     "worst_k": g["k"].iloc[w], "worst_n": g["n"].iloc[w],
                     "worst_k_real": g["k_real"].iloc[w], "worst_n_real": g["n_real"].iloc[w],
                     "coverage": g["pred_covered"].mean() if "pred_covered" in g else np.nan,
                     "untracked": int(untracked(g).sum())})
    return pd.DataFrame(rows, columns=["method", "categories", "outside_common", "sme_median", "sme_max", "worst",
                                       "worst_forecast", "worst_realised", "worst_k", "worst_n", "worst_k_real",
                                       "worst_n_real", "coverage", "untracked"])


#: a pre-release gate verdict set against the realised outcome under the same rule
GATE_HELD = {("breaches", "breaches"): "breach confirmed", ("may breach", "breaches"): "breached (was flagged)",
             ("within", "breaches"): "breach missed", ("breaches", "within"): "false alarm",
             ("may breach", "within"): "stayed within (was flagged)", ("within", "within"): "within, as forecast"}


def gate_outcomes(rates: pd.DataFrame, gates: dict | None, level: float = 0.95) -> pd.DataFrame:
    """Return, per gated category, the pre-release gate verdict beside the realised outcome,
    both from :func:`depsim.forecast.decision_table` (the same gate check, exact intervals at
    ``level``): the verdict on the deployment simulation (``sim``) against Y's production
    rate, and the same check on X's realised production rate (``prod_new``) against it.

    Columns: category, group, gate (text), verdict (breaches / may breach / within, before
    release), forecast ``k``/``n``, Y's ``prev_k``/``prev_n``, realised ``k_real``/``n_real``,
    the realised ratio to Y (``ratio``, exact ``ratio_lo``/``ratio_hi``, for a ratio gate;
    NaN otherwise is kept as computed), realised ``hi`` (exact upper bound of the realised
    rate, a fraction), ``outcome`` (the realised gate status: breaches / may breach, i.e. the
    realised interval straddles the gate / within) and ``held`` (the verdict against the
    outcome, :data:`GATE_HELD`; "undecided" when the outcome is "may breach"). Rows in the
    decision table's order (riskiest verdict first); empty without gates or ``prod_new``."""
    cols = ["category", "group", "gate", "verdict", "k", "n", "prev_k", "prev_n", "k_real", "n_real", "ratio",
            "ratio_lo", "ratio_hi", "lo", "hi", "outcome", "held"]
    if not gates or "prod_new" not in set(rates["target"]):
        return pd.DataFrame(columns=cols)
    pre = forecast.decision_table(rates, gates, level, target="sim")
    post = forecast.decision_table(rates, gates, level, target="prod_new").set_index("category")
    pre = pre[(pre["gate_status"] != "no gate") & pre["category"].isin(post.index)]
    post = post.loc[pre["category"]]
    out = pd.DataFrame({"category": pre["category"].to_numpy(), "group": pre["group"].to_numpy(),
                        "gate": pre["gate"].to_numpy(), "verdict": pre["gate_status"].to_numpy(),
                        "k": pre["k"].to_numpy(), "n": pre["n"].to_numpy(),
                        "prev_k": post["prev_k"].to_numpy(), "prev_n": post["prev_n"].to_numpy(),
                        "k_real": post["k"].to_numpy(), "n_real": post["n"].to_numpy(),
                        "ratio": post["ratio"].to_numpy(), "ratio_lo": post["ratio_lo"].to_numpy(),
                        "ratio_hi": post["ratio_hi"].to_numpy(), "lo": post["lo"].to_numpy(),
                        "hi": post["hi"].to_numpy(), "outcome": post["gate_status"].to_numpy()})
    out["held"] = [GATE_HELD.get((v, o), "undecided" if o == "may breach" else f"{v} / {o}")
                   for v, o in zip(out["verdict"], out["outcome"])]
    return out[cols]


def direction_table(scored: pd.DataFrame, a: str = "deployment_sim", seed: int = 0) -> pd.DataFrame:
    """Return per method (prev_production, which predicts no change, left out): right calls k
    of n on large shifts, the no-skill permutation null (mean and 95% range) and its one-sided
    p-value, and McNemar's exact test against method ``a`` on the large shifts both scored
    (b = a right and this wrong, c = the reverse)."""
    big = scored[scored["large_shift"] & (scored["method"] != "prev_production")]
    rows = []
    ref = big[big["method"] == a].set_index("category")["direction_right"].astype(bool)
    for method, g in big.groupby("method", sort=False):
        null = stats.direction_null(g["direction_scored"], g["realised_direction"], seed=seed)
        row = {"method": method, "right": int(g["direction_right"].astype(bool).sum()), "large_shifts": len(g),
               "share": null["observed"], "null_mean": null["null_mean"], "null_lo": null["null_lo"],
               "null_hi": null["null_hi"], "p_value": null["p_value"]}
        if method != a and len(ref):
            mine = g.set_index("category")["direction_right"].astype(bool)
            both = ref.index.intersection(mine.index)
            mc = stats.mcnemar(ref[both].to_numpy(), mine[both].to_numpy())
            row.update(mcnemar_b=mc["b"], mcnemar_c=mc["c"], mcnemar_p=mc["p_value"])
        rows.append(row)
    return pd.DataFrame(rows)


def comparison(scored: pd.DataFrame, a: str = "deployment_sim") -> pd.DataFrame:
    """Return method ``a`` against each other method on the categories both forecast (with ≥ 1
    event somewhere): NLL wins/losses/ties, the exact one-sided sign test and Wilcoxon
    signed-rank p-values, and the summed NLL difference (nats; > 0 favours ``a``)."""
    rows = []
    for b in pd.unique(scored["method"]):
        if b == a:
            continue
        mask, _ = common_set(scored, [a, b])
        wide = scored[mask].assign(unit=_unit(scored[mask])).pivot(index="unit", columns="method", values="nll")
        if wide.empty:
            continue
        res = stats.method_comparison(wide[a].to_numpy(), wide[b].to_numpy())
        rows.append({"method": a, "against": b, "categories": len(wide), **res})
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
    """Return NLL (nats) per category (rows; "release / category" across releases) and method
    (columns), with a last row summing each method over the one :func:`common_set` of
    categories (forecast by every method, ≥ 1 event somewhere)."""
    unit = _unit(scored)
    nll = scored.assign(category=unit).pivot(index="category", columns="method", values="nll")
    mask, _ = common_set(scored)
    shared = sorted(set(unit[mask]))
    nll.loc["SUM (common set)"] = nll.loc[shared].sum()
    nll.columns.name = None
    return nll.reset_index()


def large_shifts(scored: pd.DataFrame) -> pd.DataFrame:
    """Return the rows of categories whose realised rate moved ≥ the threshold, per forecasting
    method (not the previous-production baseline): Y's count and rate (prev_k, prev_n,
    prev_rate), the forecast's (k, n, rate), the realised one (k_real, n_real, realised; rates
    are fractions), the realised change (ratio) and whether the direction was right."""
    big = scored[scored["large_shift"] & (scored["method"] != "prev_production")]
    cols = ["category", "method", "prev_k", "prev_n", "prev_rate", "k", "n", "rate", "k_real", "n_real", "realised",
            "realised_change", "direction_right"]
    return big[[c for c in cols if c in big]]
