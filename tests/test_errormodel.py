"""The forecast-error model (depsim.errormodel), validated against error models it does not
assume, by forward chaining on simulated histories (depsim.sim.history)."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depsim import errormodel as E
from depsim import stats
from depsim.sim.history import ERROR_MODELS, error_model_history

LEVEL = 0.9
HISTORIES = 200   # independent simulated histories per error model, 5 releases each (600: benchmarks/errormodel_coverage.py)


@pytest.fixture(scope="module")
def chained():
    """Forward-chained predictions of release 5 from releases 1–4, per error model."""
    out = {}
    for i, model in enumerate(ERROR_MODELS):
        h = error_model_history(model, histories=HISTORIES, releases=5, seed=100 + i)
        out[model] = E.forward_chain(h, min_train=4, level=LEVEL, problem="history", intervals=False)
    rows = []
    for model, ch in out.items():
        cov = E.coverage_by(ch, ("group",), LEVEL)
        rows += [{"error model": model, **r} for r in cov[["group", "n", "coverage"]].to_dict("records")]
    with pd.option_context("display.width", 150):
        print("\nForward-chained coverage of the 90% predictive interval (4 earlier releases):\n",
              pd.DataFrame(rows).pivot(index="error model", columns="group", values="coverage").round(3))
    return out


@pytest.mark.parametrize("model", ERROR_MODELS)
def test_forward_chained_coverage_is_nominal_per_group(chained, model):
    # assumed; t3 heavy tails; bias drifting 0.3/release; shared release shock; two noisy tool
    # categories: next-release coverage of the 90% interval within ±5 pp in every group
    cov = E.coverage_by(chained[model], ("group",), LEVEL)
    assert len(cov) == 4
    assert np.all(np.abs(cov["coverage"] - LEVEL) <= 0.05), cov


def test_noisy_tool_categories_get_their_own_wider_scale(chained):
    # one σ per group would give every misalignment category the same predictive scale; the
    # per-category scale gives the two noisy tool categories a wider one than their quiet
    # neighbours (which are then not over-covered by a σ that the noisy ones inflated)
    ch = chained["noisy_tools"]
    mis = ch[ch["group"] == "misalignment"].groupby("category")["err_scale"].median()
    tools = mis[["calculator_hacking", "lying_about_tools"]]
    quiet = mis.drop(tools.index)
    print("\nmedian predictive scale, misalignment, noisy tools:\n", mis.round(3))
    assert tools.min() > 1.2 * quiet.max(), mis
    # under the assumed model (one σ for all) the same categories' scales are alike
    calm = chained["assumed"]
    calm = calm[calm["group"] == "misalignment"].groupby("category")["err_scale"].median()
    assert calm[tools.index].min() < 1.2 * calm.drop(tools.index).max(), calm


def test_noisy_tool_categories_are_flagged(chained):
    flags = E.flag_categories(chained["noisy_tools"], LEVEL).set_index("category")
    tools = flags.loc[["calculator_hacking", "lying_about_tools"]]
    assert np.all(tools["coverage"] < LEVEL)
    assert (tools["flagged"] & (tools["why"] == "too narrow")).any(), tools
    # flagged means outside the ±5 pp band (and statistically supported)
    assert np.all(np.abs(flags.loc[flags["flagged"], "coverage"] - LEVEL) > 0.05)
    assert (flags["outside_band"] >= flags["flagged"]).all()
    # no other category is called too narrow
    others = flags.drop(index=tools.index)
    assert not (others["flagged"] & (others["why"] == "too narrow")).any(), others[others["flagged"]]
    # under the assumed model no category is flagged too narrow either
    calm = E.flag_categories(chained["assumed"], LEVEL)
    assert not (calm["flagged"] & (calm["why"] == "too narrow")).any(), calm[calm["flagged"]]


def test_drift_term_is_what_keeps_coverage_under_drift():
    # the finding: with a bias drifting 0.3 per release, a model without drift under-covers
    # (its release-shock term absorbs part of the drift, not all of it)
    h = error_model_history("drift", histories=60, releases=5, seed=7)
    no = E.coverage_by(E.forward_chain(h, 4, LEVEL, drift=False, problem="history", intervals=False), ("method",))
    yes = E.coverage_by(E.forward_chain(h, 4, LEVEL, drift=True, problem="history", intervals=False), ("method",))
    no, yes = no["coverage"].iloc[0], yes["coverage"].iloc[0]
    print(f"\ndrift 0.3/release, next-release coverage: without drift term {no:.3f}, with {yes:.3f}")
    assert no < 0.85 and no < yes - 0.05 and abs(yes - LEVEL) <= 0.05


def test_perfect_forecaster_scores_nominal():
    """2,000 simulated releases × 15 categories: the forecast is an unbiased measurement of
    the very rate that is then realised. Its predictive calibration is nominal (±2 pp); the
    old check (realised point estimate inside the forecast's confidence interval) is not."""
    h = error_model_history("assumed", histories=400, releases=5, seed=3, sigma=0.0, bias=0.0)
    k, n, kr, nr = (h[c].to_numpy(float) for c in ("k", "n", "k_real", "n_real"))
    assert h["release"].nunique() * h["history"].nunique() >= 2000
    cal = E.calibration(kr, k, n, nr, 0.0, 1e-9, 1e6, level=LEVEL)
    assert abs(cal["covered"].mean() - LEVEL) <= 0.02, cal["covered"].mean()
    # PIT is uniform: each decile holds 10% ± 1.5 pp
    hist = E.pit_histogram(cal["pit"])["share"].to_numpy()
    assert np.all(np.abs(hist - 0.1) <= 0.015), hist
    # the old "coverage": Jeffreys CI of the forecast against the realised point estimate
    j, r = stats.jeffreys(k, n), stats.jeffreys(kr, nr)["rate"].to_numpy()
    old = np.mean((j["lo"].to_numpy() <= r) & (r <= j["hi"].to_numpy()))
    assert old < 0.88, old


def _small_history(seed, releases=4, cats=5):
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(releases):
        for c in range(cats):
            p = 10 ** rng.uniform(-3, -1.5)
            eta = rng.normal(0.2, 0.5)
            rows.append({"release": f"r{r}", "category": f"c{c}", "group": "g", "method": "m",
                         "k": rng.binomial(4000, p), "n": 4000, "k_real": rng.binomial(4000, min(p * np.exp(eta), .5)),
                         "n_real": 4000})
    return pd.DataFrame(rows)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), zeros=st.integers(1, 6), n_zero=st.sampled_from([200, 4000]))
