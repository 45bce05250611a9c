"""A run whose grader fails on every request stops loudly: few requests are sent, the grade
stage raises with the server's message, and the CLI exits non-zero."""
import pytest

from depsim.runner import StageFailed, run_release
from conftest import small_release


def test_a_grader_that_fails_every_request_stops_the_run(fake_server, tmp_path):
    fake_server.error_body = (500, {"error": {"message": "CUDA error: out of memory", "type": "server_error"}})
    params = small_release(tmp_path, "gradefail")
    text = params.read_text()
    old = 'grader: {base_url: "sim://world/resample", model: sim-grader}'
    assert old in text
    params.write_text(text.replace(old, f'grader: {{base_url: "{fake_server.url}", model: real-grader, max_retries: 6}}'))
    with pytest.raises(StageFailed) as e:
        run_release(params, tmp_path / "reports", "none", stages=["01_sample", "02_simulate", "04_grade"],
                    log=lambda *_: None)
    msg = str(e.value)
    assert "04_grade" in msg and "GradingFailed" in msg and "CUDA error: out of memory" in msg
    assert "the role stops" in msg
    # a few tries per LLM category (each is one call), not 7 per request
    n_llm = msg.count("grades failed")
    assert n_llm >= 1 and len(fake_server.log) <= n_llm * 10


def test_all_failed_warn_goes_on_and_keeps_the_failed_categories(fake_server, tmp_path):
    """``all_failed: warn`` (for a grader known to fail): the run goes on, every LLM category
    keeps its rates row with n = 0 and its failures counted, and the decision table says
    "no usable grade" instead of dropping it."""
    from depsim.params import load_release
    from depsim.forecast import decision_table
    from depsim.records import read_table
    fake_server.error_body = (500, {"error": {"message": "CUDA error: out of memory", "type": "server_error"}})
    params = small_release(tmp_path, "gradewarn")
    text = params.read_text()
    old = 'grader: {base_url: "sim://world/resample", model: sim-grader}'
    params.write_text("all_failed: warn\n" + text.replace(
        old, f'grader: {{base_url: "{fake_server.url}", model: real-grader, max_retries: 6}}'))
    reports = tmp_path / "reports"
    run_release(params, reports, "none", stages=["01_sample", "02_simulate", "04_grade", "05_forecast"],
                log=lambda *_: None)
    rel = load_release(params)
    rates = read_table(reports, rel.release, "rates")
    grades = read_table(reports, rel.release, "grades")
    llm = grades[grades["grader_id"].isin(grades.loc[grades["error"].fillna("").str.contains("CUDA"), "grader_id"])]
    cats = set(llm["category"])
    assert cats and llm["label"].isna().all()
    failed = rates[rates["category"].isin(cats)]
    assert (failed["n"] == 0).all() and (failed["failed"] > 0).all()
    assert failed["failed"].sum() == len(llm)
    d = decision_table(rates, rel.gates).set_index("category")
    assert cats <= set(d.index) and (d.loc[sorted(cats), "direction"] == "no usable grade").all()
    assert (read_table(reports, rel.release, "forecasts").query("category in @cats")["label"]
            .str.startswith("no usable grade").all())


def test_unusable_answers_are_said_on_the_terminal(fake_server, tmp_path):
    """A grader whose every answer arrives (HTTP 200) but is unusable (no verdict bound to the
    request): the request log has no failure, yet the terminal names each category whose
    answers could not be used, with how many (a SmolLM2 grader read '1 of 7 requests failed'
    while 6 of 6 grades were unusable)."""
    from depsim.params import load_release
    from depsim.records import read_table
    fake_server.responder = lambda body: {"role": "assistant", "content": "Yes."}
    params = small_release(tmp_path, "gradejunk")
    text = params.read_text()
    old = 'grader: {base_url: "sim://world/resample", model: sim-grader}'
    params.write_text("all_failed: warn\n" + text.replace(old, f'grader: {{base_url: "{fake_server.url}", model: junk}}'))
    lines: list[str] = []
    reports = tmp_path / "reports"
    run_release(params, reports, "none", stages=["01_sample", "02_simulate", "04_grade"], log=lines.append)
    grades = read_table(reports, load_release(params).release, "grades")
    junk = grades[grades["error"].notna()].groupby("category").size()
    assert len(junk) and not any("requests sent failed" in x for x in lines)
    said = [x for x in lines if x.startswith("    warning: grader: ")]
    # every category failed the same way: one line, with every answer counted
    assert len(said) == 1, said
    assert f"{junk.sum():,} of {junk.sum():,} answers unusable" in said[0] and f"{len(junk)} categories (" in said[0]
