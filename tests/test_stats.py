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


# --- beyond the paper: reweighting ------------------------------------------------------
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


# --------------------------------------------------------------------------- small counts and gates

SMALL_NP = [0.1, 1, 3, 10]


def test_jeffreys_coverage_at_small_expected_counts():
    """Coverage of the Jeffreys 95% interval where N·p ∈ {0.1, 1, 3, 10} (exact, from the
    binomial pmf, averaged over a ±20% log-uniform neighbourhood of p). The interval as a
    whole stays within 90–98%, but its *upper* bound misses far more than 2.5% of the time near
    N·p ≈ 2.5 (the finding): it must not be compared with a gate."""
    rows = []
    for n in (200, 4000, 100_000):
        for npv in SMALL_NP:
            table = S.interval_coverage_simulation([npv / n], [n], level=0.95, reps=2000, seed=3, jitter=0.2)
            rows.append({"n": n, "n_p": npv, "exact": table["exact"].iloc[0], "mc": table["coverage"].iloc[0],
                         "se": table["se"].iloc[0]})
    t = pd.DataFrame(rows)
    print("\nJeffreys 95% coverage at small N·p (p jittered ±20%):\n", t.round(4))
    assert np.all((t["exact"] >= 0.90) & (t["exact"] <= 0.985)), t
    assert np.all((t["mc"] - t["exact"]).abs() <= 4 * t["se"] + 1e-3), t
    miss = S.gate_miss_rate([2.5 / 200], [200], bound="jeffreys")["miss"].iloc[0]
    assert miss > 0.05, miss    # the Jeffreys upper bound: ~8% one-sided misses at N·p = 2.5


def test_gate_bound_one_sided_miss_rate_on_the_grid():
    """The exact (Clopper–Pearson) one-sided upper bound misses a true rate at most 2.5% of
    the time on p ∈ {1e-4..1e-1} × N ∈ {1e3..7e5}, including N·p ∈ {0.1, 1, 3, 10}."""
    grid = S.gate_miss_rate([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1], [1_000, 10_000, 100_000, 700_000])
    small = pd.concat([S.gate_miss_rate([npv / n], [n]) for npv in SMALL_NP for n in (1_000, 10_000, 700_000)])
    both = pd.concat([grid, small], ignore_index=True)
    print("\nGate bound one-sided miss rate (nominal ≤ 2.5%), worst cells:\n",
          both.sort_values("miss", ascending=False).head(6).round(5))
    assert both["miss"].max() <= 0.025 + 1e-12, both.sort_values("miss").tail()
    jeff = pd.concat([S.gate_miss_rate([npv / n], [n], bound="jeffreys") for npv in (2.5, 3) for n in (200, 1_000)])
    assert jeff["miss"].max() > 0.025       # the Jeffreys bound does not give this guarantee


def test_clopper_pearson_and_gate_upper_values():
    cp = S.clopper_pearson([0, 5, 20], [20, 20, 20])
    assert cp["lo"].iloc[0] == 0 and cp["hi"].iloc[2] == 1
    # K = 0: the upper bound solves (1 − p)^N = α/2
    assert cp["hi"].iloc[0] == pytest.approx(1 - 0.025 ** (1 / 20), rel=1e-10)
    assert cp["lo"].iloc[1] == pytest.approx(stats.beta.ppf(0.025, 5, 16), rel=1e-12)
    assert S.gate_upper(0, 200) == pytest.approx(1 - 0.025 ** (1 / 200), rel=1e-10)
    # 8 of 1000: exact bounds ≈ 0.35% and 1.57% straddle a 1% gate
    assert list(S.gate_status([0, 30, 8], [1000, 1000, 1000], 0.01)) == ["below", "breach", "may breach"]


def test_count_labels_never_show_zero_as_a_rate():
    assert S.count_label(0, 200) == "0 of 200 (≤ 1,828 per 100k)"
    assert S.count_label(3, 200) == "3 of 200 (1,500 per 100k)"
    assert S.count_label(0, 700_000) == "0 of 700,000 (≤ 0.53 per 100k)"
    labels = S.count_label(pd.Series([0, 12.4], index=["a", "b"]), pd.Series([4000, 3000.5], index=["a", "b"]))
    assert labels["a"].startswith("0 of 4,000 (≤") and labels["b"].startswith("12.4 of 3,000.5 (")


# --------------------------------------------------------------------------- direction


