"""Ingestion speed: ``depsim.readers.convert`` on a WildChat-layout Parquet shard, against
DuckDB's bare read-and-unnest of the same file.

Builds a shard in the layout of the Hugging Face ``allenai/WildChat-1M`` Parquet files
(default 100,000 conversations, 1-6 user turns each, per-turn ``country``/``hashed_ip``/
``header``/``language``/``redacted``/``timestamp``/``toxic``/``turn_identifier``, per-turn
OpenAI-moderation and Detoxify records, row groups of 10,000), then measures

(a) the baseline: DuckDB reads the file and unnests ``conversation`` into one row per message
    (conversation id, role, content), fetched as Arrow record batches;
(b) ``convert(shard, "wildchat", out.parquet, quarantine=...)``, in a subprocess so its peak
    RSS can be read from ``getrusage(RUSAGE_CHILDREN)``, once lossless (the default: the
    per-message moderation records, about 30 numbers a message, and the per-turn fields
    (``message_meta``) as typed nested columns, the other fields as JSON in ``meta``) and once
    with ``keep_meta=False``.

Both run once untimed first (file cache). Acceptance (issue 14): conversion throughput at
least 1/3 of the baseline's, peak RSS < 2 GB. The ratio is printed against both baselines:
"id + messages" reads only the id and two of each message's fields and writes nothing;
"every column" reads the whole file, as a lossless conversion must. A conversion also writes
the whole table (about 0.9 GB uncompressed here), which neither baseline does. CPU seconds
(all threads) are printed next to wall seconds, since on a shared machine wall time varies
with the other load.

Then the same for an OpenAI-messages and a ShareGPT JSONL file of as many conversations
(``--formats jsonl``): conversion by the bulk path and by the per-record path (the only path
before; ``_BULK_JSONL`` emptied in the child), against DuckDB's ``read_json`` (explicit
columns) and unnest of the same file.

    python benchmarks/ingest_speed.py                      # 100k conversations, temp dir
    python benchmarks/ingest_speed.py --conversations 20000
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
LANGS = ["English", "Chinese", "Russian", "French", "Spanish", "German", "Portuguese", "Japanese"]
LANG_P = [0.55, 0.15, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03]
COUNTRIES = ["United States", "China", "Russia", "France", "Germany", "Brazil", "India", "Japan"]
MOD_CATS = ["harassment", "harassment/threatening", "hate", "hate/threatening", "self-harm",
            "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
            "violence/graphic"]
DETOX = ["identity_attack", "insult", "obscene", "severe_toxicity", "sexual_explicit", "threat", "toxicity"]
_HEADER = pa.struct([("accept-language", pa.string()), ("user-agent", pa.string())])
_TS = pa.timestamp("us", tz="UTC")
#: The Parquet schema of allenai/WildChat-1M.
SCHEMA = pa.schema([
    ("conversation_hash", pa.string()), ("model", pa.string()), ("timestamp", _TS),
    ("conversation", pa.list_(pa.struct([
        ("content", pa.string()), ("country", pa.string()), ("hashed_ip", pa.string()), ("header", _HEADER),
        ("language", pa.string()), ("redacted", pa.bool_()), ("role", pa.string()), ("state", pa.string()),
        ("timestamp", _TS), ("toxic", pa.bool_()), ("turn_identifier", pa.int64())]))),
    ("turn", pa.int64()), ("language", pa.string()),
    ("openai_moderation", pa.list_(pa.struct([
        ("categories", pa.struct([(c, pa.bool_()) for c in MOD_CATS])),
        ("category_scores", pa.struct([(c, pa.float64()) for c in MOD_CATS])), ("flagged", pa.bool_())]))),
    ("detoxify_moderation", pa.list_(pa.struct([(c, pa.float64()) for c in DETOX]))),
    ("toxic", pa.bool_()), ("redacted", pa.bool_()), ("state", pa.string()), ("country", pa.string()),
    ("hashed_ip", pa.string()), ("header", _HEADER)])


def _texts(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, int(k))) for k in rng.integers(2, 10, 2000)]
    vocab += ["\"quoted\"", "new\nline", "café", "日本語", "?", "{x: 1}"]
    pool = [" ".join(rng.choice(vocab, 120))[: int(k)] for k in rng.integers(lo, hi, 4000)]
    return [pool[i] for i in rng.integers(0, len(pool), n)]


def make_shard(path: Path, conversations: int, seed: int = 0, group: int = 10_000) -> Path:
    """Write a WildChat-1M-layout Parquet shard of ``conversations`` rows to ``path``; returns it."""
    rng = np.random.default_rng(seed)
    writer = None
    t0 = datetime(2023, 4, 9, tzinfo=timezone.utc)
    for start in range(0, conversations, group):
        k = min(group, conversations - start)
        turns = rng.integers(1, 7, k)
        users, bots = _texts(rng, int(turns.sum()), 20, 600), _texts(rng, int(turns.sum()), 50, 1500)
        langs = rng.choice(LANGS, k, p=LANG_P)
        rows, u = [], 0
        for i in range(k):
            ip = f"{rng.integers(1 << 62):016x}"
            country = COUNTRIES[int(rng.integers(len(COUNTRIES)))]
            header = {"accept-language": "en-US,en;q=0.9", "user-agent": "Mozilla/5.0 (X11; Linux x86_64)"}
            when = t0 + timedelta(seconds=int(rng.integers(0, 3e7)))
            conv, mods, detox = [], [], []
            for j in range(int(turns[i])):
                tid = int(rng.integers(1 << 40))
                conv.append({"content": users[u], "country": country, "hashed_ip": ip, "header": header,
                             "language": str(langs[i]), "redacted": False, "role": "user", "state": None,
                             "timestamp": None, "toxic": False, "turn_identifier": tid})
                conv.append({"content": bots[u], "country": None, "hashed_ip": None, "header": None,
                             "language": str(langs[i]), "redacted": False, "role": "assistant", "state": None,
                             "timestamp": when + timedelta(seconds=30 * j), "toxic": False,
                             "turn_identifier": tid})
                u += 1
                for _ in range(2):
                    scores = rng.random(len(MOD_CATS)) * 1e-3
                    mods.append({"categories": {c: False for c in MOD_CATS},
                                 "category_scores": dict(zip(MOD_CATS, scores.tolist())), "flagged": False})
                    detox.append(dict(zip(DETOX, (rng.random(len(DETOX)) * 1e-3).tolist())))
            rows.append({"conversation_hash": f"{seed:04x}{start + i:028x}", "model": "gpt-3.5-turbo-0613",
                         "timestamp": when, "conversation": conv, "turn": int(turns[i]), "language": str(langs[i]),
                         "openai_moderation": mods, "detoxify_moderation": detox, "toxic": False,
                         "redacted": False, "state": None, "country": country, "hashed_ip": ip, "header": header})
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        if writer is None:
            writer = pq.ParquetWriter(path, SCHEMA)
        writer.write_table(table, row_group_size=group)
    writer.close()
    return path


def make_jsonl(path: Path, fmt: str, conversations: int, seed: int = 0) -> Path:
    """Write ``conversations`` records of an OpenAI-messages (``openai_jsonl``) or ShareGPT
    (``sharegpt``) JSONL file to ``path`` (1-6 user turns each, a model name); returns it."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for start in range(0, conversations, 10_000):
            k = min(10_000, conversations - start)
            turns = rng.integers(1, 7, k)
            users, bots = _texts(rng, int(turns.sum()), 20, 600), _texts(rng, int(turns.sum()), 50, 1500)
            u = 0
            for i in range(k):
                msgs = []
                for _ in range(int(turns[i])):
                    msgs += [("user", users[u]), ("assistant", bots[u])]
                    u += 1
                if fmt == "openai_jsonl":
                    rec = {"id": f"c{start + i}", "model": "gpt-y", "messages": [
                        {"role": "system", "content": "You are a helpful assistant."},
                        *({"role": r, "content": c} for r, c in msgs)]}
                else:
                    rec = {"id": f"c{start + i}", "conversations": [
                        {"from": "human" if r == "user" else "gpt", "value": c} for r, c in msgs]}
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def bare_json_unnest(path: Path, fmt: str, threads: int) -> int:
    """DuckDB reads a JSONL file (explicit columns) and unnests its messages into Arrow batches;
    returns messages read."""
    con = duckdb.connect(config={"threads": threads})
    if fmt == "openai_jsonl":
        cols, conv, role, text = "{'id': 'VARCHAR', 'messages': 'STRUCT(role VARCHAR, content VARCHAR)[]'}", \
            "messages", "m.role", "m.content"
    else:
        cols, conv, role, text = "{'id': 'VARCHAR', 'conversations': 'STRUCT(\"from\" VARCHAR, value VARCHAR)[]'}", \
            "conversations", 'm."from"', "m.value"
    res = con.sql(f"SELECT id, {role}, {text} FROM (SELECT id, unnest({conv}) AS m FROM read_json('{path}', "
                  f"format = 'newline_delimited', columns = {cols}))")
    reader = res.to_arrow_reader(10_000) if hasattr(res, "to_arrow_reader") else res.fetch_record_batch(10_000)
    n = sum(b.num_rows for b in reader)
    con.close()
    return n


