"""Multi-release history: validation of the file, metrics across releases, and predictive
intervals validated leave-one-release-out."""
import pandas as pd
import pytest

from depsim import history, score
from depsim.sim.history import simulate_history


def test_shipped_history_loads_and_scores():
    h = history.load_history("params/history.csv")
    assert h["release"].nunique() >= 4
    scored = score.score_rows(h)
    s = score.summary(scored).set_index("method")
    # the simulated deployment beats "nothing changes" on the shipped (simulated) history
    assert s.loc["deployment_sim", "nll_sum"] < s.loc["prev_production", "nll_sum"]


def test_history_is_reproducible():
    a = simulate_history(releases=2)
    pd.testing.assert_frame_equal(a, simulate_history(releases=2))


def test_bad_history_row_names_the_line(tmp_path):
    h = pd.read_csv("params/history.csv")
    h.loc[5, "k_real"] = h.loc[5, "n_real"] + 1
    p = tmp_path / "h.csv"
    h.to_csv(p, index=False)
    with pytest.raises(ValueError, match=r"h.csv:7: invalid row"):
        history.load_history(p)
    h.drop(columns=["prev_rate"]).to_csv(p, index=False)
    with pytest.raises(ValueError, match=r"h.csv:1: missing columns \['prev_rate'\]"):
        history.load_history(p)


def test_predictive_intervals_restore_coverage_leave_one_release_out():
    scored = score.score_rows(simulate_history(releases=8, seed=5))
    cov = history.loo_coverage(scored).set_index("method")
    # binomial intervals ignore the simulation's own error and under-cover badly; the
    # predictive interval, fitted on the other releases, comes close to nominal
    for m in ("deployment_sim", "prev_production"):
        assert cov.loc[m, "jeffreys_coverage"] < 0.75
        assert cov.loc[m, "predictive_coverage"] >= 0.85
        assert cov.loc[m, "predictive_coverage"] > cov.loc[m, "jeffreys_coverage"] + 0.15
