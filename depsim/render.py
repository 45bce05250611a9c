"""Render a release's executed notebooks into the reviewer-facing HTML site.

Uses ``quarto render`` when ``quarto`` is on PATH (with the project's ``_quarto.yml``);
otherwise, or when Quarto fails (its own message is shown as a warning), nbconvert writes the
same pages, with a navigation bar, into the same ``_site`` folder. Code cells are hidden:
reviewers read narrative, tables and charts.

The pages are self-contained: nbconvert uses depsim's template (``depsim/templates``: no
require.js, MathJax or mermaid from a CDN, so no math typesetting of transcript text), and
every page of either renderer is stripped of any script or stylesheet that would be fetched
from outside the report folder. Pages built on a table that was rewritten after they ran, or
whose stage's last run failed (the runner keeps that run as ``<page>.failed.ipynb``; the page
is from the run before, and the traceback is never published), are marked stale. A renderer switch clears the other renderer's files.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

from depsim.params import ParamsError, load_release
from depsim.pipeline import PAGES, rerun_command, stage_of, stale_pages

QUARTO_TEMPLATE = Path(__file__).resolve().parents[1] / "_quarto.yml"
TEMPLATES = Path(__file__).resolve().parent / "templates"
#: records which renderer wrote ``_site`` (a switch clears the folder first)
MARKER = ".depsim-renderer"
#: a page's last failed run, kept by the runner beside its last good ``<page>.ipynb``
FAILED_SUFFIX = ".failed.ipynb"

# a script or stylesheet fetched from outside the report folder (http:, https: or //host)
_REMOTE_SCRIPT = re.compile(r"""<script\b[^>]*\bsrc\s*=\s*["']?(?:https?:)?//[^>]*>\s*</script>""", re.I)
_REMOTE_LINK = re.compile(r"""<link\b[^>]*\bhref\s*=\s*["']?(?:https?:)?//[^>]*>""", re.I)


class RenderFailed(RuntimeError):
    """Rendering failed; the message holds the renderer's own error."""


def _nav(current: str, engine: str) -> str:
    links = " | ".join(
        f'<a href="{stem}.html"{" aria-current=page style=font-weight:bold" if stem == current else ""}>'
        f"{html.escape(title)}</a>" for stem, title in PAGES)
    return (f'<nav class="depsim-nav" style="padding:8px 16px;border-bottom:1px solid #ccc;font-family:sans-serif">'
            f"{links}<span style=float:right;color:#777>rendered with {html.escape(engine)}</span></nav>")


def strip_remote(page: str) -> str:
    """Return an HTML page without any ``<script src>`` or ``<link href>`` that points
    outside the report folder (absolute http(s) or protocol-relative URLs)."""
    return _REMOTE_LINK.sub("", _REMOTE_SCRIPT.sub("", page))


def _stale_banner(why: str) -> str:
    # styled inline too: Quarto's pages do not have depsim's template stylesheet
    return (f'<div class="depsim-stale" role="alert" style="border-left:6px solid #b91c1c;background:#fef2f2;'
            f'padding:6px 14px;margin:8px 16px;font-family:sans-serif"><strong>Stale page:</strong> {html.escape(why)}. '
            "Its numbers may not match the tables they describe.</div>")


