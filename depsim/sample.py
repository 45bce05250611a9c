"""Stage 1: turn conversation sources into the de-identified ``prefixes`` table.

Each release has up to three pools of prefixes:
- ``previous``: Y's production traffic. X regenerates on it (target ``sim``); the logged Y
  responses are the ``prod_prev`` target.
- ``candidate``: X's production traffic after release (``sim_self``, ``prod_new``).
- ``challenging``: the challenging-prompts set (``challenging``).
"""
from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import duckdb
import pandas as pd

from depsim.deid import deidentify_many, source_key
from depsim.params import HUB_FORMATS, Release, Source
from depsim.readers import READER_VERSION, InputError, convert, input_files, likely_cause
from depsim.records import content_id, decode_messages, encode_messages, file_sha256, release_dir
from depsim.registry import plugin
from depsim.sampling import SamplingWarning, explain_ineligible, sample_prefixes

POOLS = ("previous", "candidate", "challenging")
#: a prompt set's safety labels (XSTest: safe / unsafe) as ``prompt_safe``; other labels read as unknown
PROMPT_SAFETY = {"safe": True, "unsafe": False}


def source_path(rel: Release, pool: str, src: Source, reports_dir: str | Path) -> Path:
    """Return the Parquet conversation table of a source. A simulated-world source is
    generated on first use and kept under ``data/world/``, keyed by the world settings."""
    if src.kind == "parquet":
        return rel.resolve(src.path)
    if src.kind != "sim_world":
        return converted(rel, pool, src, reports_dir)
    sim = plugin("sim")
    deployment = src.deployment or {"previous": "Y", "candidate": "X", "challenging": "challenging"}[pool]
    key = "-".join([*(f"{v}" for v in rel.world.model_dump().values()), sim.version])
    path = release_dir(reports_dir, rel.release) / "data" / "world" / f"{deployment}-{key}.parquet"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        df = sim.conversations(rel.world.model_dump(), deployment)
        tmp = path.with_suffix(".tmp")
        df.to_parquet(tmp, index=False)
        tmp.replace(path)
    return path


def _source_files(rel: Release, src: Source) -> list[Path] | str:
    """The input files of a source (a file, a folder's files, a glob with ``**``), or its hub id."""
    target = rel.resolve(src.path)
    try:
        return input_files(str(target), src.kind)
    except InputError:
        if src.kind in HUB_FORMATS and not target.exists():
            return input_files(src.path, src.kind)  # a hub id such as allenai/WildChat-1M
        raise


def same_data(rel: Release, a: Source | None, b: Source | None) -> bool:
    """True when two file sources hold the same conversations: the same kind and the same
    input files, or files with the same bytes (a copy of the previous pool's file is no
    post-release traffic). Sizes are compared before any file is hashed."""
    if a is None or b is None or a.kind != b.kind or "sim_world" in (a.kind, b.kind):
        return False
    fa, fb = _source_files(rel, a), _source_files(rel, b)
    if isinstance(fa, str) or isinstance(fb, str):
        return fa == fb
    if [p.resolve() for p in fa] == [p.resolve() for p in fb]:
        return True
    if len(fa) != len(fb) or [p.stat().st_size for p in fa] != [p.stat().st_size for p in fb]:
        return False
    return all(file_sha256(x) == file_sha256(y) for x, y in zip(fa, fb))


def _converted_paths(rel: Release, pool: str, src: Source, reports_dir: str | Path) -> tuple[Path, Path, Path]:
    """Return (table, report, quarantine) paths of a converted source, keyed by the conversion
    settings and each input file's name, size and modification time (a shard replaced inside a
    folder gives a new key). The pool is not part of the key: a file that feeds two pools is
    converted once."""
    files = _source_files(rel, src)
    stamp = files if isinstance(files, str) else [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns)
                                                  for p in files]
    settings = src.model_dump(exclude={"deployment", "path"})
    key = content_id(json.dumps(settings, sort_keys=True), stamp, READER_VERSION, n=12)
    # raw (not de-identified) text: kept beside the request cache, never in the release
    # folder that reviewers are sent
    folder = Path(reports_dir) / ".cache" / "sources"
    stem = f"{src.kind}-{key}"
    return folder / f"{stem}.parquet", folder / f"{stem}.json", folder / f"{stem}-quarantine.jsonl"


