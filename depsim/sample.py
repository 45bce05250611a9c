"""Stage 1: turn conversation sources into the de-identified ``prefixes`` table.

Each release has up to three pools of prefixes:
- ``previous``: Y's production traffic. X regenerates on it (target ``sim``); the logged Y
  responses are the ``prod_prev`` target.
- ``candidate``: X's production traffic after release (``sim_self``, ``prod_new``).
- ``challenging``: the challenging-prompts set (``challenging``).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import pandas as pd

from depsim.deid import deidentify_messages
from depsim.params import Release, Source
from depsim.readers import convert
from depsim.records import content_id, decode_messages, encode_messages, release_dir
from depsim.registry import plugin
from depsim.sampling import sample_prefixes

POOLS = ("previous", "candidate", "challenging")


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


def _converted_paths(rel: Release, pool: str, src: Source, reports_dir: str | Path) -> tuple[Path, Path, Path]:
    """Return (table, report, quarantine) paths of a converted source, keyed by the source
    settings and the input files' sizes and modification times."""
    target = rel.resolve(src.path)
    stamp = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(target.parent.glob(target.name))]
    key = content_id(src.model_dump_json(), stamp, n=12)
    folder = release_dir(reports_dir, rel.release) / "data" / "sources"
    return folder / f"{pool}-{key}.parquet", folder / f"{pool}-{key}.json", folder / f"{pool}-quarantine.jsonl"


def converted(rel: Release, pool: str, src: Source, reports_dir: str | Path) -> Path:
    """Return the canonical table converted from a source file (or hub id) with
    :mod:`depsim.readers`, made once and reused while the file is unchanged. Bad records go
    to ``data/sources/<pool>-quarantine.jsonl`` (with ``quarantine: true``) and are counted."""
    out, report, quarantine = _converted_paths(rel, pool, src, reports_dir)
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        target = rel.resolve(src.path)
        path = str(target) if any(target.parent.glob(target.name)) else src.path  # else a hub id
        res = convert(path, src.kind, out, quarantine=quarantine if src.quarantine else None,
                      max_message_chars=src.max_message_chars, columns=src.columns)
        report.write_text(json.dumps({"records": res.records, "rows": res.rows, "quarantined": res.quarantined,
                                      "reasons": dict(res.reasons), "notes": list(res.notes)}))
    return out


def conversion_reports(rel: Release, reports_dir: str | Path) -> pd.DataFrame:
    """Return what each converted source read, kept and quarantined (no rows for simulated
    or canonical Parquet sources): pool, kind, records, rows, quarantined, reasons, notes."""
    rows = []
    for pool in POOLS:
        src = getattr(rel.sources, pool)
        if src is None or src.kind in ("sim_world", "parquet"):
            continue
        _, report, _ = _converted_paths(rel, pool, src, reports_dir)
        if report.exists():
            rows.append({"pool": pool, "kind": src.kind, **json.loads(report.read_text())})
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


def build_prefixes(rel: Release, reports_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (prefixes, pii_counts): sampled, de-identified prefixes of every pool the
    release uses, and the count of substitutions per pool and PII type."""
    frames, pii = [], []
    for pool in POOLS:
        src = getattr(rel.sources, pool)
        if src is None:
            continue
        path = source_path(rel, pool, src, reports_dir)
        n = rel.sampling.n
        if pool == "challenging":
            n = int(duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0])
        strat = rel.reweight.column if rel.reweight is not None and pool != "challenging" else None
        df = sample_prefixes(path, n, rules=rel.sampling.eligibility, seed=rel.sampling.seed, stratum_column=strat)
        df = pd.concat([df, _responses(path, df)], axis=1)
        df.insert(1, "pool", pool)
        # two pools may sample the same turn of one file (a public set standing in for both)
        df["prefix_id"] = [content_id(pool, p) for p in df["prefix_id"]]
        counts: Counter = Counter()
        if rel.deid:
            df, counts = _deidentify(df)
        pii.append({"pool": pool, **counts})
        frames.append(df)
    prefixes = pd.concat(frames, ignore_index=True)
    return prefixes, pd.DataFrame(pii).fillna(0)


def _deidentify(df: pd.DataFrame) -> tuple[pd.DataFrame, Counter]:
    """De-identify prefix and logged response together, so a name or email in both gets the
    same substitute."""
    total: Counter = Counter()
    msgs_out, resp_out = [], []
    for cid, raw, resp in zip(df["conversation_id"], df["messages"], df["logged_response"]):
        msgs = decode_messages(raw)
        tail = decode_messages(resp)
        clean, counts = deidentify_messages(msgs + tail, key=str(cid))
        total.update(counts)
        msgs_out.append(encode_messages(clean[: len(msgs)]))
        resp_out.append(encode_messages(clean[len(msgs):]) if resp else None)
    df = df.assign(messages=msgs_out, logged_response=resp_out)
    if "next_message" in df:
        df = df.drop(columns=["next_message"])
    return df, total


def pool_summary(prefixes: pd.DataFrame) -> pd.DataFrame:
    """Return per pool: prefixes sampled, distinct conversations, mean turn index (0-based)."""
    return prefixes.groupby("pool").agg(prefixes=("prefix_id", "size"), conversations=("conversation_id", "nunique"),
                                        mean_turn_index=("turn_index", "mean")).reset_index()
