"""Stage 5/6 statistics: forecasts with evidence-rule directions, scoring on one common set
of categories, direction against a no-skill null, and the comparison with the simulated truth."""
import re

import numpy as np
import pandas as pd
import pytest

from depsim import score, stats
from depsim.sim.truth import against_truth
from depsim.forecast import decision_table, forecasts
from depsim.params import Gate
from depsim.sim.world import World


def _rates():
    """A release's rates table: k of n per target and category."""
    rows = []
    counts = {  # category: (baseline, group, {target: k}) with n = 4000 everywhere
        "up_big": (True, "disallowed", {"sim": 80, "challenging": 70, "prod_prev": 20, "prod_new": 90}),
        "down_big": (True, "disallowed", {"sim": 10, "challenging": 60, "prod_prev": 60, "prod_new": 12}),
        "flat": (True, "disallowed", {"sim": 30, "challenging": 31, "prod_prev": 30, "prod_new": 29}),
        "never": (True, "disallowed", {"sim": 0, "challenging": 0, "prod_prev": 0, "prod_new": 0}),
        "tools": (False, "misalignment", {"sim": 5, "prod_prev": 40, "prod_new": 120}),
    }
    for cat, (base, group, ks) in counts.items():
        for target, k in ks.items():
            rows.append({"target": target, "category": cat, "grader_id": f"g-{cat}", "k": k, "n": 4000,
                         "failed": 0, "rate": (k + .5) / 4001, "lo": 0.0, "hi": 1.0, "group": group,
                         "baseline": base})
    return pd.DataFrame(rows)


def test_forecast_directions_need_evidence():
    fc = forecasts(_rates()).set_index(["category", "method"])
    assert fc.loc[("up_big", "deployment_sim"), "direction"] == "up"
    assert fc.loc[("down_big", "deployment_sim"), "direction"] == "down"
    assert fc.loc[("flat", "challenging"), "direction"] == "no change"      # 31 vs 30: a tie in effect
    assert fc.loc[("never", "deployment_sim"), "direction"] == "no change"  # 0 vs 0 is never "down"
    assert (fc.xs("prev_production", level="method")["direction"] == "no change").all()
    assert fc.loc[("never", "deployment_sim"), "label"].startswith("0 of 4,000 (≤")
    assert ("tools", "challenging") not in fc.index   # not a baseline category


def test_summary_uses_one_common_set_and_lists_the_rest():
    rates = _rates()
    scored = score.per_category(forecasts(rates), rates)
    s = score.summary(scored)
    # "never" has no event anywhere; "tools" is not forecast by challenging
    ex = s.attrs["excluded"].set_index("unit")["reason"]
    assert ex["never"] == "no event in any pool" and ex["tools"].startswith("not forecast by challenging")
    assert (s["categories"] == 3).all()
    nll = score.nll_table(scored).set_index("category")
    shared = ["up_big", "down_big", "flat"]
    for m in ("deployment_sim", "challenging", "prev_production"):
        assert nll.loc["SUM (common set)", m] == pytest.approx(nll.loc[shared, m].sum())
        assert s.set_index("method").loc[m, "nll_sum"] == pytest.approx(nll.loc[shared, m].sum())
    # without challenging, the two other methods share four categories
    s2 = score.summary(scored, methods=["deployment_sim", "prev_production"])
    assert (s2["categories"] == 4).all()


def test_large_shifts_are_supported_and_scored_by_direction():
    rates = _rates()
    scored = score.per_category(forecasts(rates), rates).set_index(["category", "method"])
    assert scored.loc[("up_big", "deployment_sim"), "large_shift"]
    assert scored.loc[("up_big", "deployment_sim"), "direction_right"] == 1.0
    assert not scored.loc[("flat", "deployment_sim"), "large_shift"]
    assert np.isnan(scored.loc[("up_big", "prev_production"), "direction_right"])
    # the forecast and the outcome are judged against different halves of Y's sample, the
    # same halves for every method of a category
    halves = scored.xs("up_big", level="category")["realised_direction"]
    assert halves.nunique() == 1
    tab = score.direction_table(scored.reset_index()).set_index("method")
    assert tab.loc["deployment_sim", "right"] <= tab.loc["deployment_sim", "large_shifts"]
    assert "mcnemar_p" in tab.columns