class NoUsableData(ValueError):
    """Stage 1 found nothing usable in a source (every record quarantined, or no eligible user
    turn); the message gives the counts by reason and the likely cause."""


def _kept_nothing(pool: str, src: Source, report: dict) -> str:
    """The diagnosis of a conversion that kept no record."""
    reasons = sorted(report["reasons"].items(), key=lambda kv: -kv[1])
    msg = (f"{pool} source ({src.kind}, {src.path}): 0 of {report['records']:,} records kept ("
           + ", ".join(f"{k} {v:,}" for k, v in reasons) + ")")
    msg += likely_cause(report["reasons"], src.kind)
    if report.get("quarantine"):
        msg += f"; each bad record is listed in {report['quarantine']}"
    return msg


def converted(rel: Release, pool: str, src: Source, reports_dir: str | Path) -> Path:
    """Return the canonical table converted from a source file (or hub id) with
    :mod:`depsim.readers`, made once and reused while the files are unchanged. It holds the
    raw text, so it lives under ``<reports>/.cache/sources/``, outside the release folder. Bad
    records go to ``<kind>-<key>-quarantine.jsonl`` beside it (with ``quarantine: true``) and
    are counted. Raises :class:`NoUsableData` when no record is usable."""
    out, report, quarantine = _converted_paths(rel, pool, src, reports_dir)
    if not out.exists() or not report.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.parent.chmod(0o700)  # raw, not de-identified text: its owner's alone, as the de-id key
        res = convert(_source_files(rel, src), src.kind, out, quarantine=quarantine if src.quarantine else None,
                      max_message_chars=src.max_message_chars, columns=src.columns,
                      keep_identifying=src.keep_identifying, quarantine_raw=src.quarantine_raw,
                      keep_meta=src.keep_meta, json_path=src.json_path, mapping=src.mapping or None,
                      memory_limit=rel.sampling.memory_limit, spill_dir=rel.sampling.spill_dir)
        report.write_text(json.dumps({"records": res.records, "rows": res.rows, "quarantined": res.quarantined,
                                      "reasons": dict(res.reasons), "notes": list(res.notes),
                                      "quarantine": str(quarantine) if src.quarantine else None}))
    rep = json.loads(report.read_text())
    if rep["rows"] == 0:
        raise NoUsableData(_kept_nothing(pool, src, rep))
    return out


def conversion_reports(rel: Release, reports_dir: str | Path) -> pd.DataFrame:
    """Return what each converted source read, kept and quarantined (no rows for simulated
    or canonical Parquet sources): pool, kind, records, rows, quarantined, reasons, notes,
    quarantine (the quarantine file's path, or None)."""
    rows = []
    for pool in POOLS:
        src = getattr(rel.sources, pool)
        if src is None or src.kind in ("sim_world", "parquet"):
            continue
        _, report, _ = _converted_paths(rel, pool, src, reports_dir)
        if report.exists():
            rep = json.loads(report.read_text())
            rows.append({"pool": pool, "kind": src.kind, **rep, "quarantine": rep.get("quarantine")})
    return pd.DataFrame(rows)


def _responses(path: Path, sampled: pd.DataFrame) -> pd.DataFrame:
    """Return, per sampled (conversation_id, turn_index), the logged response (every message
    after the user message up to the next user message) and the conversation's tools."""
    ids = sampled["conversation_id"].drop_duplicates().tolist()
    con = duckdb.connect()
    cols = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()}
    tools = "tools" if "tools" in cols else "NULL AS tools"
    logs = con.execute(f"SELECT conversation_id, messages, {tools} FROM read_parquet(?) "
                       "WHERE conversation_id IN (SELECT unnest(?))", [str(path), ids]).df()
    con.close()
    by_id = logs.set_index("conversation_id")
    out = []
    for cid, turn in zip(sampled["conversation_id"], sampled["turn_index"]):
        msgs = decode_messages(by_id.at[cid, "messages"])
        resp = []
        for m in msgs[turn + 1:]:
            if m.get("role") == "user":
                break
            resp.append(m)
        out.append((encode_messages(resp) if resp else None, by_id.at[cid, "tools"]))
    return pd.DataFrame(out, columns=["logged_response", "tools"], index=sampled.index)


