"""The forecast-error model across releases (docs/design.md §6, "Forecast-error model").

For one forecast method and one category group, release r and category c, let the forecast
be a count K_f of n_f (the method's measurement) and the realised post-release count K of N.
With Poisson counts (rates are small):

    K_f ~ Poisson(n_f λ),    K ~ Poisson(N λ e^η),    η = μ + β t_r + ε,   ε ~ Normal(0, σ²)

λ is the forecast's true rate, η the log ratio of realised to forecast rate: ``μ`` is the
method's bias, ``β`` a drift per release (t_r is the release's position in time), ``σ`` the
multiplicative error beyond both counts' sampling noise.

**Fitting** conditions on the total T = K_f + K, which removes the unknown λ exactly:
K | T ~ Binomial(T, logistic(ln(N/n_f) + η)). The normal ε is integrated out by
Gauss–Hermite quadrature. A category with zero events in both counts has T = 0 and carries
no information: it cannot move the fit (where the old moment estimator let one such
category drive σ to 0). For each σ on a grid, (μ, β) are found by Newton steps (the
likelihood is log-concave in them), and σ gets a grid posterior (Laplace approximation over
μ and β). Weak priors: μ ~ N(0, 2²), β ~ N(0, 0.5²), σ ~ half-normal(1). The covariance of
(μ, β) is the larger of the model-based one and a sandwich clustered by release, so that a
shock shared by every category of a release is counted once per release, not per category.

**Each category's own scale**: a category's errors have their own σ_c, log σ_c ~ Cauchy(log σ,
ω) around its group's σ, with the spread ω fitted per group (empirical Bayes on a grid) and
each σ_c's posterior exact on a grid (:func:`category_scale`). With a handful of releases a
category stays near its group unless its data say otherwise; the σ_c then weight the
categories in the group's (μ, β), and the groups' σ prior is centred on the median category of
the method (:func:`fit_categories`), so two noisy categories neither widen their quiet
neighbours' intervals nor the other groups'.

**Predicting** a new release: η's posterior predictive (a mixture over the σ grid of
normals, heavier-tailed than any one of them when there are few releases; per category, a
mixture over its σ_c posterior, :func:`predictive_t_category`) is summarised as a Student t
(location, scale, df) matched at its 75% and 95% quantiles. The realised count's
predictive distribution then integrates the forecast's own Poisson–Jeffreys uncertainty
(λ ~ Gamma(K_f + ½, n_f), which makes K | η negative binomial) over that t.

**Calibration** uses the randomised probability integral transform (PIT) of the realised
count: a perfect forecaster's PIT is exactly uniform, so coverage (the share of the PIT
inside [α/2, 1 − α/2], taken as its expectation over the randomisation) is exactly nominal
in expectation, even for small discrete counts.

Everything here works on arrays with a leading "problem" axis so that many fits (methods,
groups, releases, simulated histories) run in one vectorised call.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from depsim import stats as S

__all__ = ["ErrorPrior", "fit_batch", "category_scale", "fit_categories", "predictive_t",
           "predictive_t_category", "count_cdf", "count_interval",
           "calibration", "fit_history", "predict", "forward_chain", "coverage_by", "flag_categories",
           "pit_histogram", "HISTORY_KEYS"]

GH_X, GH_W = np.polynomial.hermite_e.hermegauss(8)   # nodes for ∫ f(x) N(x; 0, 1) dx
GH_W = GH_W / GH_W.sum()
#: grid of σ for its posterior (natural-log units), finer near 0; trapezoid weights
SIGMA_GRID = np.r_[0.0, np.geomspace(0.03, 3.0, 17)]
_SIGMA_DW = np.gradient(SIGMA_GRID)
#: columns that identify one forecast row in a history table
HISTORY_KEYS = ["release", "category", "group", "method"]


@dataclass(frozen=True)
class ErrorPrior:
    """Prior standard deviations (natural-log units): bias μ, drift β per release, the
    half-normal scale of σ, and the log-sd of σ's empirical-Bayes prior around the σ shared
    by the pooled groups (see :func:`fit_batch`)."""
    mu_sd: float = 2.0
    beta_sd: float = 0.5
    sigma_scale: float = 1.0
    pool_log_sd: float = 0.7


def _rowterms(K, T, eta, sigma):
    """Per row: log-likelihood, its first and second derivative in η, with ε integrated out by
    adaptive Gauss–Hermite quadrature (nodes centred and scaled at the mode of each row's
    integrand, so a likelihood far narrower than σ is still resolved). K, T, eta broadcast to
    (..., M); sigma broadcasts to (..., 1). The derivatives are posterior expectations over
    the nodes, exact for the integral."""
    K, T = np.broadcast_to(K, eta.shape), np.broadcast_to(T, eta.shape)
    sigma = np.broadcast_to(sigma, eta.shape)
    x = np.zeros(eta.shape)
    for _ in range(8):   # Newton for the mode of log f(η + σx) − x²/2 (strictly concave in x)
        pi = special.expit(eta + sigma * x)
        grad = sigma * (K - T * pi) - x
        curv = 1.0 + sigma ** 2 * T * pi * (1 - pi)
        x = x + np.clip(grad / curv, -3.0, 3.0)
    pi = special.expit(eta + sigma * x)
    sc = 1.0 / np.sqrt(1.0 + sigma ** 2 * T * pi * (1 - pi))
    xs = x[..., None] + sc[..., None] * GH_X
    z = eta[..., None] + sigma[..., None] * xs
    logp = -np.logaddexp(0.0, -z)
    log1mp = logp - z
    lj = (K[..., None] * logp + (T - K)[..., None] * log1mp + np.log(GH_W) + np.log(sc)[..., None]
          - 0.5 * xs ** 2 + 0.5 * GH_X ** 2)
    mx = lj.max(-1, keepdims=True)
    e = np.exp(lj - mx)
    tot = e.sum(-1)
    ll = np.log(tot) + mx[..., 0]
    post = e / tot[..., None]
    pi = np.exp(logp)
    r = K[..., None] - T[..., None] * pi
    g = (post * r).sum(-1)
    h = (post * r * r).sum(-1) - g * g - (post * T[..., None] * pi * (1 - pi)).sum(-1)
    return ll, g, np.minimum(h, 0.0)


def _newton(K, T, off, X, sig, theta, P, iters):
    """Newton steps for (μ, β) at each σ (log-concave, so a step capped at length 1 is safe)."""
    for _ in range(iters):
        eta = off + (X * theta[:, :, None, :]).sum(-1)
        _, g, h = _rowterms(K, T, eta, sig)
        G = (g[..., None] * X).sum(-2) - theta @ P
        Xb = np.broadcast_to(X, g.shape + (2,))
        H = np.einsum("bsm,bsmi,bsmj->bsij", h, Xb, Xb) - P
        step = -np.linalg.solve(H, G[..., None])[..., 0]
        norm = np.linalg.norm(step, axis=-1, keepdims=True)
        theta = theta + step * np.minimum(1.0, 1.0 / np.maximum(norm, 1e-300))
        if np.max(norm) < 1e-6:
            break
    eta = off + (X * theta[:, :, None, :]).sum(-1)
    ll, g, h = _rowterms(K, T, eta, sig)
    Xb = np.broadcast_to(X, g.shape + (2,))
    H = np.einsum("bsm,bsmi,bsmj->bsij", h, Xb, Xb) - P
    return theta, ll, g, h, H


def fit_batch(K, T, off, t, cluster, prior: ErrorPrior = ErrorPrior(), drift: bool = True, iters: int = 30,
              pool=None, centre=None, row_scale=None):
    """Fit the error model to B problems at once.

    K, T, off, t, cluster: arrays (B, M) — realised count, total count K_f + K, offset
    ln(N / n_f), release time (centred on the training releases), and an integer release id
    per row (0..R−1); padding rows have T = 0. Drift is fitted only where a problem has ≥ 3
    releases with events (otherwise β = 0). ``pool`` (B,) optionally groups problems (e.g. the
    category groups of one method and release): σ then gets an empirical-Bayes prior, log-normal
    (sd ``prior.pool_log_sd``) around the median of the pooled groups' own σ, so that a group
    of one or two categories borrows strength from the others instead of resting on the prior.
    ``centre`` (B,) optionally gives that prior's median σ per problem instead (natural-log
    units; :func:`fit_categories` passes the pool's median category σ, which two noisy
    categories cannot move the way they move a noisy group's σ). ``row_scale`` (B, M)
    optionally multiplies σ per row (a category's own scale relative to its group's), so that
    noisy categories weigh less in (μ, β); σ is then the group's level of those scales.

    Returns a dict of arrays over problems: ``w`` (B, S) posterior weights over
    ``SIGMA_GRID``; ``sigma_mean`` / ``sigma2`` posterior means of σ and σ²; ``theta_grid``
    (B, S, 2) and ``Hinv_grid`` (B, S, 2, 2) the mode of (μ, β) and its covariance at each σ;
    ``theta`` (B, 2) the mode at the posterior-mean σ; ``D`` the variance of the releases'
    own effects around the trend (one-step release effects, R − p degrees of freedom) and
    ``tau2`` = max(0, D − the part the within-release model explains): the variance of a
    shock shared by every category of a release (0 where releases average fewer than two
    categories with events); ``releases`` R, ``p`` the number of mean
    parameters, ``XtXinv`` (B, 2, 2) the release-level design's inverse cross-product (for a
    new release's leverage) and ``drift`` (bool, β fitted)."""
    K, T, off, t = (np.asarray(x, float) for x in (K, T, off, t))
    cluster = np.asarray(cluster, int)
    B, M = K.shape
    Rmax = int(cluster.max()) + 1 if cluster.size else 1
    onehot = (cluster[..., None] == np.arange(Rmax)).astype(float) * (T > 0)[..., None]   # (B, M, R)
    has = onehot.any(1)                                                                     # (B, R)
    n_rel = has.sum(-1)
    use_drift = drift & (n_rel >= 3)
    t = np.where(use_drift[:, None], t, 0.0)
    X = np.stack([np.ones_like(t), t], -1)[:, None]                                         # (B, 1, M, 2)
    P = np.diag([1 / prior.mu_sd ** 2, 1 / prior.beta_sd ** 2])
    rs = np.ones((B, M)) if row_scale is None else np.asarray(row_scale, float)
    sig = SIGMA_GRID[None, :, None] * rs[:, None, :]
    theta, ll, g, h, H = _newton(K[:, None], T[:, None], off[:, None], X, sig,
                                 np.zeros((B, SIGMA_GRID.size, 2)), P, iters)
    loglik = (ll.sum(-1) - 0.5 * np.einsum("bsi,ij,bsj->bs", theta, P, theta)
              - 0.5 * np.linalg.slogdet(-H)[1])                                  # σ's marginal likelihood
    logprior = -0.5 * (SIGMA_GRID / prior.sigma_scale) ** 2 + np.log(_SIGMA_DW)
    if pool is not None:
        # centre: the median over the pooled groups of each group's own posterior-mean σ,
        # so that one unusually noisy group does not widen every other group's intervals
        _, pid = np.unique(np.asarray(pool), return_inverse=True)
        own = np.exp(loglik + logprior - (loglik + logprior).max(-1, keepdims=True))
        own_mean = (own * SIGMA_GRID).sum(-1) / own.sum(-1)
        if centre is None:
            centre = np.array([np.median(own_mean[pid == i]) for i in range(pid.max() + 1)])[pid]
        centre = np.log(np.maximum(np.asarray(centre, float), SIGMA_GRID[1]))
        ls = np.log(np.maximum(SIGMA_GRID, SIGMA_GRID[1] / 2))
        pooled = -0.5 * ((ls - centre[:, None]) / prior.pool_log_sd) ** 2 + np.log(_SIGMA_DW) - ls
        alone = (np.bincount(pid) == 1)[pid]          # a group with nobody to pool with keeps the prior
        logprior = np.where(alone[:, None], logprior, pooled)
    logpost = loglik + logprior
    w = np.exp(logpost - logpost.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    s2 = (w * SIGMA_GRID ** 2).sum(-1)
    Hinv_grid = np.linalg.inv(-H)
    # the state at the posterior-mean σ: (μ, β), the rows' scores and the release effects
    sbar = np.sqrt(s2)[:, None, None] * rs[:, None, :]
    th, _, g1, h1, H1 = _newton(K[:, None], T[:, None], off[:, None], X, sbar,
                                (w[..., None] * theta).sum(1)[:, None], P, 10)
    g1, h1, H1, th = g1[:, 0], h1[:, 0], H1[:, 0], th[:, 0]
    num = np.einsum("bm,bmr->br", g1, onehot)
    den = np.einsum("bm,bmr->br", -h1, onehot)
    d = np.where(has, num / np.maximum(den, 1e-300), 0.0)
    p = 1 + use_drift.astype(int)
    D = np.where(n_rel > p, (d ** 2).sum(-1) / np.maximum(n_rel - p, 1), np.nan)
    # what the within-release model alone expects of D: the release effects' own noise
    v_exp = np.where(has, 1.0 / np.maximum(den, 1e-300), 0.0).sum(-1) / np.maximum(n_rel, 1)
    tau2 = np.where(np.isfinite(D), np.maximum(np.nan_to_num(D) - v_exp, 0.0), 0.0)
    # with about one category per release a shared shock cannot be told from the category's
    # own error, which σ already carries: no separate shock term there
    per_release = (T > 0).sum(-1) / np.maximum(n_rel, 1)
    tau2 = np.where(per_release >= 2, tau2, 0.0)
    # release-level design (one row per release with events) for the leverage of a new release
    t_rel = np.einsum("bm,bmr->br", t * (T > 0), onehot) / np.maximum(onehot.sum(1), 1)
    Xr = np.stack([has.astype(float), t_rel * has], -1)
    XtX = np.einsum("bri,brj->bij", Xr, Xr) + np.diag([0.0, 1.0]) * (~use_drift)[:, None, None]
    XtXinv = np.linalg.pinv(XtX)
    return {"w": w, "sigma_mean": (w * SIGMA_GRID).sum(-1), "sigma2": s2, "theta": th,
            "theta_grid": theta, "Hinv_grid": Hinv_grid, "D": D, "tau2": tau2, "releases": n_rel,
            "p": p, "XtXinv": XtXinv, "drift": use_drift, "row_scale": rs}


#: grid of one category's own σ (finer than SIGMA_GRID: its hierarchical prior can be narrow)
CAT_GRID = np.r_[0.0, np.geomspace(0.02, 4.0, 40)]
_CAT_LS = np.log(np.maximum(CAT_GRID, CAT_GRID[1] / 2))
_CAT_DLS = np.gradient(_CAT_LS)
#: hyper-grids: the median log σ of a pool's categories, and the spread ω of log σ_c (Cauchy scale)
_HYP_A = np.log(np.geomspace(0.03, 3.0, 25))
_HYP_OMEGA = np.geomspace(0.05, 1.5, 10)


def category_scale(fit, K, T, off, t, cat, prior: ErrorPrior = ErrorPrior()):
    """Each category's own error scale σ_c, shrunk towards its group's σ.

    A category's η errors are Normal(0, σ_c²) around its group's bias and drift, with
    log σ_c ~ Cauchy(log σ_g, ω): σ_g the group's σ (its grid posterior in ``fit``, from
    :func:`fit_batch` on the same arrays), ω the spread of the group's categories around it, on a
    grid with a log-uniform hyperprior, its posterior per group. Each category's likelihood of
    σ_c is its rows' count likelihood at the group's (μ, β), with a Laplace term for (μ, β)
    estimated on the same rows (the group's Fisher information with this category's part taken
    at σ_c), so that a category alone in its group is not judged by residuals that its own mean
    already absorbed. With 4 releases a category's σ_c stays near its group's unless its own
    data say otherwise (the Cauchy tails let a clearly noisier category leave); a category
    without events, or absent, gets the group's predictive of σ_c, never a narrower one.

    K, T, off, t: (B, M) as for :func:`fit_batch`; ``cat`` (B, M) integer category codes
    0..C−1 shared by all problems. Returns a dict: ``w`` (B, C + 1,
    len(CAT_GRID)) posterior weights of σ_c (natural-log units) over ``CAT_GRID``, the last row
    for a category the history lacks; ``has`` (B, C) whether the category had events;
    ``omega`` (B,) the posterior mean spread ω; ``lik`` (B, C, len(CAT_GRID)) each category's
    likelihood of σ_c (scaled to a maximum of 1; 1 without events)."""
    K, T, off, t = (np.asarray(x, float) for x in (K, T, off, t))
    cat = np.asarray(cat, int)
    B, M = K.shape
    C = int(cat.max()) + 1 if cat.size else 1
    t = np.where(fit["drift"][:, None], t, 0.0)
    X = np.stack([np.ones_like(t), t], -1)                                                # (B, M, 2)
    XX = X[..., :, None] * X[..., None, :]                                                # (B, M, 2, 2)
    eta = off + (X * fit["theta"][:, None, :]).sum(-1)
    oh = ((cat[..., None] == np.arange(C)) & (T > 0)[..., None]).astype(float)            # (B, M, C)
    has = oh.any(1)
    J = CAT_GRID.size
    ll, _, h = _rowterms(K[:, None], T[:, None], np.repeat(eta[:, None], J, 1), CAT_GRID[None, :, None])  # (B, J, M)
    llc = np.einsum("bjm,bmc->bcj", ll, oh)
    Hc = np.einsum("bjm,bmc,bmik->bcjik", h, oh, XX, optimize=True)
    _, _, h1 = _rowterms(K, T, eta, np.sqrt(fit["sigma2"])[:, None] * fit["row_scale"])
    P = np.diag([1 / prior.mu_sd ** 2, 1 / prior.beta_sd ** 2])
    Hall = np.einsum("bm,bmik->bik", h1, XX) - P
    Hown = np.einsum("bm,bmc,bmik->bcik", h1, oh, XX)
    lc = llc - 0.5 * np.linalg.slogdet(-((Hall[:, None] - Hown)[:, :, None] + Hc))[1]      # (B, C, J)
    lc = np.where(has[..., None], lc - lc.max(-1, keepdims=True), 0.0)
    L = np.exp(lc)
    # prior of σ_c given the group: the group's σ posterior (fit["w"] over SIGMA_GRID) spread by
    # a Cauchy kernel of scale ω in log σ; ω has its own grid posterior per problem
    ls_g = np.log(np.maximum(SIGMA_GRID, CAT_GRID[1] / 2))
    zz = (_CAT_LS[None, None, :] - ls_g[None, :, None]) / _HYP_OMEGA[:, None, None]       # (O, S, J)
    kern = _CAT_DLS / (1 + zz ** 2)
    kern /= kern.sum(-1, keepdims=True)
    pr = np.einsum("bs,osj->boj", fit["w"], kern)                                          # (B, O, J)
    m = np.maximum(np.einsum("bcj,boj->bco", L, pr), 1e-300)
    logm = np.where(has[..., None], np.log(m), 0.0).sum(1)                                # (B, O)
    W = np.exp(logm - logm.max(-1, keepdims=True))
    W /= W.sum(-1, keepdims=True)
    post = L * np.einsum("bo,boj,bco->bcj", W, pr, 1 / m)
    new = np.einsum("bo,boj->bj", W, pr)
    post = np.where(has[..., None], post, new[:, None])
    post = np.concatenate([post, new[:, None]], 1)
    post /= post.sum(-1, keepdims=True)
    omega = (W * _HYP_OMEGA).sum(-1)
    return {"w": post, "has": has, "omega": omega, "lik": L}


def _population_centre(L, has, pool):
    """The median σ (natural-log units) of a pool's categories, (B,): the median over the pool's
    categories with events of each one's σ_c (exp of its posterior mean of log σ_c) under the
    population model log σ_c ~ Cauchy(a, ω), (a, ω) on a grid with flat hyperpriors (log ω
    uniform); NaN for a pool without events. A median of shrunken estimates: a few noisy categories cannot move it, and
    a category's few releases do not bias it the way its own raw estimate is biased."""
    B, C, J = L.shape
    A, O = _HYP_A.size, _HYP_OMEGA.size
    zz = (_CAT_LS - _HYP_A[:, None, None]) / _HYP_OMEGA[None, :, None]
    pj = _CAT_DLS / (1 + zz ** 2)
    pj = (pj / pj.sum(-1, keepdims=True)).reshape(A * O, J)
    m = np.maximum((L.reshape(B * C, J) @ pj.T).reshape(B, C, A * O), 1e-300)
    logm = np.where(has[..., None], np.log(m), 0.0).sum(1)
    pid = pd.factorize(np.asarray(pool))[0]
    acc = np.zeros((pid.max() + 1, A * O))
    np.add.at(acc, pid, logm)
    W = np.exp(acc - acc.max(-1, keepdims=True))[pid]
    W /= W.sum(-1, keepdims=True)
    post = L * ((W[:, None] / m).reshape(B * C, A * O) @ pj).reshape(B, C, J)
    sig = np.exp((post * _CAT_LS).sum(-1) / np.maximum(post.sum(-1), 1e-300))   # (B, C) shrunken σ_c
    sig = np.where(has, sig, np.nan)
    med = np.full(pid.max() + 1, np.nan)
    for i in range(pid.max() + 1):
        v = sig[pid == i]
        if np.isfinite(v).any():
            med[i] = np.nanmedian(v)
    return med[pid]


def fit_categories(K, T, off, t, cluster, cat, pool, prior: ErrorPrior = ErrorPrior(), drift: bool = True):
    """Fit the group model (:func:`fit_batch`) and each category's scale (:func:`category_scale`).

    Two passes. The first gives each category's likelihood of its own σ at its group's (μ, β)
    and its shrunken σ_c. The second refits the groups with (a) their empirical-Bayes prior of σ
    centred at the median σ of the pool's categories (:func:`_population_centre`), so that two
    noisy categories widen their own group's σ but not the other groups' (a median over four
    groups' σ is moved by one noisy group; for a group of about one category per release,
    whose σ also carries the release shock, the centre adds the pool's smallest shock variance
    τ²), and (b) each row's σ scaled by its category's σ_c
    relative to the group's, so that noisy categories weigh less in the group's (μ, β) and the
    quiet ones are not judged against a mean that the noisy ones moved. ``cat`` and ``pool`` as
    for :func:`category_scale` and :func:`fit_batch`. Returns (fit, scales): the dicts of
    :func:`fit_batch` and :func:`category_scale`."""
    fit = fit_batch(K, T, off, t, cluster, prior=prior, drift=drift, pool=pool)
    cs = category_scale(fit, K, T, off, t, cat, prior=prior)
    med = _population_centre(cs["lik"], cs["has"], pool)
    centre = np.where(np.isfinite(med), med, np.sqrt(fit["sigma2"]))
    # a group with about one category per release has no separate release shock (fit_batch sets
    # τ² = 0 there), so its σ carries the shock as well: its centre adds the pool's τ², the
    # smallest of its groups' (each τ̂² = max(0, ·) is biased upwards; a shock shows in all)
    pid = pd.factorize(np.asarray(pool))[0]
    per_release = (np.asarray(T) > 0).sum(1) / np.maximum(fit["releases"], 1)
    multi = per_release >= 2
    tau2 = np.array([np.min(fit["tau2"][(pid == i) & multi]) if ((pid == i) & multi).any() else 0.0
                     for i in range(pid.max() + 1)])[pid]
    centre = np.where(multi, centre, np.sqrt(centre ** 2 + tau2))
    # each row's category scale relative to its group's (geometric mean 1 over rows with events)
    lsc = (cs["w"][:, :-1] * _CAT_LS).sum(-1)                                     # (B, C) E log σ_c
    lr = np.take_along_axis(lsc, np.asarray(cat, int), 1)
    ev = np.asarray(T) > 0
    lr = np.where(ev, lr - (lr * ev).sum(1, keepdims=True) / np.maximum(ev.sum(1, keepdims=True), 1), 0.0)
    fit = fit_batch(K, T, off, t, cluster, prior=prior, drift=drift, pool=pool, centre=centre, row_scale=np.exp(lr))
    cs = category_scale(fit, K, T, off, t, cat, prior=prior)
    return fit, cs


def _mixture_quantiles(loc, sd, w, qs, iters=50):
    """Quantiles of Σ_c w_c N(loc_c, sd_c²), rows (B, C) → (B, len(qs)), by bisection."""
    lo = (loc - 12 * sd).min(-1)
    hi = (loc + 12 * sd).max(-1)
    out = []
    for q in qs:
        a, b = lo.copy(), hi.copy()
        for _ in range(iters):
            m = 0.5 * (a + b)
            F = (w * special.ndtr((m[:, None] - loc) / sd)).sum(-1)
            a, b = np.where(F < q, m, a), np.where(F < q, b, m)
        out.append(0.5 * (a + b))
    return np.stack(out, -1)


#: probability midpoints for the release-shock variance's scaled inverse-χ² posterior
_TAU_U = (np.arange(8) + 0.5) / 8


def predictive_t(fit, t_new):
    """Return (loc, scale, df) arrays (B,) of the Student t that summarises the posterior
    predictive of η (the log ratio realised / forecast rate) for a new release at time
    ``t_new`` (B,), same centring as the fit.

    The predictive is a mixture over the σ grid (posterior weights) and over the release
    shock variance τ² (8 nodes of τ̂²·(R − p)/χ²_{R−p}, its posterior with R − p degrees of
    freedom) of normals with mean μ_σ + β_σ t_new and variance σ² + x'Cov_σ x +
    τ²·(p/R + h), h the new release's leverage in the release-level trend (the p/R term
    returns the share of shock variance that fitting p mean parameters on R releases
    absorbs into them). The t is matched to the mixture's median and its 25/75% and 5/95%
    quantile spreads."""
    t_new = np.where(fit["drift"], np.asarray(t_new, float), 0.0)
    x = np.stack([np.ones_like(t_new), t_new], -1)                               # (B, 2)
    loc = np.einsum("bsi,bi->bs", fit["theta_grid"], x)
    var = np.einsum("bi,bsij,bj->bs", x, fit["Hinv_grid"], x) + SIGMA_GRID ** 2
    R, p = fit["releases"], fit["p"]
    lev = np.einsum("bi,bij,bj->b", x, fit["XtXinv"], x)
    dfr = np.maximum(R - p, 1)[:, None]
    tau2 = fit["tau2"][:, None] * dfr / stats.chi2.ppf(1 - _TAU_U, dfr)           # (B, 8)
    extra = tau2 * (p / np.maximum(R, 1) + lev)[:, None]
    B, S_, J = loc.shape[0], loc.shape[1], extra.shape[1]
    locs = np.repeat(loc, J, axis=1)
    sds = np.sqrt((var[:, :, None] + extra[:, None, :]).reshape(B, S_ * J))
    ws = np.repeat(fit["w"], J, axis=1) / J
    q = _mixture_quantiles(locs, sds, ws, [0.05, 0.25, 0.5, 0.75, 0.95])
    med = q[:, 2]
    d75 = 0.5 * (q[:, 3] - q[:, 1])
    d95 = 0.5 * (q[:, 4] - q[:, 0])
    dfs = np.r_[np.geomspace(1.0, 200.0, 400), 1e6]
    curve = stats.t.ppf(0.95, dfs) / stats.t.ppf(0.75, dfs)                 # decreasing in df
    df = np.interp(-(d95 / d75), -curve, dfs)
    return med, d75 / stats.t.ppf(0.75, df), df


def predictive_t_category(fit, t_new, prob, scale_w):
    """Return (loc, scale, df) arrays (N,) of the Student t summarising η's posterior predictive
    for N forecasts of a new release, each in problem ``prob`` (N,) of ``fit`` (from
    :func:`fit_batch`) at time ``t_new`` (B,), with its category's σ_c posterior ``scale_w``
    (N, len(CAT_GRID)) from :func:`category_scale`.

    η is Normal(m, v + σ_c² + τ²·(p/R + h)): m and v the mean and variance of μ + β t_new
    under the group's posterior (mixed over its σ grid), σ_c the category's own scale (mixed over
    its posterior), τ² the release shock (as in :func:`predictive_t`). The mixture is symmetric
    about m, so the t is matched to its 75% and 95% quantiles."""
    t_new = np.where(fit["drift"], np.asarray(t_new, float), 0.0)
    x = np.stack([np.ones_like(t_new), t_new], -1)                               # (B, 2)
    loc = np.einsum("bsi,bi->bs", fit["theta_grid"], x)
    var = np.einsum("bi,bsij,bj->bs", x, fit["Hinv_grid"], x)
    w = fit["w"]
    m = (w * loc).sum(-1)
    v = np.maximum((w * (var + loc ** 2)).sum(-1) - m ** 2, 0.0)
    R, p = fit["releases"], fit["p"]
    lev = np.einsum("bi,bij,bj->b", x, fit["XtXinv"], x)
    dfr = np.maximum(R - p, 1)[:, None]
    tau2 = fit["tau2"][:, None] * dfr / stats.chi2.ppf(1 - _TAU_U, dfr)           # (B, 8)
    extra = tau2 * (p / np.maximum(R, 1) + lev)[:, None]
    prob = np.asarray(prob, int)
    sd = np.sqrt(v[prob, None, None] + CAT_GRID[None, :, None] ** 2 + extra[prob][:, None, :])   # (N, J, 8)
    ww = np.broadcast_to(scale_w[..., None] / extra.shape[1], sd.shape).reshape(len(prob), -1)
    sd = sd.reshape(len(prob), -1)
    ww = ww / ww.sum(-1, keepdims=True)
    d = []
    for q in (0.75, 0.95):           # P(|η − m| ≤ d) = 2q − 1, by bisection
        a, b = np.zeros(len(prob)), 12 * sd.max(-1)
        for _ in range(40):
            mid = 0.5 * (a + b)
            F = (ww * special.ndtr(mid[:, None] / sd)).sum(-1)
            a, b = np.where(F < q, mid, a), np.where(F < q, b, mid)
        d.append(0.5 * (a + b))
    d75, d95 = d
    dfs = np.r_[np.geomspace(1.0, 200.0, 400), 1e6]
    curve = stats.t.ppf(0.95, dfs) / stats.t.ppf(0.75, dfs)                 # decreasing in df
    df = np.interp(-(d95 / np.maximum(d75, 1e-300)), -curve, dfs)
    return m[prob], d75 / stats.t.ppf(0.75, df), df


_U = (np.arange(128) + 0.5) / 128   # probability midpoints for integrating over η's t


def _eta_nodes(loc, scale, df):
    """η at the probability midpoints _U of each row's t (ppf computed once per distinct df)."""
    loc, scale, df = np.broadcast_arrays(*(np.asarray(x, float) for x in (loc, scale, df)))
    u, inv = np.unique(df.ravel(), return_inverse=True)
    q = stats.t.ppf(_U, u[:, None])[inv].reshape(df.shape + _U.shape)
    return np.clip(loc[..., None] + scale[..., None] * q, -60.0, 60.0)


def count_cdf(k, k_f, n_f, n_real, loc, scale, df):
    """Return P(K ≤ k) (fraction) of the realised count under the predictive distribution:
    K | η ~ NegBin(K_f + ½, n_f / (n_f + N e^η)) integrated over η ~ t(loc, scale, df).
    All arguments broadcast (one value per forecast row); k < 0 gives 0."""
    k, k_f, n_f, n_real = (np.asarray(x, float) for x in (k, k_f, n_f, n_real))
    eta = _eta_nodes(loc, scale, df)
    p = 1.0 / (1.0 + (n_real / n_f)[..., None] * np.exp(eta))
    c = special.betainc(k_f[..., None] + 0.5, np.maximum(k, 0)[..., None] + 1.0, p).mean(-1)
    return np.where(k < 0, 0.0, c)


def count_interval(level, k_f, n_f, n_real, loc, scale, df):
    """Return (lo, hi) integer arrays: the central ``level`` predictive interval of the realised
    count (lo = smallest k with P(K ≤ k) ≥ (1−level)/2, hi likewise at (1+level)/2)."""
    out = []
    for q in ((1 - level) / 2, (1 + level) / 2):
        a = np.full(np.shape(k_f), -1.0)
        b = np.asarray(n_real, float) * np.ones(np.shape(k_f))
        for _ in range(int(np.ceil(np.log2(np.max(b) + 2))) + 1):
            m = np.floor(0.5 * (a + b))
            ok = count_cdf(m, k_f, n_f, n_real, loc, scale, df) >= q
            a, b = np.where(ok, a, m), np.where(ok, m, b)
        out.append(b.astype(int))
    return out[0], out[1]


def calibration(k, k_f, n_f, n_real, loc, scale, df, level=0.9, seed=0):
    """Posterior-predictive calibration of realised counts, one row per forecast.

    Returns a DataFrame: ``cdf_below`` = P(K < k), ``cdf_at`` = P(K ≤ k), ``covered``
    (fraction in [0, 1]: the share of the PIT segment [P(K<k), P(K≤k)] inside
    [(1−level)/2, (1+level)/2], whose mean is exactly ``level`` for a perfect forecaster),
    ``inside`` (bool: k inside the conservative integer interval), ``pit`` (randomised PIT,
    uniform under calibration, for a histogram) and ``z`` = Φ⁻¹(pit)."""
    k = np.asarray(k, float)
    F1 = count_cdf(k - 1, k_f, n_f, n_real, loc, scale, df)
    F2 = count_cdf(k, k_f, n_f, n_real, loc, scale, df)
    a, b = (1 - level) / 2, (1 + level) / 2
    width = np.maximum(F2 - F1, 1e-300)
    cov = np.clip((np.minimum(F2, b) - np.maximum(F1, a)) / width, 0.0, 1.0)
    pit = F1 + np.random.default_rng(seed).uniform(size=np.shape(F1)) * (F2 - F1)
    pit = np.clip(pit, 1e-12, 1 - 1e-12)
    return pd.DataFrame({"cdf_below": F1, "cdf_at": F2, "covered": cov,
                         "inside": (F1 < b) & (F2 >= a), "pit": pit, "z": stats.norm.ppf(pit)})


# --------------------------------------------------------------------------- on history tables


def _release_order(h: pd.DataFrame) -> dict:
    return {r: i for i, r in enumerate(pd.unique(h["release"]))}


def _pack(problems):
    """Pad a list of per-problem DataFrames (columns K, T, off, t, cluster) to (B, M) arrays."""
    M = max(1, max(len(p) for p in problems))
    arr = {c: np.zeros((len(problems), M)) for c in ("K", "T", "off", "t")}
    arr["cluster"] = np.zeros((len(problems), M), int)
    arr["cat"] = np.zeros((len(problems), M), int)
    for i, p in enumerate(problems):
        for c in arr:
            arr[c][i, :len(p)] = p[c].to_numpy()
    return arr


def _rows(train: pd.DataFrame, order: dict, centre: float, codes: dict | None = None) -> pd.DataFrame:
    """The fit's per-row inputs (K, T, off, t, cluster, cat) of a training table (``cat``: the
    category's code in ``codes``, 0 without)."""
    k_f, n_f = train["k"].to_numpy(float), train["n"].to_numpy(float)
    K, N = train["k_real"].to_numpy(float), train["n_real"].to_numpy(float)
    rel = train["_rel"].to_numpy() if "_rel" in train else train["release"].map(order).to_numpy()
    _, cl = np.unique(rel, return_inverse=True)
    cat = train["category"].map(codes).to_numpy(int) if codes is not None else np.zeros(len(train), int)
    return pd.DataFrame({"K": K, "T": K + k_f, "off": np.log(N / n_f), "t": rel - centre, "cluster": cl,
                         "cat": cat})


def _check_history(h: pd.DataFrame, who: str):
    need = {"release", "category", "group", "method", "k", "n", "k_real", "n_real"}
    missing = need - set(h.columns)
    if missing:
        raise ValueError(f"{who}: history lacks columns {sorted(missing)} (the count model needs the "
                         "forecast's k of n and the realised k_real of n_real)")


def fit_history(history: pd.DataFrame, prior: ErrorPrior = ErrorPrior(), drift: bool = True,
                by=("method", "group")) -> pd.DataFrame:
    """Fit the error model per (method, group) on a history table (columns release,
    category, group, method, k, n, k_real, n_real; releases in time order of first
    appearance). Returns one row per (method, group): releases, rows, the posterior mean of
    σ and posterior-mode bias μ and drift β at that σ (natural-log units; β per release)."""
    _check_history(history, "fit_history")
    order = _release_order(history)
    keys, problems = [], []
    for key, g in history.groupby(list(by), sort=True):
        centre = np.mean([order[r] for r in pd.unique(g["release"])])
        keys.append(key)
        problems.append(_rows(g, order, centre))
    arr = _pack(problems)
    arr.pop("cat")
    fit = fit_batch(**arr, prior=prior, drift=drift)
    th = fit["theta"]
    return pd.DataFrame({**{b: [k[i] for k in keys] for i, b in enumerate(by)},
                         "releases": fit["releases"], "rows": [len(p) for p in problems],
                         "sigma": fit["sigma_mean"], "bias": th[:, 0], "drift": th[:, 1]})


def predict(history: pd.DataFrame, forecasts: pd.DataFrame, prior: ErrorPrior = ErrorPrior(),
            drift: bool = True, by=("method", "group")) -> pd.DataFrame:
    """Return ``forecasts`` (rows with method, group, k, n and, optionally, category) with the
    predictive log-ratio t (``err_loc``, ``err_scale``, ``err_df``, natural-log units) fitted
    on ``history`` for its (method, group) and its category's own error scale
    (:func:`category_scale`; a row without a category, or a category the history lacks, gets
    the scale of a new category of its method), for a release one step after the history's
    last, and ``err_releases`` (earlier releases with events that the fit used; 0 = prior
    only)."""
    fc = forecasts.copy()
    if history is None or history.empty:
        history = pd.DataFrame(columns=["release", "category", "group", "method", "k", "n", "k_real", "n_real"])
    _check_history(history, "predict")
    order = _release_order(history)
    t_new_abs = len(order)
    keys = list(dict.fromkeys(map(tuple, fc[list(by)].to_numpy())))
    codes = {c: i for i, c in enumerate(pd.unique(history["category"]))}
    problems, t_new = [], []
    for key in keys:
        g = history[np.logical_and.reduce([history[b] == v for b, v in zip(by, key)])] if len(history) else history
        rels = [order[r] for r in pd.unique(g["release"])]
        centre = np.mean(rels) if rels else t_new_abs
        problems.append(_rows(g, order, centre, codes) if len(g)
                        else pd.DataFrame(columns=["K", "T", "off", "t", "cluster", "cat"]))
        t_new.append(t_new_abs - centre)
    pools = pd.factorize(pd.Series([tuple(k for b, k in zip(by, key) if b != "group") if "group" in by else i
                                    for i, key in enumerate(keys)]))[0]
    arr = _pack(problems)
    cat = arr.pop("cat")
    # the last code (len(codes)) stands for a category the history lacks
    fit, cs = fit_categories(**arr, cat=np.where(arr["T"] > 0, cat, len(codes)), pool=pools, prior=prior,
                             drift=drift)
    idx = {k: i for i, k in enumerate(keys)}
    pos = np.array([idx[tuple(x)] for x in fc[list(by)].to_numpy()], int)
    fcode = (fc["category"].map(codes).fillna(len(codes)).to_numpy(int) if "category" in fc
             else np.full(len(fc), len(codes)))
    loc, scale, df = predictive_t_category(fit, np.array(t_new), pos, cs["w"][pos, fcode])
    fc["err_loc"], fc["err_scale"], fc["err_df"] = loc, scale, df
    fc["err_releases"] = fit["releases"][pos]
    return fc


def forward_chain(history: pd.DataFrame, min_train: int = 1, level: float = 0.9,
                  prior: ErrorPrior = ErrorPrior(), drift: bool = True, by=("method", "group"),
                  problem=None, intervals: bool = True) -> pd.DataFrame:
    """Forward-chaining validation: for each release r with at least ``min_train`` earlier
    releases, fit on the releases before r (per ``by``) and predict r's realised counts.

    ``problem`` optionally names a column (e.g. a simulated-history id) whose values are
    independent histories, all fitted in the same vectorised call. Returns the history rows
    that were predicted, with err_loc/err_scale/err_df, ``train_releases``, the count
    interval ``pred_k_lo``/``pred_k_hi`` at ``level`` (when ``intervals``) and
    :func:`calibration`'s columns. Each prediction uses its category's own error scale
    (:func:`fit_categories`); the groups of one method and step share σ's empirical-Bayes
    prior (``pool`` in :func:`fit_batch`) when ``by`` includes "group"."""
    _check_history(history, "forward_chain")
    h = history.reset_index(drop=True)
    part = pd.factorize(h[problem])[0] if problem is not None else np.zeros(len(h), int)
    # release order of first appearance within each independent history
    rel = pd.Series(list(zip(part, h["release"]))).pipe(lambda x: pd.factorize(x)[0])
    first = pd.Series(rel).groupby(part).transform("min").to_numpy()
    rel = rel - first
    key = pd.factorize(pd.Series(list(zip(part, *(h[b] for b in by)))))[0]
    order = np.lexsort((rel, key))
    key_s, rel_s = key[order], rel[order]
    starts = np.searchsorted(key_s, np.arange(key.max() + 1))
    # problems: one per (key, step i) with test rows at release i
    kr = pd.DataFrame({"key": key_s, "rel": rel_s, "pos": np.arange(len(h))})
    steps = kr.groupby(["key", "rel"], sort=True)["pos"].agg(["min", "max"]).reset_index()
    steps = steps[(steps["rel"] >= min_train)]
    if steps.empty:
        return pd.DataFrame()
    B = len(steps)
    cnt = (steps["min"] - starts[steps["key"]]).to_numpy()          # train rows: releases before i
    M = max(1, int(cnt.max()))
    idx = starts[steps["key"].to_numpy()][:, None] + np.arange(M)
    valid = np.arange(M) < cnt[:, None]
    idx = np.where(valid, idx, 0)
    src = order[idx]
    k_f, n_f = h["k"].to_numpy(float)[src], h["n"].to_numpy(float)[src]
    K, N = h["k_real"].to_numpy(float)[src], h["n_real"].to_numpy(float)[src]
    r_train = rel[src]
    centre = np.where(cnt > 0, (r_train * valid).sum(1) / np.maximum(cnt, 1), steps["rel"].to_numpy())
    arrays = {"K": np.where(valid, K, 0.0), "T": np.where(valid, K + k_f, 0.0),
              "off": np.where(valid, np.log(N / n_f), 0.0), "t": np.where(valid, r_train - centre[:, None], 0.0),
              "cluster": np.where(valid, r_train, 0)}
    if "group" in by:
        rest = [b for b in by if b != "group"]
        first_row = order[steps["min"].to_numpy()]
        pools = pd.factorize(pd.Series(list(zip(part[first_row], *(h[b].to_numpy()[first_row] for b in rest),
                                                steps["rel"]))))[0]
    else:
        pools = np.arange(B)
    code = pd.factorize(h["category"])[0]
    fit, cs = fit_categories(**arrays, cat=np.where(valid, code[src], 0), pool=pools, prior=prior, drift=drift)
    # the test rows of each problem
    lens = (steps["max"] - steps["min"] + 1).to_numpy()
    prob = np.repeat(np.arange(B), lens)
    pos = np.concatenate([np.arange(a, b + 1) for a, b in zip(steps["min"], steps["max"])])
    rows = order[pos]
    # a category first seen in the predicted release takes the last row: "the history lacks it"
    last = cs["w"].shape[1] - 1
    loc, scale, df = predictive_t_category(fit, steps["rel"].to_numpy() - centre, prob,
                                           cs["w"][prob, np.minimum(code[rows], last)])
    out = h.iloc[rows].reset_index(drop=True)
    out = out.assign(train_releases=fit["releases"][prob], err_loc=loc, err_scale=scale, err_df=df)
    args = (out["k"].to_numpy(float), out["n"].to_numpy(float), out["n_real"].to_numpy(float),
            out["err_loc"].to_numpy(), out["err_scale"].to_numpy(), out["err_df"].to_numpy())
    if intervals:
        out["pred_k_lo"], out["pred_k_hi"] = count_interval(level, *args)
    cal = calibration(out["k_real"].to_numpy(float), *args, level=level)
    # a scored table's own "covered" (the confidence-interval check) is replaced, not duplicated
    return pd.concat([out.drop(columns=[c for c in cal.columns if c in out]), cal], axis=1)


def coverage_by(chained: pd.DataFrame, by=("method", "group"), level: float = 0.9) -> pd.DataFrame:
    """Return forward-chained calibration per ``by``: predictions n, ``coverage`` (mean
    fractional coverage of the realised count by the ``level`` predictive interval; nominal =
    level), its standard error ``se`` under coverage = level, ``inside`` (conservative
    integer-interval share) and a two-sided p-value of coverage = level (normal
    approximation). Predictions of one release share its shocks (a drift every category
    felt), so ``se`` is the binomial one times the square root of ``deff``, the design effect
    of the coverage indicators clustered by release (≥ 1; 1 without a ``release`` column)."""
    g = chained.groupby(list(by), sort=False)
    out = g.agg(n=("covered", "size"), coverage=("covered", "mean"), inside=("inside", "mean"),
                mean_z2=("z", lambda z: float(np.mean(np.square(z))))).reset_index()
    out["deff"] = g.apply(lambda x: _release_deff(x, level), include_groups=False).to_numpy() if len(out) else []
    out["se"] = np.sqrt(level * (1 - level) / out["n"] * out["deff"])
    out["p_value"] = 2 * stats.norm.sf(np.abs(out["coverage"] - level) / out["se"])
    out["nominal"] = level
    return out


def _release_deff(x: pd.DataFrame, level: float) -> float:
    """Design effect of coverage indicators clustered by release, about coverage = ``level``:
    the CR1 variance of their mean over the binomial one, at least 1."""
    if "release" not in x or x["release"].nunique() < 2:
        return 1.0
    resid = (x["covered"] - level).groupby(x["release"].to_numpy()).sum().to_numpy()
    g, n = len(resid), len(x)
    var = g / (g - 1) * float(np.sum(resid ** 2)) / n ** 2
    return max(1.0, var / (level * (1 - level) / n))


def flag_categories(chained: pd.DataFrame, level: float = 0.9, alpha: float = 0.05,
                    by=("method", "category"), band: float = 0.05) -> pd.DataFrame:
    """Flag the categories whose forward-chained predictive intervals are miscalibrated.

    Per (method, category): coverage of the realised count (nominal ``level``), and a
    dispersion test on the PIT normal scores z (Σz² ~ χ²_n when calibrated; a larger sum means
    the intervals are too narrow, a smaller one too wide). The two p-values are combined
    (Bonferroni, ×2) and Benjamini–Hochberg controls the false-discovery rate across all
    categories at ``alpha``. A category is flagged when that test rejects (q ≤ ``alpha``) and its
    coverage lies outside ``level`` ± ``band`` (fraction; the acceptance band), so that a
    detectable but small departure is not called a failure, and a few predictions that miss by
    chance are not either. Returns one row per (method, category) with n, coverage, mean_z2,
    p_value, q_value, ``outside_band`` (bool: coverage outside the band, however few the
    predictions), ``flagged`` (bool) and ``why`` ("too narrow", "too wide", "")."""
    t = coverage_by(chained, by, level)
    z2 = chained.groupby(list(by), sort=False)["z"].apply(lambda z: float(np.sum(np.square(z)))).to_numpy()
    p_disp = 2 * np.minimum(stats.chi2.sf(z2, t["n"]), stats.chi2.cdf(z2, t["n"]))
    p = np.minimum(1.0, 2 * np.minimum(t["p_value"].to_numpy(), np.minimum(p_disp, 1.0)))
    t["p_value"] = p
    t["q_value"] = S.benjamini_hochberg(p)
    t["outside_band"] = (t["coverage"] - level).abs() > band
    t["flagged"] = (t["q_value"] <= alpha) & t["outside_band"]
    narrow = t["coverage"] < level
    t["why"] = np.where(t["flagged"], np.where(narrow, "too narrow", "too wide"), "")
    return t


def pit_histogram(pit, bins: int = 10) -> pd.DataFrame:
    """Return the PIT histogram: per bin of [0, 1] its ``lo``, ``hi``, ``count`` and ``share``
    (fraction; a calibrated forecaster gives 1/bins everywhere, a ∪ shape means intervals too
    narrow, a ∩ shape too wide)."""
    counts, edges = np.histogram(np.asarray(pit, float), bins=bins, range=(0.0, 1.0))
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "count": counts,
                         "share": counts / max(counts.sum(), 1)})
