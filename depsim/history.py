"""Earlier releases: their forecasts and realised counts, for metrics across releases (as in
the paper's four-release analysis) and for the forecast-error model (depsim.errormodel).

``params/history.csv`` holds one row per (release, category, method), releases in time
order: the forecast's count k of n (and its Jeffreys rate, lo, hi), the category's
grader_id, Y's previous production count prev_k of prev_n (and prev_rate), and X's realised
production count k_real of n_real. The shipped file comes from the simulated world:
``python -m depsim.sim.history params/history.csv --seed 11`` writes it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from depsim import errormodel
from depsim.score import score_rows

COLUMNS = ["release", "category", "group", "method", "grader_id", "k", "n", "rate", "lo", "hi",
           "prev_k", "prev_n", "prev_rate", "k_real", "n_real"]
NUMERIC = ["k", "n", "rate", "lo", "hi", "prev_k", "prev_n", "prev_rate", "k_real", "n_real"]


def load_history(path: str | Path) -> pd.DataFrame:
    """Return the history table of ``path``; raise ValueError naming the file, line and
    problem for missing columns, a value that is not a number (naming its column), invalid
    values, a (release, category, method) given twice, or a category whose grader_id changes
    within one release."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    df = pd.read_csv(path, dtype={c: str for c in ("release", "category", "group", "method", "grader_id")})
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        raise ValueError(f"{path}:1: missing columns {missing}")
    for col in NUMERIC:
        x = pd.to_numeric(df[col], errors="coerce")
        bad = df[col].notna() & x.isna()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path}:{i + 2}: column {col}: {str(df[col].iloc[i])!r} is not a number")
        df[col] = x
    # one row per (release, category, method): a repeated row would count twice in the error model
    keys = df[["release", "category", "method"]]
    again = keys.duplicated()
    if again.any():
        j = int(np.flatnonzero(again)[0])
        key = tuple(keys.iloc[j])
        i = int(np.flatnonzero((keys == pd.Series(key, index=keys.columns)).all(axis=1))[0])
        raise ValueError(f"{path}:{j + 2}: release {key[0]!r}, category {key[1]!r}, method {key[2]!r} is given twice "
                         f"(first at line {i + 2})")
    bad = ~((df["lo"] <= df["rate"]) & (df["rate"] <= df["hi"]) & (df["rate"] > 0) & (df["prev_rate"] > 0)
            & (df["k"] >= 0) & (df["k"] <= df["n"]) & (df["n"] > 0)
            & (df["prev_k"] >= 0) & (df["prev_k"] <= df["prev_n"]) & (df["prev_n"] > 0)
            & (df["k_real"] >= 0) & (df["k_real"] <= df["n_real"]) & (df["n_real"] > 0))
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 2  # header is line 1
        raise ValueError(f"{path}:{line}: invalid row (need 0 < lo ≤ rate ≤ hi, prev_rate > 0, 0 ≤ k ≤ n > 0, "
                         "0 ≤ prev_k ≤ prev_n > 0, 0 ≤ k_real ≤ n_real > 0)")
    ids = df.groupby(["release", "category"])["grader_id"].transform("nunique")
    if (ids > 1).any():
        line = int(np.flatnonzero(ids > 1)[0]) + 2
        raise ValueError(f"{path}:{line}: category {df['category'].iloc[line - 2]!r} has several grader_ids in "
                         f"release {df['release'].iloc[line - 2]!r}")
    return df


