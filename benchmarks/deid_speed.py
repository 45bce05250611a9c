"""De-identification throughput on real chat prefixes, against main's single-process code.

Usage:  python benchmarks/deid_speed.py [--n 6000] [--processes 2] [--baseline-n 2000]

Prefixes are real conversations (data/hh-rlhf, harmless-base test split, Anthropic HH-RLHF, MIT),
cut after each user turn as stage 1 does, so every prefix holds the whole conversation up to that
turn (mean about 330 characters).  Real logs have longer prefixes (WildChat turns are longer than
HH-RLHF's), so ``--join K`` makes each prefix K consecutive HH-RLHF prefixes (``--join 4``: about
1,300 characters, 13 messages).  Three runs over the same prefixes, in this process and on this
machine:

* baseline: ``deidentify_messages`` of main at commit 92f266b (read with ``git show``), one process;
* new, ``processes=1``;
* new, ``deidentify_many(..., processes=N)``.

Printed: prefixes/s and characters/s (wall clock), CPU seconds of the one-process runs, the time
700,000 prefixes would take with ``deidentify_many`` as measured (wall clock, so other jobs on the
machine slow it: the load average is printed) and as projected for idle cores from CPU time
(compute per prefix / processes + the CPU cost of pickling prefixes and results + the pool's
start-up), and the speed-up ratios against main.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from depsim.deid import deidentify_many, deidentify_messages  # noqa: E402

DATA = ROOT / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
BASELINE_COMMIT = "92f266b"
TARGET = 700_000
_TURN = re.compile(r"\n\nHuman: |\n\nAssistant: ")


def load_prefixes(n: int) -> list[list[dict]]:
    """Up to ``n`` prefixes: each conversation cut after each of its user turns."""
    out: list[list[dict]] = []
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["chosen"]
            roles = ["user" if m.group(0).startswith("\n\nH") else "assistant" for m in _TURN.finditer(text)]
            parts = _TURN.split(text)[1:]
            msgs = [{"role": r, "content": c.strip()} for r, c in zip(roles, parts)]
            for i, m in enumerate(msgs):
                if m["role"] == "user":
                    out.append(msgs[: i + 1])
                    if len(out) >= n:
                        return out
    return out


def load_baseline():
    """main's deid module (commit 92f266b) as a separate module, or None without git."""
    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:depsim/deid.py"],
                             check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"baseline unavailable ({e}); ratios are against processes=1 only")
        return None
    path = Path(tempfile.mkdtemp()) / "deid_main.py"
    path.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("deid_main_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rate(label: str, n: int, chars: int, seconds: float, cpu: float | None = None) -> float:
    extra = f"; CPU {cpu:6.2f} s = {n / cpu:6.0f} prefixes per CPU-second" if cpu else ""
    print(f"{label:<34} {n:>6} prefixes in {seconds:7.2f} s: {n / seconds:8.0f} prefixes/s, "
          f"{chars / seconds / 1e6:5.2f} M chars/s{extra}")
    return n / seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="prefixes for the new code")
    ap.add_argument("--baseline-n", type=int, default=2000, help="prefixes for main's code (slower)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--join", type=int, default=1, help="consecutive prefixes joined into one (longer prefixes)")
    a = ap.parse_args(argv)
    prefixes = load_prefixes(a.n * a.join)
    if a.join > 1:
        prefixes = [sum(prefixes[i:i + a.join], []) for i in range(0, len(prefixes) - a.join + 1, a.join)]
    keys = [f"conv-{i}" for i in range(len(prefixes))]
    chars = [sum(len(m["content"]) for m in p) for p in prefixes]
    mean = sum(chars) / len(chars)
    print(f"{len(prefixes)} prefixes from {DATA.name}: mean {mean:.0f} characters, "
          f"mean {sum(len(p) for p in prefixes) / len(prefixes):.1f} messages; "
          f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f} before the runs")

    base = load_baseline()
    r_base = None
    if base is not None:
        nb = min(a.baseline_n, len(prefixes))
        t0, c0 = time.perf_counter(), time.process_time()
        for p, k in zip(prefixes[:nb], keys[:nb]):
            base.deidentify_messages(p, k)
        cpu_base = time.process_time() - c0
        r_base = _rate(f"main {BASELINE_COMMIT}, 1 process", nb, sum(chars[:nb]), time.perf_counter() - t0, cpu_base)
        cpu_base /= nb

    t0, c0 = time.perf_counter(), time.process_time()
    one = [deidentify_messages(p, k) for p, k in zip(prefixes, keys)]
    cpu_one = (time.process_time() - c0) / len(prefixes)
    r_one = _rate("new, processes=1", len(prefixes), sum(chars), time.perf_counter() - t0, cpu_one * len(prefixes))

    # the pool's start-up (forkserver, one import of depsim.deid per worker) is paid once per call:
    # a small call and the full call give the start-up and the steady rate
    n_small = min(len(prefixes) // 4, 128 * a.processes)
    t0 = time.perf_counter()
    deidentify_many(prefixes[:n_small], keys[:n_small], processes=a.processes)
    t_small = time.perf_counter() - t0
    t0 = time.perf_counter()
    many = deidentify_many(prefixes, keys, processes=a.processes)
    t_full = time.perf_counter() - t0
    _rate(f"new, deidentify_many processes={a.processes}", len(prefixes), sum(chars), t_full)
    steady = t_full - t_small
    startup = max(0.0, t_small - n_small * steady / (len(prefixes) - n_small))
    r_many = (len(prefixes) - n_small) / steady
    print(f"{'  steady rate (start-up removed)':<34} {r_many:>37.0f} prefixes/s; start-up about {startup:.2f} s")
    if many != one:
        print("ERROR: deidentify_many differs from deidentify_messages")
        return 1

    print()
    secs = TARGET / r_many + startup
    print(f"700k prefixes of ~{mean:.0f} chars with processes={a.processes}: {secs / 60:5.1f} min "
          f"(target < 5 min: {'yes' if secs < 300 else 'NO'}; load average now {os.getloadavg()[0]:.1f})")
    # CPU time does not grow when other jobs share the cores, so it gives the idle-machine figure
    c0 = time.process_time()
    pickle.loads(pickle.dumps(prefixes))
    pickle.loads(pickle.dumps(many))
    ship = (time.process_time() - c0) / len(prefixes)  # moving prefixes and results between processes
    secs_cpu = TARGET * (cpu_one / a.processes + ship) + startup
    print(f"same on {a.processes} idle cores, from CPU time ({cpu_one * 1e3:.2f} ms CPU per prefix, "
          f"{ship * 1e3:.3f} ms to ship it): {secs_cpu / 60:5.1f} min "
          f"(target < 5 min: {'yes' if secs_cpu < 300 else 'NO'})")
    if r_base:
        print(f"ratio of CPU per prefix, main / new: {cpu_base / cpu_one:.2f}x")
    if r_base:
        print(f"ratio new processes=1 / main: {r_one / r_base:.2f}x")
        print(f"ratio new processes={a.processes} / main: {r_many / r_base:.2f}x")
    print(f"ratio processes={a.processes} / processes=1: {r_many / r_one:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
