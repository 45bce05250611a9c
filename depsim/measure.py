"""Stage 4: per-target, per-category rates from the grades, with Jeffreys intervals."""
from __future__ import annotations

import pandas as pd

from depsim import stats
from depsim.taxonomy import Category


def rates(grades: pd.DataFrame, categories: dict[str, Category], level: float = 0.95) -> pd.DataFrame:
    """Return one row per (target, category): k flagged, n graded, failed (not graded: excluded
    from n and counted), the Jeffreys rate and interval (fractions), grader_id, group, baseline.

    A (target, category) with n = 0 keeps its row with a missing rate, so nothing vanishes."""
    g = grades.assign(flag=grades["label"].astype("Float64"))
    agg = (g.groupby(["target", "category", "grader_id"], sort=False)
             .agg(k=("flag", "sum"), n=("flag", "count"), failed=("flag", lambda s: int(s.isna().sum())))
             .reset_index())
    agg["k"] = agg["k"].astype(int)
    ok = agg["n"] > 0
    est = stats.jeffreys(agg.loc[ok, "k"].to_numpy(), agg.loc[ok, "n"].to_numpy(), level=level)
    for col in ("rate", "lo", "hi"):
        agg[col] = float("nan")
        agg.loc[ok, col] = est[col].to_numpy()
    agg["group"] = agg["category"].map({c: v.group for c, v in categories.items()})
    agg["baseline"] = agg["category"].map({c: v.baseline for c, v in categories.items()})
    return agg
