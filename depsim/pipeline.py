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

from pathlib import Path

import numpy as np
import pandas as pd

from depsim import audit, forecast, grader_validation, history, realism, sample, score, simulate, stats
from depsim.cache import ResponseCache
from depsim.client import RunStats, complete, mask_url
from depsim.grade import check_grades, failure_table, grade, structured_notes, grader_table, rates, reweighted_rates
from depsim.params import Release, endpoint_url
from depsim.records import log_requests, read_table, write_table
from depsim.sim.truth import against_truth, world_of
from depsim.taxonomy import for_release, load_taxonomy
from depsim.toolloop import release_store

#: stage -> (notebook stem, page title)
STAGES = {"sample": ("01_sample", "1 Sample"), "simulate": ("02_simulate", "2 Simulate"),
          "realism": ("02b_realism", "2b Tool realism"), "audit": ("03_audit", "3 Audit"),
          "grade": ("04_grade", "4 Grade"), "forecast": ("05_forecast", "5 Forecast"),
          "score": ("06_score", "6 Score")}
#: the report's pages, summary first: (notebook stem, title)
PAGES = [("index", "Summary"), *STAGES.values()]


def cache(reports_dir: str | Path) -> ResponseCache:
    """Return the request cache shared by every release under ``reports_dir``."""
    return ResponseCache(Path(reports_dir) / ".cache" / "requests.sqlite")


def _done(reports_dir, rel: Release, stage: str, role: str, run: RunStats) -> None:
    log_requests(reports_dir, rel.release, STAGES[stage][0], role, run)
    print(f"model requests: {run.sent} sent, {run.cached} served from the cache, {run.failed} failed")


