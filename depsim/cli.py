"""The ``depsim`` command line."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import typer

from depsim.cache import ResponseCache
from depsim.client import redact
from depsim.grade import DEFAULT_PARAMS, grade_schema, llm_grader_id, system_message
from depsim.grader_validation import check_output, read_labelled, refusal_labelled
from depsim.history import load_history
from depsim.history import record as record_history
from depsim.grader_validation import validate_grader as run_validation
from depsim.params import DATA_DIR, FORMATS, PROMPT_SETS, ParamsError, endpoint_url, load_release, unset_api_keys
from depsim.pipeline import PAGES, realised_status, rerun_command, stage_of
from depsim.readers import InputError, likely_cause
from depsim.records import read_table
from depsim.readers import convert as do_convert
from depsim.render import FAILED_SUFFIX, RenderFailed, check_engine, run_params
from depsim.render import render as do_render
from depsim.refusal import REFUSAL_PATTERN
from depsim.runner import StageFailed, run_release, select
from depsim.sample import NoUsableData, check_sources
from depsim.taxonomy import for_release, load_taxonomy

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Forecast a chat model's post-release misbehaviour by simulating its deployment.")

#: the repository's taxonomy: the --taxonomy default, wherever the command is run from
SHIPPED_TAXONOMY = DATA_DIR.parent / "params" / "taxonomy.yaml"


def _fail(msg: str, code: int = 2):
    typer.echo(f"depsim: error: {msg}", err=True)
    raise typer.Exit(code)

@app.command()
def run(params_file: Path = typer.Argument(..., help="release parameters, e.g. params/demo.yaml"),
        reports_dir: Path = typer.Option(Path("reports"), help="where reports/<release>/ is written"),
        render: str = typer.Option("auto", help="auto (quarto if on PATH, else nbconvert), quarto, nbconvert, none"),
        stages: str | None = typer.Option(None, "--stages", help="only these stages, comma-separated (e.g. grade,forecast); "
                                          "the summary and examples pages follow"),
        start: str | None = typer.Option(None, "--from", help="this stage and every later one (e.g. --from grade)"),
        replace: bool = typer.Option(False, help="run even though the release folder holds tables another params "
                                                 "file wrote under the same release name")):
    """Run the stage notebooks of a release with papermill and render its HTML report
    (every stage, or those named by --stages / --from)."""
    if render not in ("auto", "quarto", "nbconvert", "none"):
        _fail(f"--render must be auto, quarto, nbconvert or none, not {render!r}")
    try:
        order = select([x.strip() for x in stages.split(",") if x.strip()] if stages else None, start)
    except ValueError as e:
        _fail(str(e))
    if not params_file.is_file():  # before "running ...": nothing runs
        _fail(f"{params_file}: file not found")
    try:
        check_engine(render)  # --render quarto without Quarto: before "running ..." too
    except FileNotFoundError as e:
        _fail(str(e))
    typer.echo(f"depsim: running {params_file}" + (f" ({', '.join(order)})" if stages or start else ""))
    try:
        res = run_release(params_file, reports_dir, render, stages=order, log=typer.echo, replace=replace)
    except (ParamsError, StageFailed, FileNotFoundError, RenderFailed) as e:
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
        done = [s for s, _ in PAGES if (release_dir / f"{s}.ipynb").exists()]
        failed = [s for s, _ in PAGES if (release_dir / f"{s}{FAILED_SUFFIX}").exists()]
        start = stage_of(failed[0]) if failed else "<the stage that failed>"
        _fail(f"{release_dir}: no executed notebooks here (run `depsim run` first)" if not done + failed else
              f"{release_dir}: no summary page (index.ipynb): the run stopped after {', '.join(done) or 'no stage'}"
              + (f" ({failed[0]} failed: {release_dir / (failed[0] + FAILED_SUFFIX)})" if failed else "")
              + f"; finish it with `{rerun_command(run_params(release_dir), release_dir.parent, start)}`")
    if engine not in ("auto", "quarto", "nbconvert"):
        _fail(f"--engine must be auto, quarto or nbconvert, not {engine!r}")
    try:
        used, index = do_render(release_dir, engine, warn=lambda m: typer.echo(m, err=True))
    except (FileNotFoundError, RenderFailed) as e:
        _fail(str(e))
    typer.echo(f"report rendered with {used}: {index}")

@app.command()
def convert(inputs: list[str] = typer.Argument(..., help="file(s), a folder, a quoted glob, or a hub id"),
            fmt: str = typer.Option(..., "--format", "-f", help="a conversation format or prompt set of depsim.readers"),
            out: Path = typer.Option(..., "--out", "-o", help="canonical conversation table to write (Parquet)"),
            quarantine: Path | None = typer.Option(None, help="write bad records here instead of stopping at the first"),
            max_message_chars: int = typer.Option(1_000_000, help="longer messages are bad records"),
            column: list[str] = typer.Option([], "--column", help="record field kept as its own column (repeatable)"),
            keep_identifying: bool = typer.Option(False, help="keep hashed_ip, header (user agent), country, state"),
            quarantine_raw: bool = typer.Option(False, help="also write each bad record's raw text to the quarantine"),
            meta: bool = typer.Option(True, help="keep the records' other fields as JSON in `meta`"),
            json_path: str | None = typer.Option(None, help="dotted key of the record array in a JSON document"),
            map_: list[str] = typer.Option([], "--map", help="FIELD=RECORD_FIELD for openai_jsonl (repeatable or comma-separated), "
                                                               "e.g. prompt=user_input,response=model_output"),
            memory_limit: str | None = typer.Option(None, help="DuckDB memory limit, e.g. 4GB")):
    """Convert chat logs, a public chat data set or a prompt set into the canonical table.
    Exits 1 when no record could be kept."""

    if fmt not in FORMATS + PROMPT_SETS:
        _fail(f"--format must be one of {', '.join(FORMATS + PROMPT_SETS)}")
    mapping = _pairs(map_, "--map")  # repeatable or comma-separated, as validate-grader's
    try:
        res = do_convert(inputs[0] if len(inputs) == 1 else inputs, fmt, out, quarantine=quarantine,
                         max_message_chars=max_message_chars, columns=column, keep_identifying=keep_identifying,
                         quarantine_raw=quarantine_raw, keep_meta=meta, json_path=json_path,
                         mapping=mapping or None, memory_limit=memory_limit)
    except InputError as e:
        # the first record already fails: as with --quarantine, say what the layout looks like
        _fail(str(e) + (likely_cause({e.reason: 1}, fmt, "--format") if e.kept_before == 0 else ""))
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    typer.echo(f"{out}: {res.rows} conversations from {res.records} records"
               + (f"; {res.quarantined} quarantined in {quarantine} ("
                  + ", ".join(f"{k}: {v}" for k, v in res.reasons.most_common()) + ")" if res.quarantined else ""))
    for note in res.notes:
        typer.echo(f"note: {note}")
    if res.rows == 0:
        _fail(f"no record kept: all {res.records:,} quarantined ("
              + ", ".join(f"{k} {v}" for k, v in res.reasons.most_common()) + ")"
              + (likely_cause(res.reasons, fmt, "--format") or "; wrong --format?"), 1)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    """KEY=VALUE pairs from repeatable / comma-separated options."""
    out = {}
    for item in (x.strip() for v in values for x in v.split(",")):
        if not item:
            continue
        if "=" not in item:
            _fail(f"{what}: {item!r} is not KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


GRADERS = ("taxonomy", "classifier", "phrases", "llm")


def _category(cats: dict, name: str, where: Path):
    """The category ``name`` of ``cats``; exit with one line naming ``where`` when it is unknown."""
    if name not in cats:
        _fail(f"unknown category {name!r} (not in {where}; known: {', '.join(cats)})")
    return cats[name]


@app.command("validate-grader")
def validate_grader(
        data: list[Path] = typer.Option([], "--data",
                                        help="labelled file(s): CSV, JSONL, JSON (an array of records, or an object "
                                             "with them under --json-path) or Parquet (repeatable); a folder is read "
                                             "as XSTest completions. Default: the shipped XSTest completions "
                                             "(data/xstest), whose labels say refused: for over_refusal only"),
        json_path: str | None = typer.Option(None, help="dotted key of the record array in a JSON document, e.g. "
                                                        "jailbreaks for a JailbreakBench artifact"),
        category: str = typer.Option("over_refusal", help="the taxonomy category the labels are for"),
        grader: str = typer.Option("taxonomy", help="taxonomy (the category's grader), classifier (the refusal "
                                                    "classifier), phrases (the refusal phrase rule) or llm (the "
                                                    "category's rubric on the params file's models.grader)"),
        params: Path | None = typer.Option(None, help="release params: its taxonomy (with grading.llm) and its "
                                                      "models.grader endpoint"),
        taxonomy: Path = typer.Option(SHIPPED_TAXONOMY,
                                      help="taxonomy YAML (without --params)"),
        mapping: list[str] = typer.Option([], "--map", help="FIELD=COLUMN for prompt, response, label, source, safe, "
                                                            "e.g. prompt=question,response=answer,label=is_refusal "
                                                            "(default: the column named after the field)"),
        labels: list[str] = typer.Option([], "--labels", help="VALUE=1 / VALUE=0 pairs for the label column, "
                                                              "e.g. refused=1,answered=0"),
        prompts: str = typer.Option("safe", help="over-refusal only: safe (only safe prompts count, where the file "
                                                 "says) or all (grade every prompt as if safe)"),
        cache: Path = typer.Option(Path("reports/.cache/requests.sqlite"), help="LLM grader response cache"),
        out: Path = typer.Option(Path("grader_validation.parquet"), "--out", "-o",
                                 help="validation table to write (.parquet or .csv)")):
    """Validate a grader against human labels: agreement, Cohen's κ, sensitivity and
    specificity with intervals per source, a test of whether they carry over between sources,
    and a validation table the grade stage (grading.validation) uses for corrected rates."""
    if grader not in GRADERS:
        _fail(f"--grader must be one of {', '.join(GRADERS)}, not {grader!r}")
    if prompts not in ("safe", "all"):
        _fail(f"--prompts must be safe or all, not {prompts!r}")
    endpoint = None
    try:
        if params is not None:
            rel = load_release(params)
            cats = for_release(rel) if grader != "llm" else load_taxonomy(rel.resolve(rel.taxonomy))
            endpoint = endpoint_url(rel, rel.models.grader) if rel.models.grader is not None else None
        else:
            cats = load_taxonomy(taxonomy)
    except (ParamsError, FileNotFoundError) as e:
        _fail(str(e))
    cat = _category(cats, category, params or taxonomy)
    data = data or [DATA_DIR / "xstest"]
    try:
        check_output(out, data)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    if grader in ("classifier", "phrases"):
        if not refusal_labelled(cat):
            _fail(f"--grader {grader} detects refusals: it grades over_refusal, not {category}")
        gate = cat.grader.get("harmful_request", "(?!)")
        spec = {"kind": "rule", "rule": "refusal_of_safe_request", "harmful_request": gate,
                **({"refusal": "classifier"} if grader == "classifier" else {"pattern": REFUSAL_PATTERN})}
        cat = cat.model_copy(update={"grader": spec})
    elif grader == "llm":
        cat = cat.model_copy(update={"grader": {"kind": "llm", **{k: v for k, v in cat.grader.items()
                                                                   if k in ("params", "response_style")}}})
    try:
        items = read_labelled(data, mapping=_pairs(mapping, "--map"), labels=_pairs(labels, "--labels") or None,
                              json_path=json_path)
        # XSTest's human label says "refused": it validates a refusal category's grader, nothing else
        if items.attrs["refusal_labels"] and not refusal_labelled(cat):
            _fail(f"{', '.join(items.attrs['refusal_labels'])}: XSTest's labels (final_label) say whether the "
                  f"model refused, not {category}: give --data with {category}'s labels (--map label=COLUMN)")
        if cat.is_llm and endpoint is None:
            _fail(f"{category} is graded by an LLM here: give --params with a models.grader endpoint")
        table = run_validation(items, cat, endpoint=endpoint, cache=ResponseCache(cache) if cat.is_llm else None,
                               prompts=prompts, grader_name=grader)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    pooled = table[table["source"] == "all"] if len(table) else pd.DataFrame(columns=["n", "grader_errors"])
    if not (pooled["n"] > 0).any():
        # nothing was compared: a table without figures would only be refused where a release lists it
        err = table.attrs.get("first_error")
        why = f"first grader error: {redact(err, endpoint)}" if err else "no item has a human label"
        _fail(f"{category}: no labelled item got a usable verdict from the grader "
              f"({int(pooled['grader_errors'].sum())} grader errors), so no validation table is written; {why}",
              code=1)
    typer.echo(f"{category}: grader {grader} ({'llm on ' + endpoint.model if cat.is_llm else cat.grader['rule']}), "
               f"grader_id {table['grader_id'].iloc[0]}, {len(items)} labelled items")
    cols = ["source", "n", "n_excluded", "grader_errors", "human_rate", "grader_rate", "agreement", "kappa",
            "kappa_lo", "kappa_hi", "sensitivity", "sensitivity_lo", "sensitivity_hi", "specificity",
            "specificity_lo", "specificity_hi", "held_out"]
    # an undefined figure (κ with one human class, sensitivity without human positives) prints as a dash
    typer.echo(table[[c for c in cols if c in table]].to_string(index=False, float_format=lambda x: f"{x:.3f}",
                                                                na_rep="–"))
    if "n_pos" in pooled and ((pooled["n_pos"] == 0) | (pooled["n_neg"] == 0)).all():
        typer.echo("note: κ is undefined (–): the human labels are all one class, so agreement beyond chance "
                   "cannot be measured; this validation misses any κ bar")
    if table.attrs.get("over_refusal") and prompts == "safe" and (table["n_excluded"] > 0).any():
        typer.echo("(over-refusal: prompts the file marks unsafe, and items without a label, are excluded)")
    if table.attrs["harmful_by_words"]:
        typer.echo(f"note: {table.attrs['harmful_by_words']} item(s) without a safe label were read as a harmful "
                   f"request by the grader's word list (harmful_request), so their refusals count as negatives; "
                   f"label the prompts (a safe column, or --map safe=COLUMN) to decide for them")
    for w in table.attrs["warnings"]:
        typer.echo(f"warning: {w}")
    if (errors := int(pooled["grader_errors"].sum())) and (err := table.attrs.get("first_error")):
        # the figures rest on the items that got a verdict: say how many did not, and why
        typer.echo(f"warning: {errors} of {errors + int(pooled['n'].sum())} graded items got no usable verdict "
                   f"(left out of n); first grader error: {redact(err, endpoint)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    (table.to_csv if out.suffix == ".csv" else table.to_parquet)(out, index=False)  # check_output: .csv or .parquet
    typer.echo(f"wrote {out}")


@app.command("grader-prompt")
def grader_prompt(category: str = typer.Argument(..., help="a category of the taxonomy"),
                  taxonomy: Path = typer.Option(SHIPPED_TAXONOMY, help="taxonomy YAML"),
                  model: str | None = typer.Option(None, help="grader model, to print the LLM grader's id")):
    """Print a category's LLM grader rubric (the system message), its JSON output schema and,
    with --model, the frozen grader id it would have on that model."""
    try:
        tax = load_taxonomy(taxonomy)
    except (ParamsError, FileNotFoundError) as e:
        _fail(str(e))
    cat = _category(tax, category, taxonomy)
    typer.echo(system_message(cat))
    typer.echo("\n# JSON schema of the answer\n" + json.dumps(grade_schema(), indent=2))
    kind = "llm" if cat.is_llm else f"rule ({cat.grader['rule']}, grader_id {cat.grader_id})"
    typer.echo(f"\n# This taxonomy grades {category} with: {kind}")
    if model:
        typer.echo(f"# LLM grader id on {model}: {llm_grader_id(cat, model, cat.grader.get('params', DEFAULT_PARAMS), cat.grader.get('response_style', 'json_schema'))}")

@app.command()
def check(params_file: Path = typer.Argument(..., help="release parameters to validate"),
          data: bool = typer.Option(True, help="also convert the sources (cached) and check that each has "
                                               "eligible user turns"),
          env: bool = typer.Option(True, help="also check that the API-key environment variable (api_key_env) "
                                              "of every model the run calls over HTTP is set; --no-env to "
                                              "validate the file where the keys are not (e.g. in CI)"),
          reports_dir: Path = typer.Option(Path("reports"), help="where reports/<release>/ is (conversion cache)")):
    """Validate a params file (and its taxonomy) without running a model; with --env (default)
    also that every API key the run needs is in the environment (one line per missing
    variable, never a value), and with --data (default) that every prefix source has usable
    records and eligible user turns. Exits 2 for a bad file, 1 for a missing key or bad data."""

    try:
        rel = load_release(params_file)
        if rel.history is not None:  # its rows, not only its existence (stage 5 reads them)
            load_history(rel.resolve(rel.history))
    except (ParamsError, ValueError) as e:
        _fail(str(e))
    if env and (unset := unset_api_keys(rel)):
        for line in unset:
            typer.echo(f"depsim: error: {params_file}: {line}", err=True)
        raise typer.Exit(1)
    if data:
        try:
            for line in check_sources(rel, reports_dir):
                typer.echo(line)
        except (NoUsableData, InputError, FileNotFoundError) as e:
            _fail(str(e), 1)
    typer.echo(f"{params_file}: ok (release {rel.release}, targets {', '.join(rel.targets)})")

@app.command()
def record(params_file: Path = typer.Argument(..., help="release parameters (its `history:` file is appended to)"),
           reports_dir: Path = typer.Option(Path("reports"), help="where reports/<release>/ is"),
           replace: bool = typer.Option(False, help="write the release's rows again if it is already recorded")):
    """After release, append this release's scored forecasts and realised counts (the score
    stage's table) to the params' history file, so the next release's predictive intervals and
    metrics across releases learn from it. Exits 2 without a history file, scores, or when the
    release is already recorded (--replace)."""
    try:
        rel = load_release(params_file)
    except ParamsError as e:
        _fail(str(e))
    # no prod_new target: nothing was realised, whatever the score stage wrote (it writes no scores)
    ok, why = realised_status(rel, released="prod_new" in rel.targets, reports_dir=reports_dir)
    if not ok:  # a stand-in's "realised" counts are not what happened: never history
        _fail(f"{params_file}: {why}")
    if rel.history is None:
        _fail(f"{params_file}: no `history:` file to record the release in")
    try:
        scored = read_table(reports_dir, rel.release, "scores")
        n = record_history(rel.resolve(rel.history), scored, rel.release, replace=replace)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    typer.echo(f"{rel.resolve(rel.history)}: recorded release {rel.release} ({n} rows)")


if __name__ == "__main__":
    app()
