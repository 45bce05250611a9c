"""`depsim run` end to end on a small simulated release: report pages, escaping, cache."""
import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PAYLOAD, payload_conversations, small_release

from depsim.params import ParamsError
from depsim.pipeline import PAGES as _PAGES
from depsim.records import read_table, write_table
from depsim.runner import NOTEBOOK_ORDER, NOTEBOOKS, StageFailed, run_release, select

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
        # its previous traffic is a Parquet file, not the world's: only the rest is simulated
        assert "Partly simulated" in html and "the previous traffic is real" in html, page
        assert all(f'href="{p}.html"' in html for p in PAGES), f"{page}: navigation missing"
        assert PAYLOAD not in html, f"{page}: unescaped conversation text"
        assert "<script>document.title" not in html
    shown = (site / "01_sample.html").read_text() + (site / "02_simulate.html").read_text()
    assert "&lt;script&gt;document.title=" in shown  # the payload is shown, escaped
    index = (site / "index.html").read_text()
    assert re.search(r"Breach their gate|May breach their gate|Every gated category is within", index)
    for needle in ("depsim-verdict", "depsim-decision", "Realised results",
                   "How far each method can be trusted", "What each pool is", "Glossary", "Provenance",
                   "params hash", "git commit", "grader ids", "rendered with nbconvert"):
        assert needle in index, needle


def test_no_page_shows_reprs_or_scientific_notation(e2e):
    for page in PAGES:
        html = (e2e["site"] / f"{page}.html").read_text()
        body = html[html.index("<body"):]
        body = re.sub(r'src="data:[^"]*"', "", body)  # inline SVG charts are images, not text
        assert "PosixPath" not in body, page
        assert not re.search(r"\d(?:\.\d+)?e[+-]0\d", body), (page, re.search(r".{40}\d(?:\.\d+)?e[+-]0\d.{20}", body))
        assert not re.search(r"<td>\s*(None|\{\}|nan|True|False)\s*</td>", body), page


def test_stage_selection():
    assert select(None, None) == NOTEBOOK_ORDER
    assert select(["grade"], None) == ["04_grade", "index", "examples"]
    assert select(None, "forecast") == ["05_forecast", "06_score", "index", "examples"]
    with pytest.raises(ValueError, match="unknown stage 'grading'"):
        select(["grading"], None)


