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
