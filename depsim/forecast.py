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
    ``failed_warning`` (more than 5% of grades failed). A row with n = 0 (every grade failed)
    is kept, labelled "no usable grade (F failed)", with no rate, ratio or direction."""
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
    # a category with no usable grade (every grade failed) keeps its row, with no rate
    graded = fc["n"] > 0
    fc["label"] = [f"no usable grade ({int(f)} failed)" for f in fc["failed"].fillna(0)]
    if graded.any():
        fc.loc[graded, "label"] = stats.count_label(fc.loc[graded, "k"].to_numpy(float),
                                                    fc.loc[graded, "n"].to_numpy(float))
    ok = graded & fc["prev_n"].notna() & (fc["prev_n"] > 0)
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
                                       g["prev_k"].to_numpy(float), g["prev_n"].to_numpy(float), rise_alpha(level),
                                       "holm")
        fc.loc[g.index, "rises_p"], fc.loc[g.index, "rises_p_holm"] = rs["p_value"].to_numpy(), rs["p_adjusted"].to_numpy()
        fc.loc[g.index, "rises"] = rs["rises"].to_numpy()
    # failed grades bound the rate: best case all negative, worst case all positive
    if "failed" in fc:
        fc["worst_case_hi"], fc["failed_warning"] = np.nan, fc["failed"].fillna(0) > 0
        some = fc["n"] + fc["failed"].fillna(0) > 0
        if some.any():
            fb = stats.failed_bounds(fc.loc[some, "k"].to_numpy(float), fc.loc[some, "n"].to_numpy(float),
                                     fc.loc[some, "failed"].fillna(0).to_numpy(float), level)
            fc.loc[some, "worst_case_hi"] = fb["hi"].to_numpy()
            fc.loc[some, "failed_warning"] = fb["warning"].to_numpy()
    return fc


#: order of the decision table: gate status first, then the change
GATE_ORDER = {"breaches": 0, "may breach": 1, "within": 2, "no gate": 3}
DIRECTION_ORDER = {"rises": 0, "no change": 1, "falls": 2, "no previous rate": 3, "no usable grade": 4}
#: the direction of a category whose every grade failed (no rate)
NO_GRADE = "no usable grade"
#: the direction of a category with no previous rate to compare with (no prod_prev target,
#: or every previous grade failed): no comparison was made, so never "no change"
NOT_COMPARED = "no previous rate"
_WORDS = {"up": "rises", "down": "falls", "no change": "no change"}


def _deff(rates: pd.DataFrame) -> np.ndarray:
    """The design effect of each row's rate (≥ 1; 1 where the rates table has none)."""
    if "deff" not in rates:
        return np.ones(len(rates))
    return rates["deff"].fillna(1).clip(lower=1).to_numpy(float)


def rise_alpha(level: float) -> float:
    """Return the one-sided significance level of "rises after Holm" at the report's ``level``:
    half of 1 − level, the evidence the ratio interval's lower end above 1 stands for, so a
    rise that survives Holm is always also a "rises" direction."""
    return (1 - level) / 2


def _gate_check(gate, lo: float, hi: float, ratio_lo: float, ratio_hi: float) -> tuple[str, str]:
    """(status, gate text): "breaches" when even the exact interval's low end is over the
    gate, "may breach" when its upper bound is, else "within"; "no gate" without one. With
    failed grades, ``lo``/``ratio_lo`` are the best case (every failed grade negative) and
    ``hi``/``ratio_hi`` the worst (every one positive)."""
    if gate is None:
        return "no gate", "–"
    if gate.max_rate is not None:
        limit, low, high, text_ = gate.max_rate, lo, hi, f"≤ {gate.max_rate * 1e5:,.0f} per 100k"
    else:
        limit, low, high, text_ = gate.max_ratio, ratio_lo, ratio_hi, f"≤ {gate.max_ratio:,.2f}× previous"
    return ("breaches" if low > limit else ("may breach" if high > limit else "within")), text_


