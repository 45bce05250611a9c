"""Render a release's executed notebooks into the reviewer-facing HTML site.

Uses ``quarto render`` when ``quarto`` is on PATH (with the project's ``_quarto.yml``);
otherwise nbconvert's HTML exporter writes the same pages, with a navigation bar, into the
same ``_site`` folder. Code cells are hidden: reviewers read narrative, tables and charts.
"""
from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

from depsim.pipeline import PAGES

QUARTO_TEMPLATE = Path(__file__).resolve().parents[1] / "_quarto.yml"


def _nav(current: str, engine: str) -> str:
    links = " | ".join(
        f'<a href="{stem}.html"{" aria-current=page style=font-weight:bold" if stem == current else ""}>'
        f"{html.escape(title)}</a>" for stem, title in PAGES)
    return (f'<nav class="depsim-nav" style="padding:8px 16px;border-bottom:1px solid #ccc;font-family:sans-serif">'
            f"{links}<span style=float:right;color:#777>rendered with {engine}</span></nav>")


def render_nbconvert(release_dir: Path) -> Path:
    """Render every executed page notebook of ``release_dir`` to ``_site/<page>.html`` with
    nbconvert (inputs hidden, navigation bar added); return the index page's path."""
    site = release_dir / "_site"
    site.mkdir(exist_ok=True)
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    for stem, title in PAGES:
        nb_path = release_dir / f"{stem}.ipynb"
        if not nb_path.exists():
            continue
        body, _ = exporter.from_notebook_node(nbformat.read(nb_path, as_version=4),
                                              resources={"metadata": {"name": f"{title} · depsim"}})
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + _nav(stem, "nbconvert"), body, count=1)
        (site / f"{stem}.html").write_text(body, encoding="utf-8")
    return site / "index.html"


def render_quarto(release_dir: Path, quarto: str) -> Path:
    """Render ``release_dir`` with Quarto (copying the project's ``_quarto.yml`` there);
    return the index page's path."""
    shutil.copyfile(QUARTO_TEMPLATE, release_dir / "_quarto.yml")
    subprocess.run([quarto, "render", str(release_dir)], check=True, capture_output=True, text=True)
    return release_dir / "_site" / "index.html"


def render(release_dir: str | Path, engine: str = "auto") -> tuple[str, Path]:
    """Render the release's site; return (engine used: "quarto" or "nbconvert", index path).
    ``engine="auto"`` picks Quarto when it is on PATH."""
    release_dir = Path(release_dir)
    quarto = shutil.which("quarto")
    if engine == "quarto" or (engine == "auto" and quarto):
        if not quarto:
            raise FileNotFoundError("quarto is not on PATH; use engine='nbconvert'")
        return "quarto", render_quarto(release_dir, quarto)
    return "nbconvert", render_nbconvert(release_dir)
