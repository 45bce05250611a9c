"""Forward-chained calibration of the forecast-error model under five simulated error models.

For each error model of :func:`depsim.sim.history.error_model_history` (assumed; t3 heavy
tails; bias drifting 0.3/release; shared release shock; two noisy tool categories), draws
``--histories`` independent 5-release histories, predicts release 5 from releases 1–4
(depsim.errormodel.forward_chain) and prints, per error model × category group, the coverage
of the realised count by the 90% predictive interval (nominal 0.90; acceptance: within ±5 pp)
and the group's worst-covered category, then the categories flagged as miscalibrated
(depsim.errormodel.flag_categories, Benjamini–Hochberg at 5%).

    python benchmarks/errormodel_coverage.py                  # 600 histories per model
    python benchmarks/errormodel_coverage.py --histories 200  # quick
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from depsim import errormodel as E
from depsim.sim.history import ERROR_MODELS, error_model_history

LEVEL = 0.9


def measure(model: str, histories: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (per-group table, per-category flag table) of one error model."""
    h = error_model_history(model, histories=histories, releases=5, seed=seed)
    ch = E.forward_chain(h, min_train=4, level=LEVEL, problem="history", intervals=False)
    grp = E.coverage_by(ch, ("group",), LEVEL)
    cat = E.flag_categories(ch, LEVEL)
    cat["group"] = cat["category"].map(h.drop_duplicates("category").set_index("category")["group"])
    return grp, cat


def main(argv=None) -> None:
    """Command line: print the coverage table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--histories", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--models", nargs="*", default=list(ERROR_MODELS))
    a = ap.parse_args(argv)
    rows, flagged = [], []
    t0 = time.perf_counter()
    for model in a.models:
        grp, cat = measure(model, a.histories, a.seed + ERROR_MODELS.index(model))
        for r in grp.itertuples():
            c = cat[cat["group"] == r.group]
            w = c.loc[(c["coverage"] - LEVEL).abs().idxmax()]
            rows.append({"error model": model, "group": r.group, "n": r.n, "coverage": r.coverage,
                         "off (pp)": 100 * (r.coverage - LEVEL),
                         "worst category": w["category"], "its coverage": w["coverage"]})
        f = cat[cat["flagged"]]
        flagged += [{"error model": model, "category": x.category, "coverage": x.coverage, "why": x.why}
                    for x in f.itertuples()]
    tab = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(f"Forward-chained coverage of the {LEVEL:.0%} predictive interval, release 5 from releases 1-4, "
              f"{a.histories} histories per error model ({time.perf_counter() - t0:.0f} s)\n")
        print(tab.round(3).to_string(index=False))
        print(f"\nworst |coverage - {LEVEL}| over groups: {tab['off (pp)'].abs().max():.2f} pp "
              f"(acceptance: <= 5 pp)")
        print("\nflagged categories (BH 5%):")
        print(pd.DataFrame(flagged).round(3).to_string(index=False) if flagged else "  none")


if __name__ == "__main__":
    main()
