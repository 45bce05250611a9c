"""Stage 5: the three forecasts of X's post-release rate per category (docs/design.md §1, §6).

- ``deployment_sim``: X's rate on Y's prefixes (target ``sim``);
- ``challenging``: X's rate on the challenging set, for ``baseline: true`` categories only;
- ``prev_production``: Y's production rate (target ``prod_prev``): "nothing changes";
- ``deployment_sim_reweighted``: the deployment simulation with its prefixes reweighted
  towards a forecast traffic mix (target ``sim_rw``), when the release asks for it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

METHODS = {"deployment_sim": "sim", "challenging": "challenging", "prev_production": "prod_prev",
           "deployment_sim_reweighted": "sim_rw"}


class GraderMismatch(ValueError):
    """Rates measured by different graders (grader_ids differ) cannot be compared."""


def check_comparable(rates: pd.DataFrame) -> None:
    """Raise GraderMismatch when one category was graded by different grader_ids across
    targets."""
    ids = rates.groupby("category")["grader_id"].nunique()
    bad = ids[ids > 1]
    if len(bad):
        raise GraderMismatch(f"categories graded by different graders across targets, refusing to compare: "
                             f"{', '.join(bad.index)}")


def forecasts(rates: pd.DataFrame) -> pd.DataFrame:
    """Return one row per (category, method): forecast rate and interval (fractions), k, n,
    grader_id, the previous production rate, and the forecast direction of change against it
    ("up", "down"; "none" for prev_production itself)."""
    check_comparable(rates)
    r = rates.set_index(["target", "category"])
    prev = r.loc["prod_prev", "rate"] if "prod_prev" in r.index.get_level_values(0) else pd.Series(dtype=float)
    rows = []
    for method, target in METHODS.items():
        if target not in r.index.get_level_values(0):
            continue
        for cat, x in r.loc[target].iterrows():
            if method == "challenging" and not x["baseline"]:
                continue
            p = prev.get(cat, np.nan)
            direction = "none" if method == "prev_production" or np.isnan(p) else ("up" if x["rate"] > p else "down")
            rows.append({"category": cat, "method": method, "rate": x["rate"], "lo": x["lo"], "hi": x["hi"],
                         "k": x["k"], "n": x["n"], "grader_id": x["grader_id"], "group": x["group"],
                         "prev_rate": p, "direction": direction})
    return pd.DataFrame(rows)
