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


def against_truth(world, scored: pd.DataFrame, reweight=None) -> tuple[pd.DataFrame, str]:
    """Return (table, note) comparing a simulated release with its world's exact rates: per
    category the true rates (per 100k), true and measured change and whether their directions
    agree; the note gives the exact prefix error with and without reweighting (when the
    release reweights by intent), else ''."""
    shares = reweight.shares if reweight is not None and reweight.column == "intent" else None
    truth = world.truth_table(sorted(scored["category"].unique()), shares=shares)
    real = scored.drop_duplicates("category").set_index("category")
    truth["measured_change"] = truth["category"].map(real["realised_change"])
    truth["same_direction"] = (truth["true_change"] > 1) == (truth["measured_change"] > 1)
    note = ""
    if "sim_rw" in truth:
        before = np.exp(np.log(stats.sme(truth["sim"], truth["sim_self"])).mean())
        after = np.exp(np.log(stats.sme(truth["sim_rw"], truth["sim_self"])).mean())
        note = (f"Exact prefix error (geometric mean SME of sim against sim_self): {before:.3f}×; after reweighting "
                f"to the forecast mix: {after:.3f}× (share removed {1 - np.log(after) / np.log(before):.0%}).")
    cols = [c for c in ("prev", "new", "sim", "sim_self", "sim_rw") if c in truth]
    return truth.assign(**{c: truth[c] * 1e5 for c in cols}), note