def test_zero_count_categories_never_shrink_the_error_scale(seed, zeros, n_zero):
    h = _small_history(seed)
    base = E.fit_history(h).iloc[0]
    extra = pd.DataFrame([{"release": r, "category": f"z{i}", "group": "g", "method": "m", "k": 0, "n": n_zero,
                           "k_real": 0, "n_real": n_zero} for r in h["release"].unique() for i in range(zeros)])
    more = E.fit_history(pd.concat([h, extra], ignore_index=True)).iloc[0]
    assert more["sigma"] >= base["sigma"] - 1e-9
    fc = pd.DataFrame([{"method": "m", "group": "g", "k": 3, "n": 4000}])
    a = E.predict(h, fc).iloc[0]
    b = E.predict(pd.concat([h, extra], ignore_index=True), fc).iloc[0]
    assert b["err_scale"] >= a["err_scale"] - 1e-9


def test_zero_realised_counts_do_not_collapse_sigma():
    # the blocker: one K = 0 of 200 category per release drove the old moment estimator's σ to 0
    h = _small_history(1)
    base = E.fit_history(h).iloc[0]["sigma"]
    extra = pd.DataFrame([{"release": r, "category": "rare", "group": "g", "method": "m", "k": 1, "n": 200,
                           "k_real": 0, "n_real": 200} for r in h["release"].unique()])
    more = E.fit_history(pd.concat([h, extra], ignore_index=True)).iloc[0]["sigma"]
    assert base > 0.2 and more > 0.8 * base, (base, more)


def test_predict_uses_the_category_scale():
    # one simulated history under "noisy_tools", 8 releases: a noisy tool category's forecast
    # gets a wider predictive than a quiet one of the same group; a category the history lacks
    # (or a row without a category) gets the group's predictive for a new category, which is
    # not narrower than the quiet categories'
    h = error_model_history("noisy_tools", histories=1, releases=8, seed=21).drop(columns="history")
    fc = pd.DataFrame([{"method": "deployment_sim", "group": "misalignment", "category": c, "k": 20, "n": 4000}
                       for c in ("lying_about_tools", "fabricated_facts", "brand_new")])
    out = E.predict(h, fc).set_index("category")["err_scale"]
    assert out["lying_about_tools"] > 1.3 * out["fabricated_facts"], out
    assert out["brand_new"] >= out["fabricated_facts"], out
    nocat = E.predict(h, fc.drop(columns="category").iloc[:1]).iloc[0]["err_scale"]
    assert nocat == pytest.approx(out["brand_new"])