def test_rate_ratio_interval_covers_and_handles_zeros():
    rng = np.random.default_rng(0)
    n1, n2, p1, p2 = 4000, 3000, 0.004, 0.002
    k1, k2 = rng.binomial(n1, p1, 20_000), rng.binomial(n2, p2, 20_000)
    r = S.rate_ratio(k1, np.full(k1.size, n1), k2, np.full(k2.size, n2))
    cover = ((r["lo"] <= p1 / p2) & (p1 / p2 <= r["hi"])).mean()
    assert 0.94 <= cover <= 0.985, cover    # exact conditional interval: conservative, not liberal
    z = S.rate_ratio([0, 0, 4], [100, 100, 100], [0, 4, 0], [100, 100, 100])
    assert z["lo"].iloc[0] == 0 and np.isinf(z["hi"].iloc[0])
    assert z["lo"].iloc[1] == 0 and np.isinf(z["hi"].iloc[2])
    # the point estimate is the ratio of the rates shown (500 -> 1,000 per 100k reads 2×, not a
    # smoothed 1.67×): 0 of n over k of n is 0, k over 0 is inf, 0 over 0 undefined
    assert S.rate_ratio([2], [200], [1], [200])["ratio"].iloc[0] == 2.0
    assert z["ratio"].iloc[1] == 0 and np.isinf(z["ratio"].iloc[2]) and np.isnan(z["ratio"].iloc[0])
    assert ((r["lo"] <= r["ratio"]) & (r["ratio"] <= r["hi"])).all()  # inside its interval


def test_direction_needs_evidence_and_ties_are_no_change():
    d = S.direction([50, 10, 10, 0, 1], [1000] * 5, [10, 50, 10, 1, 0], [1000] * 5)
    assert list(d) == ["up", "down", "no change", "no change", "no change"]


def test_direction_scores_hand_example():
    f = ["up", "down", "no change", "up", "up"]
    r = ["up", "down", "up", "down", "up"]
    ratio = [2.0, 0.5, 3.0, 0.6, 1.2]         # the last shift is 1.2×: not large
    out = S.direction_scores(f, r, ratio)
    assert list(out["large"]) == [True, True, True, True, False]
    assert (out["k"], out["n"]) == (2, 4)
    # a ≥ 1.5× change without statistical support is not a large shift
    assert S.direction_scores(["up"], ["no change"], [3.0])["n"] == 0


def _direction_world(rng, releases, forecast, spread=0.8):
    """Simulated releases: Y's and X's rates, a forecast, counts of n = 4000; returns the
    pooled forecast and realised directions on large shifts and the old rule's accuracy."""
    n, cats = 4000, 15
    p0 = 10 ** rng.uniform(-3, -1.7, size=(releases, cats))
    p_new = np.minimum(p0 * np.exp(rng.normal(0, spread, p0.shape)), 0.5)
    p_fc = forecast(p0, p_new)
    kp, kn, kf = rng.binomial(n, p0), rng.binomial(n, p_new), rng.binomial(n, p_fc)
    N = np.full(kp.size, n)
    # Y's sample split in two: the forecast is judged against one half, the outcome the other
    ka, na, kb, nb = S.split_count(kp.ravel(), N, seed=np.arange(kp.size))
    fd = S.direction(kf.ravel(), N, ka, na)
    rd = S.direction(kn.ravel(), N, kb, nb)
    ratio = (kn.ravel() + 0.5) / (kb + 0.5) * nb / n
    sc = S.direction_scores(fd, rd, ratio)
    # the old rule: sign against the noisy previous rate, ties wrong, 1.5× without evidence
    prev, new, fc = (kp + 0.5) / (n + 1), (kn + 0.5) / (n + 1), (kf + 0.5) / (n + 1)
    big = np.maximum(new / prev, prev / new) >= 1.5
    old = (np.sign(fc - prev) == np.sign(new - prev))[big].mean()
    return fd[sc["large"]], rd[sc["large"]], (old, int(big.sum()))