def run_sample(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 1. Write ``prefixes``; return ``prefixes``, ``pools`` (per-pool counts), ``pii``
    (substitutions per pool and PII type) and ``conversions`` (what each converted source
    file held and quarantined)."""
    prefixes, pii = sample.build_prefixes(rel, reports_dir)
    write_table(prefixes, reports_dir, rel.release, "prefixes")
    return {"prefixes": prefixes, "pools": sample.pool_summary(prefixes), "pii": pii,
            "conversions": sample.conversion_reports(rel, reports_dir)}


def run_simulate(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 2. Write ``completions``; return ``completions``, ``prefixes``, the run's
    request statistics ``run`` (:class:`depsim.client.RunStats`), and the per-target
    ``targets`` and ``tools`` summaries."""
    prefixes = read_table(reports_dir, rel.release, "prefixes")
    run = RunStats()
    completions = simulate.build_completions(rel, prefixes, cache(reports_dir), run, reports_dir=reports_dir)
    write_table(completions, reports_dir, rel.release, "completions")
    _done(reports_dir, rel, "simulate", "candidate", run)
    return {"completions": completions, "prefixes": prefixes, "run": run,
            "targets": simulate.target_summary(completions), "tools": simulate.tool_summary(completions)}


def run_realism(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 2b. Write ``realism_pairs``, ``realism`` and, on the simulated world,
    ``fidelity_curves``; return ``pairs``, ``winrates``, ``curves`` and ``structured`` (the
    judge's structured-output mode and the server's reasons for modes it rejected) (None
    where the release runs no realism check or has no world). Raises
    :class:`depsim.realism.JudgeFailed`, after writing the tables, when a tool mode got no
    usable verdict."""
    out = {"pairs": None, "winrates": None, "curves": None, "structured": None}
    if rel.realism is None:
        return out
    prefixes = read_table(reports_dir, rel.release, "prefixes")
    rc, run = cache(reports_dir), RunStats()
    out["pairs"], out["winrates"] = realism.check(rel, prefixes, rc, run, reports_dir=reports_dir)
    out["structured"] = pd.DataFrame([{"role": "judge", "model": m, "mode": mode, "notes": "; ".join(notes)}
                                      for m, (mode, notes) in realism.last_mode.items()],
                                     columns=["role", "model", "mode", "notes"])
    write_table(out["pairs"], reports_dir, rel.release, "realism_pairs")
    write_table(out["winrates"], reports_dir, rel.release, "realism")
    realism.check_failures(out["pairs"])
    if rel.world is not None and rel.realism.fidelities:
        out["curves"] = fidelity_curves(rel, prefixes, rc, n=rel.realism.fidelity_n, run_stats=run,
                                        reports_dir=reports_dir)
        write_table(out["curves"], reports_dir, rel.release, "fidelity_curves")
    _done(reports_dir, rel, "realism", "judge", run)
    return out


def run_audit(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 3. Write ``findings`` and ``clusters``; return them, ``n_audited`` (the fewest
    responses audited in one target), ``mdr`` (the minimum detectable rate, a fraction) and
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
    write_table(findings, reports_dir, rel.release, "findings")
    write_table(clusters, reports_dir, rel.release, "clusters")
    _done(reports_dir, rel, "audit", "auditor", run)
    n_audited = int(picked["target"].value_counts().min())
    mdr, detection = audit.detection_table(n_audited)
    return {"findings": findings, "clusters": clusters, "n_audited": n_audited, "mdr": mdr, "detection": detection}


def run_grade(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 4. Write ``grades`` and ``rates`` (with ``sim_rw`` when the release reweights);
    return them, ``weights`` (None without reweighting), ``categories``, ``graders`` (items
    graded and failed per grader), ``structured`` (the structured-output mode each LLM grader
    endpoint used, and the server's reasons for the modes it rejected) and ``failures``
    (:func:`depsim.grade.failure_table` of generation and grading). Raises
    :class:`depsim.grade.GradingFailed`, after writing the tables, when a category has no usable
    grade in some target."""
    categories = for_release(rel)
    prefixes = read_table(reports_dir, rel.release, "prefixes")
    completions = read_table(reports_dir, rel.release, "completions")
    run = RunStats()
    grader = endpoint_url(rel, rel.models.grader) if rel.models.grader is not None else None
    grades = grade(completions, categories, prefixes, grader=grader, cache=cache(reports_dir), stats=run,
                   llm_sample=rel.grading.llm_sample, seed=rel.grading.seed)
    table, weights = rates(grades, categories), None
    if rel.reweight is not None:
        rw, weights = reweighted_rates(grades, completions, prefixes, categories, rel.reweight.column,
                                       rel.reweight.shares)
        table = pd.concat([table, rw], ignore_index=True)
    write_table(grades, reports_dir, rel.release, "grades")
    write_table(table, reports_dir, rel.release, "rates")
    _done(reports_dir, rel, "grade", "grader", run)
    check_grades(grades)  # after writing: the tables show what failed; the run stops non-zero
    return {"grades": grades, "rates": table, "weights": weights, "categories": categories,
            "graders": grader_table(table, categories), "structured": structured_notes(),
            "failures": failure_table({"candidate": completions, "grader": grades})}


def run_forecast(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 5. Write ``forecasts`` (with predictive count bounds from the forecast-error
    model when the release has a history); return ``forecasts`` and ``gates`` (the release
    gates against exact upper bounds; None without gates)."""
    rates_ = read_table(reports_dir, rel.release, "rates")
    fc = forecast.forecasts(rates_)
    if rel.history is not None:
        fc = history.predictive_bounds(fc, score.score_rows(history.load_history(rel.resolve(rel.history))))
    write_table(fc, reports_dir, rel.release, "forecasts")
    return {"forecasts": fc, "gates": forecast.gate_table(rates_, rel.gates) if rel.gates else None}


def run_score(rel: Release, reports_dir: str | Path) -> dict:
    """Stage 6. After release (a ``prod_new`` target), write ``scores`` and
    ``score_summary``; return ``released``, ``decomposition`` / ``removed`` (with ``sim_self``)
    and, when released, ``scores``, ``summary`` (on one common category set; ``excluded``
    lists the others), ``directions`` (directional accuracy beside its no-skill null and
    McNemar), ``nll``, ``comparison``, ``large_shifts``, ``across`` / ``across_summary`` /
    ``loo`` / ``calibration`` (forward-chained, with a history) and ``truth`` / ``truth_note``
    (on the simulated world). Missing parts are None."""
    rates_ = read_table(reports_dir, rel.release, "rates")
    out = {k: None for k in ("scores", "summary", "excluded", "directions", "nll", "comparison", "large_shifts",
                             "decomposition", "removed", "across", "across_summary", "loo", "calibration", "truth",
                             "truth_note")}
    out["released"] = "prod_new" in set(rates_["target"])
    out["decomposition"] = score.decomposition(rates_)
    if out["decomposition"] is not None and "prefix_reweighted" in out["decomposition"]:
        out["removed"] = score.prefix_error_removed(out["decomposition"])
    if not out["released"]:
        return out
    scored = score.per_category(read_table(reports_dir, rel.release, "forecasts"), rates_)
    out["scores"], out["summary"] = scored, score.summary(scored)
    out["excluded"] = out["summary"].attrs.pop("excluded", None)  # a table: not Parquet metadata
    out["directions"] = score.direction_table(scored)
    out["nll"], out["comparison"] = score.nll_table(scored), score.comparison(scored)
    out["large_shifts"] = score.large_shifts(scored)
    write_table(scored, reports_dir, rel.release, "scores")
    write_table(out["summary"], reports_dir, rel.release, "score_summary")
    if rel.history is not None:
        out["across"] = history.with_history(history.load_history(rel.resolve(rel.history)), scored, rel.release)
        out["across_summary"], out["loo"] = score.summary(out["across"]), history.loo_coverage(out["across"])
        out["across_summary"].attrs.pop("excluded", None)
        out["calibration"] = history.calibration_report(out["across"])
    if rel.world is not None:
        view = "first" if rel.generation.tool_mode == "stop" else "turn"  # what the simulation grades
        out["truth"], out["truth_note"] = against_truth(world_of(rel), scored, rel.reweight, view=view)
    return out


def roles(rel: Release) -> pd.DataFrame:
    """The model behind each role of the release: role, model and endpoint URL (credentials
    masked); roles the release does not use are left out."""
    m = rel.models
    eps = {"candidate": m.candidate, "auditor": m.auditor, "grader": m.grader, "tool simulator": m.tool_simulator,
           "judge": m.judge, "previous production": m.previous_production,
           "candidate production": m.candidate_production,
           "realism model": rel.realism.model if rel.realism is not None else None}
    return pd.DataFrame([{"role": r, "model": e.model, "url": mask_url(e.base_url)} for r, e in eps.items() if e is not None],
                        columns=["role", "model", "url"])


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


def xstest_validation(data_dir: str | Path) -> dict:
    """The refusal rule grader validated on XSTest's human labels (:mod:`depsim.grader_validation`):
    ``table`` (per variant and model), ``ranking``, and ``missing`` (why they are None, or None)."""
    try:
        xs = grader_validation.xstest_refusal_validation(data_dir)
    except FileNotFoundError as e:
        return {"table": None, "ranking": None, "missing": f"XSTest is not available here: {e}"}
    cols = ["variant", "model", "n", "human_rate", "grader_rate", "agreement", "kappa", "sensitivity", "specificity",
            "rg_rate", "rg_lo", "rg_hi"]
    return {"table": xs[[c for c in cols if c in xs]], "ranking": grader_validation.rank_comparison(xs), "missing": None}


def summary(rel: Release, reports_dir: str | Path) -> dict:
    """The summary page's inputs, read from the stage tables: ``rates``, ``released``,
    ``forecasts`` (scored rows once released), ``score_summary``, ``nll`` (None before
    release), ``clusters`` and ``realism`` (None without a realism check)."""
    rates_ = read_table(reports_dir, rel.release, "rates")
    released = "prod_new" in set(rates_["target"])
    fc = read_table(reports_dir, rel.release, "scores" if released else "forecasts")
    return {"rates": rates_, "released": released, "forecasts": fc,
            "score_summary": read_table(reports_dir, rel.release, "score_summary") if released else None,
            "nll": score.nll_table(fc) if released else None,
            "clusters": read_table(reports_dir, rel.release, "clusters"),
            "realism": read_table(reports_dir, rel.release, "realism") if rel.realism is not None else None}


# ----------------------------------------------------------------------------- fidelity curves (simulated world)

CURVE_CATEGORIES = ("calculator_hacking", "lying_about_tools")


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