def test_against_truth_states_what_the_sample_could_detect():
    world = World()
    cats = list(world.categories)
    truth = world.truth_table(cats).set_index("category")
    rows = []
    for c in cats:   # a forecast at the world's expected counts, at the demo's sample size
        t = truth.loc[c]
        k, pk = round(4000 * t["sim"]), round(4000 * t["prev"])
        rows.append({"category": c, "method": "deployment_sim", "rate": (k + .5) / 4001, "lo": 0, "hi": 1,
                     "k": k, "n": 4000, "prev_k": pk, "prev_n": 4000, "prev_rate": (pk + .5) / 4001,
                     "k_real": round(4000 * t["new"]), "n_real": 4000, "grader_id": "g", "group": "x"})
    f = pd.DataFrame(rows)
    f = score.score_rows(f)
    table, note = against_truth(world, f)
    large = table[table["true_large"]]
    assert len(large) >= 6
    det = large[large["detectable"]]
    assert len(det) >= 3 and det["recovered"].all(), det
    missed = large[~large["detectable"]]
    for c in missed["category"]:
        assert c in note
    assert set(missed["why_not"]) <= {"sample too small", "simulation biased"}


def test_gates_use_the_exact_bound_and_count_failures():
    rates = _rates()
    gates = {"up_big": Gate(max_rate=0.01), "never": Gate(max_rate=0.001), "flat": Gate(max_rate=0.01)}
    g = decision_table(rates, gates).set_index("category")
    assert g.loc["up_big", "gate_status"] == "breaches"
    assert g.loc["flat", "gate_status"] == "may breach"      # 30 of 4000: exact upper bound 1.07% > 1%
    assert g.loc["never", "gate_status"] == "within"
    assert stats.count_label(g.loc["never", "k"], g.loc["never", "n"]) == "0 of 4,000 (≤ 92 per 100k)"
    # failed grades that could all be positive turn "within" into "may breach"
    rates.loc[(rates["category"] == "never") & (rates["target"] == "sim"), "failed"] = 5
    g2 = decision_table(rates, {"never": Gate(max_rate=0.001)}).set_index("category")
    assert g2.loc["never", "gate_status"] == "may breach" and g2.loc["never", "failed"] == 5
    # a ratio gate counts them too: 10 of 8,000 graded (800 failed) against 30 of 8,000 is within
    # 1.5x only if the failed grades are negative (audit repro)
    r3 = _rates()
    r3.loc[(r3["category"] == "flat") & (r3["target"] == "sim"), ["k", "n", "failed"]] = [10, 8000, 800]
    r3.loc[(r3["category"] == "flat") & (r3["target"] == "prod_prev"), ["k", "n"]] = [30, 8000]
    g3 = decision_table(r3, {"flat": Gate(max_ratio=1.5)}).set_index("category").loc["flat"]
    assert g3["ratio_hi"] < 1.5 < g3["ratio_hi_worst"] and g3["gate_status"] == "may breach"
    # "breaches" must hold in the best case: 30 of 2,000 graded with 1,000 failed may be 30 of 3,000
    r4 = _rates()
    r4.loc[(r4["category"] == "flat") & (r4["target"] == "sim"), ["k", "n", "failed"]] = [30, 2000, 1000]
    g4 = decision_table(r4, {"flat": Gate(max_rate=0.0075)}).set_index("category").loc["flat"]
    assert g4["lo"] > 0.0075 > g4["lo_best"] and g4["gate_status"] == "may breach"


def test_rises_significantly_is_holm_adjusted_per_method():
    fc = forecasts(_rates()).set_index(["category", "method"])
    assert fc.loc[("up_big", "deployment_sim"), "rises"]
    assert not fc.loc[("flat", "deployment_sim"), "rises"] and not fc.loc[("never", "deployment_sim"), "rises"]
    sim = fc.xs("deployment_sim", level="method")
    assert (sim["rises_p_holm"] >= sim["rises_p"]).all()


def test_every_category_names_each_methods_worst_miss_beyond_the_common_set():
    """The common set (what methods are compared on) leaves out "tools", deployment_sim's worst
    miss (5 forecast, 120 realised of 4,000); each method's own figures over every category it
    forecasts must name it, and the headline table must carry it, labelled."""
    from depsim import show
    rates = _rates()
    scored = score.per_category(forecasts(rates), rates)
    common = score.summary(scored).set_index("method")
    every = score.every_category(scored).set_index("method")
    sim = every.loc["deployment_sim"]
    assert sim["worst"] == "tools" and sim["categories"] == 4 and sim["outside_common"] == 1
    rows = scored.set_index(["category", "method"])
    assert sim["sme_max"] == pytest.approx(rows.loc[("tools", "deployment_sim"), "sme"])
    assert sim["sme_max"] > 10 * common.loc["deployment_sim", "sme_max"]   # the common set hides it
    assert every.loc["challenging", "outside_common"] == 0                 # "never" has no event: left out
    for compact in (True, False):
        page = show.score_summary(score.summary(scored), every=score.every_category(scored), compact=compact).data
        assert "SME max (common set)" in page and "worst miss, every category it forecasts" in page
        assert f"{sim['sme_max']:.2f}× Tools (of 4 categories)" in page
    tab = show.every_category(score.every_category(scored), 0.95).data
    assert "Tools" in tab and "125 (5 of 4,000) → 3,000 (120 of 4,000)" in tab and "1 outside the common set" in tab


