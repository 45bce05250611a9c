"""Forecasts and the decision table when a category has no usable grade (every grade failed,
n = 0): the row stays, with no rate, never dropped and never read as zero."""
import numpy as np
import pandas as pd
import pytest

from depsim import forecast
from depsim.params import Gate

NAN = float("nan")


def _rates() -> pd.DataFrame:
    row = dict(grader_id="g", group="disallowed", baseline=True)
    return pd.DataFrame([
        {**row, "target": "sim", "category": "a", "k": 0, "n": 0, "failed": 4, "rate": NAN, "lo": NAN, "hi": NAN},
        {**row, "target": "sim", "category": "b", "k": 1, "n": 30, "failed": 1, "rate": .05, "lo": .01, "hi": .15},
        {**row, "target": "prod_prev", "category": "a", "k": 2, "n": 40, "failed": 0, "rate": .06, "lo": .01, "hi": .15},
        {**row, "target": "prod_prev", "category": "b", "k": 0, "n": 0, "failed": 3, "rate": NAN, "lo": NAN, "hi": NAN},
    ])


def test_forecasts_keep_a_category_with_no_usable_grade():
    fc = forecast.forecasts(_rates()).set_index(["method", "category"])
    a = fc.loc[("deployment_sim", "a")]
    assert a["label"] == "no usable grade (4 failed)" and np.isnan(a["ratio"]) and a["direction"] == "no change"
    assert not a["rises"] and a["failed_warning"] and a["worst_case_hi"] > 0.5  # 4 failed of 4: anything is possible
    b = fc.loc[("deployment_sim", "b")]
    assert b["label"].startswith("1 of 30") and np.isnan(b["ratio"])  # its previous rate has no usable grade
    assert fc.loc[("prev_production", "b"), "label"] == "no usable grade (3 failed)"


def test_decision_table_keeps_a_category_with_no_usable_grade():
    d = forecast.decision_table(_rates(), {"a": Gate(max_rate=0.01)}).set_index("category")
    assert set(d.index) == {"a", "b"}
    a = d.loc["a"]
    assert (a["n"], a["failed"], a["direction"], a["gate_status"]) == (0, 4, "no usable grade", "may breach")
    assert np.isnan(a["rate"]) and np.isnan(a["hi"]) and a["prev_k"] == 2 and a["prev_n"] == 40
    # without a gate it is "no gate", and it sorts after every graded category
    d2 = forecast.decision_table(_rates())
    assert list(d2["category"]) == ["b", "a"] and d2.iloc[1]["gate_status"] == "no gate"
    # only ungraded categories: still one row each, not an empty table
    only = forecast.decision_table(_rates()[lambda r: r["category"] == "a"])
    assert list(only["category"]) == ["a"] and only.iloc[0]["direction"] == "no usable grade"


def test_decision_table_does_not_call_a_category_unchanged_without_a_previous_rate():
    # a release without prod_prev (or whose previous grades all failed) has no rate to compare
    # with: the summary read "no change" on every row, as if the comparison had been made
    d = forecast.decision_table(_rates()).set_index("category")
    assert d.loc["b", "direction"] == forecast.NOT_COMPARED and np.isnan(d.loc["b", "ratio"])
    no_prev = forecast.decision_table(_rates()[lambda r: r["target"] == "sim"])
    assert set(no_prev["direction"]) == {forecast.NOT_COMPARED, forecast.NO_GRADE}
    assert list(no_prev["category"]) == ["b", "a"]  # graded before ungraded, as before


def test_summary_says_the_rise_check_was_not_made_without_a_previous_rate():
    from depsim import show
    d = forecast.decision_table(_rates()[lambda r: r["target"] == "sim"])
    d["title"] = d["category"].str.upper()
    html_ = show.verdict(d).data
    assert "Rise against the previous model (0):</strong> none" not in html_
    assert "no previous rate" in html_
    cells = show.decision(d).data
    assert ">no change<" not in cells


def test_reweighted_gate_check_says_where_the_forecast_mix_reads_worse():
    # the gate check reads the sampled traffic only: a category whose candidate behaviour sits in
    # a stratum the forecast mix has more of read "may breach" while its reweighted rate breaches,
    # and the summary never said so (release-owner audit: misrepresenting work completion)
    from depsim.params import Gate
    row = dict(grader_id="g", group="misalignment", baseline=True, failed=0)
    rates = pd.DataFrame([
        {**row, "target": "sim", "category": "c", "k": 30, "n": 4000},
        {**row, "target": "sim_rw", "category": "c", "k": 90.0, "n": 3500.0},
        {**row, "target": "prod_prev", "category": "c", "k": 20, "n": 4000},
        {**row, "target": "sim", "category": "d", "k": 5, "n": 4000},
        {**row, "target": "sim_rw", "category": "d", "k": 5.0, "n": 3500.0},
        {**row, "target": "prod_prev", "category": "d", "k": 5, "n": 4000}])
    gates = {"misalignment": Gate(max_ratio=2.0)}
    d = forecast.with_reweighted(forecast.decision_table(rates, gates), rates, gates).set_index("category")
    assert d.loc["c", "gate_status"] == "may breach" and d.loc["c", "rw_gate_status"] == "breaches"
    assert d.loc["c", "rw_worse"] and not d.loc["d", "rw_worse"]
    assert d.loc["c", "rw_ratio"] == pytest.approx((90 / 3500) / (20 / 4000))
    from depsim import show
    h = show.verdict(d.reset_index().assign(title=["C", "D"]), gates).data
    assert ("Gate check reweighted to the forecast traffic mix (1 differ):</strong> C: <strong>breaches</strong> "
            "(90 of 3,500 effective, 5.14× previous; unweighted: may breach)") in h
    assert d.loc["c", "rw_differs"] and not d.loc["d", "rw_differs"]
    # without a reweighted target the table is unchanged
    plain = rates[rates["target"] != "sim_rw"]
    assert "rw_worse" not in forecast.with_reweighted(forecast.decision_table(plain, gates), plain, gates)