_CHART_IMG = re.compile(r'<img alt="No description has been provided for this image" '
                        r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"')


def chart_alt(svg: str) -> str:
    """Return a text description of a Vega SVG chart for its ``alt``: its title, else what its
    axes say (Vega writes an ``aria-label`` per axis), else "Chart"."""
    title = re.search(r'class="mark-text role-title-text"[^>]*>.*?<text[^>]*>(.*?)</text>', svg, re.S)
    axes = re.findall(r'aria-label="((?:X|Y)-axis[^"]*)"', svg)
    parts = ([html.unescape(re.sub(r"<[^>]+>", "", title.group(1)))] if title else []) + [html.unescape(a) for a in axes]
    parts = list(dict.fromkeys(parts))  # facets repeat their axes
    return "Chart: " + "; ".join(parts) if parts else "Chart"


def _describe_charts(page: str) -> str:
    """Replace nbconvert's default ``alt`` on each SVG chart ("No description has been
    provided for this image") with :func:`chart_alt` of the chart."""
    def alt(m: re.Match) -> str:
        try:
            svg = base64.b64decode(m.group(1)).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return m.group(0)
        return f'<img alt="{html.escape(chart_alt(svg))}" src="data:image/svg+xml;base64,{m.group(1)}"'
    return _CHART_IMG.sub(alt, page)


def _finish(page: str, stem: str, engine: str, stale: dict[str, str]) -> str:
    """Strip remote assets, describe the charts, fill in the renderer on the provenance table,
    mark staleness."""
    page = _describe_charts(strip_remote(page))
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = page.replace('<td class="depsim-renderer">(set when rendered)</td>',
                        f'<td class="depsim-renderer">{html.escape(engine)}, {when}</td>')
    if stem in stale:
        page = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + _stale_banner(stale[stem]), page, count=1)
    return page


def _error_of(notebook: Path) -> str:
    """Return the first error a notebook's cells raised ("KeyError: 'pattern'", its first line
    and at most 300 characters), or '' when none is readable."""
    try:
        cells = json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return ""
    for o in (o for c in cells for o in c.get("outputs", [])):
        if o.get("output_type") == "error":
            err = f"{o.get('ename', '')}: {o.get('evalue', '')}".strip(": ")
            return err.splitlines()[0][:300] if err else ""
    return ""