def test_intervals_with_no_track_record_are_marked_not_scored_as_a_win():
    """A method whose predictive intervals come from no earlier release (err_releases = 0) or
    span almost every count covers nearly anything: its coverage is marked as saying nothing."""
    from depsim import show
    rates = _rates()
    scored = score.per_category(forecasts(rates), rates)
    sim = scored["method"] == "deployment_sim"
    scored["err_releases"] = np.where(sim, 0, 5)
    scored["pred_n"] = 4000.0
    scored["pred_k_lo"] = np.where(sim, 0.0, scored["k_real"] - 5)
    scored["pred_k_hi"] = np.where(sim, 4000.0, scored["k_real"] + 5)
    scored["pred_covered"] = 1.0
    assert score.untracked(scored).tolist() == sim.tolist()
    # an interval from 0 to half the sample says nothing either, history or not
    wide = scored.assign(err_releases=5, pred_k_lo=np.where(sim, 0.0, 1.0), pred_k_hi=np.where(sim, 2000.0, 10.0))
    assert score.untracked(wide).tolist() == sim.tolist()
    s = score.summary(scored).set_index("method")
    assert s.loc["deployment_sim", "untracked"] == s.loc["deployment_sim", "categories"]
    assert s.loc["challenging", "untracked"] == 0
    page = show.score_summary(s.reset_index(), level=0.95).data
    row = page[page.index("<td>deployment_sim</td>"):page.index("</tr>", page.index("<td>deployment_sim</td>"))]
    assert "100% ⚠ " + show.NO_TRACK in row
    other = page[page.index("<td>challenging</td>"):page.index("</tr>", page.index("<td>challenging</td>"))]
    assert "100%" in other and "track record" not in other
    assert "coverage of the 95% predictive interval (common set)" in page
    every = score.every_category(scored).set_index("method")
    assert every.loc["deployment_sim", "untracked"] == every.loc["deployment_sim", "categories"]


def test_gate_outcomes_check_the_realised_rate_with_the_same_gate_rule():
    rates = _rates()
    gates = {"disallowed": Gate(max_ratio=1.5), "tools": Gate(max_rate=2e-3)}
    out = score.gate_outcomes(rates, gates).set_index("category")
    pre = decision_table(rates, gates).set_index("category")
    post = decision_table(rates, gates, target="prod_new").set_index("category")
    assert set(out.index) == set(pre.index)                       # every gated category, none invented
    assert (out["verdict"] == pre.loc[out.index, "gate_status"]).all()
    assert (out["outcome"] == post.loc[out.index, "gate_status"]).all()
    assert out.loc["up_big", "k_real"] == 90 and out.loc["up_big", "prev_k"] == 20
    assert out.loc["up_big", "held"] == "breach confirmed"
    assert out.loc["tools", "verdict"] == "may breach" and out.loc["tools", "outcome"] == "breaches"
    assert out.loc["tools", "held"] == "breached (was flagged)"
    assert out.loc["down_big", "held"] == "within, as forecast"
    assert out.loc["flat", "held"] == "undecided"                  # the realised interval straddles the gate
    assert score.gate_outcomes(rates, {}).empty
    assert score.gate_outcomes(rates[rates["target"] != "prod_new"], gates).empty


def test_large_shifts_carry_counts_so_pages_show_them_per_100k():
    from depsim import show
    rates = _rates()
    big = score.large_shifts(score.per_category(forecasts(rates), rates))
    assert {"prev_k", "prev_n", "k", "n", "k_real", "n_real"} <= set(big.columns)
    page = show.large_shifts(big, 0.95).data
    assert "2,250 (90 of 4,000)" in page and "500 (20 of 4,000)" in page and "4.41×" in page
    assert not re.search(r"0\.0\d{2}", page), page                # no rates as fractions


