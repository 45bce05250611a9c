"""The ``depsim`` command line."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from depsim.grade import DEFAULT_PARAMS, grade_schema, llm_grader_id, system_message
from depsim.grader_validation import rank_comparison, xstest_refusal_validation
from depsim.params import DATA_DIR, FORMATS, PROMPT_SETS, ParamsError, load_release
from depsim.readers import InputError
from depsim.readers import convert as do_convert
from depsim.render import render as do_render
from depsim.runner import StageFailed, run_release, select
from depsim.taxonomy import load_taxonomy

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Forecast a chat model's post-release misbehaviour by simulating its deployment.")

def _fail(msg: str, code: int = 2):
    typer.echo(f"depsim: error: {msg}", err=True)
    raise typer.Exit(code)

@app.command()
def run(params_file: Path = typer.Argument(..., help="release parameters, e.g. params/demo.yaml"),
        reports_dir: Path = typer.Option(Path("reports"), help="where reports/<release>/ is written"),
        render: str = typer.Option("auto", help="auto (quarto if on PATH, else nbconvert), quarto, nbconvert, none"),
        stages: str | None = typer.Option(None, "--stages", help="only these stages, comma-separated (e.g. grade,forecast); "
                                          "the summary and examples pages follow"),
        start: str | None = typer.Option(None, "--from", help="this stage and every later one (e.g. --from grade)")):
    """Run the stage notebooks of a release with papermill and render its HTML report
    (every stage, or those named by --stages / --from)."""
    if render not in ("auto", "quarto", "nbconvert", "none"):
        _fail(f"--render must be auto, quarto, nbconvert or none, not {render!r}")
    try:
        order = select([x.strip() for x in stages.split(",") if x.strip()] if stages else None, start)
    except ValueError as e:
        _fail(str(e))
    typer.echo(f"depsim: running {params_file}" + (f" ({', '.join(order)})" if stages or start else ""))
    try:
        res = run_release(params_file, reports_dir, render, stages=order, log=typer.echo)
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

    if not (release_dir / "index.ipynb").exists():
        _fail(f"{release_dir}: no executed notebooks here (run `depsim run` first)")
    if engine not in ("auto", "quarto", "nbconvert"):
        _fail(f"--engine must be auto, quarto or nbconvert, not {engine!r}")
    try:
        used, index = do_render(release_dir, engine, warn=lambda m: typer.echo(m, err=True))
    except FileNotFoundError as e:
        _fail(str(e))
    typer.echo(f"report rendered with {used}: {index}")

@app.command()
def convert(inputs: list[str] = typer.Argument(..., help="file(s), a folder, a quoted glob, or a hub id"),
            fmt: str = typer.Option(..., "--format", "-f", help="a conversation format or prompt set of depsim.readers"),
            out: Path = typer.Option(..., "--out", "-o", help="canonical conversation table to write (Parquet)"),
            quarantine: Path | None = typer.Option(None, help="write bad records here instead of stopping at the first"),
            max_message_chars: int = typer.Option(1_000_000, help="longer messages are bad records"),
            column: list[str] = typer.Option([], "--column", help="record field kept as its own column (repeatable)")):
    """Convert chat logs, a public chat data set or a prompt set into the canonical table."""
    if fmt not in FORMATS + PROMPT_SETS:
        _fail(f"--format must be one of {', '.join(FORMATS + PROMPT_SETS)}")
    try:
        res = do_convert(inputs[0] if len(inputs) == 1 else inputs, fmt, out, quarantine=quarantine,
                         max_message_chars=max_message_chars, columns=column)
    except (InputError, FileNotFoundError) as e:
        _fail(str(e))
    typer.echo(f"{out}: {res.rows} conversations from {res.records} records"
               + (f"; {res.quarantined} quarantined in {quarantine} ("
                  + ", ".join(f"{k}: {v}" for k, v in res.reasons.most_common()) + ")" if res.quarantined else ""))
    for note in res.notes:
        typer.echo(f"note: {note}")

@app.command("validate-grader")
def validate_grader(data_dir: Path = typer.Option(DATA_DIR, "--data-dir", help="folder holding xstest/"),
                    prompts: str = typer.Option("all", help="all, safe or unsafe prompts"),
                    out: Path | None = typer.Option(None, "--out", "-o", help="also write the table (.csv or .parquet)")):
    """Validate the refusal rule grader against XSTest's human labels: agreement, Cohen's κ,
    sensitivity, specificity and Rogan–Gladen corrected rates per model, and the ranking."""
    if prompts not in ("all", "safe", "unsafe"):
        _fail(f"--prompts must be all, safe or unsafe, not {prompts!r}")
    try:
        table = xstest_refusal_validation(data_dir, prompts=prompts)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    cols = ["variant", "model", "n", "human_rate", "grader_rate", "agreement", "kappa", "sensitivity",
            "specificity", "rg_rate", "rg_lo", "rg_hi"]
    typer.echo(table[[c for c in cols if c in table]].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    typer.echo("\n" + rank_comparison(table).to_string(index=False))
    if out is not None:
        (table.to_parquet if out.suffix == ".parquet" else table.to_csv)(out, index=False)
        typer.echo(f"wrote {out}")

@app.command("grader-prompt")
def grader_prompt(category: str = typer.Argument(..., help="a category of the taxonomy"),
                  taxonomy: Path = typer.Option(Path("params/taxonomy.yaml"), help="taxonomy YAML"),
                  model: str | None = typer.Option(None, help="grader model, to print the LLM grader's id")):
    """Print a category's LLM grader rubric (the system message), its JSON output schema and,
    with --model, the frozen grader id it would have on that model."""
    try:
        tax = load_taxonomy(taxonomy)
    except (ParamsError, FileNotFoundError) as e:
        _fail(str(e))
    if category not in tax:
        _fail(f"unknown category {category!r} (not in {taxonomy}; known: {', '.join(tax)})")
    cat = tax[category]
    typer.echo(system_message(cat))
    typer.echo("\n# JSON schema of the answer\n" + json.dumps(grade_schema(), indent=2))
    kind = "llm" if cat.is_llm else f"rule ({cat.grader['rule']}, grader_id {cat.grader_id})"
    typer.echo(f"\n# This taxonomy grades {category} with: {kind}")
    if model:
        typer.echo(f"# LLM grader id on {model}: {llm_grader_id(cat, model, cat.grader.get('params', DEFAULT_PARAMS), cat.grader.get('response_style', 'json_schema'))}")

@app.command()
def check(params_file: Path = typer.Argument(..., help="release parameters to validate")):
    """Validate a params file (and its taxonomy) without running anything."""

    try:
        rel = load_release(params_file)
    except ParamsError as e:
        _fail(str(e))
    typer.echo(f"{params_file}: ok (release {rel.release}, targets {', '.join(rel.targets)})")

if __name__ == "__main__":
    app()
