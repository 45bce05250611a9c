"""`depsim run` end to end on a small simulated release: report pages, escaping, cache."""
import re
import subprocess
import sys

from conftest import PAYLOAD, payload_conversations, small_release

PAGES = ["index", "01_sample_prefixes", "02_simulate", "03_audit", "04_measure", "05_forecast", "06_validate"]


def depsim(*args, cwd):
    return subprocess.run([sys.executable, "-m", "depsim.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_run_renders_report_escapes_text_and_caches(tmp_path):
    conv = payload_conversations(tmp_path / "payload.parquet")
    params = small_release(tmp_path, "e2e", previous={"kind": "parquet", "path": conv.name})
    reports = tmp_path / "reports"
    first = depsim("run", str(params), "--reports-dir", str(reports), "--render", "nbconvert", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "report rendered with nbconvert" in first.stdout
    sent = int(re.search(r"model requests: (\d+) sent", first.stdout).group(1))
    assert sent > 0

    site = reports / "e2e" / "_site"
    for page in PAGES:
        html = (site / f"{page}.html").read_text()
        assert "Simulated world" in html, page
        assert all(f'href="{p}.html"' in html for p in PAGES), f"{page}: navigation missing"
        assert PAYLOAD not in html, f"{page}: unescaped conversation text"
        assert "<script>document.title" not in html
    shown = (site / "01_sample_prefixes.html").read_text() + (site / "02_simulate.html").read_text()
    assert "&lt;script&gt;document.title=" in shown  # the payload is shown, escaped
    index = (site / "index.html").read_text()
    for needle in ("deployment_sim", "challenging", "prev_production", "Directional accuracy", "NLL", "<svg"):
        assert needle in index, needle
    assert "Audit finding" in index

    again = depsim("run", str(params), "--reports-dir", str(reports), "--render", "nbconvert", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"model requests: 0 sent, all \d+ served from the cache", again.stdout), again.stdout


def test_bad_stage_input_is_one_line(tmp_path):
    params = small_release(tmp_path, "broken")
    # a stage run alone without its inputs names the missing table and the stage that writes it
    from depsim.runner import StageFailed, run_release
    try:
        run_release(params, tmp_path / "r", "none", stages=["04_measure"], log=lambda *_: None)
    except StageFailed as e:
        msg = str(e)
    else:
        raise AssertionError("stage ran without its inputs")
    assert "04_measure" in msg and "completions.parquet is missing: run 02_simulate first" in msg
    assert "\n" not in msg