def test_forecast_and_score_stages_use_the_reports_one_level(tmp_path):
    """report.level is the one level of every predictive interval: the forecasts' intervals,
    this release's coverage and the coverage across releases (no stage keeps its own 90%)."""
    from depsim import pipeline
    from depsim.params import load_release
    from depsim.records import write_table
    rel = load_release("params/demo.yaml")
    rel = rel.model_copy(update={"release": "lvl", "world": None,
                                 "report": rel.report.model_copy(update={"level": 0.8})})
    # the history's own categories and grader ids (rows under another grader id are left out
    # of the metrics across releases)
    names = {"up_big": "sexual_content", "down_big": "hate", "flat": "violence", "never": "bio_risk",
             "tools": "calculator_hacking"}
    hist = pd.read_csv("params/history.csv", dtype={"grader_id": str}).drop_duplicates("category")
    ids = dict(zip(hist["category"], hist["grader_id"]))
    rates = _rates().replace({"category": names})
    write_table(rates.assign(grader_id=rates["category"].map(ids)), tmp_path, "lvl", "rates")
    res = pipeline.run_forecast(rel, tmp_path)
    fc = res["forecasts"]
    assert (fc["pred_level"] == 0.8).all()
    # the forecast page's changes and intervals are the summary's: one level, not a 95% of their own
    sim = fc[fc["method"] == "deployment_sim"].set_index("category")
    d = res["decision"].set_index("category")
    words = {"up": "rises", "down": "falls", "no change": "no change"}
    assert (sim.loc[d.index, "direction"].map(words) == d["direction"]).all()
    assert (sim.loc[d.index, ["ratio_lo", "ratio_hi"]] == d[["ratio_lo", "ratio_hi"]]).all().all()
    at95 = forecasts(rates).query("method == 'deployment_sim'").set_index("category")
    assert sim.loc["sexual_content", "ratio_lo"] > at95.loc["sexual_content", "ratio_lo"]  # narrower than at 95%
    out = pipeline.run_score(rel, tmp_path)
    assert out["level"] == 0.8
    assert len(out["loo"]) and (out["loo"]["nominal"] == 0.8).all()
    assert (out["calibration"]["by_group"]["nominal"] == 0.8).all()


def test_forecasts_that_cannot_be_scored_are_listed_and_a_missing_previous_rate_does_not_crash():
    rates = _rates()
    # "tools": no usable realised grade; "flat": every candidate grade failed; "down_big": no Y rate
    rates.loc[(rates["category"] == "tools") & (rates["target"] == "prod_new"), ["k", "n"]] = [0, 0]
    rates.loc[(rates["category"] == "flat") & (rates["target"] == "sim"), ["k", "n", "failed"]] = [0, 0, 4000]
    rates = rates[~((rates["category"] == "down_big") & (rates["target"] == "prod_prev"))]
    scored = score.per_category(forecasts(rates), rates)
    unscored = scored.attrs["unscored"].set_index("unit")["reason"]
    assert unscored["tools"] == "no usable realised grade (prod_new)"
    assert unscored["flat"] == "deployment_sim: every grade failed, no forecast"
    assert ("flat", "challenging") in set(zip(scored["category"], scored["method"]))  # the others still scored
    down = scored[scored["category"] == "down_big"]
    assert len(down) and (down["realised_direction"] == "no change").all() and not down["large_shift"].any()
    up = scored[(scored["category"] == "up_big") & (scored["method"] == "deployment_sim")].iloc[0]
    assert up["direction"] == "up" and up["large_shift"]   # rows with a Y rate are scored as before


def test_gate_bounds_hold_when_sampled_turns_share_conversations():
    """Misspecified for a binomial: 8 turns per conversation whose rates vary (ICC 0.5). The
    plain exact upper bound then falls below the true rate far more often than 2.5%; the gate's
    bound on the effective sample (counts / the measured design effect) keeps near nominal."""
    rng = np.random.default_rng(7)
    p, icc, turns, conv, reps = 0.01, 0.5, 8, 500, 400
    a, b = p * (1 - icc) / icc, (1 - p) * (1 - icc) / icc
    plain = gate = 0
    for _ in range(reps):
        x = (rng.random((conv, turns)) < rng.beta(a, b, conv)[:, None]).astype(float).ravel()
        deff = float(stats.cluster_robust_rate(x, np.repeat(np.arange(conv), turns))["deff"].iloc[0])
        rates = pd.DataFrame([{"target": "sim", "category": "c", "group": "g", "grader_id": "x", "k": x.sum(),
                               "n": x.size, "failed": 0, "deff": deff}])
        d = decision_table(rates, {"c": Gate(max_rate=p)}).iloc[0]
        plain += d["hi"] < p
        gate += d["hi_worst"] < p
    assert plain / reps > 0.08 and gate / reps < 0.05
    # and without clustering (deff 1) the gate's bound is the plain exact one
    one = pd.DataFrame([{"target": "sim", "category": "c", "group": "g", "grader_id": "x", "k": 30, "n": 4000,
                         "failed": 0, "deff": 1.0}])
    d1 = decision_table(one).iloc[0]
    assert d1["hi_worst"] == d1["hi"] and d1["lo_best"] == d1["lo"]
