"""The simulated world's truth: forecasts and measurements set against the exact rates the
world knows (page 6 of a simulated release, and the tests)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from depsim import stats
from depsim.params import Release
from depsim.sim.world import World, WorldConfig


def world_of(rel: Release) -> World:
    """Return the simulated world of a release (which must have a ``world:`` section)."""
    return World(WorldConfig(**rel.world.model_dump()))


def against_truth(world, scored: pd.DataFrame, reweight=None, power: float = 0.8, draws: int = 2000,
                  level: float = 0.95, threshold: float = 1.5, seed: int = 0,
                  view: str = "first") -> tuple[pd.DataFrame, str]:
    """Return (table, note) comparing a simulated release with its world's exact rates.

    Per category: the true rates (per 100k), the true change new/prev and the measured one
    and whether their directions agree; for true shifts ≥ ``threshold``× (``true_large``):
    ``sim_power``, the probability that the deployment simulation's sample (its n against Y's
    prev_n, at the world's exact sim and prev rates) calls the true direction under the
    evidence rule (``draws`` binomial draws), ``detectable`` (sim_power ≥ ``power``), the
    simulation's call (``sim_direction``), ``recovered`` (its call is the true direction) and
    ``why_not`` for undetectable shifts ("sample too small" or "simulation biased": its exact
    rate does not move the true way). The note gives the undetectable shifts, the exact prefix
    error with and without reweighting (when the release reweights by intent) and where the
    reweighting shares came from. ``view`` is what the simulation grades ("first" in tool
    mode stop, "turn" in replay/simulate; see World.true_rate)."""
    shares = reweight.shares if reweight is not None and reweight.column == "intent" else None
    truth = world.truth_table(sorted(scored["category"].unique()), view=view, shares=shares)
    real = scored.drop_duplicates("category").set_index("category")
    truth["measured_change"] = truth["category"].map(real["realised_change"])
    truth["same_direction"] = (truth["true_change"] > 1) == (truth["measured_change"] > 1)
    truth["true_large"] = np.maximum(truth["true_change"], 1 / truth["true_change"]) >= threshold
    sim = scored[scored["method"] == "deployment_sim"].set_index("category")
    rng = np.random.default_rng(seed)
    pw, why = [], []
    for _, t in truth.iterrows():
        c = t["category"]
        if not t["true_large"] or c not in sim.index or not np.isfinite(sim.loc[c, "prev_n"]):
            pw.append(np.nan)
            why.append("")
            continue
        n_s, n_p = int(round(sim.loc[c, "n"])), int(round(sim.loc[c, "prev_n"]))
        ks, kp = rng.binomial(n_s, t["sim"], draws), rng.binomial(n_p, t["prev"], draws)
        want = "up" if t["true_change"] > 1 else "down"
        p = float((stats.direction(ks, np.full(draws, n_s), kp, np.full(draws, n_p), level) == want).mean())
        pw.append(p)
        moves = (t["sim"] > t["prev"]) == (t["true_change"] > 1)
        why.append("" if p >= power else ("sample too small" if moves else "simulation biased"))
    truth["sim_power"] = pw
    truth["detectable"] = truth["sim_power"] >= power
    truth["sim_direction"] = truth["category"].map(sim["direction"]) if "direction" in sim else np.nan
    truth["recovered"] = truth["sim_direction"] == np.where(truth["true_change"] > 1, "up", "down")
    truth["why_not"] = why
    notes = []
    missed = truth[truth["true_large"] & ~truth["detectable"]]
    if len(missed):
        notes.append("True shifts ≥ %.1f× that the simulation's sample could not detect (power < %.0f%%): %s." % (
            threshold, 100 * power, "; ".join(f"{r.category} ({r.true_change:.2f}×, power {r.sim_power:.0%}, {r.why_not})"
                                              for r in missed.itertuples())))
    if "sim_rw" in truth:
        before = np.exp(np.log(stats.sme(truth["sim"], truth["sim_self"])).mean())
        after = np.exp(np.log(stats.sme(truth["sim_rw"], truth["sim_self"])).mean())
        src = getattr(reweight, "source", None) or "not declared"
        notes.append(f"Exact prefix error (geometric mean SME of sim against sim_self): {before:.3f}×; after reweighting "
                     f"to the declared forecast mix: {after:.3f}× (share removed {1 - np.log(after) / np.log(before):.0%}). "
                     f"Reweighting shares: {src}.")
    cols = [c for c in ("prev", "new", "sim", "sim_self", "sim_rw") if c in truth]
    return truth.assign(**{c: truth[c] * 1e5 for c in cols}), " ".join(notes)
