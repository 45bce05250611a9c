"""The pipeline: each stage of the method as one call that reads the tables earlier stages
wrote under ``reports/<release>/data/``, runs the stage, writes its own tables, logs its
model requests and returns what its page shows. The notebooks, the tests and the fidelity
curves all run the method through these functions.

| stage | notebook | writes |
|---|---|---|
| sample | 01_sample | prefixes |
| simulate | 02_simulate | completions |
| realism | 02b_realism | realism, realism_pairs, fidelity_curves |
| audit | 03_audit | findings, clusters |
| grade | 04_grade | grades, rates |
| forecast | 05_forecast | forecasts |
| score | 06_score | scores, score_summary |

This is also where the simulated world's demo pages are wired: the truth (:mod:`depsim.sim.truth`)
and the fidelity curves. No other module imports :mod:`depsim.sim`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shlex
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from depsim import __version__, audit, deid, forecast, grader_validation, history, realism, refusal, sample, score, show, simulate, stats
from depsim.cache import ResponseCache
from depsim.client import RunStats, complete, mask_url
from depsim.grade import GradingFailed, check_grades, failure_table, grade, structured_notes, grader_table, rates, reweighted_rates
from depsim.params import Release, endpoint_url, read_validation, simulated_graders, simulated_targets, used_endpoints
from depsim.records import decode_messages, log_requests, read_table, table_meta, table_path, write_table
from depsim.sim.truth import against_truth, world_of
from depsim.taxonomy import for_release, load_taxonomy
from depsim.toolloop import release_store

#: stage -> (notebook stem, page title)
STAGES = {"sample": ("01_sample", "1 Sample"), "simulate": ("02_simulate", "2 Simulate"),
          "realism": ("02b_realism", "2b Tool realism"), "audit": ("03_audit", "3 Audit"),
          "grade": ("04_grade", "4 Grade"), "forecast": ("05_forecast", "5 Forecast"),
          "score": ("06_score", "6 Score")}
#: the report's pages, summary first: (notebook stem, title)
PAGES = [("index", "Summary"), *STAGES.values(), ("examples", "Flagged examples")]

#: table -> the tables it is computed from (for staleness)
INPUTS = {"prefixes": [], "completions": ["prefixes"], "realism_pairs": ["prefixes"], "realism": ["prefixes"],
          "fidelity_curves": ["prefixes"], "findings": ["prefixes", "completions"],
          "clusters": ["prefixes", "completions"], "grades": ["prefixes", "completions"],
          "rates": ["prefixes", "completions"], "forecasts": ["rates"], "scores": ["forecasts", "rates"],
          "score_summary": ["forecasts", "rates"]}
#: table -> the stage that writes it
WRITER = {"prefixes": "sample", "completions": "simulate", "realism_pairs": "realism", "realism": "realism",
          "fidelity_curves": "realism", "findings": "audit", "clusters": "audit", "grades": "grade", "rates": "grade",
          "forecasts": "forecast", "scores": "score", "score_summary": "score"}
#: page (notebook stem) -> the tables it shows
PAGE_TABLES = {"01_sample": ["prefixes"], "02_simulate": ["completions"],
               "02b_realism": ["realism_pairs", "realism", "fidelity_curves"], "03_audit": ["findings", "clusters"],
               "04_grade": ["grades", "rates"], "05_forecast": ["forecasts"], "06_score": ["scores", "score_summary"],
               "index": ["rates", "forecasts", "scores", "score_summary", "clusters", "realism"],
               "examples": ["grades", "completions", "prefixes", "findings", "clusters"]}


def cache(reports_dir: str | Path) -> ResponseCache:
    """Return the request cache shared by every release under ``reports_dir``."""
    return ResponseCache(Path(reports_dir) / ".cache" / "requests.sqlite")


@lru_cache(maxsize=1)
def git_commit() -> str:
    """Return the git commit of the depsim checkout (with "-dirty" when it has uncommitted
    changes), or "unknown" outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        if head.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


#: the tool categories the fidelity curves grade (stage 2b), by their taxonomy rules
CURVE_CATEGORIES = ("calculator_hacking", "lying_about_tools")

#: params that change what the pages show, never a table: left out of the params hash (the
#: gates are not among them: they decide the verdict)
DISPLAY_PARAMS = {"title", "report", "path", "notice", "all_failed"}
#: stage -> the params its own tables are computed from (a field, ``section.key``, or a file
#: named by a field: the taxonomy, the history, the grading validations, hashed by content).
#: An earlier stage's params reach a table through its inputs (:data:`INPUTS`), so editing
#: the grading marks the grades and what follows stale, not the prefixes.
#: tests/test_stage_params.py checks it against what each stage reads.
STAGE_PARAMS = {
    "sample": ("release", "world", "sources", "sampling", "deid", "reweight", "targets"),
    "simulate": ("world", "models.candidate", "models.previous_production", "models.candidate_production",
                 "models.tool_simulator", "generation", "targets"),
    # the fidelity curves grade two tool categories with their rules: only those specs, so an
    # edit elsewhere in the taxonomy does not rerun the realism check
    "realism": ("world", "realism", "models.candidate", "models.judge", "models.tool_simulator", "generation",
                "taxonomy:" + ",".join(CURVE_CATEGORIES)),
    "audit": ("world", "audit", "models.auditor", "targets", "categories", "taxonomy", "grading.llm", "report.level"),
    "grade": ("world", "grading", "models.grader", "categories", "taxonomy", "targets", "reweight", "report.level"),
    # report.level also sets the audit page's bounds, and the gates the verdict the forecast
    # stage checks: editing either marks the pages that show them stale
    "forecast": ("history", "report.level", "targets", "gates"),
    "score": ("world", "history", "report.level", "reweight", "generation.tool_mode"),
}


