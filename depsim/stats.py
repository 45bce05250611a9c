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
    "method_comparison",
    "coverage",
    "decompose_error",
    "min_detectable_rate",
    "detection_power",
    "interval_coverage_simulation",
    "weighted_jeffreys",
    "clopper_pearson",
    "gate_upper",
    "gate_status",
    "gate_miss_rate",
    "count_label",
    "rate_ratio",
    "direction",
    "direction_scores",
    "split_count",
    "direction_null",
    "mcnemar",
    "holm",
    "benjamini_hochberg",
    "rises_significantly",
    "rogan_gladen",
    "failed_bounds",
    "cluster_robust_rate",
    "bootstrap_summary",
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


# --------------------------------------------------------------------------- small counts, gates


def clopper_pearson(k, n, level=0.95):
    """Exact (Clopper–Pearson) two-sided interval for a binomial rate, per category.

    lo = Beta(K, N − K + 1) quantile at (1 − level)/2 (0 when K = 0), hi = Beta(K + 1, N − K)
    quantile at (1 + level)/2 (1 when K = N). Coverage is ≥ level for every p. Returns a
    DataFrame with ``rate`` = K/N, ``lo``, ``hi`` (fractions), indexed like :func:`jeffreys`."""
    if not 0 < level < 1:
        raise ValueError(f"clopper_pearson: level must be in (0, 1), got {level!r}")
    (k, n), index = _prep(k, n)
    _check_counts(k, n, index, "clopper_pearson")
    k, n = np.atleast_1d(k), np.atleast_1d(n)
    tail = (1 - level) / 2
    with np.errstate(invalid="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(tail, np.maximum(k, 1e-300), n - k + 1), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1 - tail, k + 1, np.maximum(n - k, 1e-300)), 1.0)
    return pd.DataFrame({"rate": k / n, "lo": lo, "hi": hi},
                        index=index if index is not None else pd.RangeIndex(len(k)))


def gate_upper(k, n, alpha=0.025):
    """Exact one-sided upper confidence bound for a rate (fraction), the number to compare
    with a release gate: the Beta(K + 1, N − K) quantile at 1 − alpha (1 when K = N).
    P(bound < p) ≤ alpha for every true p. Returns one value per category."""
    (k, n), index = _prep(k, n)
    _check_counts(k, n, index, "gate_upper")
    with np.errstate(invalid="ignore"):
        hi = np.where(k < n, stats.beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1e-300)), 1.0)
    return _wrap(hi, index, name="gate_upper")


def gate_status(k, n, gate, alpha=0.025):
    """Compare a measured rate with a release gate (a fraction) using exact bounds: "breach"
    when the one-sided lower bound exceeds the gate, "may breach" when only the upper bound
    (:func:`gate_upper`) does, else "below". Returns one string per category."""
    (k, n, g), index = _prep(k, n, gate)
    _check_counts(k, n, index, "gate_status")
    hi = np.atleast_1d(np.asarray(gate_upper(k, n, alpha)))
    k1, n1, g1 = (np.atleast_1d(x) for x in (k, n, g))
    with np.errstate(invalid="ignore"):
        lo = np.where(k1 > 0, stats.beta.ppf(alpha, np.maximum(k1, 1e-300), n1 - k1 + 1), 0.0)
    out = np.where(lo > g1, "breach", np.where(hi >= g1, "may breach", "below"))
    if index is not None:
        return pd.Series(out, index=index, name="gate_status")
    return out.item() if np.ndim(k) == 0 else out


