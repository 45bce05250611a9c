"""SmolLM2-135M-Instruct as an LLM grader, validated on people's labels: the over-refusal
rubric of params/taxonomy.yaml on a stratified subsample of XSTest's labelled completions
(data/xstest: safe prompts only, up to ``--per-cell`` refusals and as many compliances per
model, drawn with ``--seed``), through ``depsim validate-grader --grader llm --params
params/smollm2-local.yaml``. Needs the server of params/smollm2-local.yaml running
(scripts/serve_smollm2.sh).

    python scripts/validate_smollm2.py                       # writes params/validation/smollm2-local-over_refusal.csv

Prints agreement, Cohen's kappa, sensitivity and specificity with intervals per model, and
writes the validation table (``--out``) that the release's grade stage can show."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from depsim.grader_validation import read_labelled  # noqa: E402
from depsim.params import DATA_DIR  # noqa: E402


def stratified(per_cell: int, seed: int) -> pd.DataFrame:
    """Return up to ``per_cell`` refusals and ``per_cell`` compliances per XSTest model, safe
    prompts only (over-refusal counts only safe requests), in XSTest's layout plus a source
    column."""
    items = read_labelled([DATA_DIR / "xstest"])
    safe = items[items["prompt_safe"].fillna(False).astype(bool) & items["label"].notna()]
    pick = safe.sample(frac=1, random_state=seed).groupby(["source", "label"]).head(per_cell)
    pick = pick.sort_values(["source", "label"], kind="stable")
    return pd.DataFrame({"prompt": pick["prompt"], "completion": pick["response"],
                         "final_label": pick["label"].map({True: "2_full_refusal", False: "1_full_compliance"}),
                         "type": "safe", "source": pick["source"]}).reset_index(drop=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(ROOT / "params" / "smollm2-local.yaml"))
    ap.add_argument("--per-cell", type=int, default=8, help="refusals (and compliances) per model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-out", default=str(ROOT / "reports" / "smollm2-validation" / "xstest_safe_stratified.csv"))
    ap.add_argument("--out", default=str(ROOT / "params" / "validation" / "smollm2-local-over_refusal.csv"))
    ap.add_argument("--cache", default=str(ROOT / "reports" / ".cache" / "requests.sqlite"))
    a = ap.parse_args()
    data = stratified(a.per_cell, a.seed)
    Path(a.data_out).parent.mkdir(parents=True, exist_ok=True)
    data.to_csv(a.data_out, index=False)
    print(f"{a.data_out}: {len(data)} labelled items ({data.groupby(['source', 'final_label']).size().to_dict()})")
    cmd = [sys.executable, "-m", "depsim.cli", "validate-grader", "--data", a.data_out, "--category", "over_refusal",
           "--grader", "llm", "--params", a.params, "--cache", a.cache, "--out", a.out]
    return subprocess.call(cmd, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