def decision_table(rates: pd.DataFrame, gates: dict | None = None, level: float = 0.95,
                   target: str = "sim", previous: str = "prod_prev") -> pd.DataFrame:
    """Return the release decision, one row per category, riskiest first: ``category``,
    ``group``, the previous rate (``prev_k``, ``prev_n``, ``prev_rate``, a fraction) and the
    deployment-simulation forecast (``k``, ``n``, ``rate``, exact Clopper–Pearson ``lo``/``hi``
    at ``level``), the ``ratio`` forecast / previous with its exact conditional interval
    (``ratio_lo``, ``ratio_hi``; :func:`depsim.stats.rate_ratio`), ``failed`` grades and
    ``hi_worst`` (the upper bound when every failed grade is counted as positive; ``lo_best``,
    ``ratio_lo_best`` and ``ratio_hi_worst`` the same bounds at either extreme: the gate is
    checked on them, so a failed grade can neither hide a breach nor make one), the ``direction`` (rises /
    no change / falls by the evidence rule: the ratio's interval must exclude 1; a tie is
    never "falls"; "no previous rate" where there is none to compare with), ``rises_holm`` (the rise is significant after Holm's correction across
    the categories compared, :func:`depsim.stats.rises_significantly`, with ``rises_p_holm``), the ``gate`` text and ``gate_status`` (breaches / may breach / within /
    no gate; ``gates``: params Gate records by category or group, a category's own first),
    and ``grader_id``. Sorted by gate status, then direction, then the upper bound. A category
    whose every grade failed (n = 0) keeps a row: no rate, direction "no usable grade", and
    "may breach" when it has a gate."""
    gates = gates or {}
    r = rates[~rates["target"].str.endswith("_rw")]
    sim = r[(r["target"] == target) & (r["n"] > 0)].set_index("category")
    prev = r[(r["target"] == previous) & (r["n"] > 0)].set_index("category")
    if sim.empty and not (r["target"] == target).any():
        return pd.DataFrame()
    k, n = sim["k"].round().astype(int), sim["n"].round().astype(int)
    ci = stats.clopper_pearson(k.to_numpy(), n.to_numpy(), level)
    failed = sim["failed"].fillna(0).round().astype(int) if "failed" in sim else pd.Series(0, index=sim.index)
    # the gate's bounds: failed grades at either extreme, and counts shrunk by the design
    # effect where sampled turns share conversations (exact bounds on the effective sample)
    d = _deff(sim)
    worst = stats.clopper_pearson((k + failed).to_numpy() / d, (n + failed).to_numpy() / d, level)
    best = stats.clopper_pearson(k.to_numpy() / d, (n + failed).to_numpy() / d, level)
    out = pd.DataFrame({"category": sim.index, "group": sim["group"].to_numpy(), "k": k.to_numpy(), "n": n.to_numpy(),
                        "rate": (k / n).to_numpy(), "lo": ci["lo"].to_numpy(), "hi": ci["hi"].to_numpy(),
                        "failed": failed.to_numpy(), "hi_worst": np.maximum(ci["hi"].to_numpy(), worst["hi"].to_numpy()),
                        "lo_best": np.minimum(ci["lo"].to_numpy(), best["lo"].to_numpy()),
                        "grader_id": sim["grader_id"].to_numpy()})
    has = out["category"].isin(prev.index).to_numpy()
    k0 = prev["k"].reindex(out["category"]).to_numpy()
    n0 = prev["n"].reindex(out["category"]).to_numpy()
    out["prev_k"], out["prev_n"] = k0, n0
    out["prev_rate"] = k0 / n0
    out["ratio"] = out["ratio_lo"] = out["ratio_hi"] = out["ratio_lo_best"] = out["ratio_hi_worst"] = np.nan
    out["direction"] = NOT_COMPARED
    if has.any():
        kk, nn = out.loc[has, "k"].to_numpy(), out.loc[has, "n"].to_numpy()
        pk, pn = np.rint(k0[has]).astype(int), np.rint(n0[has]).astype(int)
        rr = stats.rate_ratio(kk, nn, pk, pn, level)
        out.loc[has, "ratio"], out.loc[has, "ratio_lo"], out.loc[has, "ratio_hi"] = (
            rr["ratio"].to_numpy(), rr["lo"].to_numpy(), rr["hi"].to_numpy())
        out.loc[has, "direction"] = [_WORDS[d] for d in stats.direction(kk, nn, pk, pn, level)]
        ff = out.loc[has, "failed"].to_numpy()
        f0 = (np.rint(prev["failed"].reindex(out.loc[has, "category"]).fillna(0).to_numpy()).astype(int)
              if "failed" in prev else np.zeros(len(pk), dtype=int))
        # either side's failed grades at the extreme that helps, then hurts, the candidate
        d1, d0 = d[has], _deff(prev.reindex(out.loc[has, "category"]))
        lo_b = stats.rate_ratio(kk / d1, (nn + ff) / d1, (pk + f0) / d0, (pn + f0) / d0, level)
        hi_w = stats.rate_ratio((kk + ff) / d1, (nn + ff) / d1, pk / d0, (pn + f0) / d0, level)
        out.loc[has, "ratio_lo_best"] = np.fmin(rr["lo"].to_numpy(), lo_b["lo"].to_numpy())
        out.loc[has, "ratio_hi_worst"] = np.fmax(rr["hi"].to_numpy(), hi_w["hi"].to_numpy())
    # a rise among many categories compared: Holm across them, as forecast_table's ``rises``
    out["rises_p_holm"], out["rises_holm"] = np.nan, False
    if has.any():
        rs = stats.rises_significantly(kk, nn, pk, pn, rise_alpha(level), "holm")
        out.loc[has, "rises_p_holm"], out.loc[has, "rises_holm"] = rs["p_adjusted"].to_numpy(), rs["rises"].to_numpy()
    status, text_ = [], []
    for row in out.itertuples():
        gate = gates.get(row.category) or gates.get(row.group)
        if gate is not None and gate.max_ratio is not None and np.isnan(row.ratio_lo):
            s, t_ = "may breach", f"≤ {gate.max_ratio:,.2f}× previous (no previous rate)"
        else:
            s, t_ = _gate_check(gate, row.lo_best, row.hi_worst, row.ratio_lo_best, row.ratio_hi_worst)
        status.append(s)
        text_.append(t_)
    out["gate_status"], out["gate"] = status, text_
    # categories whose every grade failed keep a row, with no rate: never dropped from the table
    none = r[(r["target"] == target) & (r["n"] == 0) & ~r["category"].isin(out["category"])]
    if len(none):
        gated = [gates.get(c) or gates.get(g) for c, g in zip(none["category"], none["group"])]
        out = pd.concat([out, pd.DataFrame({
            "category": none["category"].to_numpy(), "group": none["group"].to_numpy(), "k": 0, "n": 0,
            "rate": np.nan, "lo": np.nan, "hi": np.nan,
            "failed": none["failed"].fillna(0).round().astype(int).to_numpy() if "failed" in none else 0,
            "hi_worst": np.nan, "lo_best": np.nan, "grader_id": none["grader_id"].to_numpy(),
            "prev_k": prev["k"].reindex(none["category"]).to_numpy(), "prev_n": prev["n"].reindex(none["category"]).to_numpy(),
            "ratio": np.nan, "ratio_lo": np.nan, "ratio_hi": np.nan, "ratio_lo_best": np.nan,
            "ratio_hi_worst": np.nan, "direction": NO_GRADE,
            "rises_p_holm": np.nan, "rises_holm": False,
            "gate_status": ["may breach" if g is not None else "no gate" for g in gated],
            "gate": ["no usable grade to check" if g is not None else "–" for g in gated]})], ignore_index=True)
        out["prev_rate"] = out["prev_k"] / out["prev_n"]
    out = out.assign(_g=out["gate_status"].map(GATE_ORDER), _d=out["direction"].map(DIRECTION_ORDER))
    return out.sort_values(["_g", "_d", "hi"], ascending=[True, True, False]).drop(columns=["_g", "_d"]).reset_index(drop=True)


