"""Kill and resume: a generation run in a subprocess is SIGKILLed three times at random
(seeded) points, then rerun to completion. A stored response must never be requested again,
and the final results must hold every item exactly once.

What can be asserted honestly: the engine writes responses to the cache in batches, so a
response the server sent may be lost if the process dies before its batch commits (and an
in-flight request dies with the process); such items are legitimately sent again. So the
test compares, after each kill, the keys the cache holds with the keys requested later: no
key stored by the time of a kill may be requested by any later run."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from depsim.batch import request_body
from depsim.cache import ResponseCache
from depsim.client import ChatRequest, request_key
from depsim.params import Endpoint

from fake_openai_server import Faults, body_hash

ROOT = Path(__file__).resolve().parents[1]
N = 400
CONCURRENCY = 16

RUN = textwrap.dedent("""
    import json, os, sys
    from depsim import client
    from depsim.cache import ResponseCache
    from depsim.client import ChatRequest, complete
    from depsim.params import Endpoint
    url, cache_path, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    client.FLUSH_INTERVAL_S = 0.25  # commit often, so a kill leaves progress behind
    reqs = [ChatRequest(f"item-{i}", [{"role": "user", "content": f"resume {i}"}], {"temperature": 0.5, "seed": 1})
            for i in range(n)]
    ep = Endpoint(base_url=url, model="fake", max_concurrency=%d, timeout_s=30)
    results = complete(ep, reqs, ResponseCache(cache_path), progress=False)
    with open(out + ".tmp", "w") as f:
        for r in results:
            f.write(json.dumps({"item_id": r.item_id, "key": r.key, "message": r.message, "error": r.error,
                                "cached": r.cached}) + "\\n")
    os.replace(out + ".tmp", out)
""" % CONCURRENCY)


def requests() -> list[ChatRequest]:
    return [ChatRequest(f"item-{i}", [{"role": "user", "content": f"resume {i}"}], {"temperature": 0.5, "seed": 1})
            for i in range(N)]


def test_sigkill_three_times_then_resume(fake_server, tmp_path):
    fake_server.faults = Faults(delay_s=0.1)  # ~160 items/s at 16 connections: a run takes ~2.5 s
    ep = Endpoint(base_url=fake_server.url, model="fake", max_concurrency=CONCURRENCY, timeout_s=30)
    reqs = requests()
    key_of_hash = {body_hash(request_body(ep, r)): request_key(ep, r) for r in reqs}
    all_keys = set(key_of_hash.values())
    assert len(all_keys) == N
    cache_path, out = tmp_path / "cache.sqlite", tmp_path / "results.jsonl"
    cmd = [sys.executable, "-c", RUN, fake_server.url, str(cache_path), str(N), str(out)]
    rng = random.Random(1234)

    def stored() -> set[str]:
        with ResponseCache(cache_path) as c:
            return set(c.get_many(all_keys))

    runs: list[list[dict]] = []       # server log entries of each run
    stored_after: list[set[str]] = []  # cache keys after each killed run
    for kill in range(3):
        start = len(fake_server.log)
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while len(fake_server.log) == start:  # sending has begun (imports take a while)
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the run never sent a request"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.2, 1.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        time.sleep(0.2)  # requests the kernel had already sent reach the server log
        runs.append(fake_server.log[start:])
        stored_after.append(stored())
        assert proc.returncode == -signal.SIGKILL and not out.exists()

    start = len(fake_server.log)
    final = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert final.returncode == 0, final.stderr
    runs.append(fake_server.log[start:])

    requested = [[key_of_hash[e["hash"]] for e in run] for run in runs]  # every logged body is one of ours
    # each kill interrupted a run that had made progress and not finished
    sizes = [len(s) for s in stored_after]
    assert sizes == sorted(sizes) and 0 < sizes[-1] < N, sizes
    assert all(0 < len(r) < N for r in requested[:3])
    for j, keys in enumerate(requested):
        assert len(keys) == len(set(keys)), f"run {j} sent a request twice"
    for k, done in enumerate(stored_after):
        # nothing stored by kill k was requested by a later run
        for j in range(k + 1, len(runs)):
            assert not done & set(requested[j]), (k, j)
        # the cache only holds responses the server answered (by that run or an earlier one)
        answered = {key_of_hash[e["hash"]] for run in runs[:k + 1] for e in run if "answered" in e}
        assert done <= answered
    # the final run sent exactly what was missing, once each
    assert sorted(requested[3]) == sorted(all_keys - stored_after[-1])

    # results: every item exactly once, all succeeded; the cache holds exactly the distinct keys
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == N and [x["item_id"] for x in lines] == [r.item_id for r in reqs]
    assert len({x["item_id"] for x in lines}) == N and all(x["error"] is None for x in lines)
    assert all(x["message"]["content"] == f"echo: resume {i}" for i, x in enumerate(lines))
    assert sum(x["cached"] for x in lines) == len(stored_after[-1])
    with ResponseCache(cache_path) as c:
        assert len(c) == N and set(c.get_many(all_keys)) == all_keys

    # what a kill can lose is bounded: the requests in flight plus what arrived since the last
    # cache commit (0.25 s at ~160 items/s); each lost item is sent once more, never again after
    lost = [len(set(requested[k]) - stored_after[k]) for k in range(3)]
    assert all(x <= 100 for x in lost), lost
    resent = sum(v - 1 for v in Counter(k for keys in requested for k in keys).values())
    assert resent <= sum(lost)
    print(f"stored after each kill: {sizes}; requests per run: {[len(r) for r in requested]}; "
          f"lost per kill: {lost}; resent: {resent}")
