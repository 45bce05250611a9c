"""Score round 3's configurations of the refusal classifier: HH-RLHF labelled turns as extra training data.

Prints, for each configuration (in the order they were first scored), the strict
leave-one-model-out table of depsim.refusal.leave_one_model_out (kappa with its bootstrap
interval, sensitivity, specificity per held-out XSTest model). The shipped model does not use
these configurations (depsim/refusal.py's docstring, round 3, says why). Run from the
repository root (about 5 minutes on one core):

    python scripts/score_refusal_round3.py
"""
from __future__ import annotations

import sys

from depsim import refusal
from depsim.params import DATA_DIR

#: (label, hh_weight, balance_sources), in the order first scored
CONFIGS = (("12. + HH labels", 1.0, False),
           ("13. + HH labels at weight 0.5", 0.5, False),
           ("14. + HH labels, each class of JBC and of HH balanced within its corpus", 1.0, True),
           ("15. as 14. with HH at weight 0.5", 0.5, True))


def main(argv=None) -> int:
    """Print the held-out table of every configuration; return 0."""
    for label, w, bal in CONFIGS:
        table = refusal.leave_one_model_out(refusal.with_hh_data(DATA_DIR, hh_weight=w, balance_sources=bal))
        print(label)
        print(table.drop(columns=["trained_on"]).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        print(f"mean kappa {table['kappa'].mean():.3f}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