def params_hash(rel: Release, stage: str | None = None) -> str:
    """Return 12 hex chars of the sha256 of the release's parameters that shape ``stage``'s
    tables (:data:`STAGE_PARAMS`, files by content), or with no stage of all that shape any
    table (all but :data:`DISPLAY_PARAMS`, and the files)."""
    dump = rel.model_dump(mode="json")
    keys = STAGE_PARAMS[stage] if stage else [k for k in dump if k not in DISPLAY_PARAMS] + ["report.level"]
    picked = {}
    for key in keys:
        if key.startswith("taxonomy:"):  # some categories' specs, as loaded (not the whole file)
            tax = load_taxonomy(rel.resolve(rel.taxonomy))
            picked[key] = {c: tax[c].model_dump(mode="json") if c in tax else None for c in key[9:].split(",")}
            continue
        head, _, tail = key.partition(".")
        picked[key] = (dump.get(head) or {}).get(tail) if tail else dump.get(head)
    h = hashlib.sha256(json.dumps(picked, sort_keys=True).encode())
    files = ([rel.taxonomy] if "taxonomy" in keys else []) + ([rel.history] if "history" in keys and rel.history else []) \
        + (list(rel.grading.validation) if "grading" in keys else [])
    for f in files:  # what the file says, not only its name
        path = rel.resolve(f)
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def folder_params_file(rel: Release, reports_dir: str | Path) -> str | None:
    """Return the name of the params file whose run last wrote a table in the release's
    folder (its provenance's ``params_file``), or None for an empty folder."""
    metas = [m for t in WRITER if (m := table_meta(reports_dir, rel.release, t)) and m.get("params_file")]
    return max(metas, key=lambda m: m.get("written_at", 0))["params_file"] if metas else None


def provenance(rel: Release, stage: str | None = None) -> dict:
    """Return the provenance stamped on every table a stage writes: depsim version, git
    commit, params hash (of ``stage``'s params, :func:`params_hash`), params file, and the
    model id of each role."""
    m = rel.models
    models = {role: ep.model for role in type(m).model_fields if (ep := getattr(m, role)) is not None}
    return {"depsim_version": __version__, "git_commit": git_commit(), "params_hash": params_hash(rel, stage),
            "params_file": str(rel.path.name if rel.path else ""), "models": models}


def _write(df: pd.DataFrame, reports_dir, rel: Release, name: str) -> Path:
    meta = provenance(rel, WRITER[name])
    if name == "prefixes" and (fp := _key_fingerprint(rel, reports_dir, create=True)):
        meta["deid_key"] = fp  # which key made the substitutes: a fingerprint, never the key
    return write_table(df, reports_dir, rel.release, name, meta=meta)


def _key_fingerprint(rel: Release, reports_dir, create: bool) -> str | None:
    """The fingerprint of the secret key that de-identifies the release's real traffic; None
    without real traffic or de-identification, or (``create`` False) before any key exists."""
    real = [src for src in (rel.sources.previous, rel.sources.candidate) if src is not None and src.kind != "sim_world"]
    key = deid.deid_key(reports_dir, create=create) if rel.deid and real else None
    return deid.key_fingerprint(key) if key else None


