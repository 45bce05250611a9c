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


def reweighted_rates(grades: pd.DataFrame, completions: pd.DataFrame, prefixes: pd.DataFrame,
                     categories: dict[str, Category], column: str, shares: dict[str, float], target: str = "sim", name: str = "sim_rw",
                     level: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (rates, weights): ``target``'s rates reweighted so that each value of the
    prefix column ``column`` carries its share in ``shares`` (a forecast traffic mix), as
    target ``name``; and the per-stratum sample share, target share and weight.

    Each item's weight is target share / sample share of its stratum; the rate is the
    weighted Jeffreys estimate on Kish effective counts. Strata of the mix that the sample
    lacks cannot be represented: they are listed in ``weights`` with sample share 0, and the
    remaining shares are renormalised."""
    strata = completions[["item_id", "prefix_id"]].merge(prefixes[["prefix_id", column]], on="prefix_id", how="left")
    strata = strata.set_index("item_id")[column].astype(str)
    g = grades[(grades["target"] == target) & grades["label"].notna()].copy()
    g["stratum"] = g["item_id"].map(strata)
    total = sum(shares.values())
    sample = g.drop_duplicates("item_id")["stratum"].value_counts(normalize=True)
    want = pd.Series({str(k): v / total for k, v in shares.items()})
    present = want[want.index.isin(sample.index)]
    weight = (present / present.sum()) / sample.reindex(present.index)
    table = pd.DataFrame({"sample_share": sample.reindex(want.index).fillna(0.0), "target_share": want,
                          "weight": weight.reindex(want.index)}).rename_axis(column).reset_index()
    g["w"] = g["stratum"].map(weight).fillna(0.0)  # strata outside the mix get no weight
    rows = []
    for (cat, gid), x in g.groupby(["category", "grader_id"], sort=False):
        j = stats.weighted_jeffreys(x["label"].astype(float).to_numpy(), x["w"].to_numpy(), level).iloc[0]
        rows.append({"target": name, "category": cat, "grader_id": gid, "k": j["k_eff"], "n": j["n_eff"],
                     "failed": 0, "rate": j["rate"], "lo": j["lo"], "hi": j["hi"]})
    out = pd.DataFrame(rows)
    out["group"] = out["category"].map({c: v.group for c, v in categories.items()})
    out["baseline"] = out["category"].map({c: v.baseline for c, v in categories.items()})
    return out, table
