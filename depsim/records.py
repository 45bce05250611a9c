"""The canonical tables: where a release's tables live (``reports/<release>/data/*.parquet``),
how they are read and written, and the one codec for their ``messages`` cells.

Writes are atomic: a killed run never leaves a half-written table. A ``messages`` cell (in
``prefixes``, ``completions`` and the conversation tables) holds OpenAI-format messages as a
JSON string; :func:`decode_messages` reads one, :func:`encode_messages` writes one."""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def release_dir(reports_dir: str | Path, release: str) -> Path:
    """Return ``<reports_dir>/<release>``, created if missing."""
    d = Path(reports_dir) / release
    (d / "data").mkdir(parents=True, exist_ok=True)
    return d


def table_path(reports_dir: str | Path, release: str, name: str) -> Path:
    """Return the Parquet path of table ``name`` of a release."""
    return release_dir(reports_dir, release) / "data" / f"{name}.parquet"


#: the Parquet schema metadata key holding a table's provenance (JSON)
META_KEY = b"depsim"


def write_table(df: pd.DataFrame, reports_dir: str | Path, release: str, name: str, meta: dict | None = None) -> Path:
    """Write ``df`` as table ``name`` (atomically: temp file, then rename); return its path.
    ``meta`` (provenance: versions, params hash, ...) is stored in the file's schema metadata
    with the time of writing (``written_at``, seconds since the epoch): see :func:`table_meta`."""
    path = table_path(reports_dir, release, name)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    t = pa.Table.from_pandas(df, preserve_index=False)
    stamp = {**(meta or {}), "table": name, "written_at": time.time()}
    t = t.replace_schema_metadata({**(t.schema.metadata or {}), META_KEY: json.dumps(stamp, default=str).encode()})
    pq.write_table(t, tmp)
    os.replace(tmp, path)
    return path


def table_meta(reports_dir: str | Path, release: str, name: str) -> dict | None:
    """Return the provenance stamped on table ``name`` by :func:`write_table` (with
    ``written_at``), ``{"written_at": <file mtime>}`` for a table written without one, or
    None when the table does not exist."""
    path = table_path(reports_dir, release, name)
    if not path.exists():
        return None
    raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {"written_at": path.stat().st_mtime}


def read_table(reports_dir: str | Path, release: str, name: str) -> pd.DataFrame:
    """Return table ``name``; a missing table raises FileNotFoundError saying which stage
    writes it."""
    path = table_path(reports_dir, release, name)
    if not path.exists():
        writer = {"prefixes": "01_sample", "completions": "02_simulate", "findings": "03_audit",
                  "clusters": "03_audit", "grades": "04_grade", "rates": "04_grade",
                  "forecasts": "05_forecast", "scores": "06_score"}.get(name, "an earlier stage")
        raise FileNotFoundError(f"{path} is missing: run {writer} first")
    return pd.read_parquet(path)


def file_sha256(path: str | os.PathLike) -> str:
    """Return the sha256 of a file's bytes (64 hex characters), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_id(*parts: object, n: int = 16) -> str:
    """Return a stable hex id (``n`` chars) that is a hash of ``parts``."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:n]


def log_requests(reports_dir: str | Path, release: str, stage: str, role: str, stats) -> None:
    """Append one line to the release's request log (``requests.jsonl``): how many model
    requests a stage sent, took from the cache, and saw fail."""
    line = {"time": time.time(), "stage": stage, "role": role, "sent": stats.sent,
            "cached": stats.cached, "failed": stats.failed}
    with open(release_dir(reports_dir, release) / "data" / "requests.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")


def request_log(reports_dir: str | Path, release: str) -> pd.DataFrame:
    """Return the release's request log (one row per stage call), empty if none."""
    path = release_dir(reports_dir, release) / "data" / "requests.jsonl"
    if not path.exists():
        return pd.DataFrame(columns=["time", "stage", "role", "sent", "cached", "failed"])
    return pd.read_json(path, lines=True)


def decode_messages(raw) -> list[dict]:
    """Return a ``messages`` cell as a list of message dicts: a JSON string is decoded, a
    list (or array) copied, and None, NaN or '' read as no messages. Invalid JSON raises
    ValueError."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)) or (isinstance(raw, str) and not raw):
        return []
    return json.loads(raw) if isinstance(raw, str) else list(raw)


def encode_messages(msgs: list[dict] | None) -> str | None:
    """Return messages as a ``messages`` cell (a JSON string); None stays None."""
    return None if msgs is None else json.dumps(msgs)