def test_no_history_gives_the_prior_and_a_wide_interval():
    fc = pd.DataFrame([{"method": "m", "group": "g", "k": 20, "n": 4000}])
    out = E.predict(None, fc).iloc[0]
    assert out["err_releases"] == 0 and out["err_scale"] > 1.0
    lo, hi = E.count_interval(0.9, 20.0, 4000.0, 4000.0, out["err_loc"], out["err_scale"], out["err_df"])
    assert lo < 5 and hi > 80


def test_count_cdf_matches_negative_binomial_and_monte_carlo():
    from scipy import stats as ss

    # with no error (scale → 0) the predictive is NegBin(K_f + ½, n_f / (n_f + N))
    k = np.arange(0, 40)
    c = E.count_cdf(k, 10, 4000, 2000, 0.0, 1e-12, 1e6)
    np.testing.assert_allclose(c, ss.nbinom.cdf(k, 10.5, 4000 / 6000), rtol=1e-9)
    # with error: Monte Carlo of λ ~ Gamma, η ~ t, K ~ Poisson
    rng = np.random.default_rng(0)
    lam = rng.gamma(10.5, 1 / 4000, 400_000)
    eta = 0.3 + 0.5 * rng.standard_t(5, 400_000)
    kk = rng.poisson(2000 * lam * np.exp(eta))
    mc = np.array([(kk <= x).mean() for x in k])
    np.testing.assert_allclose(E.count_cdf(k, 10, 4000, 2000, 0.3, 0.5, 5), mc, atol=4e-3)


def test_fit_recovers_bias_sigma_and_drift():
    h = error_model_history("drift", histories=1, releases=12, seed=5, sigma=0.4)
    fit = E.fit_history(h.drop(columns="history")).set_index("group")
    d = fit.loc["disallowed"]
    assert d["drift"] == pytest.approx(0.3, abs=0.12)
    assert d["sigma"] == pytest.approx(0.4, abs=0.2)


def test_history_without_counts_is_refused():
    with pytest.raises(ValueError, match=r"lacks columns \['k', 'n'\]"):
        E.fit_history(pd.DataFrame(columns=["release", "category", "group", "method", "k_real", "n_real"]))


def test_a_category_first_seen_in_the_predicted_release_gets_the_groups_predictive():
    """A new category in the taxonomy has no history: forward chaining predicts it from its
    group (the 'history lacks it' scale) instead of failing with an IndexError."""
    rows = [{"release": f"r{r}", "category": c, "group": "g", "method": "m", "k": 20, "n": 1000,
             "k_real": 20 + 3 * r + i, "n_real": 1000} for r in range(5) for i, c in enumerate(("a", "b"))]
    rows += [{"release": "r4", "category": c, "group": "g", "method": "m", "k": 20, "n": 1000,
              "k_real": 25, "n_real": 1000} for c in ("new", "newer")]
    out = E.forward_chain(pd.DataFrame(rows), min_train=4, level=0.9)
    new, newer = (out[out["category"] == c].iloc[0] for c in ("new", "newer"))
    old = out[out["category"] == "a"].iloc[0]
    assert np.isfinite([new["err_scale"], new["pred_k_lo"], new["pred_k_hi"]]).all()
    assert new["err_scale"] == newer["err_scale"]          # both: the group's predictive
    assert new["err_scale"] >= old["err_scale"] * 0.999   # never narrower than a category with a record


def test_coverage_p_value_counts_shocks_shared_within_a_release():
    """Misspecified for independent predictions: in each release either nearly every interval
    covers or far fewer do (a shock all categories felt). The binomial standard error would
    call the 0.84 coverage a clear miss of 0.9; clustered by release it is not evidence."""
    rng = np.random.default_rng(0)
    rows = [{"method": "m", "release": f"r{r}", "covered": float(rng.random() < (0.99 if shock else 0.8)),
             "inside": 1.0, "z": 0.0}
            for r, shock in enumerate(rng.random(6) < 0.5) for _ in range(20)]
    d = pd.DataFrame(rows)
    clustered = E.coverage_by(d, ("method",), 0.9).iloc[0]
    naive = E.coverage_by(d.drop(columns="release"), ("method",), 0.9).iloc[0]
    assert naive["deff"] == 1 and clustered["deff"] > 2
    assert clustered["se"] == pytest.approx(naive["se"] * np.sqrt(clustered["deff"]))
    assert naive["p_value"] < 0.05 < clustered["p_value"]