def gate_miss_rate(rates, ns, alpha=0.025, bound="exact"):
    """Exact one-sided miss rate P(upper bound < p) of a gate bound, on the grid rates × ns.

    ``bound`` is "exact" (:func:`gate_upper`) or "jeffreys" (the Beta(K + ½, N − K + ½)
    quantile at 1 − alpha). Computed from the binomial pmf (no simulation). Returns a
    DataFrame with rate, n, n_p = N·p and ``miss`` (fraction; nominal at most alpha)."""
    rows = []
    for p in np.atleast_1d(rates):
        for n in np.atleast_1d(ns):
            n = int(n)
            k_lo, k_hi = int(stats.binom.ppf(1e-14, n, p)), int(min(n, stats.binom.isf(1e-14, n, p)))
            k = np.arange(k_lo, k_hi + 1, dtype=float)
            if bound == "exact":
                hi = np.where(k < n, stats.beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1e-300)), 1.0)
            elif bound == "jeffreys":
                hi = stats.beta.ppf(1 - alpha, k + 0.5, n - k + 0.5)
            else:
                raise ValueError(f"gate_miss_rate: bound must be 'exact' or 'jeffreys', got {bound!r}")
            rows.append({"rate": p, "n": n, "n_p": n * p,
                         "miss": float((stats.binom.pmf(k, n, p) * (hi < p)).sum())})
    return pd.DataFrame(rows)


def count_label(k, n, alpha=0.025, per=100_000):
    """The text a reader sees for K of N: "3 of 200 (1,500 per 100k)"; zero events read
    "0 of 200 (≤ 1,827 per 100k)", the exact one-sided upper bound at 1 − alpha, never a
    rate. Non-integer (effective, weighted) counts are shown with one decimal. Returns a
    string (scalar input) or a list/Series of strings."""
    (k, n), index = _prep(k, n)
    _check_counts(k, n, index, "count_label")
    k1, n1 = np.atleast_1d(k), np.atleast_1d(n)
    up = np.atleast_1d(np.asarray(gate_upper(k1, n1, alpha)))

    def num(x):
        return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"

    def per_(x):
        v = x * per
        return f"{v:,.0f}" if v >= 10 else f"{v:.2g}"

    unit = f"per {per // 1000}k" if per >= 1000 else f"per {per}"
    out = [f"{num(a)} of {num(b)} (≤ {per_(u)} {unit})" if a == 0 else f"{num(a)} of {num(b)} ({per_(a / b)} {unit})"
           for a, b, u in zip(k1, n1, up)]
    if index is not None:
        return pd.Series(out, index=index, name="label")
    return out[0] if np.ndim(k) == 0 else out


# --------------------------------------------------------------------------- direction


def rate_ratio(k1, n1, k2, n2, level=0.95):
    """Ratio of two rates (sample 1 over sample 2) with an exact conditional interval.

    For Poisson counts, K1 | K1 + K2 = T is Binomial(T, π), π = n1 ρ / (n1 ρ + n2); the
    Clopper–Pearson interval for π maps to ρ = π/(1 − π) · n2/n1. Zeros are fine (an open
    side is 0 or inf); T = 0 gives (0, inf). ``ratio`` is the ratio of the raw rates
    (k1/n1)/(k2/n2), the interval's own point estimate, so it matches the k-of-n rates shown
    beside it: inf when only K2 is 0, NaN when both are. Returns a DataFrame with ratio, lo,
    hi (unitless)."""
    (k1, n1, k2, n2), index = _prep(k1, n1, k2, n2)
    _check_counts(k1, n1, index, "rate_ratio")
    _check_counts(k2, n2, index, "rate_ratio")
    k1, n1, k2, n2 = (np.atleast_1d(x) for x in (k1, n1, k2, n2))
    t = k1 + k2
    tail = (1 - level) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        plo = np.where(k1 > 0, special.betaincinv(np.maximum(k1, 1e-300), t - k1 + 1, tail), 0.0)
        phi = np.where(k2 > 0, special.betaincinv(k1 + 1, np.maximum(t - k1, 1e-300), 1 - tail), 1.0)
        lo = plo / (1 - plo) * n2 / n1
        hi = np.where(phi < 1, phi / (1 - phi) * n2 / n1, np.inf)
        ratio = np.where(t > 0, (k1 / n1) / np.where(k2 > 0, k2 / n2, 0.0), np.nan)
    return pd.DataFrame({"ratio": ratio, "lo": lo, "hi": hi},
                        index=index if index is not None else pd.RangeIndex(len(k1)))


