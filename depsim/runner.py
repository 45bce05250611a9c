"""Run a release end to end: papermill executes the stage notebooks in order into
``reports/<release>/``, then :mod:`depsim.render` renders the HTML site."""
from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import papermill as pm

from depsim.params import ParamsError, Release, load_release
from depsim.pipeline import STAGES, failures, folder_params_file, rerun_command, stage_of
from depsim.render import FAILED_SUFFIX, check_engine, render, run_params
from depsim.records import release_dir, request_log

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: notebooks in execution order: every stage, then the summary and the examples page
NOTEBOOK_ORDER = [stem for stem, _ in STAGES.values()] + ["index", "examples"]
#: the report pages that only read tables (rerun after any stage)
DISPLAY_PAGES = ["index", "examples"]


def select(stages: list[str] | None = None, start: str | None = None) -> list[str]:
    """Return the notebooks to execute, in order: ``stages`` (stage names such as "grade" or
    notebook stems such as "04_grade"), or every stage from ``start`` on; the summary and
    examples pages always follow a partial run, since they read every table. Raises
    ValueError naming an unknown stage."""
    names = {**{k: v[0] for k, v in STAGES.items()}, **{s: s for s in NOTEBOOK_ORDER}}

    def stem(s: str) -> str:
        if s not in names:
            raise ValueError(f"unknown stage {s!r}; expected one of {', '.join(STAGES)} (or index, examples)")
        return names[s]
    if stages and start:
        raise ValueError("give --stages or --from, not both")
    if start:
        chosen = NOTEBOOK_ORDER[NOTEBOOK_ORDER.index(stem(start)):]
    elif stages:
        chosen = [stem(s) for s in stages]
    else:
        return list(NOTEBOOK_ORDER)
    wanted = set(chosen) | set(DISPLAY_PAGES)
    return [s for s in NOTEBOOK_ORDER if s in wanted]


class StageFailed(RuntimeError):
    """A stage notebook raised; the message names the stage, the error, the failed notebook
    (``<stage>.failed.ipynb``) and the command that reruns from that stage."""


def run_release(params_file: str | Path, reports_dir: str | Path = "reports", render_engine: str = "auto",
                stages: list[str] | None = None, log=print, replace: bool = False) -> dict:
    """Run the stages of a release and render the report; return a summary dict with the
    release dir, the index page, the engine used, seconds taken, and the model requests
    sent / served from the cache during this run. Raises ParamsError when the release folder
    holds tables another params file wrote under the same ``release:`` name (a copied params
    file whose name was not changed), unless ``replace``."""
    t0 = time.time()
    params_file = Path(params_file).resolve()
    rel = load_release(params_file)  # fail fast on bad parameters, before any kernel starts
    check_engine(render_engine)
    reports_dir = Path(reports_dir).resolve()
    if (reports_dir / rel.release).resolve() == NOTEBOOKS:  # the executed pages would replace the stage notebooks
        raise ParamsError(f"{params_file}: release {rel.release!r} under {reports_dir} is depsim's own notebooks "
                          f"folder, whose stage notebooks the run would overwrite: choose another --reports-dir or `release:`")
    owner = folder_params_file(rel, reports_dir)
    # the tables name their params file; the pages hold its path, which tells apart two files
    # of one name in two folders (while that other file still exists: a moved one is this one)
    ran = run_params(reports_dir / rel.release)
    if ran and Path(ran).resolve() != params_file and Path(ran).exists():
        owner = str(ran)
    if owner and owner != params_file.name and not replace:
        raise ParamsError(f"{params_file}: release {rel.release!r} is already in {reports_dir / rel.release}, made from "
                          f"{owner}; running {params_file} there would mix the two releases' tables: give it "
                          f"its own `release:` name, or pass --replace to make this file the folder's owner")
    out = release_dir(reports_dir, rel.release)
    before = len(request_log(reports_dir, rel.release))
    with kernel_env():
        _execute(stages or NOTEBOOK_ORDER, out, params_file, reports_dir, log, rel)
    reqs = request_log(reports_dir, rel.release).iloc[before:]
    engine, index = render(out, render_engine, warn=log) if render_engine != "none" else ("none", None)
    return {"release_dir": out, "index": index, "engine": engine, "seconds": time.time() - t0,
            "sent": int(reqs["sent"].sum()), "cached": int(reqs["cached"].sum()),
            "failed": int(reqs["failed"].sum())}