def bare_unnest(path: Path, threads: int, every_column: bool = False) -> int:
    """DuckDB reads the shard and unnests its messages into Arrow batches; returns messages read.
    ``every_column``: read every column (each message row repeats its conversation's other
    fields) instead of the id and the messages only."""
    con = duckdb.connect(config={"threads": threads})
    res = con.sql(f"SELECT * EXCLUDE (conversation), unnest(conversation, recursive := true) FROM read_parquet('{path}')"
                  if every_column else
                  f"SELECT conversation_hash, m.role, m.content FROM "
                  f"(SELECT conversation_hash, unnest(conversation) AS m FROM read_parquet('{path}'))")
    reader = res.to_arrow_reader(10_000) if hasattr(res, "to_arrow_reader") else res.fetch_record_batch(10_000)
    n = sum(b.num_rows for b in reader)
    con.close()
    return n


def _convert_child(shard: str, out: str, quarantine: str, keep_meta: bool, fmt: str = "wildchat",
                   per_record: bool = False) -> None:
    sys.path.insert(0, str(ROOT))
    import depsim.readers
    from depsim.readers import convert

    if per_record:  # the per-record path every JSONL record took before the bulk path
        depsim.readers._BULK_JSONL = {}
    t, c = time.perf_counter(), time.process_time()
    res = convert(shard, fmt, out, quarantine=quarantine, progress=False, keep_meta=keep_meta)
    print(json.dumps({"seconds": time.perf_counter() - t, "cpu": time.process_time() - c, "rows": res.rows,
                      "quarantined": res.quarantined}))


