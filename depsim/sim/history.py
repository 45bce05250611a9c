"""Simulated release histories: the earlier releases' forecasts and outcomes.

Two generators, both reproducible from a seed:

* :func:`world_history` plays earlier releases of the simulated deployment world
  (depsim.sim.world): each release draws new propensity multipliers for Y and X and a tool
  fidelity for the resampling environment, and every method's forecast and X's realised
  production are binomial draws of the world's exact rates at the pipeline's sample sizes
  (LLM-graded categories at the LLM grader's subsample). The forecast errors therefore come
  from the world's mechanics (prefix drift, tool fidelity, adversarial framing), not from the
  error model that the statistics assume. ``params/history.csv`` is written by it::

      python -m depsim.sim.history params/history.csv --seed 11

* :func:`error_model_history` draws many independent synthetic histories under a named
  forecast-error model (for validating the error model against models it does not assume).

Rows carry each category's grader_id, so comparisons across releases are checked.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from depsim import stats
from depsim.grade import grader_id
from depsim.params import Endpoint
from depsim.sim.world import BASE, EXTRA, TOOL_CATEGORIES, World, WorldConfig
from depsim.taxonomy import load_taxonomy

TAXONOMY = Path(__file__).resolve().parents[2] / "params" / "taxonomy.yaml"
COLUMNS = ["release", "category", "group", "method", "grader_id", "k", "n", "rate", "lo", "hi",
           "prev_k", "prev_n", "prev_rate", "k_real", "n_real"]
ERROR_MODELS = ("assumed", "t3", "drift", "shock", "noisy_tools")
#: the simulated grader endpoint, whose model enters the LLM graders' ids
SIM_GRADER = Endpoint(base_url="sim://world/resample", model="sim-grader")


def _taxonomy():
    tax = load_taxonomy(TAXONOMY)
    return {c: (v.group, v.baseline, v.is_llm, grader_id(v, SIM_GRADER)) for c, v in tax.items()}


def _true(world: World, c: str, *args) -> float:
    """The world's exact rate, 0 for a category it never shows."""
    return world.true_rate(c, *args) if c in BASE or c in EXTRA else 0.0


def world_history(releases: int = 6, seed: int = 11, n: int = 4000, n_llm: int = 200,
                  n_challenging: int = 1000, spread: float = 0.8) -> pd.DataFrame:
    """Return ``releases`` earlier releases of the simulated world (columns COLUMNS), every
    taxonomy category (those the world never shows have zero counts), three methods:
    deployment_sim (X resampled on Y's prefixes, first message graded), challenging (baseline
    categories) and prev_production. k of n is the forecast's count, prev_k of prev_n Y's
    production count, k_real of n_real X's realised production count; rate/lo/hi are the
    forecast's Jeffreys estimate and 95% interval (fractions)."""
    rng = np.random.default_rng(seed)
    tax = _taxonomy()
    rows = []
    for r in range(1, releases + 1):
        y = dict(zip(BASE, np.exp(rng.normal(0, spread, len(BASE)))))
        x = dict(zip(BASE, np.exp(rng.normal(0, spread, len(BASE)))))
        world = World(WorldConfig(seed=seed + r, tool_fidelity=float(rng.uniform(0.2, 0.6))),
                      mult={"sim-y": y, "sim-x": x})
        for c, (group, baseline, llm, gid) in tax.items():
            m = n_llm if llm else n
            m_ch = min(n_llm, n_challenging) if llm else n_challenging
            p = {"prev": _true(world, c, "sim-y", "Y"), "new": _true(world, c, "sim-x", "X"),
                 "sim": _true(world, c, "sim-x", "Y", "resample", "first"),
                 "ch": _true(world, c, "sim-x", "challenging", "resample", "first")}
            k_prev, k_new, k_sim, k_ch = rng.binomial([m, m, m, m_ch], [p["prev"], p["new"], p["sim"], p["ch"]])
            prev = stats.jeffreys(k_prev, m)["rate"].iloc[0]
            for method, k, mm in (("deployment_sim", k_sim, m), ("challenging", k_ch, m_ch),
                                  ("prev_production", k_prev, m)):
                if method == "challenging" and not baseline:
                    continue
                j = stats.jeffreys(k, mm).iloc[0]
                rows.append({"release": f"sim-r{r}", "category": c, "group": group, "method": method,
                             "grader_id": gid, "k": int(k), "n": mm, "rate": j["rate"], "lo": j["lo"], "hi": j["hi"],
                             "prev_k": int(k_prev), "prev_n": m, "prev_rate": prev,
                             "k_real": int(k_new), "n_real": m})
    return pd.DataFrame(rows, columns=COLUMNS)