@contextmanager
def kernel_env():
    """Set, for the kernels this process starts, no progress bars in the published pages (the
    CLI prints timings) and a PYTHONPATH that starts with this depsim's folder: a kernel
    started in notebooks/ must import the same depsim as the CLI (a relative PYTHONPATH, or an
    editable install elsewhere, would give the stages another one). Restores both after."""
    root = str(Path(__file__).resolve().parents[1])
    saved = {k: os.environ.get(k) for k in ("DEPSIM_PROGRESS", "PYTHONPATH")}
    rest = [p for p in (saved["PYTHONPATH"] or "").split(os.pathsep) if p]
    os.environ["DEPSIM_PROGRESS"] = "0"
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *(str(Path(p).resolve()) for p in rest)])
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _execute(stages: list[str], out: Path, params_file: Path, reports_dir: Path, log, rel: Release) -> None:
    """Execute each stage notebook with papermill into ``out/<stage>.ipynb``; raise
    StageFailed on error. After each stage, ``log`` gets its warnings, its failed requests and
    the answers of its model role that could not be used.

    A stage runs into a temporary file that replaces ``<stage>.ipynb`` only when it succeeds
    (and then clears its failed marker). A failed run is kept as ``<stage>.failed.ipynb``:
    the last good page stays, and :mod:`depsim.render` marks it (:func:`depsim.render.failed_pages`)."""
    for stage in stages:
        src = NOTEBOOKS / f"{stage}.ipynb"
        dst, failed = out / f"{stage}.ipynb", out / f"{stage}{FAILED_SUFFIX}"
        # beside the page (same file system, so the replace is atomic); papermill creates it with
        # the usual permissions, which a page published from this folder keeps
        tmp = str(out / f".{stage}.{os.getpid()}.running.ipynb")
        ts, logged = time.time(), len(request_log(reports_dir, out.name))
        try:
            pm.execute_notebook(str(src), tmp, parameters={"params_file": str(params_file),
                                                           "reports_dir": str(reports_dir)},
                                cwd=str(NOTEBOOKS), progress_bar=False, kernel_name="python3",
                                # quiet the kernel's own log on the terminal: start-up warnings, and the
                                # "KeyboardInterrupt caught in kernel" of jupyter_client's interrupt before
                                # every shutdown; a cell's error still fails the stage (and is in the page)
                                extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
        except BaseException as e:
            # whatever stopped it (a cell's error, a dead kernel, ^C), the partial notebook is no page
            if Path(tmp).exists() and Path(tmp).stat().st_size:
                os.replace(tmp, failed)
            else:
                Path(tmp).unlink(missing_ok=True)
            if not isinstance(e, pm.PapermillExecutionError):
                raise
            kept = f"; the last good page {dst.name} is kept, marked as failed" if dst.exists() else ""
            # a table an earlier stage writes is missing ("... is missing: run 04_grade first"): rerun from that stage
            need = re.search(r"is missing: run (\w+) first", e.evalue or "") if e.ename == "FileNotFoundError" else None
            start = stage_of(need.group(1)) if need else stage_of(stage)
            raise StageFailed(f"stage {stage} failed: {e.ename}: {e.evalue} (failed notebook: {failed}{kept}; "
                              f"rerun: {rerun_command(params_file, reports_dir, start)})") from None
        os.replace(tmp, dst)
        failed.unlink(missing_ok=True)  # this stage's last run succeeded
        log(f"  {stage:<20} {time.time() - ts:5.1f} s")
        unusable = unusable_answers(failures(rel, reports_dir), STAGE_ROLE[stage]) if stage in STAGE_ROLE else []
        for w in stage_warnings(dst) + failed_requests(request_log(reports_dir, out.name).iloc[logged:]) + unusable:
            log(f"    warning: {w}")


#: the model role whose answers each stage's table holds
STAGE_ROLE = {"02_simulate": "candidate", "02b_realism": "judge", "03_audit": "auditor", "04_grade": "grader"}


def unusable_answers(failures: pd.DataFrame, role: str) -> list[str]:
    """Return the lines that say where ``role``'s answers could not be used, from a failure
    table (:func:`depsim.pipeline.failures`): a failed call or an answer that was unusable (no
    verdict, copied, echoed), "grader: hate: 6 of 6 answers unusable (unusable answer; e.g.
    ...)", one line for the categories that failed with the same error. The
    auditor's table keeps only answers with findings or errors, so its line counts the
    unusable ones alone. A failed request is also in :func:`failed_requests`;
    this says what it cost, and what no request log shows."""
    out = []
    f = failures[failures["role"] == role]
    # categories that failed the same way are one line (a grader that fails, fails everywhere)
    for (kind, example), g in f.groupby(["kind", "example"], sort=False):
        failed, items = int(g["failed"].sum()), int(g["items"].sum())
        many = f"{failed:,} answers" if role == "auditor" else f"{failed:,} of {items:,} answers"
        cats = [c for c in g["category"] if c != "all"]
        where = (f"{cats[0]}: " if len(cats) == 1 else
                 f"{len(cats)} categories ({', '.join(cats[:4])}{', ...' if len(cats) > 4 else ''}): " if cats else "")
        out.append(f"{role}: {where}{many} unusable ({kind}; e.g. {str(example)[:120]!r})")
    return out


def failed_requests(log: pd.DataFrame) -> list[str]:
    """Return one line per role whose model requests failed in ``log`` (rows of the request
    log): "grader: 30 of 30 requests sent failed (...)"; nothing for roles with no failure."""
    if log.empty:
        return []
    by = log.groupby("role", sort=False)[["sent", "failed"]].sum()
    return [f"{role}: {int(r.failed):,} of {int(r.sent):,} requests sent failed (the summary page's Failures "
            f"table has the errors)" for role, r in by.iterrows() if r.failed]


def stage_warnings(notebook: Path) -> list[str]:
    """Return the Python warnings an executed notebook printed ("SamplingWarning: only 3
    eligible user turns ..."), once each and in order, so that the terminal shows them too."""
    out = []
    for c in json.loads(Path(notebook).read_text(encoding="utf-8")).get("cells", []):
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                text = "".join(o.get("text", ""))
                out += [m.group(1) for m in re.finditer(r"(?m)^(?:.*?: )?(\w*Warning: .+)$", text)]
    return list(dict.fromkeys(out))