def _papermill(notebook: Path) -> dict:
    """Return papermill's metadata of a notebook ({} when it is missing or unreadable)."""
    try:
        meta = json.loads(notebook.read_text(encoding="utf-8")).get("metadata", {}).get("papermill", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def run_params(release_dir: Path) -> str | None:
    """Return the params file the release's pages last ran with (papermill's record in the
    executed or failed notebooks), or None when none says."""
    for stem, _ in PAGES:
        for p in (release_dir / f"{stem}.ipynb", release_dir / f"{stem}{FAILED_SUFFIX}"):
            if params := _papermill(p).get("parameters", {}).get("params_file"):
                return params
    return None


def failed_pages(release_dir: Path, params: str | None = None) -> dict[str, str]:
    """Return page -> why its page is not current because its last run failed: the runner
    kept that run as ``<page>.failed.ipynb`` (and deletes it when the page next runs), so
    the page is from the last run that succeeded. The reason names the error, the failed
    notebook and the command that reruns from that stage (:func:`depsim.pipeline.rerun_command`)."""
    out = {}
    for stem, _ in PAGES:
        failed = release_dir / f"{stem}{FAILED_SUFFIX}"
        if failed.exists():
            err = _error_of(failed)
            out[stem] = (f"the last run of this stage failed{f' ({err})' if err else ''}, so this page is from the "
                         f"run before it; the failed notebook is {failed}; rerun: "
                         f"{rerun_command(params, release_dir.parent, stage_of(stem))}")
    return out


def _staleness(release_dir: Path) -> dict[str, str]:
    """Return page -> why it is stale: its last run failed (:func:`failed_pages`), or (from the
    executed notebooks' papermill metadata: the params file and when each page ran, and the
    tables' stamps) it shows tables that changed after it ran; {} when nothing is known."""
    executed, params = {}, run_params(release_dir)
    for stem, _ in PAGES:
        if end := _papermill(release_dir / f"{stem}.ipynb").get("end_time"):
            executed[stem] = dt.datetime.fromisoformat(end).replace(tzinfo=dt.timezone.utc).timestamp()
    stale = {}
    if params and Path(params).exists():
        try:
            stale = stale_pages(load_release(params), release_dir.parent, executed)
        except ParamsError:
            pass
    failed = failed_pages(release_dir, params)
    # a failed run is said first, then whatever else makes the page stale
    return {stem: "; ".join(w for w in (failed.get(stem), stale.get(stem)) if w)
            for stem, _ in PAGES if stem in failed or stem in stale}


def _clear_if_switched(release_dir: Path, engine: str) -> Path:
    """Return ``_site``, emptied first when another renderer (or nothing known) wrote it."""
    site = release_dir / "_site"
    if site.is_symlink():  # clearing it would delete (or fail on) another folder's files
        raise RenderFailed(f"{site} is a symbolic link (to {os.readlink(site)}): depsim renders into a folder of "
                           f"its own; remove the link, and copy _site where it should be published")
    marker = site / MARKER
    if site.exists() and (not marker.exists() or marker.read_text().strip() != engine):
        shutil.rmtree(site)
    if engine == "nbconvert":
        shutil.rmtree(release_dir / ".quarto", ignore_errors=True)
        (release_dir / "_quarto.yml").unlink(missing_ok=True)
    return site


def render_nbconvert(release_dir: Path, engine_label: str = "nbconvert") -> Path:
    """Render every executed page notebook of ``release_dir`` to ``_site/<page>.html`` with
    nbconvert and depsim's offline template (inputs hidden, navigation bar added); return
    the index page's path."""
    site = _clear_if_switched(release_dir, "nbconvert")
    site.mkdir(exist_ok=True)
    exporter = HTMLExporter(template_name="depsim_html", extra_template_basedirs=[str(TEMPLATES)],
                            exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    stale = _staleness(release_dir)
    for stem, title in PAGES:
        nb_path = release_dir / f"{stem}.ipynb"
        if not nb_path.exists():  # no good run of it (any more): an older page must not stay
            (site / f"{stem}.html").unlink(missing_ok=True)
            continue
        body, _ = exporter.from_notebook_node(nbformat.read(nb_path, as_version=4),
                                              resources={"metadata": {"name": f"{title} · depsim"}})
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + _nav(stem, engine_label), body, count=1)
        (site / f"{stem}.html").write_text(_finish(body, stem, engine_label, stale), encoding="utf-8")
    (site / MARKER).write_text("nbconvert")
    return site / "index.html"


def render_quarto(release_dir: Path, quarto: str) -> Path:
    """Render ``release_dir`` with Quarto (copying the project's ``_quarto.yml`` there), then
    strip remote assets and mark stale pages; return the index page's path. Raises
    RenderFailed with Quarto's own error output when it fails."""
    site = _clear_if_switched(release_dir, "quarto")
    shutil.copyfile(QUARTO_TEMPLATE, release_dir / "_quarto.yml")
    try:
        subprocess.run([quarto, "render", str(release_dir)], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        msg = (e.stderr or e.stdout or "").strip()
        raise RenderFailed(f"quarto render failed (exit {e.returncode}): {msg[-2000:]}") from None
    stale = _staleness(release_dir)
    for page in site.rglob("*.html"):
        page.write_text(_finish(page.read_text(encoding="utf-8"), page.stem, "quarto", stale), encoding="utf-8")
    (site / MARKER).write_text("quarto")
    return site / "index.html"


def check_engine(engine: str) -> str | None:
    """Return the path of ``quarto`` (None when it is not on PATH); raise FileNotFoundError when
    ``engine`` is "quarto" and it is not there (checked before a run starts, not after)."""
    quarto = shutil.which("quarto")
    if engine == "quarto" and not quarto:
        raise FileNotFoundError("quarto is not on PATH; use --render nbconvert")
    return quarto


def render(release_dir: str | Path, engine: str = "auto", warn=print) -> tuple[str, Path]:
    """Render the release's site; return (engine used: "quarto" or "nbconvert", index path).
    ``engine="auto"`` picks Quarto when it is on PATH. When Quarto fails, ``warn`` gets its
    own error and nbconvert renders instead. ``warn`` also gets one line per stale page (as
    its banner says, with the stage to rerun from), so the terminal says it too."""
    release_dir = Path(release_dir)
    quarto = check_engine(engine)
    if engine == "quarto" or (engine == "auto" and quarto):
        try:
            done = "quarto", render_quarto(release_dir, quarto)
        except RenderFailed as e:
            warn(f"warning: {e}\nwarning: falling back to nbconvert")
            done = "nbconvert", render_nbconvert(release_dir, "nbconvert (Quarto failed)")
    else:
        done = "nbconvert", render_nbconvert(release_dir)
    for page, why in _staleness(release_dir).items():
        warn(f"warning: stale page {page}: {why}")
    return done
