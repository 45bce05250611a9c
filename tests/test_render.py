"""Rendering: no remote assets, a renderer switch clears the other's files, Quarto's own
error is shown and nbconvert takes over."""
import os
import re
import stat

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from depsim import render


def _release(tmp_path):
    d = tmp_path / "rel"
    d.mkdir()
    nb = new_notebook(cells=[new_code_cell("x", outputs=[new_output("display_data", data={"text/html": "<p>hello $x$</p>"})])])
    nbformat.write(nb, d / "index.ipynb")
    return d


def test_strip_remote_keeps_local_assets():
    page = ('<script src="https://cdn.example/require.js"></script><script src="site_libs/quarto.js"></script>'
            '<link rel="stylesheet" href="//fonts.example/css"><link rel="stylesheet" href="site_libs/b.css">')
    out = render.strip_remote(page)
    assert "cdn.example" not in out and "fonts.example" not in out
    assert "site_libs/quarto.js" in out and "site_libs/b.css" in out


def test_nbconvert_pages_request_nothing_remote(tmp_path):
    d = _release(tmp_path)
    used, index = render.render(d, "nbconvert")
    page = index.read_text()
    assert used == "nbconvert"
    for needle in ("cdnjs", "mathjax", "MathJax", "require.js", "mermaid"):
        assert needle not in page, needle
    assert "hello $x$" in page


def test_a_page_without_a_notebook_leaves_the_site(tmp_path):
    # a stage page rendered before its notebook went away (removed, or never run again) is not
    # published as if current
    d = _release(tmp_path)
    nbformat.write(nbformat.read(d / "index.ipynb", as_version=4), d / "04_grade.ipynb")
    _, index = render.render(d, "nbconvert")
    assert (index.parent / "04_grade.html").exists()
    (d / "04_grade.ipynb").unlink()
    render.render(d, "nbconvert")
    assert not (index.parent / "04_grade.html").exists() and index.exists()


def test_a_symlinked_site_is_refused_in_one_line_and_left_alone(tmp_path):
    # clearing _site followed the link's folder, or failed with a raw OSError (security audit)
    import pytest
    d = _release(tmp_path)
    elsewhere = tmp_path / "published"
    elsewhere.mkdir()
    (elsewhere / "keep.html").write_text("mine")
    (d / "_site").symlink_to(elsewhere)
    with pytest.raises(render.RenderFailed, match=r"_site is a symbolic link \(to .*published\).*remove the link"):
        render.render(d, "nbconvert")
    assert (elsewhere / "keep.html").read_text() == "mine" and (d / "_site").is_symlink()


def test_quarto_failure_shows_its_error_and_falls_back(tmp_path, monkeypatch):
    d = _release(tmp_path)
    (d / "_site").mkdir()
    (d / "_site" / "stale-quarto-page.html").write_text("old")
    fake = tmp_path / "bin" / "quarto"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'ERROR: YAMLException: bad indentation (_quarto.yml, 3:4)' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    warnings = []
    used, index = render.render(d, "auto", warn=warnings.append)
    assert used == "nbconvert" and index.exists()
    assert any("YAMLException: bad indentation" in w and "falling back to nbconvert" in w for w in warnings)
    assert "nbconvert (Quarto failed)" in index.read_text()
    # the switch cleared what the other renderer had left
    assert not (d / "_site" / "stale-quarto-page.html").exists()
    assert not (d / "_quarto.yml").exists()


def test_charts_get_an_alt_text_that_describes_them():
    """nbconvert gives every chart the alt "No description has been provided for this image";
    the rendered page describes each from its own title and axes (escaped)."""
    import base64

    import altair as alt
    import pandas as pd
    import vl_convert as vlc

    from depsim.render import _finish
    chart = alt.Chart(pd.DataFrame({"x": [1, 2], "y": [3, 4]})).mark_point().encode(
        x=alt.X("x:Q", title="realised rate <per 100k>"), y="y:Q").properties(title="Forecast & realised")
    svg = vlc.vegalite_to_svg(chart.to_dict())
    b64 = base64.b64encode(svg.encode()).decode()
    page = (f'<html><body><img alt="No description has been provided for this image" '
            f'src="data:image/svg+xml;base64,{b64}"/></body></html>')
    out = _finish(page, "x", "nbconvert", {})
    alt_text = re.search(r'<img alt="([^"]*)"', out).group(1)
    assert alt_text.startswith("Chart: Forecast &amp; realised; X-axis titled &#x27;realised rate &lt;per 100k&gt;&#x27;")
    assert "No description" not in out and b64 in out
