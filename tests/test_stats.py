"""Tests for depsim.stats (docs/design.md §6)."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from depsim import stats as S

# --------------------------------------------------------------------------- jeffreys


def test_jeffreys_known_values():
    k = np.array([0, 3, 50, 100])
    n = np.array([100, 100, 100, 100])
    out = S.jeffreys(k, n)
    assert list(out.columns) == ["rate", "lo", "hi"]
    np.testing.assert_allclose(out["rate"], (k + 0.5) / (n + 1), rtol=1e-15)
    for i, (ki, ni) in enumerate(zip(k, n)):
        assert out["lo"].iloc[i] == pytest.approx(stats.beta.ppf(0.025, ki + 0.5, ni - ki + 0.5), rel=1e-12)
        assert out["hi"].iloc[i] == pytest.approx(stats.beta.ppf(0.975, ki + 0.5, ni - ki + 0.5), rel=1e-12)
    assert np.all((out["lo"] < out["rate"]) & (out["rate"] < out["hi"]))


def test_jeffreys_level_and_edges():
    # K = 0 and K = N give proper, non-degenerate intervals strictly inside (0, 1).
    out = S.jeffreys([0, 20], [20, 20], level=0.9)
    assert np.all((out["lo"] > 0) & (out["hi"] < 1))
    assert out["lo"].iloc[0] == pytest.approx(stats.beta.ppf(0.05, 0.5, 20.5))
    assert out["hi"].iloc[1] == pytest.approx(stats.beta.ppf(0.95, 20.5, 0.5))
    # Symmetry: K=0 mirrors K=N.
    assert out["lo"].iloc[0] == pytest.approx(1 - out["hi"].iloc[1])
    # Scalars give a one-row frame.
    assert S.jeffreys(1, 10).shape == (1, 3)


def test_jeffreys_series_index_and_errors():
    k = pd.Series([0, 5], index=["hate", "calculator_hacking"])
    n = pd.Series([100, 1000], index=["hate", "calculator_hacking"])
    out = S.jeffreys(k, n)
    assert list(out.index) == ["hate", "calculator_hacking"]
    # n in a different order is aligned by label.
    out2 = S.jeffreys(k, n[::-1])
    pd.testing.assert_frame_equal(out, out2)

    with pytest.raises(ValueError, match=r"N must be > 0.*calculator_hacking"):
        S.jeffreys(k, pd.Series([100, 0], index=k.index))
    with pytest.raises(ValueError, match=r"K must be <= N.*hate"):
        S.jeffreys(pd.Series([101, 5], index=k.index), n)
    with pytest.raises(ValueError, match=r"K must be >= 0.*positions \[1\]"):
        S.jeffreys([1, -1], [10, 10])
    with pytest.raises(ValueError, match="N must be > 0"):
        S.jeffreys(0, 0)
    with pytest.raises(ValueError, match="finite"):
        S.jeffreys(np.nan, 10)


# --------------------------------------------------------------------------- NLL / regret


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    data=st.data(),
    n=st.integers(1, 10**6),
    f=st.floats(1e-9, 1 - 1e-9, exclude_min=True, exclude_max=True),
)
def test_regret_nonnegative_and_consistent(data, n, f):
    k = data.draw(st.integers(0, n))
    r = S.regret(k, n, f)
    assert r >= 0
    # binom_nll - regret is the NLL at the MLE K/N (the consistency the definition implies).
    # Tolerance: logpmf is accurate to ~1e-12 relative to the NLL's own size.
    nll_f = S.binom_nll(k, n, f)
    nll_mle = S.binom_nll(k, n, k / n)
    assert nll_f - r == pytest.approx(nll_mle, rel=1e-9, abs=1e-6 + 1e-11 * abs(nll_f))


@given(n=st.integers(2, 10**6), data=st.data())
@settings(max_examples=200, deadline=None, derandomize=True)
def test_regret_zero_at_mle(n, data):
    k = data.draw(st.integers(1, n - 1))
    assert S.regret(k, n, k / n) == 0.0


def test_binom_nll_and_regret_values():
    # By hand: K=2, N=10, f=0.1: NLL = -log(45 * 0.01 * 0.9^8).
    assert S.binom_nll(2, 10, 0.1) == pytest.approx(-math.log(45 * 0.01 * 0.9**8))
    # Regret at K=0 is -N log(1-f) (0 log 0 = 0).
    assert S.regret(0, 100, 0.01) == pytest.approx(-100 * math.log(0.99))
    assert S.regret(100, 100, 0.99) == pytest.approx(-100 * math.log(0.99))
    # f = 0 is clipped, so the loss is large but finite.
    assert np.isfinite(S.binom_nll(3, 10, 0.0))
    with pytest.raises(ValueError, match="whole counts"):
        S.binom_nll(2.5, 10, 0.1)
    # Vectorised over Series, index kept.
    k = pd.Series([1, 0], index=["a", "b"])
    out = S.regret(k, 10, np.array([0.1, 0.2]))
    assert list(out.index) == ["a", "b"] and out["a"] == 0.0 and out["b"] > 0


# --------------------------------------------------------------------------- SME


def test_sme_basic():
    a = np.array([1e-4, 3e-3, 0.2])
    b = np.array([2e-4, 1e-3, 0.2])
    np.testing.assert_allclose(S.sme(a, b), [2, 3, 1])
    np.testing.assert_allclose(S.sme(a, b), S.sme(b, a))
    assert np.all(S.sme(a, b) >= 1)
    np.testing.assert_allclose(S.log10_error(a, b), np.log10([2, 3, 1]), atol=1e-15)
    # The paper's calculator-hacking miss: forecast 1.7, realised 35.2 per 100k.
    assert round(S.sme(1.7e-5, 35.2e-5), 1) == 20.7
    with pytest.raises(ValueError, match="> 0"):
        S.sme(0.0, 1e-3)


def test_sme_summary_and_log_pearson():
    a = np.array([1e-4, 3e-3, 0.2, 0.01])
    b = np.array([2e-4, 1e-3, 0.2, 0.01])
    s = S.sme_summary(a, b)
    assert s == pytest.approx({"median": 1.5, "mean": 1.75, "max": 3.0,
                               "mean_log10": np.log10([2, 3, 1, 1]).mean(), "n": 4})
    assert S.log_pearson(a, a * 7) == pytest.approx(1.0)
    assert S.log_pearson(a, 1 / a) == pytest.approx(-1.0)
    f, r = np.array([1e-3, 1e-2, 1e-4]), np.array([2e-3, 1e-2, 1e-3])
    assert S.log_pearson(f, r) == pytest.approx(stats.pearsonr(np.log10(f), np.log10(r))[0])


# --------------------------------------------------------------------------- direction


def test_directional_accuracy_hand_example():
    cats = ["up_right", "down_right", "small_shift", "up_wrong", "flat_forecast"]
    prev = pd.Series([0.25] * 5, index=cats)
    new = pd.Series([0.5, 0.125, 0.3, 0.75, 0.375], index=cats)  # 0.375/0.25 is exactly 1.5x
    forecast = pd.Series([0.3, 0.2, 0.1, 0.2, 0.25], index=cats)
    out = S.directional_accuracy(forecast, prev, new)
    # small_shift changed only 1.2x: excluded even though its forecast is in the wrong direction.
    assert out["mask"].to_dict() == dict(zip(cats, [True, True, False, True, True]))
    assert out["right"].to_dict() == dict(zip(cats, [True, True, False, False, False]))
    assert (out["k"], out["n"], out["share"]) == (2, 4, 0.5)
    # A stricter threshold leaves only the 2x and 3x shifts.
    strict = S.directional_accuracy(forecast, prev, new, threshold=2.0)
    assert (strict["k"], strict["n"]) == (2, 3)
    # Nothing shifted: n = 0 and share is NaN, not a crash.
    none = S.directional_accuracy([0.1], [0.1], [0.11])
    assert none["n"] == 0 and math.isnan(none["share"])


# --------------------------------------------------------------------------- method comparison


def test_method_comparison_hand_example():
    # A beats B in 7 categories, loses 1 (the smallest gap), ties 1.
    nll_a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    d = np.array([2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, -1.0, 0.0])  # nll_b - nll_a
    out = S.method_comparison(nll_a, nll_a + d)
    assert (out["wins"], out["losses"], out["ties"]) == (7, 1, 1)
    # Sign test by hand: P(X >= 7), X ~ Binom(8, 1/2) = (C(8,7) + C(8,8)) / 2^8.
    assert out["sign_p"] == pytest.approx((math.comb(8, 7) + math.comb(8, 8)) / 2**8)
    # Wilcoxon by hand: the tie is dropped, ranks 1..8, the loss has rank 1, so W+ = 35;
    # P(W+ >= 35) = P(negative ranks sum <= 1) = |{{}, {1}}| / 2^8.
    assert out["wilcoxon_p"] == pytest.approx(2 / 2**8)
    assert out["sum_diff"] == pytest.approx(d.sum())
    # Swapping the methods flips wins and losses.
    rev = S.method_comparison(nll_a + d, nll_a)
    assert (rev["wins"], rev["losses"], rev["ties"]) == (1, 7, 1)
    assert rev["sign_p"] == pytest.approx(1 - 1 / 2**8)


def test_method_comparison_all_ties():
    out = S.method_comparison([1.0, 2.0], [1.0, 2.0])
    assert out == {"wins": 0, "losses": 0, "ties": 2, "sign_p": 1.0,
                   "wilcoxon_p": 1.0, "sum_diff": 0.0}


# --------------------------------------------------------------------------- coverage / decomposition


def test_coverage():
    out = S.coverage([0.1, 0.2, 0.3, 0.0], [0.2, 0.3, 0.4, 0.1], [0.2, 0.1, 0.35, 0.1])
    # Bounds are inclusive: 0.2 in [0.1, 0.2] and 0.1 in [0, 0.1] count.
    assert out == {"share": 0.75, "count": 3, "n": 4}
    with pytest.raises(ValueError, match="NaN"):
        S.coverage([0.1], [np.nan], [0.1])


def test_decompose_error():
    idx = ["compounding", "cancelling"]
    out = S.decompose_error(pd.Series([1e-3, 4e-3], index=idx),
                            pd.Series([2e-3, 2e-3], index=idx),
                            pd.Series([8e-3, 4e-3], index=idx))
    assert list(out.columns) == ["environment", "prefix", "full"]
    assert list(out.index) == idx
    np.testing.assert_allclose(out.loc["compounding"], [4, 2, 8])
    np.testing.assert_allclose(out.loc["cancelling"], [2, 2, 1])
    # Triangle inequality in log space.
    assert np.all(out["full"] <= out["environment"] * out["prefix"] * (1 + 1e-12))


# --------------------------------------------------------------------------- detection power


def test_min_detectable_rate_paper_check():
    lam = S.min_detectable_rate(700_000, 10, 10, 0.05)
    assert lam == pytest.approx(2.86e-5, rel=0.01)
    assert 700_000 * lam == pytest.approx(20, rel=0.01)
    # Independent solve of poisson.cdf(m - 1, mu) = alpha / T with brentq.
    mu = optimize.brentq(lambda x: stats.poisson.cdf(9, x) - 0.005, 1, 100, xtol=1e-14)
    assert 700_000 * lam == pytest.approx(mu, rel=1e-10)
    # More samples, fewer types to correct for, or fewer sightings needed: smaller rate.
    assert S.min_detectable_rate(1_400_000) == pytest.approx(lam / 2)
    assert S.min_detectable_rate(700_000, types=1) < lam
    assert S.min_detectable_rate(700_000, m=1) < lam
    with pytest.raises(ValueError):
        S.min_detectable_rate(0)


def test_detection_power():
    lam = S.min_detectable_rate(700_000)
    # At the minimum detectable rate the miss probability is exactly alpha / T.
    assert S.detection_power(lam, 700_000) == pytest.approx(1 - 0.005, abs=1e-12)
    p = S.detection_power(np.array([0.0, 1e-6, 1e-5, 1e-4]), 700_000)
    assert p[0] == 0.0 and np.all(np.diff(p) > 0) and p[-1] == pytest.approx(1.0)
    assert S.detection_power(1e-5, 1e5, m=1) == pytest.approx(1 - math.exp(-1))


# --------------------------------------------------------------------------- interval coverage


RATES = [1e-4, 1e-3, 1e-2, 1e-1]
NS = [1_000, 10_000, 100_000]


@pytest.fixture(scope="module")
def coverage_tables():
    plain = S.interval_coverage_simulation(RATES, NS, level=0.95, reps=4000, seed=0)
    jittered = S.interval_coverage_simulation(RATES, NS, level=0.95, reps=4000, seed=1, jitter=0.2)
    with pd.option_context("display.width", 120):
        print("\nJeffreys 95% coverage, fixed p:\n", plain.round(4))
        print("\nJeffreys 95% coverage, p log-uniform within x/÷1.2:\n", jittered.round(4))
    return plain, jittered


def test_coverage_simulation_matches_exact(coverage_tables):
    # The Monte Carlo draws agree with the exact coverage (binomial pmf) in every cell; this
    # checks the simulation and the interval together, including the cells far from 95%.
    for table in coverage_tables:
        assert table.shape == (12, 6)
        dev = (table["coverage"] - table["exact"]).abs()
        assert np.all(dev <= 4 * table["se"] + 1e-3), table[dev > 4 * table["se"]]


def test_jeffreys_coverage_near_nominal(coverage_tables):
    """Jeffreys coverage is within ±2 pp of 95%, except where discreteness rules that out.

    Coverage of an interval for a discrete count is a saw-tooth in p. When N·p is small
    the teeth are wide, so a single p can sit far from nominal for mathematical reasons:
    * N·p = 0.1: only K = 0 covers, so coverage is exactly P(K = 0) = (1 - p)^N ≈ 90.5%.
      Averaging p over a ±20% log-uniform neighbourhood (the usual way to read coverage of a
      discrete interval) brings it to ≈ 93.4%, inside the band.
    * N·p = 1: K = 0..3 cover and K = 4 does not (its lower bound is ≈ 1.35/N), so coverage is
      P(K <= 3) ≈ 98.1%. It stays ≈ 97.8% averaged over ±20% and ≈ 97.3% over x/÷2: the
      Jeffreys interval is genuinely conservative (too wide) around N·p ≈ 1. It is therefore
      checked against its exact value, not against the ±2 pp band.
    """
    plain, jittered = coverage_tables
    n_p = jittered["rate"] * jittered["n"]
    poisson_one = np.isclose(n_p, 1.0)
    # Everywhere else the jittered coverage is within ±2 pp of nominal...
    assert np.all((jittered["coverage"] - 0.95).abs()[~poisson_one] <= 0.02), jittered
    # ...and with N·p >= 10 even a fixed p is.
    big = (plain["rate"] * plain["n"]) >= 10
    assert np.all((plain["coverage"] - 0.95).abs()[big] <= 0.02), plain
    # The N·p = 1 cells are conservative: above nominal, not below it.
    assert np.all(jittered["coverage"][poisson_one] >= 0.95)
    # The two exact small-N·p values above, computed independently of depsim.
    cell = plain.set_index(["rate", "n"])
    assert cell.loc[(1e-4, 1_000), "exact"] == pytest.approx((1 - 1e-4) ** 1_000, rel=1e-9)
    assert cell.loc[(1e-3, 1_000), "exact"] == pytest.approx(stats.binom.cdf(3, 1_000, 1e-3), rel=1e-9)
    assert cell.loc[(1e-4, 1_000), "coverage"] == pytest.approx((1 - 1e-4) ** 1_000, abs=0.015)


# --- beyond the paper: predictive intervals and reweighting -------------------------------
def test_predictive_interval_widens_and_reduces_to_binomial():
    from depsim.stats import predictive_interval

    lo, hi = predictive_interval(0.01, 0.008, 0.0125, 0.0)
    assert lo == pytest.approx(0.008) and hi == pytest.approx(0.0125)
    lo2, hi2 = predictive_interval(0.01, 0.008, 0.0125, 0.5)
    assert lo2 < 0.008 and hi2 > 0.0125
    # σ dominates a tight binomial interval: ±z σ in log space
    lo3, hi3 = predictive_interval(0.01, 0.01 - 1e-9, 0.01 + 1e-9, 0.5)
    assert np.log(0.01 / lo3) == pytest.approx(1.959964 * 0.5, rel=1e-4)


def test_fit_log_error_recovers_sigma():
    from depsim.stats import fit_log_error

    rng = np.random.default_rng(0)
    f = np.full(20000, 0.01)
    realised = f * np.exp(rng.normal(0, 0.4, f.size))
    assert fit_log_error(f, realised, f * 0.999999, f * 1.000001) == pytest.approx(0.4, rel=0.03)


def test_weighted_jeffreys_recovers_target_mix_rate():
    from depsim.stats import weighted_jeffreys

    # two strata sampled 50/50 with rates 10% and 1%; the target mix is 20/80
    a = np.r_[np.ones(500), np.zeros(4500)]
    b = np.r_[np.ones(50), np.zeros(4950)]
    flags = np.r_[a, b]
    w = np.r_[np.full(a.size, 0.2 / 0.5), np.full(b.size, 0.8 / 0.5)]
    out = weighted_jeffreys(flags, w).iloc[0]
    assert out["rate"] == pytest.approx(0.2 * 0.1 + 0.8 * 0.01, rel=0.02)
    assert out["n_eff"] < flags.size and out["lo"] < out["rate"] < out["hi"]