def comparable(history: pd.DataFrame, forecasts: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Return (rows of ``history`` whose category was graded by the same grader_id as in
    ``forecasts``, sorted names of the categories whose earlier rows were dropped because the
    grader changed). Categories new to the history simply have no rows."""
    if "grader_id" not in history or "grader_id" not in forecasts:
        return history, []
    now = forecasts.drop_duplicates("category").set_index("category")["grader_id"]
    same = history["grader_id"].to_numpy() == history["category"].map(now).to_numpy()
    known = history["category"].isin(now.index).to_numpy()
    dropped = sorted(set(history.loc[known & ~same, "category"]))
    return history[same].reset_index(drop=True), dropped


def record(history_path: str | Path, scored: pd.DataFrame, release: str, replace: bool = False) -> int:
    """Append a scored release (the ``scores`` table: forecasts with their realised counts)
    to the history file at ``history_path`` as rows of :data:`COLUMNS`, so that the next
    release's error model and metrics across releases learn from it. Rows without a realised
    count are left out. Raises ValueError when ``release`` is already in the file (unless
    ``replace``: its rows are then written again) or when the rows would not load back
    (:func:`load_history`). Writes atomically; returns the number of rows written."""
    path = Path(history_path)
    old = load_history(path)
    if (old["release"] == release).any() and not replace:
        raise ValueError(f"{path}: release {release!r} is already recorded ({int((old['release'] == release).sum())} "
                         f"rows); record it again with --replace")
    new = scored[scored["k_real"].notna() & scored["n_real"].gt(0)].assign(release=release)[COLUMNS]
    out = pd.concat([old[old["release"] != release], new], ignore_index=True)
    tmp = path.with_name(f".{path.name}.tmp")
    out.to_csv(tmp, index=False)
    try:
        load_history(tmp)  # the file must stay loadable: checked before it replaces the old one
    except ValueError as e:
        tmp.unlink()
        raise ValueError(f"{path}: the rows of release {release!r} would not load back: {e}") from None
    tmp.replace(path)
    return len(new)


def earlier(history: pd.DataFrame, release: str) -> pd.DataFrame:
    """Return the rows of ``history`` from releases other than ``release``: once a release is
    recorded, its own outcome must not inform its forecast's bounds or track record."""
    return history[history["release"] != release] if "release" in history else history


def with_history(history: pd.DataFrame, scored: pd.DataFrame, release: str) -> pd.DataFrame:
    """Return earlier releases' scored rows and this release's, in one table (column
    ``release``), for metrics across releases. Rows of ``history`` already labelled
    ``release`` (this release appended to the file) are replaced by ``scored``, never
    counted twice; a category's earlier rows graded by another grader_id are left out, as
    for the predictive bounds (:func:`comparable`)."""
    cols = [c for c in COLUMNS if c != "release" and c in scored]
    before, _ = comparable(earlier(history, release), scored)
    return pd.concat([score_rows(before), scored[cols].pipe(score_rows).assign(release=release)],
                     ignore_index=True)


def predictive_bounds(forecasts: pd.DataFrame, history: pd.DataFrame, level: float = 0.95,
                      n_real: float | None = None) -> pd.DataFrame:
    """Return ``forecasts`` with each method's predictive distribution of the realised count,
    from the forecast-error model fitted on ``history`` (its method and category group, earlier
    releases with the same grader_id only; see depsim.errormodel):

    * ``err_loc``, ``err_scale``, ``err_df``: the Student t of the log ratio realised /
      forecast rate (natural-log units); ``err_releases``: releases it was fitted on (0: the
      prior alone: the interval is then very wide);
    * ``pred_n``: the realised sample size assumed (``n_real``, else Y's production n for the
      category, else the forecast's n);
    * ``pred_k_lo``, ``pred_k_hi``: the central ``level`` interval of the realised count of
      pred_n, and ``pred_lo``, ``pred_hi`` the same as rates (fractions); ``pred_level``: that
      level, so every page states the level the intervals were drawn at;
    * ``history_dropped``: True where the category's earlier rows were dropped because its
      grader_id changed.

    ``history`` is a history table (scored or not) with the count columns of
    :data:`COLUMNS`."""
    hist, dropped = comparable(history, forecasts)
    fc = errormodel.predict(hist[["release", "category", "group", "method", "k", "n", "k_real", "n_real"]], forecasts)
    if n_real is not None:
        fc["pred_n"] = float(n_real)
    elif "prev_n" in fc:
        fc["pred_n"] = fc["prev_n"].fillna(fc["n"]).astype(float)
    else:
        fc["pred_n"] = fc["n"].astype(float)
    args = (fc["k"].to_numpy(float), fc["n"].to_numpy(float), fc["pred_n"].to_numpy(float),
            fc["err_loc"].to_numpy(), fc["err_scale"].to_numpy(), fc["err_df"].to_numpy())
    fc["pred_k_lo"], fc["pred_k_hi"] = errormodel.count_interval(level, *args)
    fc["pred_lo"], fc["pred_hi"] = fc["pred_k_lo"] / fc["pred_n"], fc["pred_k_hi"] / fc["pred_n"]
    fc["pred_level"] = level
    fc["history_dropped"] = fc["category"].isin(dropped)
    return fc


def forward_chained(history: pd.DataFrame, level: float = 0.9, min_train: int = 2) -> pd.DataFrame:
    """Return the forward-chained predictions of ``history`` (depsim.errormodel.forward_chain:
    each release predicted from the error model fitted on the releases before it), one row per
    predicted forecast with its calibration columns."""
    return errormodel.forward_chain(history, min_train=min_train, level=level)


def loo_coverage(scored: pd.DataFrame, level: float = 0.9, min_train: int = 2) -> pd.DataFrame:
    """Return, per method, posterior-predictive calibration across releases, validated by
    forward chaining (each release predicted from the releases before it only; the name is
    kept from the earlier leave-one-out check, which let later releases inform earlier ones).

    Columns: method, rows (predictions), coverage (share of realised counts inside the
    ``level`` predictive interval, randomised at ties so a perfect forecaster scores
    ``level`` exactly in expectation), inside (conservative integer-interval share), se, p_value
    (of coverage = level), nominal, mean_sigma (posterior mean σ fitted on all releases) and
    untracked (rows predicted from no earlier release of the method: the error model's prior
    alone, an interval so wide that covering says nothing)."""
    cols = ["method", "rows", "coverage", "inside", "se", "p_value", "nominal", "mean_sigma", "untracked"]
    ch = errormodel.forward_chain(scored, min_train=min_train, level=level, intervals=False)
    if ch.empty:
        return pd.DataFrame(columns=cols)
    cov = errormodel.coverage_by(ch, by=("method",), level=level).rename(columns={"n": "rows"})
    fit = errormodel.fit_history(scored)
    sig = fit.groupby("method").apply(lambda g: float(np.average(g["sigma"], weights=g["rows"])), include_groups=False)
    cov["mean_sigma"] = cov["method"].map(sig)
    cov["untracked"] = _untracked(ch, ["method"]).reindex(cov["method"]).to_numpy()
    return cov[cols]


def _untracked(chained: pd.DataFrame, by: list[str]) -> pd.Series:
    """Forward-chained predictions per ``by`` that no earlier release of their method and
    group informed (``train_releases`` = 0: the prior alone)."""
    return (chained["train_releases"] == 0).groupby([chained[b] for b in by]).sum().astype(int)


def calibration_report(history: pd.DataFrame, level: float = 0.9, min_train: int = 2,
                       alpha: float = 0.05, band: float = 0.05) -> dict[str, pd.DataFrame]:
    """Return forward-chained calibration tables for a page: ``by_group`` (per method and
    category group; ``untracked``: predictions from no earlier release), ``by_category`` (per
    method and category: coverage of the realised count by its ``level`` predictive interval,
    each category predicted with its own error scale;
    ``outside_band`` where coverage is more than ``band`` from nominal, and ``flagged`` where it
    is outside the band and the departure is significant, Benjamini–Hochberg at ``alpha``; see
    depsim.errormodel.flag_categories), ``pit`` (the randomised PIT values per method, for a
    histogram) and ``fit`` (σ, bias and drift per method and group fitted on all releases)."""
    ch = errormodel.forward_chain(history, min_train=min_train, level=level, intervals=False)
    if ch.empty:
        empty = pd.DataFrame()
        return {"by_group": empty, "by_category": empty, "pit": empty, "fit": errormodel.fit_history(history)}
    by_group = errormodel.coverage_by(ch, ("method", "group"), level)
    # predictions from the prior alone cover almost anything: counted, so no page reads them as skill
    by_group["untracked"] = _untracked(ch, ["method", "group"]).reindex(
        pd.MultiIndex.from_frame(by_group[["method", "group"]])).to_numpy()
    return {"by_group": by_group,
            "by_category": errormodel.flag_categories(ch, level, alpha, band=band),
            "pit": ch[["release", "category", "method", "pit"]],
            "fit": errormodel.fit_history(history)}