def direction(k1, n1, k2, n2, level=0.95):
    """Three-outcome direction of rate 1 against rate 2 with an evidence rule: "up" when the
    :func:`rate_ratio` interval lies above 1, "down" when below, else "no change" (ties and
    no evidence are never "down"). Returns one string per category (ndarray or Series)."""
    r = rate_ratio(k1, n1, k2, n2, level)
    out = np.where(r["lo"] > 1, "up", np.where(r["hi"] < 1, "down", "no change"))
    return pd.Series(out, index=r.index, name="direction") if isinstance(k1, pd.Series) else out


def split_count(k, n, seed=0):
    """Split a count K of N at random into two independent-looking halves: K_A of N_A = N // 2
    and K_B = K − K_A of N_B = N − N_A, with K_A hypergeometric (exactly what splitting the
    graded items at random gives, since items are exchangeable given K). Scoring compares a
    forecast with one half of Y's sample and the realised rate with the other, so that noise
    in Y's measurement cannot make a forecaster with no skill look right. ``seed`` is an int
    or a sequence of ints (one per value). Returns four integer arrays (K_A, N_A, K_B, N_B)."""
    k = np.rint(np.atleast_1d(np.asarray(k, dtype=float))).astype(np.int64)
    n = np.rint(np.atleast_1d(np.asarray(n, dtype=float))).astype(np.int64)
    if np.any((k < 0) | (k > n) | (n < 2)):
        raise ValueError("split_count: need 0 <= K <= N and N >= 2")
    seeds = np.broadcast_to(np.asarray(seed), k.shape)
    na = n // 2
    ka = np.array([np.random.default_rng(int(s)).hypergeometric(int(a), int(b - a), int(m))
                   for s, a, b, m in zip(seeds, k, n, na)], dtype=np.int64)
    return ka, na, k - ka, n - na


def direction_scores(forecast_dir, realised_dir, realised_ratio, threshold=1.5):
    """Score forecast directions on large realised shifts.

    A realised shift is *large* when it is ≥ ``threshold``× either way (``realised_ratio`` =
    realised / previous rate) and statistically supported (``realised_dir`` is "up" or
    "down"). A forecast is right when its direction equals the realised one ("no change" on a
    large shift is wrong). Returns a dict: k (int, right), n (int, large shifts), share (NaN
    when n = 0), ``large`` and ``right`` (bool arrays, one per category)."""
    f = np.asarray(forecast_dir, dtype=object)
    r = np.asarray(realised_dir, dtype=object)
    ratio = np.asarray(realised_ratio, dtype=float)
    with np.errstate(divide="ignore"):
        big = np.maximum(ratio, 1 / ratio) >= threshold
    large = big & ((r == "up") | (r == "down"))
    right = large & (f == r)
    n = int(large.sum())
    return {"k": int(right.sum()), "n": n, "share": right.sum() / n if n else float("nan"),
            "large": large, "right": right}


def direction_null(forecast_dir, realised_dir, reps=10_000, seed=0):
    """No-skill null for directional accuracy on the large shifts given (both arrays restricted
    to them): the forecaster's calls are permuted across those shifts, keeping how often it
    says up / down / no change while breaking any link to what happened. Returns a dict:
    ``observed`` (share right), ``null_mean``, ``null_lo``/``null_hi`` (2.5%/97.5% of the
    null shares) and ``p_value`` = P(null ≥ observed) (one-sided, with the +1 correction)."""
    f = np.asarray(forecast_dir, dtype=object)
    r = np.asarray(realised_dir, dtype=object)
    if f.size == 0:
        return {"observed": float("nan"), "null_mean": float("nan"), "null_lo": float("nan"),
                "null_hi": float("nan"), "p_value": float("nan")}
    rng = np.random.default_rng(seed)
    codes = {"up": 0, "down": 1, "no change": 2}
    fc, rc = np.vectorize(codes.get)(f), np.vectorize(codes.get)(r)
    perm = rng.permuted(np.broadcast_to(fc, (reps, fc.size)), axis=1)
    null = (perm == rc).mean(axis=1)
    obs = float((fc == rc).mean())
    return {"observed": obs, "null_mean": float(null.mean()), "null_lo": float(np.quantile(null, 0.025)),
            "null_hi": float(np.quantile(null, 0.975)), "p_value": float((1 + (null >= obs - 1e-12).sum()) / (reps + 1))}


