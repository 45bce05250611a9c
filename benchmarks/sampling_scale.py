"""Scale benchmark for :func:`depsim.sampling.sample_prefixes`.

Generates a synthetic conversation log (default 1M conversations, 1-9 user turns each, every
user turn answered by an assistant reply of a few hundred characters, ~5M user turns and
~3.7 GB of message JSON in all; 2% of user turns multimodal, 30% of conversations with a system
prompt; snappy-compressed Parquet, 25k conversations per row group, written chunk by chunk with
numpy + Arrow compute, ~0.5 GB peak RAM), then measures

(a) DuckDB's bare scan of the same file: a full read of the ``messages`` column
    (``SELECT count(*), sum(length(messages))``);
(b) ``sample_prefixes(path, n, seed=0)``, run in a subprocess so its peak RSS can be read
    from ``getrusage(RUSAGE_CHILDREN)``.

Both use the same number of DuckDB threads (``--threads``), and each runs once untimed before
the timed runs (``--no-warmup`` skips the untimed sampling run). Targets: peak RSS < 2 GB and
sampling time <= 3x the bare scan. On a shared machine use ``--repeat 3`` (fastest of each is
reported; CPU-time ratios are printed too, being less sensitive to other load).

    python benchmarks/sampling_scale.py                       # full size, temp dir
    python benchmarks/sampling_scale.py --conversations 20000 # quick
    python benchmarks/sampling_scale.py --out /data/log.parquet --keep   # then --reuse
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]

LANGUAGES = ["en", "es", "fr", "de", "ja", "pt"]
LANGUAGE_P = [0.70, 0.08, 0.07, 0.06, 0.05, 0.04]
SURFACES = ["chat", "api"]
SYSTEM_PROMPTS = [f"You are a helpful assistant (variant {i}). Answer concisely and cite sources."
                  for i in range(20)]


def _pool(rng: np.random.Generator, size: int, lo: int, hi: int) -> list[str]:
    """``size`` pseudo-text snippets of ``lo``..``hi`` characters, built from a word list."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, int(k))) for k in rng.integers(2, 10, 3000)]
    vocab += ["\"quoted\"", "new\nline", "café", "naïve", "日本語", "?", "!", "{x: 1}"]
    words = rng.choice(np.array(vocab, dtype=object), size=(size, hi // 3))
    lengths = rng.integers(lo, hi, size)
    out = []
    for row, n in zip(words, lengths):
        text = " ".join(row)
        out.append(text[:n].rstrip() or "hello")
    return out


def _fragment_pool(rng: np.random.Generator, snippets: int) -> tuple[pa.Array, dict[str, tuple[int, int]]]:
    """Return one string array holding every message fragment the generator may use (as JSON
    objects), and ``kind -> (offset, count)`` blocks within it."""
    user = _pool(rng, snippets, 40, 500)
    assistant = _pool(rng, snippets, 100, 700)
    blocks: dict[str, list[str]] = {
        "user": [json.dumps({"role": "user", "content": t}) for t in user],
        "assistant": [json.dumps({"role": "assistant", "content": t}) for t in assistant],
        "system": [json.dumps({"role": "system", "content": t}) for t in SYSTEM_PROMPTS],
        "multimodal": [json.dumps({"role": "user", "content": [
            {"type": "text", "text": t},
            {"type": "image_url", "image_url": {"url": f"https://example.invalid/img/{i}.png"}}]})
            for i, t in enumerate(user[:1000])],
    }
    flat: list[str] = []
    where: dict[str, tuple[int, int]] = {}
    for kind, items in blocks.items():
        where[kind] = (len(flat), len(items))
        flat += items
    return pa.array(flat, pa.string()), where


def _chunk(rng: np.random.Generator, first_id: int, size: int, pool: pa.Array,
           where: dict[str, tuple[int, int]]) -> pa.Table:
    """``size`` conversations as an Arrow table, built with numpy + Arrow compute (no Python
    loop per message)."""
    turns = rng.integers(1, 10, size)                       # user turns per conversation
    has_sys = rng.random(size) < 0.3
    counts = 2 * turns + has_sys                            # messages per conversation
    offsets = np.zeros(size + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    m = int(offsets[-1])
    conv = np.repeat(np.arange(size), counts)
    pos = np.arange(m) - offsets[:-1][conv]
    sys_rep = has_sys[conv]
    q = pos - sys_rep
    is_sys = sys_rep & (pos == 0)
    is_user = ~is_sys & (q % 2 == 0)

    def pick(kind: str, k: int) -> np.ndarray:
        off, cnt = where[kind]
        return off + rng.integers(0, cnt, k)

    idx = pick("assistant", m)
    idx[is_user] = pick("user", int(is_user.sum()))
    mm = is_user & (rng.random(m) < 0.02)
    idx[mm] = pick("multimodal", int(mm.sum()))
    idx[is_sys] = pick("system", int(is_sys.sum()))
    fragments = pool.take(pa.array(idx))
    lists = pa.ListArray.from_arrays(pa.array(offsets), fragments)
    messages = pc.binary_join_element_wise("[", pc.binary_join(lists, ","), "]", "")

    ids = pa.array(np.arange(first_id, first_id + size)).cast(pa.string())
    conversation_id = pc.binary_join_element_wise("conv-", pc.utf8_lpad(ids, 8, "0"), "")
    start = np.datetime64("2025-01-01T00:00:00", "us").astype(np.int64)
    span = 365 * 86400 * 1_000_000
    created = np.sort(start + rng.integers(0, span, size))
    return pa.table({
        "conversation_id": conversation_id,
        "messages": messages,
        "source": pa.array(np.full(size, "bench-log", object), pa.string()),
        "model": pa.array(np.full(size, "prev-model", object), pa.string()),
        "language": pa.array(rng.choice(LANGUAGES, size, p=LANGUAGE_P), pa.string()),
        "surface": pa.array(rng.choice(SURFACES, size, p=[0.8, 0.2]), pa.string()),
        "created_at": pa.array(created, pa.timestamp("us")),
    })


def generate(path: Path, conversations: int, seed: int = 0, chunk: int = 25_000) -> dict:
    """Write the synthetic log to ``path``, one row group per ``chunk`` conversations."""
    rng = np.random.default_rng(seed)
    pool, where = _fragment_pool(rng, 20_000)
    user_turns = 0
    writer = None
    try:
        for first in range(0, conversations, chunk):
            t = _chunk(rng, first, min(chunk, conversations - first), pool, where)
            if writer is None:
                writer = pq.ParquetWriter(path, t.schema, compression="snappy")
            writer.write_table(t, row_group_size=chunk)
            user_turns += int(pc.sum(pc.count_substring(t["messages"], '{"role": "user"')).as_py())
    finally:
        if writer is not None:
            writer.close()
    # flush the file now, so that the kernel does not write its ~2.7 GB back during the timings
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"conversations": conversations, "user_turns": user_turns,
            "bytes": path.stat().st_size}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bare_scan(path: Path, threads: int) -> dict:
    """DuckDB reading the whole messages column (decompress + count characters)."""
    import duckdb
    con = duckdb.connect(config={"threads": threads})
    c0, t0 = _cpu(), time.perf_counter()
    rows, chars = con.execute("SELECT count(*), sum(length(messages)) FROM read_parquet(?)",
                              [str(path)]).fetchall()[0]
    out = {"seconds": time.perf_counter() - t0, "cpu": _cpu() - c0, "rows": rows, "chars": chars}
    con.close()
    return out


_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from depsim.sampling import sample_prefixes
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c0, t0 = cpu(), time.perf_counter()
df = sample_prefixes({path!r}, {n}, seed=0, threads={threads})
dt, dc = time.perf_counter() - t0, cpu() - c0
print(json.dumps({{"seconds": dt, "cpu": dc, "rows": len(df),
                  "messages_bytes": int(df["messages"].str.len().sum())}}))
"""


def timed_sample(path: Path, n: int, threads: int) -> dict:
    """``sample_prefixes`` in a fresh process; its peak RSS comes from RUSAGE_CHILDREN."""
    code = _CHILD.format(root=str(ROOT), path=str(path), n=n, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # max over the children waited for so far, i.e. over the sampling runs (KiB on Linux)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conversations", type=int, default=1_000_000)
    ap.add_argument("--n", type=int, default=100_000, help="prefixes to sample")
    ap.add_argument("--out", type=Path, help="Parquet path to write (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated file")
    ap.add_argument("--reuse", action="store_true", help="reuse --out if it already exists")
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                    help="DuckDB threads, for the bare scan and the sampling alike")
    ap.add_argument("--repeat", type=int, default=1,
                    help="alternate scan and sampling this many times; report the fastest of each")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic log")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed sampling run (the untimed scan always runs)")
    args = ap.parse_args(argv)

    tmp = None
    if args.out is None:
        tmp = Path(tempfile.mkdtemp(prefix="depsim-bench-"))
        path = tmp / "log.parquet"
    else:
        path = args.out
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.reuse and path.exists():
            meta = pq.ParquetFile(path).metadata
            print(f"reusing {path}: {meta.num_rows:,} conversations, "
                  f"{path.stat().st_size / 2**20:,.0f} MiB")
        else:
            t0 = time.perf_counter()
            info = generate(path, args.conversations, seed=args.seed)
            print(f"generated {info['conversations']:,} conversations / {info['user_turns']:,} "
                  f"user turns -> {path} ({info['bytes'] / 2**20:,.0f} MiB) in "
                  f"{time.perf_counter() - t0:.1f} s (generator peak RSS "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB)")

        # One untimed run of each first: it warms the page cache, and it lets the machine settle
        # after writing the log (on a VM, fresh memory can be slow to fault in for several
        # seconds after the generator and the page cache churned through gigabytes; that hits
        # the sampling run hardest, as it faults in ~3x the pages a scan does).
        bare_scan(path, args.threads)
        if not args.no_warmup:
            timed_sample(path, args.n, args.threads)
        scans, samples = [], []
        for _ in range(args.repeat):
            scans.append(bare_scan(path, args.threads))
            samples.append(timed_sample(path, args.n, args.threads))
        scan = min(scans, key=lambda r: r["seconds"])
        res = min(samples, key=lambda r: r["seconds"])
        ratio = res["seconds"] / scan["seconds"]
        cpu_ratio = min(r["cpu"] for r in samples) / min(r["cpu"] for r in scans)
        peak = samples[-1]["peak_rss_mb"]
        print(f"threads:          {args.threads}")
        print(f"bare scan:        {scan['seconds']:8.2f} s  (cpu {scan['cpu']:.2f} s; "
              f"{scan['rows']:,} rows, {scan['chars'] / 1e9:.2f} G chars of messages)")
        print(f"sampling:         {res['seconds']:8.2f} s  (cpu {res['cpu']:.2f} s; "
              f"{res['rows']:,} prefixes, {res['messages_bytes'] / 2**20:,.0f} MiB of prefix JSON)")
        if args.repeat > 1:
            print(f"  all runs, s:    scan {[round(r['seconds'], 2) for r in scans]}  "
                  f"sampling {[round(r['seconds'], 2) for r in samples]}")
        print(f"ratio sample/scan:{ratio:8.2f} x   (cpu time {cpu_ratio:.2f} x; target <= 3)")
        print(f"peak RSS:         {peak:8.0f} MB  (sampling process; target < 2048)")
        ok = ratio <= 3 and peak < 2048
        print("PASS" if ok else "MISS")
        return 0 if ok else 1
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
