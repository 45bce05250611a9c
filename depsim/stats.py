"""Statistics for forecasting and validating misbehaviour rates (docs/design.md §6).

Conventions used throughout:

* Rates are fractions in [0, 1] (not per-100k). Counts are K (flagged) and N (graded,
  grader failures already excluded).
* Negative log-likelihoods and regrets are in nats (natural log).
* Element-wise functions accept scalars, numpy arrays or pandas Series (one value per
  category). If any input is a Series, the result is a Series on that Series' index (the
  first Series argument wins; other Series are aligned to it by label). Scalar inputs give
  a Python float; array inputs give a numpy array of the broadcast shape.
* Bad input (NaN, N = 0, K > N, non-positive rates, ...) raises ValueError naming the
  offending categories (Series labels) or positions (arrays), never a silent NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special, stats

__all__ = [
    "jeffreys",
    "binom_nll",
    "regret",
    "sme",
    "log10_error",
    "sme_summary",
    "log_pearson",
    "directional_accuracy",
    "method_comparison",
    "coverage",
    "decompose_error",
    "min_detectable_rate",
    "detection_power",
    "interval_coverage_simulation",
    "fit_log_error",
    "predictive_interval",
    "weighted_jeffreys",
]

# Forecasts are clipped away from 0 and 1 so that log-likelihoods stay finite: a forecast of
# exactly 0 for a category that then occurs would otherwise score an infinite loss.
F_CLIP = 1e-12


# --------------------------------------------------------------------------- helpers


def _prep(*xs):
    """Broadcast inputs to float arrays; return (arrays, index of the first Series or None)."""
    index = next((x.index for x in xs if isinstance(x, pd.Series)), None)
    arrays = []
    for x in xs:
        if isinstance(x, pd.Series) and not x.index.equals(index):
            # Align by label, as pandas arithmetic would; missing labels become NaN and are
            # then reported by the validation below rather than silently dropped.
            x = x.reindex(index)
        arrays.append(np.asarray(x, dtype=float))
    return np.broadcast_arrays(*arrays), index


def _wrap(values, index, name=None):
    """Return values as a Series (if index), a float (0-d) or an ndarray."""
    values = np.asarray(values)
    if index is not None:
        return pd.Series(values.reshape(len(index)), index=index, name=name)
    if values.ndim == 0:
        return values.item()
    return values


def _where(bad, index):
    """Describe where a boolean mask is True: category labels, positions, or the scalar."""
    bad = np.asarray(bad)
    if bad.ndim == 0:
        return "the (scalar) input"
    pos = np.flatnonzero(bad.ravel())
    more = f" and {len(pos) - 10} more" if len(pos) > 10 else ""
    if index is not None:
        return f"categories {list(index[pos[:10]])}{more}"
    return f"positions {pos[:10].tolist()}{more}"


def _check(bad, index, func, message):
    if np.any(bad):
        raise ValueError(f"{func}: {message} at {_where(bad, index)}")


def _check_counts(k, n, index, func):
    _check(~np.isfinite(k) | ~np.isfinite(n), index, func, "K and N must be finite (got NaN/inf)")
    _check(n <= 0, index, func, "N must be > 0 (no graded items)")
    _check(k < 0, index, func, "K must be >= 0")
    _check(k > n, index, func, "K must be <= N")


def _check_rates(index, func, **rates):
    for name, r in rates.items():
        _check(~np.isfinite(r) | (r <= 0), index, func,
               f"{name} must be a finite rate > 0 (pass Jeffreys-smoothed rates)")


# --------------------------------------------------------------------------- estimation


def jeffreys(k, n, level=0.95):
    """Jeffreys point estimate and interval for a binomial rate, per category.

    rate = (K + 1/2) / (N + 1)
    lo, hi = quantiles of Beta(K + 1/2, N - K + 1/2) at (1 - level)/2 and 1 - (1 - level)/2

    K = 0 and K = N are fine (the interval is not truncated to 0 or 1). K and N may be
    non-integer effective counts (e.g. weighted prefixes). N must be > 0 and 0 <= K <= N;
    otherwise ValueError names the offending categories (Series labels) or positions.

    Returns a DataFrame with columns ``rate``, ``lo``, ``hi`` (fractions in [0, 1]), one row
    per category, indexed like ``k`` if it is a Series (else like ``n``, else 0..m-1).
    """
    if not 0 < level < 1:
        raise ValueError(f"jeffreys: level must be in (0, 1), got {level!r}")
    (k, n), index = _prep(k, n)
    if k.ndim > 1:
        raise ValueError("jeffreys: k and n must be scalars or 1-D (one value per category)")
    _check_counts(k, n, index, "jeffreys")
    k, n = np.atleast_1d(k), np.atleast_1d(n)
    a, b = k + 0.5, n - k + 0.5
    tail = (1 - level) / 2
    return pd.DataFrame(
        {
            "rate": a / (n + 1),
            "lo": stats.beta.ppf(tail, a, b),
            "hi": stats.beta.ppf(1 - tail, a, b),
        },
        index=index if index is not None else pd.RangeIndex(len(k)),
    )


def binom_nll(k, n, f):
    """Binomial negative log-likelihood of a realised count under a forecast rate, in nats.

    NLL = -log Binom(K; N, f) = -log[C(N, K) f^K (1 - f)^(N - K)]

    K and N must be whole counts (scipy would score a fractional K as an infinite loss).
    f is clipped to [1e-12, 1 - 1e-12] so the loss stays finite. Returns one value per
    category (float / ndarray / Series like the inputs).
    """
    (k, n, f), index = _prep(k, n, f)
    _check_counts(k, n, index, "binom_nll")
    _check((k != np.round(k)) | (n != np.round(n)), index, "binom_nll",
           "K and N must be whole counts")
    _check(~np.isfinite(f), index, "binom_nll", "forecast f must be finite")
    f = np.clip(f, F_CLIP, 1 - F_CLIP)
    return _wrap(-stats.binom.logpmf(k, n, f), index, name="nll")


def regret(k, n, f):
    """Regret of forecast f against the realised count, in nats (always >= 0).

    regret = NLL(f) - NLL(K/N)
           = K log((K/N) / f) + (N - K) log((1 - K/N) / (1 - f)),   with 0 log 0 = 0

    i.e. N times the KL divergence KL(Bern(K/N) || Bern(f)); the binomial coefficient
    cancels. Computed directly (not as a difference of two NLLs) so it is exactly 0 when
    f == K/N; float noise below 0 is clipped to 0. f is clipped to [1e-12, 1 - 1e-12] as in
    ``binom_nll``, so ``binom_nll(k, n, f) - regret(k, n, f)`` is the NLL at the MLE.
    """
    (k, n, f), index = _prep(k, n, f)
    _check_counts(k, n, index, "regret")
    _check(~np.isfinite(f), index, "regret", "forecast f must be finite")
    f = np.clip(f, F_CLIP, 1 - F_CLIP)
    r = k / n
    # xlogy gives 0 when the count is 0, which is the 0·log 0 = 0 convention.
    out = special.xlogy(k, r / f) + special.xlogy(n - k, (1 - r) / (1 - f))
    return _wrap(np.maximum(out, 0.0), index, name="regret")


# --------------------------------------------------------------------------- errors


def sme(a, b):
    """Symmetric multiplicative error of two rates: max(a/b, b/a), unitless, >= 1.

    Callers pass Jeffreys-smoothed rates (so neither is 0); rates must be finite and > 0.
    Returns one value per category.
    """
    (a, b), index = _prep(a, b)
    _check_rates(index, "sme", a=a, b=b)
    return _wrap(np.maximum(a / b, b / a), index, name="sme")


def log10_error(a, b):
    """Absolute log10 error of two rates: |log10(a / b)| = log10(SME(a, b)), unitless, >= 0.

    Rates must be finite and > 0. Returns one value per category.
    """
    (a, b), index = _prep(a, b)
    _check_rates(index, "log10_error", a=a, b=b)
    return _wrap(np.abs(np.log10(a) - np.log10(b)), index, name="log10_error")


def sme_summary(a, b):
    """Summary of the symmetric multiplicative error over categories.

    Returns a dict of floats: ``median``, ``mean``, ``max`` of SME(a, b) = max(a/b, b/a)
    (unitless ratios, >= 1), ``mean_log10`` = mean of |log10(a/b)| (orders of magnitude),
    and ``n`` (int) = number of categories.
    """
    e = np.atleast_1d(np.asarray(sme(a, b), dtype=float))
    if e.size == 0:
        raise ValueError("sme_summary: no categories given")
    return {
        "median": float(np.median(e)),
        "mean": float(np.mean(e)),
        "max": float(np.max(e)),
        "mean_log10": float(np.mean(np.log10(e))),
        "n": int(e.size),
    }


def log_pearson(forecast, realised):
    """Pearson correlation r of log10(forecast) and log10(realised) across categories.

    Rates must be finite and > 0 (Jeffreys-smoothed). Returns a float in [-1, 1]; needs at
    least 2 categories (NaN, with scipy's warning, if either side is constant).
    """
    (f, r), index = _prep(forecast, realised)
    _check_rates(index, "log_pearson", forecast=f, realised=r)
    f, r = np.atleast_1d(f).ravel(), np.atleast_1d(r).ravel()
    if f.size < 2:
        raise ValueError("log_pearson: need at least 2 categories")
    return float(stats.pearsonr(np.log10(f), np.log10(r)).statistic)


def directional_accuracy(forecast, prev, new, threshold=1.5):
    """Directional accuracy of a forecast on categories with a large realised shift.

    Considered categories (``mask``): max(new/prev, prev/new) >= threshold, where prev is
    Y's production rate and new is X's. A forecast is right when
    sign(forecast - prev) == sign(new - prev); a forecast equal to prev counts as wrong.

    Returns a dict: ``k`` (int, right), ``n`` (int, considered), ``share`` = k/n (NaN when
    n = 0), ``mask`` (bool per category) and ``right`` (bool per category, False outside the
    mask). mask/right are Series if any input is a Series, else ndarrays.
    """
    (f, p, r), index = _prep(forecast, prev, new)
    for name, x in (("forecast", f), ("prev", p), ("new", r)):
        _check(~np.isfinite(x) | (x < 0), index, "directional_accuracy",
               f"{name} must be a finite rate >= 0")
    f, p, r = (np.atleast_1d(x) for x in (f, p, r))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(r / p, p / r)  # inf if one side is 0; NaN (excluded) if both are
    mask = ratio >= threshold
    right = mask & (np.sign(f - p) == np.sign(r - p))
    n_cat = int(mask.sum())
    k = int(right.sum())
    if index is not None:
        mask, right = pd.Series(mask, index=index), pd.Series(right, index=index)
    return {"k": k, "n": n_cat, "share": k / n_cat if n_cat else float("nan"),
            "mask": mask, "right": right}


def method_comparison(nll_a, nll_b):
    """Paired comparison of methods A and B on per-category NLL (lower is better).

    d = nll_b - nll_a per category (> 0 means A is better). Ties are |d| <= 1e-12 relative
    to the NLL scale (float noise), counted separately and dropped from both tests.

    * ``sign_p``: exact one-sided sign test, scipy.stats.binomtest(wins, wins + losses,
      0.5, alternative='greater'); 1.0 if there are no untied categories.
    * ``wilcoxon_p``: one-sided Wilcoxon signed-rank test of d > 0 (zero differences
      dropped). If every difference is zero there is nothing to test and it is 1.0.
    * ``sum_diff``: sum of d in nats = total regret of B minus total regret of A (the MLE
      term cancels), so > 0 favours A.

    Returns a dict: wins, losses, ties (ints), sign_p, wilcoxon_p, sum_diff (floats).
    """
    (a, b), index = _prep(nll_a, nll_b)
    _check(~np.isfinite(a) | ~np.isfinite(b), index, "method_comparison",
           "NLLs must be finite")
    a, b = np.atleast_1d(a).ravel(), np.atleast_1d(b).ravel()
    d = b - a
    tie = np.abs(d) <= 1e-12 * np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    d_test = np.where(tie, 0.0, d)
    wins, losses = int(np.sum(d_test > 0)), int(np.sum(d_test < 0))
    sign_p = (stats.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue
              if wins + losses else 1.0)
    nonzero = d_test[d_test != 0]
    wilcoxon_p = (float(stats.wilcoxon(nonzero, alternative="greater").pvalue)
                  if nonzero.size else 1.0)
    return {"wins": wins, "losses": losses, "ties": int(tie.sum()),
            "sign_p": float(sign_p), "wilcoxon_p": wilcoxon_p, "sum_diff": float(d.sum())}


def coverage(lo, hi, realised):
    """Share of categories whose realised rate lies inside the closed interval [lo, hi].

    Returns a dict: ``share`` = count / n (fraction; NaN if n = 0), ``count`` (int, inside)
    and ``n`` (int, categories). Inputs are rates; NaN anywhere raises ValueError.
    """
    (lo, hi, r), index = _prep(lo, hi, realised)
    _check(np.isnan(lo) | np.isnan(hi) | np.isnan(r), index, "coverage",
           "lo, hi and realised must not be NaN")
    _check(lo > hi, index, "coverage", "lo must be <= hi")
    inside = (lo <= r) & (r <= hi)
    count, n_cat = int(inside.sum()), int(inside.size)
    return {"share": count / n_cat if n_cat else float("nan"), "count": count, "n": n_cat}


def decompose_error(sim, sim_self, prod_new):
    """Split the forecast error into environment and prefix parts (unitless SMEs >= 1).

    environment = SME(sim_self, prod_new)   X on its own prefixes vs X in production
    prefix      = SME(sim, sim_self)        Y's prefixes vs X's own prefixes
    full        = SME(sim, prod_new)        the forecast's total error

    In log space full <= environment * prefix (triangle inequality). Returns a DataFrame
    with columns environment, prefix, full, one row per category.
    """
    (s, ss, pn), index = _prep(sim, sim_self, prod_new)
    _check_rates(index, "decompose_error", sim=s, sim_self=ss, prod_new=pn)
    s, ss, pn = (np.atleast_1d(x).ravel() for x in (s, ss, pn))
    return pd.DataFrame(
        {"environment": sme(ss, pn), "prefix": sme(s, ss), "full": sme(s, pn)},
        index=index if index is not None else pd.RangeIndex(len(s)),
    )


# --------------------------------------------------------------------------- detection


def min_detectable_rate(n, types=10, m=10, alpha=0.05):
    """Minimum detectable rate of a novel behaviour (a fraction per sample).

    The smallest λ with P(Poisson(N λ) < m) <= α / T, i.e. poisson.cdf(m - 1, N λ) = α / T
    (Bonferroni over at most T novel types; a type counts as found once seen m times).
    Since poisson.cdf(m - 1, μ) = Q(m, μ) (regularised upper incomplete gamma), μ = N λ is
    gammainccinv(m, α / T), exact to float precision. Returns λ = μ / N as a float.

    Example: N = 700,000, T = 10, m = 10, α = 0.05 gives μ ≈ 20.0, λ ≈ 2.86e-5.
    """
    if not n > 0:
        raise ValueError(f"min_detectable_rate: n must be > 0, got {n!r}")
    if not (float(m).is_integer() and m >= 1):
        raise ValueError(f"min_detectable_rate: m must be an integer >= 1, got {m!r}")
    if not types >= 1:
        raise ValueError(f"min_detectable_rate: types must be >= 1, got {types!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"min_detectable_rate: alpha must be in (0, 1), got {alpha!r}")
    mu = special.gammainccinv(m, alpha / types)
    return float(mu / n)


def detection_power(rate, n, m=10):
    """Probability that a behaviour with the given rate is seen at least m times in N samples.

    power = P(Poisson(N * rate) >= m) = poisson.sf(m - 1, N * rate), a probability in [0, 1].
    Returns one value per input (float / ndarray / Series).
    """
    (rate, n), index = _prep(rate, n)
    _check(~np.isfinite(rate) | (rate < 0) | ~np.isfinite(n) | (n < 0), index,
           "detection_power", "rate and n must be finite and >= 0")
    return _wrap(stats.poisson.sf(m - 1, n * rate), index, name="power")


# --------------------------------------------------------------------------- coverage check


def _jeffreys_bounds(k, n, level):
    tail = (1 - level) / 2
    return stats.beta.ppf(tail, k + 0.5, n - k + 0.5), stats.beta.ppf(1 - tail, k + 0.5, n - k + 0.5)


def _exact_coverage(ps, n, level):
    """Exact Jeffreys coverage averaged over the rates ps (equal weights) at sample size n."""
    ps = np.asarray(ps, dtype=float)
    # Only counts with non-negligible probability matter; the bounds depend on K, not p.
    k_lo = int(stats.binom.ppf(1e-13, n, ps.min()))
    k_hi = int(stats.binom.isf(1e-13, n, ps.max()))
    k = np.arange(k_lo, min(k_hi, n) + 1, dtype=float)
    lo, hi = _jeffreys_bounds(k, n, level)
    pmf = stats.binom.pmf(k[None, :], n, ps[:, None])
    inside = (lo[None, :] <= ps[:, None]) & (ps[:, None] <= hi[None, :])
    return float((pmf * inside).sum(axis=1).mean())


def interval_coverage_simulation(rates, ns, level=0.95, reps=4000, seed=0, jitter=0.0):
    """Empirical coverage of the Jeffreys interval by repeated binomial draws.

    For every cell (p, N) of the grid rates x ns, draw ``reps`` counts K ~ Binomial(N, p')
    and record how often p' lies in the Jeffreys interval of (K, N). With jitter = 0,
    p' = p. With jitter = j > 0, each draw uses its own p' log-uniform on [p/(1+j), p(1+j)]:
    coverage of a discrete interval oscillates sharply with p, so averaging over a small
    neighbourhood is the usual way to read it. All draws are vectorised (one
    Generator.binomial call); the Beta quantiles are computed once per distinct (K, N).

    Returns a DataFrame, one row per cell, columns:
    ``rate``, ``n``, ``reps``, ``coverage`` (share of draws covered, fraction),
    ``se`` (Monte Carlo standard error of coverage), ``exact`` (exact coverage from the
    binomial pmf, averaged over the same jitter distribution by a 129-point quadrature).
    """
    if not 0 < level < 1:
        raise ValueError(f"interval_coverage_simulation: level must be in (0, 1), got {level!r}")
    if jitter < 0:
        raise ValueError("interval_coverage_simulation: jitter must be >= 0")
    rates = np.atleast_1d(np.asarray(rates, dtype=float))
    ns = np.atleast_1d(np.asarray(ns, dtype=np.int64))
    if np.any((rates <= 0) | (rates >= 1)) or np.any(ns <= 0):
        raise ValueError("interval_coverage_simulation: rates must be in (0, 1) and ns > 0")
    p_cell, n_cell = (x.ravel() for x in np.meshgrid(rates, ns, indexing="ij"))
    rng = np.random.default_rng(seed)
    half = np.log1p(jitter)
    p = p_cell[:, None] * np.exp(rng.uniform(-half, half, size=(p_cell.size, reps)))
    p = np.minimum(p, 1 - F_CLIP)
    n = np.broadcast_to(n_cell[:, None], p.shape)
    k = rng.binomial(n, p)
    pairs, inverse = np.unique(np.stack([k.ravel(), n.ravel()]), axis=1, return_inverse=True)
    lo, hi = _jeffreys_bounds(pairs[0].astype(float), pairs[1].astype(float), level)
    inverse = inverse.reshape(p.shape)
    covered = (lo[inverse] <= p) & (p <= hi[inverse])
    cov = covered.mean(axis=1)
    # Midpoint quadrature over the log-uniform jitter for the exact reference value.
    grid = np.exp(half * (2 * (np.arange(129) + 0.5) / 129 - 1)) if jitter else np.ones(1)
    exact = [_exact_coverage(np.minimum(pc * grid, 1 - F_CLIP), int(nc), level)
             for pc, nc in zip(p_cell, n_cell)]
    return pd.DataFrame({
        "rate": p_cell, "n": n_cell, "reps": reps, "coverage": cov,
        "se": np.sqrt(cov * (1 - cov) / reps), "exact": exact,
    })


# --------------------------------------------------------------------------- beyond the paper


def fit_log_error(forecast, realised, lo, hi, level=0.95):
    """Return σ, the standard deviation (natural-log units) of the multiplicative error of
    forecasts beyond their binomial noise, fitted on earlier releases.

    With residuals d = ln(realised / forecast) and binomial log-variance per forecast
    v_b = ((ln(hi) − ln(lo)) / (2 z))², z = Φ⁻¹((1 + level)/2):
    σ² = max(0, mean(d²) − mean(v_b)), the method-of-moments excess variance."""
    (f, r, l, h), _ = _prep(forecast, realised, lo, hi)
    _check_rates(None, "fit_log_error", forecast=f, realised=r, lo=l, hi=h)
    z = stats.norm.ppf((1 + level) / 2)
    d2 = np.log(r / f) ** 2
    vb = ((np.log(h) - np.log(l)) / (2 * z)) ** 2
    return float(np.sqrt(max(0.0, d2.mean() - vb.mean())))


def predictive_interval(rate, lo, hi, sigma, level=0.95):
    """Return (lo, hi) of the predictive interval: the binomial interval widened in log space
    by a multiplicative error term of standard deviation ``sigma`` (natural-log units):

    lo' = rate · exp(−√(ln(rate/lo)² + (z σ)²)),  hi' = rate · exp(√(ln(hi/rate)² + (z σ)²)),
    z = Φ⁻¹((1 + level)/2). With σ = 0 it is the binomial interval itself. Fractions."""
    (p, l, h), index = _prep(rate, lo, hi)
    _check_rates(index, "predictive_interval", rate=p, lo=l, hi=h)
    z = stats.norm.ppf((1 + level) / 2)
    extra = (z * float(sigma)) ** 2
    lo2 = p * np.exp(-np.sqrt(np.log(p / l) ** 2 + extra))
    hi2 = np.minimum(p * np.exp(np.sqrt(np.log(h / p) ** 2 + extra)), 1.0)
    return _wrap(lo2, index, "lo"), _wrap(hi2, index, "hi")


def weighted_jeffreys(flags, weights, level=0.95):
    """Return a one-row DataFrame (rate, lo, hi, k_eff, n_eff) for a weighted sample of 0/1
    ``flags``: the Jeffreys estimate on Kish effective counts n_eff = (Σw)²/Σw²,
    k_eff = n_eff · Σwx/Σw. With equal weights it equals :func:`jeffreys`."""
    x = np.asarray(flags, dtype=float)
    w = np.asarray(weights, dtype=float)
    if x.shape != w.shape or len(x) == 0 or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weighted_jeffreys: flags and weights must be equal-length, non-empty, weights ≥ 0")
    n_eff = w.sum() ** 2 / (w ** 2).sum()
    k_eff = n_eff * (w * x).sum() / w.sum()
    out = jeffreys(k_eff, n_eff, level)
    out["k_eff"], out["n_eff"] = k_eff, n_eff
    return out