def staleness(rel: Release, reports_dir: str | Path) -> pd.DataFrame:
    """Return one row per existing table: ``table``, ``written`` (UTC), ``params_hash``,
    ``git_commit`` and ``stale`` (why it is stale, or "" when current): a table is stale when
    a table it is computed from was rewritten after it (or is itself stale), or when it was
    written under other parameters of its stage (:func:`params_hash`), another depsim version,
    or (prefixes) another de-identification key."""
    metas = {name: table_meta(reports_dir, rel.release, name) for name in INPUTS}
    metas = {k: v for k, v in metas.items() if v is not None}
    now = {stage: params_hash(rel, stage) for stage in STAGES}
    why: dict[str, str] = {}
    for name in INPUTS:  # INPUTS lists inputs before the tables computed from them
        if name not in metas:
            continue
        reasons = []
        for src in INPUTS[name]:
            if src in metas and metas[src]["written_at"] > metas[name]["written_at"] + 1e-6:
                reasons.append(f"{src} was rewritten after it")
            elif why.get(src):
                reasons.append(f"{src} is stale")
        if metas[name].get("params_hash") not in (None, now[WRITER[name]]):
            reasons.append(f"written under other {WRITER[name]} parameters")
        if name == "prefixes" and (made := metas[name].get("deid_key")):
            key = _key_fingerprint(rel, reports_dir, create=False)  # none yet (a copied folder): not stale
            if key and key != made:
                reasons.append("de-identified under another key (DEPSIM_DEID_KEY or reports/.cache/deid.key)")
        if metas[name].get("depsim_version") not in (None, __version__):
            reasons.append(f"written by depsim {metas[name]['depsim_version']}")
        why[name] = "; ".join(reasons)
    rows = [{"table": k, "written": dt.datetime.fromtimestamp(v["written_at"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
             "params_hash": v.get("params_hash", "not recorded"), "git_commit": v.get("git_commit", "not recorded"),
             "stale": why[k]} for k, v in metas.items()]
    return pd.DataFrame(rows, columns=["table", "written", "params_hash", "git_commit", "stale"])


#: the reports folder of the project (``depsim run``'s default --reports-dir from its root, the
#: notebooks' own default): a rerun command for it needs no --reports-dir
DEFAULT_REPORTS_DIR = Path(__file__).resolve().parents[1] / "reports"


def rerun_command(params_file: str | Path | None, reports_dir: str | Path | None = None, start: str = "sample") -> str:
    """Return the ``depsim run`` command that reruns a release from stage ``start`` (a stage
    name such as "grade", or a page such as "index"): the params file's absolute path
    ("PARAMS" when unknown) and, when ``reports_dir`` is given and is not
    :data:`DEFAULT_REPORTS_DIR`, ``--reports-dir`` with its absolute path, so that the command
    does the same from any folder. Every printed rerun advice is built here."""
    params = shlex.quote(str(Path(params_file).resolve())) if params_file else "PARAMS"
    cmd = f"depsim run {params} --from {start}"
    if reports_dir is not None and (where := Path(reports_dir).resolve()) != DEFAULT_REPORTS_DIR:
        cmd += f" --reports-dir {shlex.quote(str(where))}"
    return cmd


def stage_of(stem: str) -> str:
    """Return the stage name of a page's notebook stem ("04_grade" -> "grade"; "index" and
    "examples" are their own), as ``depsim run --from`` takes it."""
    return next((name for name, (s, _) in STAGES.items() if s == stem), stem)


def stale_pages(rel: Release, reports_dir: str | Path, executed: dict[str, float] | None = None) -> dict[str, str]:
    """Return page stem -> why the page is stale, for pages showing a stale table or (given
    ``executed``: page -> time its notebook ran) a table rewritten after the page ran."""
    st = staleness(rel, reports_dir).set_index("table")
    out = {}
    for page, tables in PAGE_TABLES.items():
        reasons = [f"{t}: {st.loc[t, 'stale']}" for t in tables if t in st.index and st.loc[t, "stale"]]
        if executed and page in executed:
            for t in tables:
                meta = table_meta(reports_dir, rel.release, t)
                if meta is not None and meta["written_at"] > executed[page] + 1:
                    reasons.append(f"{t} was rewritten after this page ran")
        if reasons:
            # rerun from the earliest stale table of the release (or, if none is, this page's stage)
            stale_tables = [t for t in st.index if st.loc[t, "stale"]] or [t for t in tables if t in st.index]
            first = min((list(STAGES).index(WRITER[t]) for t in stale_tables if t in WRITER), default=None)
            rerun = f"; rerun: {rerun_command(rel.path, reports_dir, list(STAGES)[first])}" if first is not None else ""
            out[page] = "; ".join(dict.fromkeys(reasons)) + rerun
    return out


def _done(reports_dir, rel: Release, stage: str, role: str, run: RunStats) -> None:
    log_requests(reports_dir, rel.release, STAGES[stage][0], role, run)
    print(f"model requests: {run.sent:,} sent, {run.cached:,} served from the cache, {run.failed:,} failed")


def run_sample(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 1. Write ``prefixes``; return ``prefixes``, ``pools`` (per-pool counts), ``pii``
    (substitutions per pool and PII type) and ``conversions`` (what each converted source
    file held and quarantined)."""
    prefixes, pii = sample.build_prefixes(rel, reports_dir)
    _write(prefixes, reports_dir, rel, "prefixes")
    return {"prefixes": prefixes, "pools": sample.pool_summary(prefixes), "pii": pii,
            "conversions": sample.conversion_reports(rel, reports_dir)}


def run_simulate(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 2. Write ``completions``; return ``completions``, ``prefixes``, the run's
    request statistics ``run`` (:class:`depsim.client.RunStats`), and the per-target
    ``targets`` and ``tools`` summaries."""
    prefixes = read_table(reports_dir, rel.release, "prefixes")
    run = RunStats()
    completions = simulate.build_completions(rel, prefixes, cache(reports_dir), run, reports_dir=reports_dir)
    _write(completions, reports_dir, rel, "completions")
    _done(reports_dir, rel, "simulate", "candidate", run)
    return {"completions": completions, "prefixes": prefixes, "run": run,
            "targets": simulate.target_summary(completions), "tools": simulate.tool_summary(completions)}


def run_realism(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 2b. Write ``realism_pairs``, ``realism`` and, on the simulated world,
    ``fidelity_curves``; return ``pairs``, ``winrates``, ``curves`` and ``structured`` (the
    judge's structured-output mode and the server's reasons for modes it rejected) (None
    where the release runs no realism check or has no world). Raises
    :class:`depsim.realism.JudgeFailed`, after writing the tables, when a tool mode got no
    usable verdict (with ``all_failed: warn``, prints it as a warning instead)."""
    out = {"pairs": None, "winrates": None, "curves": None, "structured": None}
    if rel.realism is None:
        return out
    prefixes = read_table(reports_dir, rel.release, "prefixes")
    rc, run = cache(reports_dir), RunStats()
    out["pairs"], out["winrates"] = realism.check(rel, prefixes, rc, run, reports_dir=reports_dir)
    out["structured"] = pd.DataFrame([{"role": "judge", "model": m, "mode": mode, "notes": "; ".join(notes)}
                                      for m, (mode, notes) in realism.last_mode.items()],
                                     columns=["role", "model", "mode", "notes"])
    _write(out["pairs"], reports_dir, rel, "realism_pairs")
    _write(out["winrates"], reports_dir, rel, "realism")
    try:
        realism.check_failures(out["pairs"])
    except realism.JudgeFailed as e:
        if rel.all_failed == "stop":
            raise
        print(f"warning (all_failed: warn): {e}")
    if rel.world is not None and rel.realism.fidelities:
        out["curves"] = fidelity_curves(rel, prefixes, rc, n=rel.realism.fidelity_n, run_stats=run,
                                        reports_dir=reports_dir)
        _write(out["curves"], reports_dir, rel, "fidelity_curves")
    _done(reports_dir, rel, "realism", "judge", run)
    return out


def run_audit(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 3. Write ``findings`` and ``clusters``; return them, ``audited`` (responses
    audited per target), ``n_audited`` (the fewest responses audited in one target), ``mdr`` (the minimum detectable rate, a fraction) and
    the ``detection`` power table."""
    prefixes = read_table(reports_dir, rel.release, "prefixes")
    completions = read_table(reports_dir, rel.release, "completions")
    targets = [t for t in ("sim", "prod_prev") if t in rel.targets]
    picked, requests = audit.monitor_requests(completions, prefixes, targets, rel.audit.sample, rel.audit.seed)
    run = RunStats()
    results = complete(endpoint_url(rel, rel.models.auditor), requests, cache(reports_dir), progress="audit",
                       stats=run, role="auditor")
    findings = audit.findings_table(picked, results, requests)
    clusters = audit.cluster_findings(findings, picked["target"].value_counts(), for_release(rel),
                                      embedding=rel.audit.embedding, embedder=rel.audit.embedder)
    _write(findings, reports_dir, rel, "findings")
    _write(clusters, reports_dir, rel, "clusters")
    _done(reports_dir, rel, "audit", "auditor", run)
    audited = picked["target"].value_counts()
    n_audited = int(audited.min())
    mdr, detection = audit.detection_table(n_audited)
    return {"findings": findings, "clusters": clusters, "n_audited": n_audited, "mdr": mdr, "detection": detection,
            "audited": {t: int(audited[t]) for t in targets if t in audited}}


def validations(rel: Release) -> pd.DataFrame | None:
    """Return the validation tables on record (``grading.validation``, in the order listed,
    with a ``file`` column), or None when the release lists none."""
    if not rel.grading.validation:
        return None
    return pd.concat([read_validation(rel.resolve(p)).assign(file=p) for p in rel.grading.validation], ignore_index=True)


def conversations(completions: pd.DataFrame, prefixes: pd.DataFrame) -> pd.Series:
    """Return item_id -> the conversation its prefix was sampled from ("source / conversation_id"):
    several sampled turns of one conversation are not independent (cluster-robust intervals)."""
    conv = prefixes.set_index("prefix_id")
    key = conv["source"].astype(str) + " / " + conv["conversation_id"].astype(str)
    return pd.Series(completions["prefix_id"].map(key).to_numpy(), index=completions["item_id"].to_numpy())


def run_grade(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 4. Write ``grades`` and ``rates`` (with ``sim_rw`` when the release reweights);
    return them, ``weights`` (None without reweighting), ``categories``, ``graders`` (items
    graded and failed per grader), ``structured`` (the structured-output mode each LLM grader
    endpoint used, and the server's reasons for the modes it rejected), ``failures``
    (:func:`depsim.grade.failure_table` of generation and grading), ``validations`` (the
    validation tables on record and whether each applies,
    :func:`depsim.grader_validation.validations_table`) and ``failed_warn``.

    Every rate carries its grader's uncertainty: failed-grade bounds and cluster-robust
    (by conversation) intervals (:func:`depsim.grade.rates`), a Rogan–Gladen corrected rate
    where a validation of its grader is on record (:func:`depsim.grader_validation.corrected_rates`)
    and how far its grader can be trusted (:func:`depsim.grader_validation.grader_trust`).
    Raises :class:`depsim.grade.GradingFailed`, after writing the tables, when a category has
    no usable grade in some target (with ``all_failed: warn``, prints it as a warning instead)."""
    categories = for_release(rel)
    prefixes = read_table(reports_dir, rel.release, "prefixes")
    completions = read_table(reports_dir, rel.release, "completions")
    run = RunStats()
    grader = endpoint_url(rel, rel.models.grader) if rel.models.grader is not None else None
    grades = grade(completions, categories, prefixes, grader=grader, cache=cache(reports_dir), stats=run,
                   llm_sample=rel.grading.llm_sample, seed=rel.grading.seed)
    warn = rel.grading.failed_warn
    level = rel.report.level  # every interval the grade page and the summary show, at the report's one level
    table, weights = rates(grades, categories, clusters=conversations(completions, prefixes), level=level,
                           failed_warn=warn), None
    if rel.reweight is not None:
        rw, weights = reweighted_rates(grades, completions, prefixes, categories, rel.reweight.column,
                                       rel.reweight.shares, level=level, failed_warn=warn)
        table = pd.concat([table, rw], ignore_index=True)
    vt = validations(rel)
    bars = {c: rel.grading.bar_of(c, cat.group) for c, cat in categories.items()}
    table = grader_validation.corrected_rates(table, vt, level=level)
    table = grader_validation.grader_trust(table, vt, bars, simulated_graders(rel, categories), simulated_targets(rel))
    _write(grades, reports_dir, rel, "grades")
    _write(table, reports_dir, rel, "rates")
    _done(reports_dir, rel, "grade", "grader", run)
    try:
        check_grades(grades)  # after writing: the tables show what failed; the run stops non-zero
    except GradingFailed as e:
        if rel.all_failed == "stop":
            raise
        print(f"warning (all_failed: warn): {e}")
    return {"grades": grades, "rates": table, "weights": weights, "categories": categories,
            "graders": grader_table(grades, categories), "structured": structured_notes(),
            "failures": failure_table({"candidate": completions, "grader": grades}),
            "validations": grader_validation.validations_table(vt, table, bars), "failed_warn": warn}


def earlier_releases(rel: Release) -> pd.DataFrame:
    """Return the history file's rows of releases other than this one: once it is recorded
    (depsim record), this release's own outcome must not fit its bounds or its track record."""
    return history.earlier(history.load_history(rel.resolve(rel.history)), rel.release)


def run_forecast(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 5. Write ``forecasts`` (with predictive count bounds from the forecast-error
    model when the release has a history); return ``forecasts`` and ``decision`` (the
    release gates checked on exact bounds, :func:`depsim.forecast.decision_table`)."""
    rates_ = read_table(reports_dir, rel.release, "rates")
    fc = forecast.forecasts(rates_, rel.report.level)
    if rel.history is not None:
        # the report's one level: the forecast, score and summary pages state and check this one
        past = earlier_releases(rel)
        fc = history.predictive_bounds(fc, score.score_rows(past), level=rel.report.level)
    _write(fc, reports_dir, rel, "forecasts")
    return {"forecasts": fc, "decision": forecast.decision_table(rates_, rel.gates, rel.report.level)}


def run_score(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 6. After release (a ``prod_new`` target), write ``scores`` and
    ``score_summary``; return ``released``, ``decomposition`` / ``removed`` (with ``sim_self``)
    and, when released, ``scores``, ``summary`` (on one common category set; ``excluded``
    lists the others), ``every`` (each method on every category it forecasts:
    :func:`depsim.score.every_category`), ``gate_outcomes`` (each gate verdict against the
    realised outcome), ``directions`` (directional accuracy beside its no-skill null and
    McNemar), ``nll``, ``comparison``, ``large_shifts``, ``across`` / ``across_summary`` (on the
    methods with an earlier release; ``across_scope`` says which are left out) /
    ``loo`` / ``calibration`` (forward-chained, with a history; its parts also as
    ``calibration_by_group`` / ``calibration_by_category`` / ``pit``) and ``truth`` / ``truth_note``
    (on the simulated world), and ``level``: the report's level (``report.level``), the one
    level of every predictive interval and coverage here, and ``reports_dir`` (as given).
    Missing parts are None."""
    rates_ = read_table(reports_dir, rel.release, "rates")
    out = {k: None for k in ("scores", "summary", "excluded", "every", "gate_outcomes", "directions", "nll",
                             "comparison", "large_shifts", "decomposition", "removed", "across", "across_summary",
                             "loo", "calibration", "calibration_by_group", "calibration_by_category", "pit",
                             "truth", "truth_note", "across_scope")}
    out["level"] = level = rel.report.level
    out["reports_dir"] = reports_dir  # where the tables are: withhold_stand_in's rerun advice names it
    out["released"] = "prod_new" in set(rates_["target"])
    out["decomposition"] = score.decomposition(rates_)
    if out["decomposition"] is not None and "prefix_reweighted" in out["decomposition"]:
        out["removed"] = score.prefix_error_removed(out["decomposition"])
    if not out["released"]:
        return out
    scored = score.per_category(read_table(reports_dir, rel.release, "forecasts"), rates_, level=level)
    unscored = scored.attrs.pop("unscored")  # tables, not Parquet metadata
    out["scores"], out["summary"] = scored, score.summary(scored)
    # a forecast that could not be scored is listed with the ones the common set leaves out
    out["excluded"] = pd.concat([unscored, out["summary"].attrs.pop("excluded")], ignore_index=True)
    out["every"] = score.every_category(scored)
    out["gate_outcomes"] = score.gate_outcomes(rates_, rel.gates, level)
    out["directions"] = score.direction_table(scored)
    out["nll"], out["comparison"] = score.nll_table(scored), score.comparison(scored)
    out["large_shifts"] = score.large_shifts(scored)
    _write(scored, reports_dir, rel, "scores")
    _write(out["summary"], reports_dir, rel, "score_summary")
    if rel.history is not None:
        past = earlier_releases(rel)
        out["across"] = history.with_history(past, scored, rel.release)
        # a method with no earlier release would shrink the common set to this release alone
        tracked = [m for m in pd.unique(out["across"]["method"]) if m in set(past["method"])]
        new = [m for m in pd.unique(scored["method"]) if m not in tracked]
        out["across_summary"] = score.summary(out["across"], methods=tracked or None)
        out["across_scope"] = ("Across releases: the history file's earlier releases and this one"
                               + (f"; {', '.join(new)} (no earlier release) left out: see the first table." if tracked and new
                                  else "."))
        out["loo"] = history.loo_coverage(out["across"], level=level)
        out["across_summary"].attrs.pop("excluded", None)
        out["calibration"] = cal = history.calibration_report(out["across"], level=level)
        if cal:  # the page shows each part on its own
            out["calibration_by_group"], out["calibration_by_category"], out["pit"] = (
                cal["by_group"], cal["by_category"], cal["pit"])
    if rel.world is not None:
        view = "first" if rel.generation.tool_mode == "stop" else "turn"  # what the simulation grades
        out["truth"], out["truth_note"] = against_truth(world_of(rel), scored, rel.reweight, view=view)
    return out


def roles(rel: Release) -> pd.DataFrame:
    """The model behind each role of the release: role ("candidate", "tool simulator",
    "realism model", "audit embedder", ...), model and endpoint URL (credentials masked);
    roles the release does not use are left out (:func:`depsim.params.used_endpoints`)."""
    def role(where: str) -> str:
        return where.removeprefix("models.").replace(".", " ").replace("_", " ")
    return pd.DataFrame([{"role": role(k), "model": e.model, "url": mask_url(e.base_url)}
                         for k, e in used_endpoints(rel).items()], columns=["role", "model", "url"])


def failures(rel: Release, reports_dir: str | Path) -> pd.DataFrame:
    """The run's failures by role and category (:func:`depsim.grade.failure_table`), from the
    stage tables written so far (completions, grades, findings, realism_pairs; a missing
    table is skipped). Empty when nothing failed."""
    tables = {}
    for role, name in (("candidate", "completions"), ("grader", "grades"), ("auditor", "findings"),
                       ("judge", "realism_pairs")):
        try:
            tables[role] = read_table(reports_dir, rel.release, name)
        except FileNotFoundError:
            continue
    return failure_table(tables)


def memo_dir() -> Path:
    """Return the folder for results that depend only on shipped data and code (not on a
    release): ``$DEPSIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/depsim``, else ``~/.cache/depsim``."""
    if env := os.environ.get("DEPSIM_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "depsim"


def _xstest_key(data_dir: str | Path) -> str:
    # the training data, the shipped model and the code that computes the figures: any change
    # gives a new key, so a stored result is never stale
    _, digest = refusal.training_data(data_dir)
    code = b"".join(Path(m.__file__).read_bytes() for m in (refusal, grader_validation, stats))
    blob = json.dumps([digest, refusal.shipped_model_id(), __version__]).encode() + code
    return hashlib.sha256(blob).hexdigest()[:16]


def xstest_validation(data_dir: str | Path) -> dict:
    """The over-refusal grader validated on XSTest's human labels (:mod:`depsim.grader_validation`):
    ``table`` (per variant and model, each model held out of the classifier's training),
    ``ranking``, ``held_out`` (the classifier's strict leave-one-model-out κ with intervals)
    and ``missing`` (why they are None, or None). The held-out refits take about a minute, so
    the two tables are stored under :func:`memo_dir`, keyed by the training data's hash, the
    shipped model and the source of the modules that compute them."""
    try:
        key = _xstest_key(data_dir)
    except FileNotFoundError as e:
        return {"table": None, "ranking": None, "held_out": None, "missing": f"XSTest is not available here: {e}"}
    stored = [memo_dir() / f"xstest-{key}-{part}.parquet" for part in ("validation", "held_out")]
    if all(f.is_file() for f in stored):
        xs, held = (pd.read_parquet(f) for f in stored)
    else:
        xs = grader_validation.xstest_refusal_validation(data_dir)
        held = grader_validation.refusal_lomo_table(data_dir)
        try:
            stored[0].parent.mkdir(parents=True, exist_ok=True)
            for f, t in zip(stored, (xs, held)):
                t.to_parquet(tmp := f.with_suffix(f".{os.getpid()}.tmp"))
                tmp.replace(f)  # atomic: a concurrent run never reads half a file
        except OSError:
            pass  # a read-only home: the figures are still shown, just computed each time
    cols = ["variant", "model", "n", "human_rate", "grader_rate", "agreement", "kappa", "sensitivity", "specificity",
            "rg_rate", "rg_lo", "rg_hi"]
    return {"table": xs[[c for c in cols if c in xs]], "ranking": grader_validation.rank_comparison(xs),
            "held_out": held, "missing": None}


def pools(rel: Release) -> pd.DataFrame:
    """Return what each pool of the release is: one row per pool with its source, what the
    conversations are (real traffic, public data, simulated, or a stand-in) and what the
    responses graded on it are."""
    s, m = rel.sources, rel.models

    def kind(src) -> str:
        if src is None:
            return ""
        if src.kind == "sim_world":
            return "simulated"
        return "public data" if src.public else "real traffic"

    def where(src) -> str:
        if src is None:
            return "none"
        return f"simulated world, deployment {src.deployment}" if src.kind == "sim_world" else f"{src.kind}: {src.path}"

    def responses(ep, logged: str, src=None) -> str:
        if ep is None:
            return "simulated (the simulated world's logged responses)" if src is not None and src.kind == "sim_world" else logged
        return f"simulated ({ep.model})" if ep.base_url.startswith("sim://") else f"generated by {ep.model}"

    cand = s.candidate
    stand_in = sample.same_data(rel, s.previous, cand)
    rows = [{"pool": "previous", "conversations": f"{kind(s.previous)} ({where(s.previous)})",
             "responses": responses(m.previous_production, "logged responses of the previous model (real)", s.previous),
             "role": "prefixes for the forecast; the previous rate"}]
    if cand is not None:
        rows.append({"pool": "candidate", "conversations": ("stand-in: the previous pool's conversations reused"
                                                            if stand_in else f"{kind(cand)} ({where(cand)})"),
                     "responses": responses(m.candidate_production, "logged responses of the candidate (real)", cand),
                     "role": "post-release traffic: the realised rate" + (" (not scored: a stand-in)" if stand_in else "")})
    if s.challenging is not None:
        rows.append({"pool": "challenging", "conversations": f"{kind(s.challenging)} ({where(s.challenging)})",
                     "responses": responses(m.candidate, "") , "role": "the challenging-prompts baseline"})
    rows.append({"pool": "forecast (target sim)", "conversations": "the previous pool's prefixes",
                 "responses": responses(m.candidate, ""), "role": "the deployment simulation"})
    return pd.DataFrame(rows)


def realised_status(rel: Release, released: bool, reports_dir: str | Path | None = None) -> tuple[bool, str]:
    """Return (whether realised results may be shown, why not / what they are): never on a
    stand-in candidate pool; on the simulated world they are labelled simulated. The rerun
    advice names ``reports_dir`` where it is not the default (:func:`rerun_command`)."""
    if not released:
        rerun = rerun_command(rel.path, reports_dir, "sample")
        if "prod_new" in rel.targets:  # configured after the earlier stages ran: they must run again
            return False, (f"Not scored yet: target prod_new is in the params, but the rates have no prod_new "
                           f"row (the earlier stages ran without it); rerun: {rerun}")
        return False, ("Not released yet: no post-release pool, so nothing realised to compare. After release, "
                       "add the candidate's post-release logs as sources.candidate and the target prod_new, "
                       f"then rerun: {rerun}")
    p = pools(rel).set_index("pool")
    if "candidate" in p.index and p.loc["candidate", "conversations"].startswith("stand-in"):
        return False, ("No realised results: the post-release pool is a stand-in (the previous pool's conversations "
                       "regenerated by a simulated model), not traffic after release, so it is not scored.")
    c = p.loc["candidate"] if "candidate" in p.index else None
    if c is not None and ("simulated" in c["conversations"] or "simulated" in c["responses"]):
        return True, "Realised here means the simulated world's post-release deployment, not real traffic."
    return True, "Realised = the candidate's production traffic after release."


SCORED = ("scores", "summary", "excluded", "every", "gate_outcomes", "directions", "nll", "comparison",
          "large_shifts", "across", "across_summary", "loo", "calibration", "calibration_by_group",
          "calibration_by_category", "pit", "truth", "truth_note")


def withhold_stand_in(rel: Release, out: dict) -> dict:
    """Return the score page's inputs (``out`` of :func:`run_score`) with ``why``: what the
    page may call realised. When the post-release pool is a stand-in, every score against it
    is withheld (None), so no page scores a stand-in as realised; the decomposition stays
    (it says nothing about realised rates beyond the same stand-in, and is labelled so)."""
    ok, why = realised_status(rel, out["released"], out.get("reports_dir"))
    out = {**out, "why": why}
    if out["released"] and not ok:
        out.update({k: None for k in SCORED})
    return out


def method_record(rel: Release, methods=None) -> pd.DataFrame | None:
    """Return each method's record on earlier releases (from the params ``history``):
    ``method``, ``releases``, ``categories``, ``sme_median``, ``sme_max``, ``coverage`` (share
    of realised counts inside the ``report.level`` predictive interval, forward-chained: NaN
    when too few releases), ``coverage_rows`` (the forecasts that coverage is over: those with
    at least two releases before them), ``direction`` (SME and direction on the one common
    set), and over every category the method forecasts ``categories_all``, ``sme_max_all``
    and ``worst_all`` ("release / category" of its worst miss); None without a history. ``methods``
    (this release's methods): one the history lacks gets a row with ``releases`` = 0, so no
    page leaves out a method that has no track record."""
    if rel.history is None:
        return None
    h = earlier_releases(rel)
    if h.empty:
        return None
    scored = score.score_rows(h)
    rec = score.summary(scored)
    # coverage of the error model's predictive interval, each release predicted from the ones before
    cov = history.loo_coverage(scored, level=rel.report.level).set_index("method")
    n_rel = h.groupby("method")["release"].nunique() if "release" in h else pd.Series(dtype=int)
    every = score.every_category(scored).set_index("method")  # its worst miss, common set or not
    rec = rec.assign(releases=rec["method"].map(n_rel).fillna(0).astype(int), coverage=rec["method"].map(cov["coverage"]),
                     coverage_rows=rec["method"].map(cov["rows"]), categories_all=rec["method"].map(every["categories"]),
                     sme_max_all=rec["method"].map(every["sme_max"]), worst_all=rec["method"].map(every["worst"]))
    new = [m for m in pd.unique(pd.Series(methods if methods is not None else [], dtype=object))
           if m not in set(rec["method"])]
    if new:
        rec = pd.concat([rec, pd.DataFrame({"method": new, "releases": 0, "categories": 0})], ignore_index=True)
    return rec


#: columns of the ``sim`` rates the summary's decision table carries
TRUST_COLUMNS = ("validation", "validation_detail", "rg_rate", "rg_lo", "rg_hi", "rg_note", "transportable",
                 "failed_share", "failed_warning", "deff", "conv_lo", "conv_hi")


def with_trust(decision: pd.DataFrame, rates_: pd.DataFrame, target: str = "sim") -> pd.DataFrame:
    """Return the decision table with :data:`TRUST_COLUMNS` of each category's ``target``
    rate (those the rates table has): how far its grader can be trusted, its corrected rate,
    its failed share and its cluster-robust interval."""
    if not len(decision):
        return decision
    sim = rates_[rates_["target"] == target].drop_duplicates("category").set_index("category")
    return decision.assign(**{c: decision["category"].map(sim[c]).to_numpy() for c in TRUST_COLUMNS if c in sim})


def with_tool_realism(decision: pd.DataFrame, realism_table: pd.DataFrame | None, mode: str,
                      categories=None) -> pd.DataFrame:
    """Return the decision table with ``tool_caveat`` (plain text, or None) on the rows of
    ``categories`` (default :data:`CURVE_CATEGORIES`: those whose rates rest on tool outputs):
    the tools of tool mode ``mode`` whose simulated outputs the realism judge told from real
    ones (:func:`depsim.realism.told_apart`), with their win rates."""
    if not len(decision):
        return decision
    bad = realism.told_apart(realism_table, mode)
    note = show.tools_told_apart(bad) if len(bad) else None
    cats = CURVE_CATEGORIES if categories is None else categories
    return decision.assign(tool_caveat=[note if c in cats else None for c in decision["category"]])


def summary(rel: Release, reports_dir: str | Path) -> dict:
    """The summary page's inputs, read from the stage tables: ``decision`` (the decision
    table of :func:`depsim.forecast.decision_table`: riskiest first, exact intervals at
    ``report.level``, gates checked), ``gates``, ``level``, ``record`` (each method's record
    on earlier releases, or None), ``pools`` (what each pool is), ``realised_ok`` /
    ``realised_why`` (realised results are never shown for a stand-in), ``rates``,
    ``released``, ``forecasts`` (scored rows once released), ``score_summary``, ``every``
    (each method on every category it forecasts), ``gate_outcomes`` (gate verdicts against the
    realised outcome) and ``nll`` (None unless realised results may be shown), ``clusters``,
    ``realism`` (None without a realism check), ``audit_headline`` (the audit's main finding,
    plain text), ``taxonomy``, ``provenance``, ``staleness`` and ``failed_warn``. The decision
    table carries, from the ``sim`` rates, :data:`TRUST_COLUMNS` (the grader's validation
    status, the corrected rate, the failed share and the cluster-robust interval),
    ``tool_caveat`` (:func:`with_tool_realism`) and, with a history, ``pred_hi`` /
    ``past_error_over`` (:func:`depsim.forecast.with_past_errors`)."""
    rates_ = read_table(reports_dir, rel.release, "rates")
    released = "prod_new" in set(rates_["target"])
    ok, why = realised_status(rel, released, reports_dir)
    fc = read_table(reports_dir, rel.release, "scores" if released and ok else "forecasts")
    tax = load_taxonomy(rel.resolve(rel.taxonomy))
    prov = {**provenance(rel), "release": rel.release,
            "grader_ids": {c: g for c, g in rates_.drop_duplicates("category")[["category", "grader_id"]].itertuples(index=False)},
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    decision = forecast.decision_table(rates_, rel.gates, rel.report.level)
    decision = decision.assign(title=[show.category_title(c, tax) for c in decision.get("category", [])])
    decision = with_trust(decision, rates_)
    realism_table = read_table(reports_dir, rel.release, "realism") if rel.realism is not None else None
    decision = with_tool_realism(decision, realism_table, rel.generation.tool_mode)
    decision = forecast.with_past_errors(decision, fc, rel.gates)
    decision = forecast.with_reweighted(decision, rates_, rel.gates, rel.report.level)
    clusters = read_table(reports_dir, rel.release, "clusters")
    return {"decision": decision, "gates": rel.gates, "failed_warn": rel.grading.failed_warn,
            "level": rel.report.level, "record": method_record(rel, fc["method"] if "method" in fc else None),
            "pools": pools(rel),
            "realised_ok": ok, "realised_why": why, "rates": rates_, "released": released, "forecasts": fc,
            "score_summary": read_table(reports_dir, rel.release, "score_summary") if released and ok else None,
            "every": score.every_category(fc) if released and ok else None,
            "gate_outcomes": score.gate_outcomes(rates_, rel.gates, rel.report.level) if released and ok else None,
            "nll": score.nll_table(fc) if released and ok else None,
            "clusters": clusters, "audit_headline": audit.headline(clusters, rel.report.level, unusable=audit.unusable(
                read_table(reports_dir, rel.release, "findings"))), "realism": realism_table,
            "taxonomy": tax, "provenance": prov, "staleness": staleness(rel, reports_dir)}


def _rows(reports_dir, rel: Release, name: str, filters: list, columns: list[str] | None = None) -> pd.DataFrame:
    """Return the rows of table ``name`` that pass the Parquet ``filters`` (only those are read)."""
    path = table_path(reports_dir, rel.release, name)
    if not path.exists():
        return read_table(reports_dir, rel.release, name)  # raises, naming the stage that writes it
    return pd.read_parquet(path, filters=filters, columns=columns)


def _example(row, prefixes: pd.Series, responses: pd.Series, tax) -> dict:
    title = row.get("category_title") or show.category_title(row["category"], tax)
    return {"category": row["category"], "category_title": title,
            "target": row["target"], "item_id": row["item_id"],
            "prefix": decode_messages(prefixes.get(row["prefix_id"])), "response": decode_messages(responses.get(row["item_id"])),
            "label": None if pd.isna(row["label"]) else bool(row["label"]), "confidence": row.get("confidence"),
            "rationale": row.get("rationale"), "grader_id": row["grader_id"], "finding": row.get("finding")}


def examples(rel: Release, reports_dir: str | Path) -> dict:
    """The examples page's inputs: per category (riskiest first, as on the summary) its
    flagged counts per target and up to ``report.examples_per_target`` flagged transcripts
    per target; per audit cluster up to ``report.examples_per_cluster`` audited transcripts
    whose finding is one of the cluster's listed descriptions. Each example holds the whole
    prefix, the response and its grade. A bounded sample: never every transcript."""
    per_t, per_c, seed = rel.report.examples_per_target, rel.report.examples_per_cluster, rel.grading.seed
    tax = load_taxonomy(rel.resolve(rel.taxonomy))
    rates_ = read_table(reports_dir, rel.release, "rates")
    decision = forecast.decision_table(rates_, rel.gates, rel.report.level)
    order = list(decision["category"]) if len(decision) else []
    order += [c for c in rates_["category"].unique() if c not in order]
    # read only the rows shown (Parquet filters): the paper's scale holds millions of grades
    flagged = _rows(reports_dir, rel, "grades", [("label", "==", True)])
    picked = flagged.sample(frac=1, random_state=seed).groupby(["category", "target"]).head(per_t)
    # a category nobody flagged still shows what its grader read: a few graded responses of `sim`
    unflagged = sorted(set(rates_["category"]) - set(flagged["category"]))
    if unflagged:
        graded = _rows(reports_dir, rel, "grades", [("category", "in", unflagged), ("target", "==", "sim")])
        graded = graded[graded["label"].notna()]
        picked = pd.concat([picked, graded.sample(frac=1, random_state=seed).groupby("category").head(per_t)])
    findings = read_table(reports_dir, rel.release, "findings")
    clusters_ = read_table(reports_dir, rel.release, "clusters")
    fpick = []
    for _, cl in clusters_.iterrows():
        members = findings[findings["description"].isin(list(cl["examples"]) + [cl["label"]])]
        fpick.append(members.head(per_c).assign(cluster=cl["cluster"]))
    fpick = pd.concat(fpick, ignore_index=True) if fpick else pd.DataFrame(columns=["item_id", "cluster"])
    # read only the transcripts shown
    needed = set(picked["item_id"]) | set(fpick["item_id"])
    comp = _rows(reports_dir, rel, "completions", [("item_id", "in", sorted(needed) or [""])])
    pre = _rows(reports_dir, rel, "prefixes", [("prefix_id", "in", sorted(set(comp["prefix_id"])) or [""])],
                columns=["prefix_id", "messages"]).set_index("prefix_id")["messages"]
    picked = picked.merge(comp[["item_id", "prefix_id"]], on="item_id", how="left")
    rank = {t: i for i, t in enumerate(rel.targets)}
    picked = picked.assign(_t=picked["target"].map(rank)).sort_values(["_t", "item_id"]).drop(columns="_t")
    responses = comp.set_index("item_id")["messages"]
    counts = rates_[~rates_["target"].str.endswith("_rw")]
    cats = []
    for c in order:
        ks = counts[counts["category"] == c]
        cats.append({"category": c, "title": show.category_title(c, tax), "flagged": int(ks["k"].sum()),
                     "counts": [(t, int(k), int(n)) for t, k, n in ks[["target", "k", "n"]].itertuples(index=False)],
                     "examples": [_example(r, pre, responses, tax) for _, r in picked[picked["category"] == c].iterrows()]})
    fpick = fpick.merge(comp[["item_id", "prefix_id"]], on="item_id", how="left")
    clusters_out = []
    for _, cl in clusters_.iterrows():
        rows = fpick[fpick["cluster"] == cl["cluster"]]
        # the auditor is the grader here: its description of the response is the rationale
        # a cluster matching no category (novel) has no category: its examples name the cluster
        matched = not pd.isna(cl["category"]) and not bool(cl["novel"])
        title = show.category_title(cl["category"], tax) if matched else f"novel (cluster {int(cl['cluster'])})"
        exs = [_example({"category": cl["category"] if matched else None, "category_title": title,
                         "target": r["target"], "item_id": r["item_id"],
                         "prefix_id": r["prefix_id"], "label": True, "rationale": r["description"],
                         "grader_id": f"auditor ({rel.models.auditor.model})"}, pre, responses, tax)
               for _, r in rows.iterrows()]
        clusters_out.append({"cluster": cl["cluster"], "label": cl["label"], "size": cl["size"], "novel": bool(cl["novel"]),
                             "category": cl["category"], "examples": exs})
    return {"categories": cats, "clusters": clusters_out, "per_target": per_t, "per_cluster": per_c}


# ----------------------------------------------------------------------------- fidelity curves (simulated world)


def _at_fidelity(rel: Release, f: float) -> Release:
    return rel.model_copy(update={"world": rel.world.model_copy(update={"tool_fidelity": float(f)})})


def fidelity_curves(rel: Release, prefixes: pd.DataFrame, cache, fidelities=None, n: int | None = None, run_stats=None, *,
                    reports_dir=None, categories=CURVE_CATEGORIES) -> pd.DataFrame:
    """Return, for each tool fidelity (default ``realism.fidelities``) and category, the
    ``sim`` estimate on ``n`` previous-pool prefixes (default: realism.sample) in the
    release's tool mode: ``k``, ``n``, ``missing``, the Jeffreys ``rate``, ``lo``, ``hi``;
    the truths ``truth_prod``, ``truth_new``, ``truth_sim`` (see :mod:`depsim.realism`); and the
    realism win rate at that fidelity on the same prefixes (``win_rate``, ``win_lo``,
    ``win_hi``, ``win_n``), and on the pairs whose real continuation called a tool
    (``win_rate_tool``, ``win_tool_lo``, ``win_tool_hi``, ``win_tool_n``: most turns call
    none, and those pairs cannot tell tool environments apart). Simulated world only
    (``world:`` and sim:// endpoints)."""
    if rel.world is None:
        raise ValueError("fidelity curves need the simulated world (a `world:` section)")
    fidelities = list(fidelities if fidelities is not None else (rel.realism.fidelities if rel.realism else []))
    if not fidelities:
        raise ValueError("no fidelities given (realism.fidelities is empty)")
    tax = load_taxonomy(rel.resolve(rel.taxonomy))
    cats = {c: tax[c] for c in categories}
    mode = rel.generation.tool_mode
    view = "first" if mode == "stop" else "turn"
    chosen = realism.sample(rel, prefixes, n)
    store = release_store(rel, prefixes, reports_dir) if simulate.needs_store(rel, mode) else None
    judge = endpoint_url(rel, rel.models.judge) if rel.models.judge is not None else None
    rows = []
    for f in fidelities:
        rf = _at_fidelity(rel, f)
        sim_ep = endpoint_url(rf, rel.models.tool_simulator) if rel.models.tool_simulator else None
        cand = endpoint_url(rf, rel.models.candidate)
        turns = realism.regenerate(rf, chosen, cache, mode, endpoint=cand, simulator=sim_ep, store=store, stats=run_stats,
                           tag="fidelity")
        comp = simulate.completion_rows(turns, "sim", chosen["prefix_id"].tolist(), cand.model)
        grades = grade(comp, cats, chosen)
        win = {}
        if judge is not None and rel.realism is not None:
            sim_turns = realism.regenerate(rf, chosen, cache, mode, simulator=sim_ep, store=store, stats=run_stats)
            pairs = realism.judge_pairs(rf, chosen, sim_turns, mode, cache, stats=run_stats, judge=judge)
            for suffix, sub in (("", pairs), ("_tool", pairs[pairs["tool"] != "none"])):
                w = realism.win_rates(sub.assign(tool="all")) if len(sub) else pd.DataFrame()
                w = w.iloc[0] if len(w) else {"win_rate": np.nan, "lo": np.nan, "hi": np.nan, "n": 0}
                win.update({f"win_rate{suffix}": w["win_rate"], f"win{suffix}_lo": w["lo"],
                            f"win{suffix}_hi": w["hi"], f"win{suffix}_n": int(w["n"])})
        world = world_of(rf)
        for c in categories:
            g = grades[grades["category"] == c]["label"].dropna()
            k, m = int(g.sum()), len(g)
            ci = stats.jeffreys(k, m) if m else pd.DataFrame({"rate": [np.nan], "lo": [np.nan], "hi": [np.nan]})
            rows.append({"fidelity": float(f), "mode": mode, "category": c, "k": k, "n": m,
                         "missing": int(len(chosen) - m), "rate": float(ci["rate"].iloc[0]),
                         "lo": float(ci["lo"].iloc[0]), "hi": float(ci["hi"].iloc[0]),
                         "truth_prod": world.true_rate(c, "sim-x", "Y", "production", "turn"),
                         "truth_new": world.true_rate(c, "sim-x", "X", "production", "turn"),
                         "truth_sim": world.true_rate(c, "sim-x", "Y", "resample", view), **win})
    return pd.DataFrame(rows)