def mcnemar(right_a, right_b):
    """Exact McNemar test of two methods' right/wrong calls on the same items (bool arrays):
    b = A right and B wrong, c = the reverse; p = two-sided binomial test of b against
    b + c at ½ (1.0 when b + c = 0). Returns a dict b, c, p_value."""
    a, b_ = np.asarray(right_a, bool), np.asarray(right_b, bool)
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    p = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    return {"b": b, "c": c, "p_value": float(p)}


# --------------------------------------------------------------------------- multiplicity


def holm(p):
    """Holm–Bonferroni adjusted p-values (familywise error control), same shape as ``p``."""
    p = np.asarray(p, dtype=float)
    m = p.size
    order = np.argsort(p)
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def benjamini_hochberg(p):
    """Benjamini–Hochberg adjusted p-values (q-values; false-discovery-rate control), same
    shape as ``p``."""
    p = np.asarray(p, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    adj = np.minimum.accumulate((m / np.arange(m, 0, -1) * p[order][::-1]))[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def rises_significantly(k_new, n_new, k_prev, n_prev, alpha=0.05, method="holm"):
    """Which categories' rates rise significantly from prev to new, across categories.

    Per category, an exact one-sided conditional test (K_new | K_new + K_prev binomial under
    equal rates) of new > prev; p-values are adjusted across categories by ``method``
    ("holm": familywise error; "bh": false discovery rate). Returns a DataFrame with
    p_value, p_adjusted and ``rises`` (bool), indexed like the inputs."""
    (kn, nn, kp, np_), index = _prep(k_new, n_new, k_prev, n_prev)
    _check_counts(kn, nn, index, "rises_significantly")
    _check_counts(kp, np_, index, "rises_significantly")
    kn, nn, kp, np_ = (np.atleast_1d(x) for x in (kn, nn, kp, np_))
    t = kn + kp
    pi0 = nn / (nn + np_)
    # P(K_new ≥ k | T) under π0: the regularised incomplete beta (works for effective counts too)
    p = np.where(kn > 0, special.betainc(np.maximum(kn, 1e-300), t - kn + 1, pi0), 1.0)
    adj = {"holm": holm, "bh": benjamini_hochberg}[method](p)
    return pd.DataFrame({"p_value": p, "p_adjusted": adj, "rises": adj <= alpha},
                        index=index if index is not None else pd.RangeIndex(len(kn)))


# --------------------------------------------------------------------------- graders, failures, clusters


def rogan_gladen(k, n, sens, spec, sens_n=None, spec_n=None, level=0.95, draws=20_000, seed=0):
    """Rate corrected for grader misclassification (Rogan & Gladen, 1978), with an interval
    that carries the uncertainty of the measured rate and of the grader's sensitivity and
    specificity. The one implementation in depsim: the rates table, the validation pages and
    :func:`depsim.grader_validation.rogan_gladen` all use it.

    corrected = (p + spec − 1) / (sens + spec − 1), clipped to [0, 1], where p is the
    Jeffreys estimate (k + ½)/(n + 1) of the flagged rate (the rate the rates table shows,
    so a perfect grader, sens = spec = 1, returns that rate unchanged). ``sens``/``spec``
    are fractions in [0, 1] measured on ``sens_n`` human positives / ``spec_n`` human
    negatives (None: treated as known exactly). When Youden's J = sens + spec − 1 ≤ 0 (a
    grader no better than chance) there is no correction: rate NaN, interval [0, 1].

    Interval: a parametric bootstrap of ``draws`` draws (numpy generator seeded with
    ``seed``): p ~ Beta(k + ½, n − k + ½), sens ~ Beta(sens·sens_n + ½, (1 − sens)·sens_n + ½),
    spec likewise; the equal-tailed ``level`` percentile interval of the clipped corrected
    rate. A draw with J ≤ 0 has no correction: it counts in ``invalid_draws`` and is taken,
    conservatively, as 0 for the lower quantile and 1 for the upper one (a validation that
    cannot rule out chance performance gives a wide interval, never a falsely narrow one).

    Returns a DataFrame, one row per input (fractions): rate, rate_unclipped, p_obs (the
    Jeffreys estimate used), lo, hi, youden, invalid_draws, informative (False when more than
    (1 − level)/2 of the draws have J ≤ 0: the correction is then not meaningful) and note
    ("clipped: ..." or "undefined: ..."; '' otherwise)."""
    if not 0 < level < 1:
        raise ValueError(f"rogan_gladen: level must be in (0, 1), got {level!r}")
    (k, n, se, sp), index = _prep(k, n, sens, spec)
    _check_counts(k, n, index, "rogan_gladen")
    _check(~((se >= 0) & (se <= 1) & (sp >= 0) & (sp <= 1)), index, "rogan_gladen", "sens and spec must be in [0, 1]")
    for name, m in (("sens_n", sens_n), ("spec_n", spec_n)):
        if m is not None and not np.all(np.asarray(m, float) > 0):
            raise ValueError(f"rogan_gladen: {name} must be > 0 (or None: known exactly), got {m!r}")
    k, n, se, sp = (np.atleast_1d(x) for x in (k, n, se, sp))
    rng = np.random.default_rng(seed)

    def post(x, m):
        if m is None:
            return np.broadcast_to(x[:, None], (x.size, draws))
        m = np.broadcast_to(np.asarray(m, float), x.shape)
        kk = x * m
        return rng.beta(kk[:, None] + 0.5, (m - kk)[:, None] + 0.5, size=(x.size, draws))

    p_d = rng.beta(k[:, None] + 0.5, (n - k)[:, None] + 0.5, size=(k.size, draws))
    se_d, sp_d = post(se, sens_n), post(sp, spec_n)
    den = se_d + sp_d - 1
    valid = den > 0
    corr = np.clip((p_d + sp_d - 1) / np.where(valid, den, 1.0), 0, 1)
    tail = (1 - level) / 2
    lo = np.quantile(np.where(valid, corr, 0.0), tail, axis=1)
    hi = np.quantile(np.where(valid, corr, 1.0), 1 - tail, axis=1)
    p0 = (k + 0.5) / (n + 1)
    youden = se + sp - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(youden > 0, (p0 + sp - 1) / np.where(youden > 0, youden, 1.0), np.nan)
    rate = np.clip(raw, 0, 1)
    lo, hi = np.where(youden > 0, lo, 0.0), np.where(youden > 0, hi, 1.0)
    note = np.where(youden <= 0, "undefined: sens + spec <= 1 (grader no better than chance)",
                    np.where(raw != rate, [f"clipped: the unclipped estimate {x:.4g} lies outside [0, 1]" for x in raw], ""))
    invalid = (~valid).sum(axis=1)
    return pd.DataFrame({"rate": rate, "rate_unclipped": raw, "p_obs": p0, "lo": lo, "hi": hi, "youden": youden,
                         "invalid_draws": invalid, "informative": invalid / draws <= tail, "note": note},
                        index=index if index is not None else pd.RangeIndex(len(k)))


def failed_bounds(k, n, failed, level=0.95, warn_share=0.05):
    """Bound a rate by its failed grades (a grader error is missing data, never a negative).

    Best case: every failed item negative (K of N + F); worst case: every one positive
    (K + F of N + F). Returns a DataFrame: ``best``, ``worst`` (Jeffreys rates), ``lo`` (the
    best case's lower Jeffreys bound), ``hi`` (the worst case's upper bound), ``failed_share``
    = F/(N + F) and ``warning`` (bool: failed_share > warn_share)."""
    (k, n, f), index = _prep(k, n, failed)
    _check(~np.isfinite(f) | (f < 0), index, "failed_bounds", "failed must be >= 0")
    best = jeffreys(k, n + f, level)
    worst = jeffreys(k + f, n + f, level)
    share = np.atleast_1d(f / (n + f))
    return pd.DataFrame({"best": best["rate"].to_numpy(), "worst": worst["rate"].to_numpy(),
                         "lo": best["lo"].to_numpy(), "hi": worst["hi"].to_numpy(),
                         "failed_share": share, "warning": share > warn_share},
                        index=index if index is not None else pd.RangeIndex(share.size))


def cluster_robust_rate(flags, clusters, level=0.95):
    """Rate of 0/1 ``flags`` whose items share conversations (``clusters``: one id per item),
    with Korn and Graubard's (1998) interval for proportions estimated from clustered samples.

    var = G/(G − 1) · Σ_g (Σ_{i∈g} (x_i − p̂))² / n² (CR1, G clusters). The design effect
    var / (p̂(1 − p̂)/n), at least 1 (1 when p̂ is 0 or 1), times the degrees-of-freedom factor
    (t_{n−1}/t_{G−1})² at the interval's level (the variance rests on G − 1 degrees of freedom,
    not n − 1; 1 when every item is its own conversation) is ``deff``; the sample shrinks to
    n_eff = n / deff, and the interval is the exact (Clopper–Pearson) one on (p̂·n_eff, n_eff),
    as the gates' bounds are. Returns a one-row DataFrame: rate, lo, hi (fractions), se, deff,
    n_eff, clusters."""
    x = np.asarray(flags, dtype=float)
    g = np.asarray(clusters)
    if x.shape != g.shape or x.size == 0:
        raise ValueError("cluster_robust_rate: flags and clusters must be equal-length and non-empty")
    n = x.size
    p = x.mean()
    _, inv = np.unique(g, return_inverse=True)
    resid = np.bincount(inv, weights=x - p)
    G = resid.size
    var = (G / (G - 1) if G > 1 else 1.0) * (resid ** 2).sum() / n ** 2
    base = max(p * (1 - p), 0.25 / n ** 2) / n
    deff = max(1.0, var / base) if var > 0 else 1.0
    if G < n:  # with about 7 events, Jeffreys on n / deff covered 0.87 at 95% (tests/test_stats.py); this 0.91
        t = (1 + level) / 2
        deff *= (stats.t.ppf(t, max(G - 1, 1)) / stats.t.ppf(t, n - 1)) ** 2
    n_eff = n / deff
    out = clopper_pearson(p * n_eff, n_eff, level)
    out["se"], out["deff"], out["n_eff"], out["clusters"] = np.sqrt(var), deff, n_eff, G
    return out


def bootstrap_summary(values, stat=np.median, reps=2000, seed=0, level=0.95):
    """Percentile bootstrap over categories of ``stat`` (a function of a 1-D array).

    Returns a dict: ``value`` (stat of the values), ``lo``/``hi`` (bootstrap interval) and
    ``n`` (values used). NaN interval when there are fewer than 2 values."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return {"value": float(stat(v)) if v.size else float("nan"), "lo": float("nan"), "hi": float("nan"), "n": int(v.size)}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(reps, v.size))
    boot = np.apply_along_axis(stat, 1, v[idx])
    tail = (1 - level) / 2
    return {"value": float(stat(v)), "lo": float(np.quantile(boot, tail)), "hi": float(np.quantile(boot, 1 - tail)),
            "n": int(v.size)}
