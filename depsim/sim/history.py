"""Simulated earlier releases of the simulated world, for the shipped ``params/history.csv``.

Regenerate it with ``python -m depsim.sim.history params/history.csv``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from depsim import stats
from depsim.history import COLUMNS
from depsim.sim.world import BASE, World, WorldConfig
from depsim.taxonomy import load_taxonomy


def simulate_history(releases: int = 4, seed: int = 11, n: int = 4000, n_challenging: int = 1000,
                     spread: float = 0.8) -> pd.DataFrame:
    """Return a simulated history of ``releases`` earlier releases of the simulated world.

    For each release, the previous and candidate models get per-category propensity
    multipliers drawn log-normally (σ = ``spread``) and the resampling environment a tool
    fidelity in [0.2, 0.6]; measured counts are binomial draws of the world's exact rates at
    the sample sizes the pipeline uses (which tests show the pipeline reproduces)."""
    rng = np.random.default_rng(seed)
    rows = []
    groups = _groups()
    for r in range(1, releases + 1):
        y = dict(zip(BASE, np.exp(rng.normal(0, spread, len(BASE)))))
        x = dict(zip(BASE, np.exp(rng.normal(0, spread, len(BASE)))))
        world = World(WorldConfig(seed=seed + r, tool_fidelity=float(rng.uniform(0.2, 0.6))), mult={"sim-y": y, "sim-x": x})
        for c in BASE:
            p_prev, p_new = world.true_rate(c, "sim-y", "Y"), world.true_rate(c, "sim-x", "X")
            p_sim = world.true_rate(c, "sim-x", "Y", "resample", "first")
            p_ch = world.true_rate(c, "sim-x", "challenging", "resample", "first")
            k_prev, k_new, k_sim, k_ch = rng.binomial([n, n, n, n_challenging], [p_prev, p_new, p_sim, p_ch])
            prev = stats.jeffreys(k_prev, n)["rate"].iloc[0]
            for method, k, m in (("deployment_sim", k_sim, n), ("challenging", k_ch, n_challenging),
                                 ("prev_production", k_prev, n)):
                if method == "challenging" and not groups[c][1]:
                    continue
                j = stats.jeffreys(k, m).iloc[0]
                rows.append({"release": f"sim-r{r}", "category": c, "group": groups[c][0], "method": method,
                             "rate": j["rate"], "lo": j["lo"], "hi": j["hi"], "prev_rate": prev,
                             "k_real": int(k_new), "n_real": n})
    return pd.DataFrame(rows, columns=COLUMNS)


def _groups() -> dict[str, tuple[str, bool]]:
    tax = load_taxonomy(Path(__file__).resolve().parents[2] / "params" / "taxonomy.yaml")
    return {c: (v.group, v.baseline) for c, v in tax.items()}


if __name__ == "__main__":  # python -m depsim.sim.history params/history.csv
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "params/history.csv")
    simulate_history().to_csv(out, index=False, float_format="%.6g")
    print(f"wrote {out}")