def refuse_own_tables(rel: Release, reports_dir: str | Path) -> None:
    """Raise InputError (one line naming the file) when a source file lies in the release's
    own table folder (``reports/<release>/data/``): the stages rewrite those tables, so the
    input would be replaced by the run it feeds."""
    tables = (release_dir(reports_dir, rel.release) / "data").resolve()
    for pool in POOLS:
        src = getattr(rel.sources, pool)
        files = _source_files(rel, src) if src is not None and src.kind != "sim_world" else []
        for f in [] if isinstance(files, str) else files:
            if tables in Path(f).resolve().parents:
                raise InputError(f"{f}: sources.{pool} is a file in the release's own table folder {tables}, which "
                                 f"the run rewrites: move it out of the reports folder", file=str(f))


def build_prefixes(rel: Release, reports_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (prefixes, pii_counts): sampled prefixes of every pool the release uses, those
    of traffic de-identified (``deid``; the challenging pool, a published prompt set, is kept
    as published), and the count of substitutions per pool and PII type."""
    refuse_own_tables(rel, reports_dir)
    frames, pii = [], []
    for pool in POOLS:
        src = getattr(rel.sources, pool)
        if src is None:
            continue
        path = source_path(rel, pool, src, reports_dir)
        n = rel.sampling.n
        strat = stratum(rel, pool)
        missing = missing_stratum(rel, pool, src, path)
        lifted = [c for c in src.columns if c != strat] if src.kind not in ("sim_world", "parquet") else []
        if pool == "challenging":
            total = int(duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0])
            n = min(total, rel.sampling.challenging_n or total)
            # a prompt set's own safe/unsafe label (XSTest) tells over-refusal which prompts count
            cols = {r[0] for r in duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()}
            lifted += ["label"] if "label" in cols and "label" not in lifted else []
        mem = dict(memory_limit=rel.sampling.memory_limit, spill_dir=rel.sampling.spill_dir)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            df = None if missing else sample_prefixes(path, n, rules=rel.sampling.eligibility, seed=rel.sampling.seed,
                                                      stratum_column=strat, extra_columns=lifted, **mem)
        for w in caught:  # say which pool came up short
            warnings.warn(f"{pool} pool: {w.message}" if issubclass(w.category, SamplingWarning) else w.message,
                          w.category, stacklevel=2)
        if df is None or df.empty:
            why = explain_ineligible(path, rel.sampling.eligibility, **mem)  # the first thing to fix
            if why or not missing:
                raise NoUsableData(f"{pool} source ({src.kind}, {src.path}): no eligible user turn; {why}")
            raise NoUsableData(missing)
        df = pd.concat([df, _responses(path, df)], axis=1)
        df.insert(1, "pool", pool)
        if pool == "challenging" and "label" in df:
            df["prompt_safe"] = df.pop("label").map(PROMPT_SAFETY).astype("boolean")
        # two pools may sample the same turn of one file (a public set standing in for both)
        df["prefix_id"] = [content_id(pool, p) for p in df["prefix_id"]]
        counts: Counter = Counter()
        # a challenging prompt set is a published benchmark, not users' traffic: rewriting its
        # public figures ("How did Sylvia Plath die?") would change the benchmark
        if rel.deid and pool != "challenging":
            df, counts = _deidentify(df, source_key(src.kind, reports_dir))
        pii.append({"pool": pool, **counts})
        frames.append(df)
    prefixes = pd.concat(frames, ignore_index=True)
    return prefixes, pd.DataFrame(pii).fillna(0)


def _deidentify(df: pd.DataFrame, secret: bytes) -> tuple[pd.DataFrame, Counter]:
    """De-identify prefix and logged response together, so a name or email in both gets the
    same substitute (keyed by ``secret``, :func:`depsim.deid.source_key`)."""
    total: Counter = Counter()
    msgs_out, resp_out = [], []
    prefixes = [decode_messages(raw) for raw in df["messages"]]
    tails = [decode_messages(resp) for resp in df["logged_response"]]
    # spread over worker processes (small tables stay in this process: see deidentify_many)
    done = deidentify_many([m + r for m, r in zip(prefixes, tails)], [str(c) for c in df["conversation_id"]],
                           secret=secret)
    for msgs, tail, (clean, counts) in zip(prefixes, tails, done):
        total.update(counts)
        msgs_out.append(encode_messages(clean[: len(msgs)]))
        # no logged response (None or NaN from Parquet) stays missing: never "[]", which would
        # be graded as a response without a flag
        resp_out.append(encode_messages(clean[len(msgs):]) if tail else None)
    df = df.assign(messages=msgs_out, logged_response=resp_out)
    if "next_message" in df:
        df = df.drop(columns=["next_message"])
    return df, total


def pool_summary(prefixes: pd.DataFrame) -> pd.DataFrame:
    """Return per pool: prefixes sampled, distinct conversations, and the mean user turn the
    prefixes end at (1 = the conversation's first user message, as eligibility counts; the
    0-based message index, ``turn_index``, read as 0 for a one-message prompt)."""
    user_turn = prefixes["messages"].map(lambda m: sum(1 for x in decode_messages(m) if x.get("role") == "user"))
    return (prefixes.assign(user_turn=user_turn.to_numpy())
            .groupby("pool").agg(prefixes=("prefix_id", "size"), conversations=("conversation_id", "nunique"),
                                 mean_user_turn=("user_turn", "mean")).reset_index())


def check_sources(rel: Release, reports_dir: str | Path) -> list[str]:
    """Convert every prefix source (cached, as stage 1 does) and check that it has eligible user
    turns under ``sampling.eligibility``. Returns one line per source; raises
    :class:`NoUsableData` (counts by reason, likely cause) for the first that has none.
    Simulated-world sources are generated (cached, as stage 1 keeps them) and checked too: an
    eligibility rule can exclude all of them. A source without the column that
    ``reweight.column`` stratifies by is named (:func:`missing_stratum`); records a conversion
    set aside are counted in its line."""
    lines = []
    for pool in POOLS:
        src = getattr(rel.sources, pool)
        if src is None:
            continue
        path = source_path(rel, pool, src, reports_dir)
        rules = rel.sampling.eligibility  # as build_prefixes samples every pool
        why = explain_ineligible(path, rules, memory_limit=rel.sampling.memory_limit,
                                 spill_dir=rel.sampling.spill_dir)
        if why:
            raise NoUsableData(f"{pool} source ({src.kind}, {src.path}): no eligible user turn; {why}")
        if missing := missing_stratum(rel, pool, src, path):
            raise NoUsableData(missing)
        lines.append(f"{pool}: {src.kind} {src.path or src.deployment or ''}: has eligible user turns"
                     + _set_aside(rel, pool, src, reports_dir))
    return lines


def _set_aside(rel: Release, pool: str, src: Source, reports_dir: str | Path) -> str:
    """"; 4 of 17 records quarantined (reasons, file)" for a converted source that set records
    aside; "" otherwise."""
    if src.kind in ("sim_world", "parquet"):
        return ""
    rep = json.loads(_converted_paths(rel, pool, src, reports_dir)[1].read_text())
    if not rep["quarantined"]:
        return ""
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(rep["reasons"].items(), key=lambda kv: -kv[1]))
    where = f", listed in {rep['quarantine']}" if rep.get("quarantine") else ""
    return f"; {rep['quarantined']:,} of {rep['records']:,} records quarantined ({reasons}{where})"


def stratum(rel: Release, pool: str) -> str | None:
    """Return the prefix column that ``pool`` is sampled by stratum on: ``reweight.column``
    for the previous pool (whose prefixes the reweighted forecast uses), else None."""
    return rel.reweight.column if rel.reweight is not None and pool == "previous" else None


def missing_stratum(rel: Release, pool: str, src, path: Path) -> str | None:
    """Return why ``pool`` cannot be sampled by stratum (one line naming ``reweight.column``:
    the converted source at ``path`` lacks that column, which must be lifted from the
    records), or None when it can."""
    col = stratum(rel, pool)
    if col is None:
        return None
    cols = {r[0] for r in duckdb.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()}
    if col in cols:
        return None
    return (f"{pool} source ({src.kind}, {src.path or src.deployment}): no column {col!r}, which reweight.column "
            f"stratifies the sample by: lift it from the records with `columns: [{col}]` on sources.{pool}, or "
            f"remove reweight")