def test_no_skill_forecaster_is_indistinguishable_from_its_null():
    rng = np.random.default_rng(4)
    # no skill, confident: a rate unrelated to X's (Y's rate times an independent factor)
    fd, rd, _ = _direction_world(rng, 300, lambda p0, pn: p0 * np.exp(rng.normal(0, 0.8, p0.shape)))
    null = S.direction_null(fd, rd, reps=4000, seed=1)
    print(f"\nno-skill forecaster: {null['observed']:.3f} right on {len(fd)} large shifts; "
          f"null {null['null_mean']:.3f} [{null['null_lo']:.3f}, {null['null_hi']:.3f}], p = {null['p_value']:.2f}")
    # no evidence of skill, and no more than 3 pp from the null's mean (the permutation mixes
    # categories of different sizes, so the two need not agree to the last decimal)
    assert null["p_value"] > 0.05 and abs(null["observed"] - null["null_mean"]) <= 0.03
    # the finding: nothing changes (X = Y) and the forecast is another noisy measurement of Y.
    # The old rule (signs against the same noisy Y, 1.5× without evidence) credits it with
    # most "large shifts"; the evidence rule finds almost no large shift to score.
    fd2, rd2, (old, old_n) = _direction_world(rng, 300, lambda p0, pn: p0, spread=0.0)
    print(f"X = Y, forecast = Y re-measured: old rule {old:.2f} right on {old_n} 'large shifts'; "
          f"evidence rule: {len(fd2)} large shifts")
    assert old > 0.6
    # the evidence rule's false large shifts stay within its 5% error rate (300 × 15 cells)...
    assert len(fd2) <= 0.05 * 300 * 15
    # ...and on them the re-measured Y has no skill
    assert S.direction_null(fd2, rd2, reps=4000, seed=2)["p_value"] > 0.05
    # a skilful forecaster beats the null
    fd3, rd3, _ = _direction_world(rng, 100, lambda p0, pn: pn * np.exp(rng.normal(0, 0.3, pn.shape)))
    assert S.direction_null(fd3, rd3, reps=4000)["p_value"] < 0.001


def test_mcnemar_exact():
    a = np.array([True] * 8 + [False] * 2 + [True] * 5)
    b = np.array([False] * 8 + [True] * 2 + [True] * 5)
    out = S.mcnemar(a, b)
    assert (out["b"], out["c"]) == (8, 2)
    assert out["p_value"] == pytest.approx(stats.binomtest(8, 10, 0.5).pvalue)
    assert S.mcnemar(a, a)["p_value"] == 1.0


# --------------------------------------------------------------------------- multiplicity


def test_holm_and_bh_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # Holm: sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1, made monotone
    np.testing.assert_allclose(S.holm(p), [0.04, 0.09, 0.09, 0.5])
    # BH: 0.5·4/4, 0.04·4/3, 0.03·4/2, 0.01·4/1, made monotone from the top
    np.testing.assert_allclose(S.benjamini_hochberg(p), [0.04, 0.0533333333, 0.0533333333, 0.5])


def test_rises_significantly_controls_familywise_error():
    rng = np.random.default_rng(0)
    # 24 categories, none truly rises: Holm keeps the chance of any false flag ≤ 5%
    p = 10 ** rng.uniform(-3, -1.5, 24)
    kn, kp = rng.binomial(4000, p, (2000, 24)), rng.binomial(4000, p, (2000, 24))
    N = np.full(24, 4000)
    any_flag = [S.rises_significantly(kn[i], N, kp[i], N)["rises"].any() for i in range(300)]
    unadjusted = [(S.rises_significantly(kn[i], N, kp[i], N)["p_value"] <= 0.05).any() for i in range(300)]
    assert np.mean(any_flag) <= 0.06 and np.mean(unadjusted) > 0.3
    one = S.rises_significantly(10, 100, 2, 100)
    assert one["p_value"].iloc[0] == pytest.approx(stats.binomtest(10, 12, 0.5, alternative="greater").pvalue)


# --------------------------------------------------------------------------- graders, failures, clusters


def test_rogan_gladen_interval_carries_grader_uncertainty():
    plain = S.rogan_gladen(40, 1000, 0.8, 0.99).iloc[0]
    unsure = S.rogan_gladen(40, 1000, 0.8, 0.99, sens_n=30, spec_n=200).iloc[0]
    assert plain["rate"] == pytest.approx(((40.5 / 1001) + 0.99 - 1) / (0.8 + 0.99 - 1))
    assert unsure["hi"] - unsure["lo"] > 1.3 * (plain["hi"] - plain["lo"])
    # coverage by simulation: true prevalence 3%, grader measured on 60 positives / 400 negatives
    rng = np.random.default_rng(1)
    se, sp, prev, n = 0.85, 0.98, 0.03, 2000
    hits = []
    for i in range(150):
        se_hat = rng.binomial(60, se) / 60
        sp_hat = rng.binomial(400, sp) / 400
        k = rng.binomial(n, prev * se + (1 - prev) * (1 - sp))
        r = S.rogan_gladen(k, n, se_hat, sp_hat, 60, 400, draws=2000, seed=i).iloc[0]
        hits.append(r["lo"] <= prev <= r["hi"])
    assert np.mean(hits) >= 0.9, np.mean(hits)
    assert not S.rogan_gladen(10, 100, 0.5, 0.5, 10, 10)["informative"].iloc[0]
    # a perfect grader changes nothing: the corrected rate is the rates table's Jeffreys rate
    perfect = S.rogan_gladen(7, 300, 1.0, 1.0).iloc[0]
    assert perfect["rate"] == pytest.approx(S.jeffreys(7, 300)["rate"].iloc[0]) and perfect["informative"]