def run_convert(shard: Path, out: Path, keep_meta: bool = True, fmt: str = "wildchat",
                per_record: bool = False) -> tuple[dict, float]:
    """Convert in a child process; returns (its report, its peak RSS in GB). The peak is that
    of the largest child so far (getrusage), so children run from the smallest expected up."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import ingest_speed; "
            f"ingest_speed._convert_child({str(shard)!r}, {str(out)!r}, {str(out) + '.quarantine.jsonl'!r}, "
            f"{keep_meta}, {fmt!r}, {per_record})")
    out.unlink(missing_ok=True)  # replacing an earlier output would add its deletion (0.1 s here) to the time
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return json.loads(proc.stdout.strip().splitlines()[-1]), max(peak, before) / 1024 ** 2


def jsonl_formats(work: Path, conversations: int, threads: int, repeat: int) -> None:
    """Bulk conversion of OpenAI-messages and ShareGPT JSONL against DuckDB's bare read_json
    and unnest of the same file, and against the per-record path."""
    for fmt in ("openai_jsonl", "sharegpt"):
        path = work / f"{fmt}.jsonl"
        if not path.exists():
            make_jsonl(path, fmt, conversations)
        bare_json_unnest(path, fmt, threads)  # warm the file cache
        base = base_cpu = float("inf")
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            msgs = bare_json_unnest(path, fmt, threads)
            base, base_cpu = min(base, time.perf_counter() - t), min(base_cpu, time.process_time() - c)
        print(f"baseline  DuckDB read_json + unnest ({fmt}, {path.stat().st_size / 1e6:.0f} MB): {base:7.2f} s wall, "
              f"{base_cpu:6.2f} s CPU  {conversations / base:10,.0f} conversations/s ({msgs:,} messages)")
        for per_record in (False, True):
            reps = []
            for _ in range(1 if per_record else repeat):
                rep, _rss = run_convert(path, work / f"{fmt}.parquet", True, fmt, per_record)
                assert rep["rows"] + rep["quarantined"] == conversations, rep
                reps.append(rep)
            sec, cpu = min(r["seconds"] for r in reps), min(r["cpu"] for r in reps)
            label = "per-record path (before)" if per_record else "bulk path"
            print(f"convert   {fmt} -> canonical, {label}: {sec:7.2f} s wall, {cpu:6.2f} s CPU  "
                  f"{conversations / sec:10,.0f} conversations/s  ratio to baseline {base / sec:.2f} wall, "
                  f"{base_cpu / cpu:.2f} CPU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conversations", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs of each; the fastest is reported")
    ap.add_argument("--formats", default="wildchat,jsonl", help="wildchat, jsonl (OpenAI and ShareGPT) or both")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="depsim-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    if "wildchat" in args.formats:
        wildchat(work, args)
    if "jsonl" in args.formats:
        jsonl_formats(work, args.conversations, args.threads, args.repeat)


def wildchat(work: Path, args: argparse.Namespace) -> None:
    """The WildChat-layout Parquet shard: conversion against both baselines, peak RSS."""
    shard = work / "train-00000-of-00001.parquet"
    if not shard.exists():
        t = time.perf_counter()
        make_shard(shard, args.conversations)
        print(f"built {shard} ({args.conversations:,} conversations, {shard.stat().st_size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - t:.0f} s")
    rows = pq.read_metadata(shard).num_rows
    bare_unnest(shard, args.threads)  # warm the file cache
    bases = {}
    for every in (False, True):
        base = base_cpu = float("inf")
        for _ in range(args.repeat):
            t, c = time.perf_counter(), time.process_time()
            msgs = bare_unnest(shard, args.threads, every)
            base, base_cpu = min(base, time.perf_counter() - t), min(base_cpu, time.process_time() - c)
        bases[every] = (base, base_cpu)
        print(f"baseline  DuckDB read + unnest ({'every column' if every else 'id + messages'}): {base:7.2f} s wall, "
              f"{base_cpu:6.2f} s CPU  {rows / base:10,.0f} conversations/s ({msgs:,} messages)")
    base, base_cpu = bases[False]
    run_convert(shard, work / "warm.parquet")
    for keep_meta in (True, False):
        reps = []
        for _ in range(args.repeat):
            rep, rss = run_convert(shard, work / "out.parquet", keep_meta)
            assert rep["rows"] + rep["quarantined"] == rows, rep
            reps.append(rep)
        sec, cpu = min(r["seconds"] for r in reps), min(r["cpu"] for r in reps)
        ratio = base / sec
        print(f"convert   wildchat -> canonical, keep_meta={keep_meta}: {sec:7.2f} s wall, {cpu:6.2f} s CPU  "
              f"{rows / sec:10,.0f} conversations/s ({rep['rows']:,} kept, {rep['quarantined']} quarantined)")
        print(f"  throughput ratio convert/baseline (id + messages): {ratio:.2f} wall, {base_cpu / cpu:.2f} CPU "
              f"(target >= 0.33)  {'PASS' if ratio >= 1 / 3 else 'FAIL'}")
        print(f"  throughput ratio convert/baseline (every column):  {bases[True][0] / sec:.2f} wall, "
              f"{bases[True][1] / cpu:.2f} CPU")
        print(f"  peak RSS of convert: {rss:.2f} GB (target < 2 GB)  {'PASS' if rss < 2 else 'FAIL'}")

if __name__ == "__main__":
    main()
