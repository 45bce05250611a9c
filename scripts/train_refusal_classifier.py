"""Train the shipped refusal classifier (depsim/refusal_model.json) from data/xstest and data/jailbreakbench-jbc.

Deterministic: the same data and code give the same file (tests/test_refusal.py checks that
retraining reproduces it). Run from the repository root:

    python scripts/train_refusal_classifier.py            # write depsim/refusal_model.json
    python scripts/train_refusal_classifier.py --check    # exit 1 if the file is out of date
    python scripts/train_refusal_classifier.py --lomo     # also print the leave-one-model-out table
"""
from __future__ import annotations

import argparse
import sys

from depsim import refusal
from depsim.params import DATA_DIR


def main(argv=None) -> int:
    """Write (or with --check, compare) the model file; return the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the shipped file instead of writing it")
    ap.add_argument("--lomo", action="store_true", help="print the leave-one-model-out evaluation")
    args = ap.parse_args(argv)
    clf = refusal.train_default(DATA_DIR)
    text = clf.to_json()
    if args.lomo:
        data, _ = refusal.training_data(DATA_DIR)
        print(refusal.leave_one_model_out(data).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.check:
        same = refusal.MODEL_FILE.is_file() and refusal.default_classifier().same_fit(clf)
        print(f"{refusal.MODEL_FILE}: {'up to date' if same else 'OUT OF DATE (rerun without --check)'}")
        return 0 if same else 1
    refusal.MODEL_FILE.write_text(text)
    print(f"wrote {refusal.MODEL_FILE} (model_id {clf.model_id}, C {clf.meta['C']}, alpha {clf.meta['alpha']}, "
          f"data {clf.meta['data_sha256_16']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
