"""`depsim run` end to end on a small simulated release: report pages, escaping, cache."""
import base64
import re
import shutil
import subprocess
import sys

import pytest

from conftest import PAYLOAD, payload_conversations, small_release

from depsim.pipeline import PAGES as _PAGES
from depsim.runner import StageFailed, run_release

PAGES = [stem for stem, _ in _PAGES]


def depsim(*args, cwd):
    return subprocess.run([sys.executable, "-m", "depsim.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """A small simulated release with a <script> payload in its prefixes, run once."""
    tmp = tmp_path_factory.mktemp("e2e")
    conv = payload_conversations(tmp / "payload.parquet")
    params = small_release(tmp, "e2e", previous={"kind": "parquet", "path": conv.name})
    reports = tmp / "reports"
    first = depsim("run", str(params), "--reports-dir", str(reports), "--render", "nbconvert", cwd=tmp)
    assert first.returncode == 0, first.stderr[-3000:]
    return {"tmp": tmp, "params": params, "reports": reports, "site": reports / "e2e" / "_site", "first": first}


def test_run_renders_report_and_escapes_text(e2e):
    first, site = e2e["first"], e2e["site"]
    assert "report rendered with nbconvert" in first.stdout
    assert int(re.search(r"model requests: (\d+) sent", first.stdout).group(1)) > 0
    for page in PAGES:
        html = (site / f"{page}.html").read_text()
        assert "Simulated world" in html, page
        assert all(f'href="{p}.html"' in html for p in PAGES), f"{page}: navigation missing"
        assert PAYLOAD not in html, f"{page}: unescaped conversation text"
        assert "<script>document.title" not in html
    shown = (site / "01_sample.html").read_text() + (site / "02_simulate.html").read_text()
    assert "&lt;script&gt;document.title=" in shown  # the payload is shown, escaped
    index = (site / "index.html").read_text()
    for needle in ("deployment_sim", "challenging", "prev_production", "Directional accuracy", "NLL"):
        assert needle in index, needle
    assert "Audit finding" in index


def test_rerun_sends_nothing(e2e):
    again = depsim("run", str(e2e["params"]), "--reports-dir", str(e2e["reports"]), "--render", "nbconvert",
                   cwd=e2e["tmp"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"model requests: 0 sent, all \d+ served from the cache", again.stdout), again.stdout


def test_pages_in_browser(e2e):
    browser_check(e2e["site"], e2e["tmp"])


def test_bad_stage_input_is_one_line(tmp_path):
    params = small_release(tmp_path, "broken")
    # a stage run alone without its inputs names the missing table and the stage that writes it
    try:
        run_release(params, tmp_path / "r", "none", stages=["04_grade"], log=lambda *_: None)
    except StageFailed as e:
        msg = str(e)
    else:
        raise AssertionError("stage ran without its inputs")
    assert "04_grade" in msg and "prefixes.parquet is missing: run 01_sample first" in msg
    assert "\n" not in msg


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def browser_check(site, tmp_path):
    """Load pages in headless Chromium with the network cut off: the payload never runs
    (the page title stays ours), and the charts are inline SVG images that need no network."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs it); the static HTML and cache checks still ran")
    for page in ("index", "01_sample", "02_simulate", "06_score"):
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # no network at all
             f"--user-data-dir={tmp_path / ('chrome-' + page)}", "--virtual-time-budget=3000", "--dump-dom",
             (site / f"{page}.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
        assert "<title>" in dom, page
        title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
        assert "PWNED" not in title, f"{page}: the conversation's script ran in the browser"
        if page in ("index", "06_score"):
            charts = [base64.b64decode(b).decode() for b in re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', dom)]
            assert any("<svg" in c and "realised rate" in c for c in charts), f"{page}: chart not inline"