def error_model_history(model: str, histories: int = 200, releases: int = 5, seed: int = 0,
                        n: int = 4000, n_llm: int = 200, sigma: float = 0.4, spread: float = 0.8,
                        drift: float = 0.3, shock: float = 0.4, tool_sigma: float = 1.2,
                        bias: float = 1.0) -> pd.DataFrame:
    """Return ``histories`` independent synthetic histories (column ``history``) of one method
    ("deployment_sim") over the simulated world's categories, under a forecast-error model.

    Per release r and category c, X's true rate is Y's true world rate times exp(N(0,
    spread²)); the forecast's true rate is that divided by exp(η), with η = bias of the
    category group + error, where the error is, by ``model``:
    "assumed" N(0, σ²); "t3" σ·t₃ (heavy tails); "drift" N(0, σ²) + ``drift``·r (a bias that
    drifts per release); "shock" N(0, σ²) + s_r, s_r ~ N(0, shock²) shared by all categories
    of a release; "noisy_tools" N(0, σ²) but N(0, tool_sigma²) for the tool categories.
    The group biases are scaled by ``bias`` (0 with σ = 0: a perfect forecaster). Counts are
    binomial at n (rule-graded) or n_llm (LLM-graded) items; ``true_eta`` is each row's η."""
    if model not in ERROR_MODELS:
        raise ValueError(f"error_model_history: model must be one of {ERROR_MODELS}, got {model!r}")
    rng = np.random.default_rng(seed)
    tax = _taxonomy()
    world = World()
    cats = [c for c in tax if c in BASE or c in EXTRA]
    group = np.array([tax[c][0] for c in cats])
    m = np.array([n_llm if tax[c][2] else n for c in cats])
    p0 = np.array([world.true_rate(c, "sim-y", "Y") for c in cats])
    group_bias = {"disallowed": 0.2, "misalignment": -0.4, "evaluation_awareness": 0.3, "refusal": -0.1}
    mu = bias * np.array([group_bias.get(g, 0.0) for g in group])
    H, R, C = histories, releases, len(cats)
    shape = (H, R, C)
    if model == "t3":
        err = sigma * rng.standard_t(3, size=shape)
    else:
        sd = np.where(np.isin(cats, TOOL_CATEGORIES), tool_sigma, sigma) if model == "noisy_tools" else sigma
        err = rng.normal(0, 1, size=shape) * sd
    if model == "drift":
        err = err + drift * np.arange(R)[None, :, None]
    if model == "shock":
        err = err + rng.normal(0, shock, size=(H, R, 1))
    eta = mu + err
    p_new = np.minimum(p0 * np.exp(rng.normal(0, spread, size=shape)), 0.5)
    p_fc = np.minimum(p_new * np.exp(-eta), 0.5)
    mm = np.broadcast_to(m, shape)
    k_fc, k_real, k_prev = rng.binomial(mm, p_fc), rng.binomial(mm, p_new), rng.binomial(mm, np.broadcast_to(p0, shape))
    hh, rr, cc = (a.ravel() for a in np.meshgrid(np.arange(H), np.arange(R), np.arange(C), indexing="ij"))
    kf, nn = k_fc.ravel(), mm.ravel()
    j = stats.jeffreys(kf, nn)
    cats_a = np.array(cats)
    return pd.DataFrame({
        "history": hh, "release": np.char.add("r", (rr + 1).astype(str)), "category": cats_a[cc], "group": group[cc],
        "method": "deployment_sim", "grader_id": np.array([tax[c][3] for c in cats])[cc],
        "k": kf, "n": nn, "rate": j["rate"].to_numpy(), "lo": j["lo"].to_numpy(), "hi": j["hi"].to_numpy(),
        "prev_k": k_prev.ravel(), "prev_n": nn, "prev_rate": (k_prev.ravel() + 0.5) / (nn + 1),
        "k_real": k_real.ravel(), "n_real": nn, "true_eta": eta.ravel()})


def main(argv=None) -> None:
    """Command line: write :func:`world_history` to a CSV file."""
    ap = argparse.ArgumentParser(prog="python -m depsim.sim.history", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="CSV file to write (e.g. params/history.csv)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--releases", type=int, default=6)
    a = ap.parse_args(argv)
    world_history(releases=a.releases, seed=a.seed).to_csv(a.out, index=False, float_format="%.6g")
    print(f"wrote {a.out} (seed {a.seed}, {a.releases} releases)")


if __name__ == "__main__":
    main()