def with_past_errors(decision: pd.DataFrame, forecasts_: pd.DataFrame, gates: dict | None,
                     method: str = "deployment_sim") -> pd.DataFrame:
    """Return the decision table with ``pred_hi`` (upper end of ``method``'s predictive
    interval of the realised rate, a fraction: its forecast with the method's past errors on
    earlier releases, :func:`depsim.history.predictive_bounds`) and ``past_error_over`` (bool):
    a category "within" its gate on this sample whose predictive upper end is over the gate (a
    rate, or the ratio to the previous rate). Unchanged without predictive bounds (no history)."""
    if not len(decision) or "pred_hi" not in forecasts_:
        return decision
    gates = gates or {}
    f = forecasts_[forecasts_["method"] == method].drop_duplicates("category").set_index("category")
    hi = decision["category"].map(f["pred_hi"]).to_numpy(float)
    over = []
    for row, h in zip(decision.itertuples(), hi):
        gate = gates.get(row.category) or gates.get(row.group)
        if gate is None or row.gate_status != "within" or np.isnan(h):
            over.append(False)
        elif gate.max_rate is not None:
            over.append(bool(h > gate.max_rate))
        else:
            over.append(bool(row.prev_rate > 0 and h / row.prev_rate > gate.max_ratio))
    return decision.assign(pred_hi=hi, past_error_over=over)


def with_reweighted(decision: pd.DataFrame, rates: pd.DataFrame, gates: dict | None, level: float = 0.95,
                    target: str = "sim_rw") -> pd.DataFrame:
    """Return the decision table with the gate check of ``target`` (the deployment simulation
    reweighted to the release's forecast traffic mix): ``rw_gate_status``, ``rw_ratio`` (its
    rate over the previous rate), ``rw_k`` / ``rw_n`` (Kish effective counts), ``rw_differs``
    (bool: its gate status is not the unweighted one's) and ``rw_worse`` (bool: it is worse, by
    :data:`GATE_ORDER`). The unweighted check stays the verdict (the mix is a forecast); this
    says where the mix would change it. Unchanged when the rates have no ``target``."""
    if not len(decision) or not (rates["target"] == target).any():
        return decision
    rw = rates[rates["target"] != "sim"].replace({"target": {target: "sim"}})
    d = decision_table(rw, gates, level).set_index("category")
    status = decision["category"].map(d["gate_status"])
    worse = [isinstance(s, str) and GATE_ORDER[s] < GATE_ORDER[g] for s, g in zip(status, decision["gate_status"])]
    return decision.assign(rw_gate_status=status.to_numpy(), rw_ratio=decision["category"].map(d["ratio"]).to_numpy(float),
                           rw_k=decision["category"].map(d["k"]).to_numpy(float),
                           rw_n=decision["category"].map(d["n"]).to_numpy(float), rw_worse=worse,
                           rw_differs=[isinstance(r, str) and r != g for r, g in zip(status, decision["gate_status"])])
