"""The ``depsim`` command line."""
from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Forecast a chat model's post-release misbehaviour by simulating its deployment.")


def _fail(msg: str, code: int = 2):
    typer.echo(f"depsim: error: {msg}", err=True)
    raise typer.Exit(code)


@app.command()
def run(params_file: Path = typer.Argument(..., help="release parameters, e.g. params/demo.yaml"),
        reports_dir: Path = typer.Option(Path("reports"), help="where reports/<release>/ is written"),
        render: str = typer.Option("auto", help="auto (quarto if on PATH, else nbconvert), quarto, nbconvert, none")):
    """Run every stage notebook of a release with papermill and render its HTML report."""
    from depsim.params import ParamsError
    from depsim.runner import StageFailed, run_release

    if render not in ("auto", "quarto", "nbconvert", "none"):
        _fail(f"--render must be auto, quarto, nbconvert or none, not {render!r}")
    typer.echo(f"depsim: running {params_file}")
    try:
        res = run_release(params_file, reports_dir, render, log=typer.echo)
    except (ParamsError, StageFailed, FileNotFoundError) as e:
        _fail(str(e))
    if res["sent"] == 0 and res["cached"] > 0:
        typer.echo(f"model requests: 0 sent, all {res['cached']} served from the cache")
    else:
        typer.echo(f"model requests: {res['sent']} sent, {res['cached']} served from the cache, "
                   f"{res['failed']} failed")
    if res["index"] is not None:
        typer.echo(f"report rendered with {res['engine']}: {res['index']}")
    typer.echo(f"done in {res['seconds']:.1f} s")


@app.command()
def render(release_dir: Path = typer.Argument(..., help="reports/<release>"),
           engine: str = typer.Option("auto", help="auto, quarto or nbconvert")):
    """Render an already executed release into HTML."""
    from depsim.report import render as do_render

    if not (release_dir / "index.ipynb").exists():
        _fail(f"{release_dir}: no executed notebooks here (run `depsim run` first)")
    used, index = do_render(release_dir, engine)
    typer.echo(f"report rendered with {used}: {index}")


@app.command()
def check(params_file: Path = typer.Argument(..., help="release parameters to validate")):
    """Validate a params file (and its taxonomy) without running anything."""
    from depsim.params import ParamsError, load_release

    try:
        rel = load_release(params_file)
    except ParamsError as e:
        _fail(str(e))
    typer.echo(f"{params_file}: ok (release {rel.release}, targets {', '.join(rel.targets)})")


if __name__ == "__main__":
    app()