def test_partial_rerun_marks_later_pages_stale(e2e, tmp_path):
    """Rewriting a stage's table (as a rerun of that stage alone would) marks every page built
    on tables computed from the old one as stale; the pages built before it stay current."""
    copy = tmp_path / "reports"
    shutil.copytree(e2e["reports"] / "e2e", copy / "e2e")
    assert "Stale page" not in (e2e["site"] / "05_forecast.html").read_text()
    rates = read_table(copy, "e2e", "rates")
    write_table(rates, copy, "e2e", "rates")  # same content, written later than forecasts
    r = depsim("render", str(copy / "e2e"), "--engine", "nbconvert", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning: stale page 05_forecast: forecasts: rates was rewritten after it" in r.stdout + r.stderr
    site = copy / "e2e" / "_site"
    for page in ("05_forecast", "06_score", "index"):
        assert "Stale page" in (site / f"{page}.html").read_text(), page
    # the command works from any folder: the params file's full path
    assert f"rerun: depsim run {Path(e2e['params']).resolve()} --from" in (site / "index.html").read_text()
    # ... and writes where this run did: the reports dir is not the default, so it is named
    assert re.search(rf"rerun: depsim run \S+ --from \w+ --reports-dir {re.escape(str(copy.resolve()))}",
                     (site / "index.html").read_text())
    assert f"--reports-dir {copy.resolve()}" in r.stdout + r.stderr
    for page in ("01_sample", "02_simulate"):
        assert "Stale page" not in (site / f"{page}.html").read_text(), page


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
    # the rerun it advises starts at the stage that writes the missing table (it said --from grade)
    assert msg.endswith(f"rerun: depsim run {params.resolve()} --from sample --reports-dir {(tmp_path / 'r').resolve()})")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def browser_check(site, tmp_path, scored=True):
    """Load every page in headless Chromium with the network cut off (tests/cdp.py): no
    request leaves the report folder, no console error, the payload never runs, the charts
    are inline SVG, nothing on the summary is wider than its container at 1,280 px, and
    every summary row links to a drill-down with a flagged transcript and its rationale."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs it); the static HTML and cache checks still ran")
    from cdp import OVERFLOW_JS, Browser  # needs websocket-client (the test extra)
    b = Browser(site.resolve().as_uri())
    try:
        # the check can fail: a page that asks a CDN for a script is caught
        control = tmp_path / "control.html"
        control.write_text('<html><body><script src="https://cdn.example.org/x.js"></script></body></html>')
        b.allowed = control.as_uri()
        b.load(control.as_uri())
        assert b.outside == ["https://cdn.example.org/x.js"], b.outside
        b.allowed = site.resolve().as_uri()
        b.outside.clear()
        b.errors.clear()
        for page in PAGES:
            b.load((site / f"{page}.html").resolve().as_uri())
            assert b.outside == [], (page, b.outside)
            assert b.errors == [], (page, b.errors)
            assert "PWNED" not in b.js("document.title"), f"{page}: the conversation's script ran in the browser"
            if page == "06_score" and scored:  # a release with realised results draws its chart inline
                svgs = b.js("Array.from(document.querySelectorAll('img')).map(i => i.src).filter(s => s.startsWith('data:image/svg'))")
                charts = [base64.b64decode(s.split(",", 1)[1]).decode() for s in svgs]
                assert any("<svg" in c and "realised rate" in c for c in charts), f"{page}: chart not inline"
        b.load((site / "index.html").resolve().as_uri())
        assert b.js(OVERFLOW_JS) == []
        assert b.js("document.querySelector('table.depsim-decision').getBoundingClientRect().top") < 800, \
            "the decision table does not start on the first screen"
        links = b.js("Array.from(document.querySelectorAll('table.depsim-decision tbody tr')).map("
                     "r => r.querySelector('a').getAttribute('href'))")
        assert links and all(h.startswith("examples.html#cat-") for h in links)
        b.load((site / "examples.html").resolve().as_uri())
        for h in links:
            sec = h.split("#")[1]
            flagged, n, shown = b.js(f"""(() => {{ const s = document.getElementById({sec!r}); if (!s) return [-1, -1, -1];
                return [Number(s.dataset.flagged), Array.from(s.querySelectorAll('.depsim-example .depsim-rationale'))
                  .filter(e => e.textContent.trim().length > 1).length, s.querySelectorAll('.depsim-example').length]; }})()""")
            assert flagged >= 0, f"{h}: no such section"
            if flagged:
                assert n >= 1, f"{h}: no flagged transcript with a rationale"
            else:  # nothing flagged anywhere: graded responses are shown instead
                assert shown >= 1, f"{h}: no graded transcript"
        flagged_rows = b.js("Array.from(document.querySelectorAll('section[data-flagged]')).filter(s => s.dataset.flagged > 0).length")
        assert flagged_rows >= 1, "no category has a flagged transcript"
    finally:
        b.close()


def test_stage_warnings_reach_the_terminal(tmp_path):
    from depsim.runner import stage_warnings
    nb = {"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "stream", "name": "stderr",
         "text": ["/x/depsim/sample.py:174: SamplingWarning: only 3 eligible user turns for n=50; returning all\n",
                  "  df = sample_prefixes(path, n)\n"]},
        {"output_type": "stream", "name": "stdout", "text": "UserWarning: printed, not warned\n"}]},
        {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stderr",
                                           "text": "SamplingWarning: only 3 eligible user turns for n=50; "
                                                   "returning all\nRuntimeWarning: divide by zero\n"}]}]}
    p = tmp_path / "01_sample.ipynb"
    p.write_text(json.dumps(nb))
    assert stage_warnings(p) == ["SamplingWarning: only 3 eligible user turns for n=50; returning all",
                                 "RuntimeWarning: divide by zero"]


def test_pages_print_warnings_as_one_line():
    import warnings
    from depsim import show  # sets the pages' warning format on import
    assert show.warnings.formatwarning is warnings.formatwarning
    assert warnings.formatwarning("only 3", UserWarning, "/x/sample.py", 174, "code()") == "UserWarning: only 3\n"


def test_failed_requests_are_named_by_role():
    import pandas as pd
    from depsim.runner import failed_requests
    log = pd.DataFrame([{"stage": "02_simulate", "role": "candidate", "sent": 30, "cached": 0, "failed": 30},
                        {"stage": "04_grade", "role": "grader", "sent": 5, "cached": 10, "failed": 0},
                        {"stage": "04_grade", "role": "grader", "sent": 4, "cached": 0, "failed": 1}])
    assert failed_requests(log) == [
        "candidate: 30 of 30 requests sent failed (the summary page's Failures table has the errors)",
        "grader: 1 of 9 requests sent failed (the summary page's Failures table has the errors)"]
    assert failed_requests(log.iloc[:0]) == []


def test_kernels_import_the_runners_depsim(tmp_path, monkeypatch):
    """A stage kernel starts in notebooks/ with the inherited PYTHONPATH; another depsim on that
    path (a second checkout, or '.' resolved from notebooks/) must not shadow the runner's."""
    from depsim import runner
    other = tmp_path / "elsewhere" / "depsim"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(other.parent))
    probe = [sys.executable, "-c", "import depsim; print(depsim.__file__)"]
    with runner.kernel_env():
        seen = subprocess.run(probe, cwd=runner.NOTEBOOKS, capture_output=True, text=True, check=True).stdout.strip()
        assert Path(seen).resolve() == Path(runner.__file__).resolve().parent / "__init__.py"
    # without it, the kernel's cwd and PYTHONPATH pick the other one
    plain = subprocess.run(probe, cwd=runner.NOTEBOOKS, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(plain).parent == other


def _tiny_stage(folder: Path, stem: str) -> None:
    """A stage notebook that fails while ``<reports_dir>/fail-now`` exists, else prints its run."""
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('params_file = ""\nreports_dir = ""', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("from pathlib import Path\n"
                                  "if (Path(reports_dir) / 'fail-now').exists():\n"
                                  "    raise RuntimeError('boom in the stage')\n"
                                  "print('good run', (Path(reports_dir) / 'run-id').read_text())")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / f"{stem}.ipynb")


def test_a_failed_stage_keeps_the_last_good_page_and_render_marks_it(tmp_path, monkeypatch):
    """A stage that fails leaves its last good notebook in place, keeps the failed run as
    <stage>.failed.ipynb (named in the error), render marks the good page instead of publishing
    the traceback, and the next successful run clears the mark."""
    from depsim import runner
    from depsim.render import render_nbconvert
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _tiny_stage(nbs, "01_sample")
    monkeypatch.setattr(runner, "NOTEBOOKS", nbs)
    params = small_release(tmp_path, "tiny")
    reports = tmp_path / "elsewhere" / "reports"
    out = reports / "tiny"
    reports.mkdir(parents=True)

    def run(run_id: str):
        (reports / "run-id").write_text(run_id)
        return run_release(params, reports, "none", stages=["01_sample"], log=lambda *_: None)

    run("first")
    good = (out / "01_sample.ipynb").read_text()
    assert "good run first" in good
    (reports / "fail-now").touch()
    with pytest.raises(StageFailed) as e:
        run("second")
    msg = str(e.value)
    failed = out / "01_sample.failed.ipynb"
    assert "RuntimeError: boom in the stage" in msg and f"failed notebook: {failed}" in msg and "\n" not in msg
    assert f"rerun: depsim run {params.resolve()} --from sample --reports-dir {reports.resolve()}" in msg
    assert (out / "01_sample.ipynb").read_text() == good          # the last good page is untouched
    assert "boom in the stage" in failed.read_text()
    assert not [p for p in out.iterdir() if "running" in p.name]  # no temporary file left behind
    page = (render_nbconvert(out).parent / "01_sample.html").read_text()
    assert "Stale page" in page and "the last run of this stage failed (RuntimeError: boom in the stage)" in page
    banner = re.search(r'<div class="depsim-stale".*?</div>', page, re.S).group(0)
    assert "good run first" in page and "boom" not in page.replace(banner, "")  # the traceback is not published
    (reports / "fail-now").unlink()
    run("third")
    assert not failed.exists()
    page = (render_nbconvert(out).parent / "01_sample.html").read_text()
    assert "Stale page" not in page and "good run third" in page


def test_every_rerun_command_names_a_non_default_reports_dir(tmp_path):
    from depsim.pipeline import DEFAULT_REPORTS_DIR, realised_status, rerun_command
    from depsim.params import load_release
    params = small_release(tmp_path, "adv")
    here = f"depsim run {params.resolve()} --from grade"
    assert rerun_command(params, DEFAULT_REPORTS_DIR, "grade") == here
    assert rerun_command(params, None, "grade") == here
    assert rerun_command(params, tmp_path / "r", "grade") == f"{here} --reports-dir {(tmp_path / 'r').resolve()}"
    assert rerun_command(None, None, "grade") == "depsim run PARAMS --from grade"
    ok, why = realised_status(load_release(params), released=False, reports_dir=tmp_path / "r")
    assert not ok and f"--from sample --reports-dir {(tmp_path / 'r').resolve()}" in why


def test_a_second_params_file_with_the_same_release_name_is_refused(tmp_path):
    """A copied params file whose `release:` was not changed used to take the folder over
    silently, mixing two releases' tables under one name (found by the analyst audit)."""
    import pandas as pd
    from conftest import small_release

    from depsim import pipeline
    from depsim.params import ParamsError, load_release
    from depsim.runner import run_release
    first = small_release(tmp_path, "acme")
    second = tmp_path / "acme-copy.yaml"
    second.write_text(first.read_text())
    reports = tmp_path / "reports"
    pipeline._write(pd.DataFrame({"x": [1]}), reports, load_release(first), "prefixes")
    assert pipeline.folder_params_file(load_release(second), reports) == first.name
    with pytest.raises(ParamsError, match=rf"release 'acme' is already in .*, made from {first.name}; running "
                                          r".*acme-copy.yaml there .*--replace"):
        run_release(second, reports, "none")
    assert sorted(p.name for p in (reports / "acme").iterdir() if p.suffix == ".ipynb") == []  # nothing ran


def test_a_params_file_of_the_same_name_in_another_folder_is_refused(tmp_path):
    """Two params files both named hh.yaml, in two folders, with one release name: the tables
    record the name only, so the second ran into the first's folder (researcher audit); the
    pages record the path. A file that was moved (its old path gone) is still the owner."""
    import shutil

    from conftest import small_release

    from depsim.params import ParamsError
    from depsim.runner import run_release
    for d in ("one", "other"):
        (tmp_path / d).mkdir()
    first, second = small_release(tmp_path / "one", "acme"), small_release(tmp_path / "other", "acme")
    assert second.name == first.name and second != first
    reports = tmp_path / "reports"
    run_release(first, reports, "none", stages=["01_sample"], log=lambda *_: None)
    with pytest.raises(ParamsError, match=rf"made from {first}; running {second} there"):
        run_release(second, reports, "none", stages=["01_sample"], log=lambda *_: None)
    moved = tmp_path / "moved"
    shutil.move(first.parent, moved)  # the folder, with the files the params name
    moved = moved / first.name
    run_release(moved, reports, "none", stages=["01_sample"], log=lambda *_: None)  # no refusal


def test_a_release_folder_that_is_the_notebooks_folder_is_refused(tmp_path, monkeypatch):
    # --reports-dir <repository> with `release: notebooks` executed the stages into
    # notebooks/ itself: 01_sample.ipynb, the template, was replaced by an executed page
    # (a copy of the notebooks folder stands in for the repository's here)
    notebooks = tmp_path / "repo" / "notebooks"
    shutil.copytree(NOTEBOOKS, notebooks)
    monkeypatch.setattr("depsim.runner.NOTEBOOKS", notebooks)
    params = small_release(tmp_path, "notebooks")
    before = {p.name: p.read_bytes() for p in notebooks.glob("*.ipynb")}
    with pytest.raises(ParamsError, match="depsim's own notebooks folder"):
        run_release(params, notebooks.parent, "none", stages=["01_sample"])
    assert {p.name: p.read_bytes() for p in notebooks.glob("*.ipynb")} == before
    assert not (notebooks / "data").exists()