def test_failed_bounds_and_warning():
    out = S.failed_bounds([3, 3], [200, 200], [0, 20]).reset_index(drop=True)
    assert out["best"].iloc[0] == out["worst"].iloc[0]
    assert out["worst"].iloc[1] == pytest.approx(23.5 / 221) and out["best"].iloc[1] == pytest.approx(3.5 / 221)
    assert list(out["warning"]) == [False, True]
    assert out["lo"].iloc[1] < out["best"].iloc[1] < out["worst"].iloc[1] < out["hi"].iloc[1]


def test_cluster_robust_rate_widens_for_shared_conversations():
    rng = np.random.default_rng(0)
    conv_flag = rng.random(500) < 0.05
    flags = np.repeat(conv_flag, 4).astype(float)       # four turns per conversation, all alike
    clusters = np.repeat(np.arange(500), 4)
    out = S.cluster_robust_rate(flags, clusters).iloc[0]
    assert out["deff"] == pytest.approx(4, rel=0.1) and out["n_eff"] == pytest.approx(500, rel=0.1)
    indep = S.cluster_robust_rate(flags, np.arange(2000)).iloc[0]
    assert indep["deff"] == pytest.approx(1.0, abs=0.01)
    assert out["hi"] - out["lo"] > 1.8 * (indep["hi"] - indep["lo"])


def test_bootstrap_summary():
    out = S.bootstrap_summary(np.arange(1, 101, dtype=float), np.median, reps=2000)
    assert out["value"] == 50.5 and out["lo"] < 50.5 < out["hi"] and out["n"] == 100
    assert np.isnan(S.bootstrap_summary([2.0])["lo"])



def _clustered_sample(rng, G, p, mechanism):
    """0/1 flags of 1-6 turns in each of ``G`` conversations, from processes the estimator
    does not model: a Beta-distributed propensity per conversation (mean ``p``), or a
    chain in which a flagged turn makes the next one flagged with probability 0.7 (base
    rate ``p``). Returns (flags, conversation ids), in conversation order."""
    turns = rng.integers(1, 7, G)
    live = np.arange(6)[None, :] < turns[:, None]
    u = rng.random((G, 6))
    if mechanism == "beta":
        rho = 0.5
        x = u < rng.beta(p * (1 - rho) / rho, (1 - p) * (1 - rho) / rho, G)[:, None]
    else:
        x = np.zeros((G, 6), bool)
        for j in range(6):
            x[:, j] = u[:, j] < np.where(x[:, j - 1], 0.7, p) if j else u[:, 0] < p
    return x[live].astype(float), np.repeat(np.arange(G), turns)


@pytest.mark.parametrize("G, p, mechanism", [(1000, 0.002, "beta"), (40, 0.05, "beta"), (600, 0.002, "chain")])
def test_cluster_robust_rate_covers_with_few_events(G, p, mechanism):
    # about 5-9 flagged turns a sample, in conversations that share them: the regime where
    # Jeffreys on n / deff covered 0.86-0.90 at 95%
    truth = np.mean(_clustered_sample(np.random.default_rng(99), 200_000, p, mechanism)[0])
    rng = np.random.default_rng(5)
    hits, events = 0, 0
    for _ in range(600):
        x, g = _clustered_sample(rng, G, p, mechanism)
        r = S.cluster_robust_rate(x, g).iloc[0]
        hits += r["lo"] <= truth <= r["hi"]
        events += x.sum()
    assert 3 <= events / 600 <= 12
    assert hits / 600 >= 0.90  # measured: 0.91, 0.923, 0.923 (Jeffreys on n / deff: 0.865, 0.887, 0.908)
