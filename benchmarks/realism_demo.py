"""Realism check and fidelity curves on the demo release's simulated world (issue 7).

    python benchmarks/realism_demo.py [--mode simulate] [--n 4000] [--fidelities 0.1,0.3,0.55,0.8,1.0]

Writes nothing under reports/: it copies params/demo.yaml into a temporary folder, adds the
tool simulator, the judge and a ``realism:`` section (sim-y, the model that wrote the logs,
regenerates 300 of its turns), and prints the win rates per mode at the demo's fidelity
(0.3) and the fidelity curves of calculator hacking and lying about tools. Every number
describes the simulated world only.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("DEPSIM_PROGRESS", "0")

from depsim import realism  # noqa: E402
from depsim.cache import ResponseCache  # noqa: E402
from depsim.params import load_release  # noqa: E402
from depsim.sample import build_prefixes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def demo_release(folder: Path, mode: str, fidelities: list[float]) -> Path:
    for f in ("taxonomy.yaml", "history.csv"):
        shutil.copyfile(ROOT / "params" / f, folder / f)
    text = (ROOT / "params" / "demo.yaml").read_text().replace("tool_mode: stop", f"tool_mode: {mode}")
    roles = ('  tool_simulator: {base_url: "sim://world/resample", model: sim-tools}\n'
             '  judge: {base_url: "sim://world/resample", model: sim-judge}\n')
    text = text.replace("\ngeneration:\n", f"{roles}\ngeneration:\n", 1)
    text += ('\nrealism:\n  model: {base_url: "sim://world/resample", model: sim-y}\n  sample: 300\n'
             f'  fidelities: {fidelities}\n')
    p = folder / "demo.yaml"
    p.write_text(text)
    return p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="simulate", choices=["stop", "replay", "simulate"])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--fidelities", default="0.1,0.3,0.55,0.8,1.0")
    args = ap.parse_args()
    fids = [float(x) for x in args.fidelities.split(",")]
    pd.set_option("display.width", 250, "display.max_columns", 30)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rel = load_release(demo_release(folder, args.mode, fids))
        t = time.time()
        prefixes, _ = build_prefixes(rel, folder / "reports")
        cache = ResponseCache(folder / "cache.sqlite")
        print(f"prefixes: {len(prefixes)} in {time.time() - t:.1f} s")
        t = time.time()
        pairs, rates = realism.check(rel, prefixes, cache)
        print(f"\nrealism check (fidelity {rel.world.tool_fidelity}, {rel.realism.sample} prefixes, "
              f"judge {rates['judge_id'].iloc[0]}) in {time.time() - t:.1f} s")
        print(rates.round(3).to_string(index=False))
        t = time.time()
        curves = realism.fidelity_curves(rel, prefixes, cache, n=args.n)
        print(f"\nfidelity curves (mode {args.mode}, n={args.n}) in {time.time() - t:.1f} s")
        cols = ["fidelity", "category", "k", "n", "rate", "lo", "hi", "truth_sim", "truth_prod", "truth_new",
                "win_rate", "win_lo", "win_hi", "win_rate_tool", "win_tool_lo", "win_tool_hi", "win_tool_n"]
        print(curves[cols].round(4).to_string(index=False))


if __name__ == "__main__":
    main()
