"""Client throughput benchmark for :mod:`depsim.client` (docs/design.md §3).

A local chat-completions server that answers at once (a raw asyncio HTTP/1.1 server with
keep-alive, returning a fixed chat.completion) runs in a child process, so that its CPU does
not come out of the client's event loop; its capacity is measured first with a raw-socket
client and must be well above every client's rate, or the numbers would measure the server.
Against it, in the same run and at the same concurrency, with the same prompts:

- **bare**: ``openai.AsyncOpenAI`` + ``asyncio.Semaphore`` + ``asyncio.gather``, the least a
  client can do;
- **depsim**: ``depsim.client.acomplete`` with a fresh SQLite ``ResponseCache`` and its progress
  bar on (written to /dev/null), i.e. the normal path with all its guarantees;
- **inspect**: Inspect AI's ``openai-api`` provider, ``get_model(...).generate`` under
  ``GenerateConfig(max_connections=...)`` (Inspect's own cache is off by default);
- **cached rerun**: ``depsim.client.complete`` of 10,000 items that are all in the cache
  (target: < 5 s).

Each client runs ``--repeats`` times, interleaved with the others in alternating order; the
table shows median items/s, and ratios are medians of the ratios of runs made back to back
(robust to a shared machine's drifting load). Acceptance: depsim >= 0.9x bare.

    python benchmarks/client_throughput.py                 # 3000 items, concurrency 16
    python benchmarks/client_throughput.py --items 10000 --concurrency 32 --repeats 5

Inspect AI is optional: ``pip install 'inspect-ai>=0.3.200,<=0.3.258'`` (later releases need
openai>=3, which depsim does not support yet); without it the inspect row says why.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Sure: here is a short answer."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: keep-alive\r\n\r\n" % len(BODY)) + BODY
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


# --------------------------------------------------------------------------- server

class _Answer(asyncio.Protocol):
    """HTTP/1.1 keep-alive: answer every complete request (headers + Content-Length body)."""

    def connection_made(self, transport):
        self.transport, self.buf = transport, b""

    def data_received(self, data):
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            m = _CONTENT_LENGTH.search(self.buf, 0, end + 2)
            total = end + 4 + (int(m.group(1)) if m else 0)
            if len(self.buf) < total:
                return
            self.buf = self.buf[total:]
            self.transport.write(RESPONSE)


def _serve(port_queue) -> None:
    async def main():
        server = await asyncio.get_running_loop().create_server(_Answer, "127.0.0.1", 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()
    asyncio.run(main())


async def server_capacity(port: int, connections: int, n: int) -> float:
    """Requests/s the server answers to a raw-socket client (no HTTP library cost)."""
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
               b"Content-Length: 2\r\n\r\n{}")
    per = max(1, n // connections)

    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(per):
            writer.write(request)
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(len(BODY))
        writer.close()

    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return per * connections / (time.perf_counter() - t)


# --------------------------------------------------------------------------- clients

def prompts(n: int, offset: int = 0) -> list[list[dict]]:
    return [[{"role": "system", "content": "You are a helpful assistant."},
             {"role": "user", "content": f"Question {offset + i}: what is {i} + {i}? Answer briefly."}]
            for i in range(n)]


PARAMS = {"temperature": 0.7, "max_tokens": 64}


async def run_bare(url: str, msgs: list[list[dict]], concurrency: int) -> float:
    import openai
    client = openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=0, timeout=60)
    sem = asyncio.Semaphore(concurrency)

    async def one(m):
        async with sem:
            r = await client.chat.completions.create(model="bench", messages=m, **PARAMS)
            return r.choices[0].message.content

    t = time.perf_counter()
    out = await asyncio.gather(*(one(m) for m in msgs))
    elapsed = time.perf_counter() - t
    await client.close()
    assert len(out) == len(msgs) and out[0]
    return len(msgs) / elapsed


async def run_depsim(url: str, msgs: list[list[dict]], concurrency: int, cache_path: Path) -> float:
    from depsim.cache import ResponseCache
    from depsim.client import ChatRequest, acomplete
    from depsim.params import Endpoint
    ep = Endpoint(base_url=url, model="bench", max_concurrency=concurrency, timeout_s=60)
    reqs = [ChatRequest(f"i{i}", m, dict(PARAMS)) for i, m in enumerate(msgs)]
    cache = ResponseCache(cache_path)
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):  # the bar renders, unseen
        t = time.perf_counter()
        results = await acomplete(ep, reqs, cache, progress="bench")
        elapsed = time.perf_counter() - t
    assert all(r.ok for r in results) and len(cache) == len(msgs)
    cache.close()
    return len(msgs) / elapsed


def inspect_unavailable() -> str | None:
    """Why Inspect cannot run here, or None."""
    try:
        from inspect_ai.model import get_model
        get_model("openai-api/bench/bench", base_url="http://127.0.0.1:9/v1", api_key="bench")
    except ImportError as e:
        return f"inspect-ai is not installed ({e}); pip install 'inspect-ai>=0.3.200,<=0.3.258'"
    except Exception as e:  # e.g. a release that needs a newer openai than depsim allows
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
    return None


async def run_inspect(url: str, msgs: list[list[dict]], concurrency: int) -> float:
    from inspect_ai.model import ChatMessageSystem, ChatMessageUser, GenerateConfig, get_model
    model = get_model("openai-api/bench/bench", base_url=url, api_key="bench",
                      config=GenerateConfig(max_connections=concurrency, max_retries=0, **PARAMS))
    inputs = [[ChatMessageSystem(content=m[0]["content"]), ChatMessageUser(content=m[1]["content"])] for m in msgs]
    t = time.perf_counter()
    out = await asyncio.gather(*(model.generate(x) for x in inputs))
    elapsed = time.perf_counter() - t
    assert len(out) == len(msgs) and out[0].completion
    return len(msgs) / elapsed


def cached_rerun(url: str, n: int, tmp: Path) -> tuple[float, float]:
    """Fill a cache with n responses, then time complete() over the same n requests."""
    from depsim.cache import ResponseCache
    from depsim.client import ChatRequest, RunStats, complete, request_key
    from depsim.params import Endpoint
    ep = Endpoint(base_url=url, model="bench")
    reqs = [ChatRequest(f"c{i}", m, dict(PARAMS)) for i, m in enumerate(prompts(n, offset=10**6))]
    body = json.loads(BODY)
    cache = ResponseCache(tmp / "cached.sqlite")
    cache.put_many((request_key(ep, r), body) for r in reqs)
    stats = RunStats()
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        t = time.perf_counter()
        results = complete(ep, reqs, cache, progress="cached", stats=stats)
        elapsed = time.perf_counter() - t
    assert stats.cached == n and stats.sent == 0 and all(r.cached for r in results)
    return n / elapsed, elapsed


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=3000, help="requests per client run")
    ap.add_argument("--concurrency", type=int, default=16, help="connections for every client")
    ap.add_argument("--repeats", type=int, default=3, help="runs per client (interleaved); medians reported")
    ap.add_argument("--cached-items", type=int, default=10_000)
    ap.add_argument("--no-inspect", action="store_true", help="skip Inspect AI")
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    server = ctx.Process(target=_serve, args=(q,), daemon=True)
    server.start()
    try:
        port = q.get(timeout=30)
        url = f"http://127.0.0.1:{port}/v1"
        capacity = asyncio.run(server_capacity(port, args.concurrency, 20_000))
        why_not_inspect = "skipped (--no-inspect)" if args.no_inspect else inspect_unavailable()

        rates: dict[str, list[float]] = {"bare": [], "depsim": [], "inspect": []}
        msgs = prompts(args.items)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            warm = prompts(200, offset=10**7)  # imports, connection pools, first-call costs
            asyncio.run(run_bare(url, warm, args.concurrency))
            asyncio.run(run_depsim(url, warm, args.concurrency, tmp / "warm.sqlite"))
            if why_not_inspect is None:
                asyncio.run(run_inspect(url, warm, args.concurrency))
            runners = {"bare": lambda rep: run_bare(url, msgs, args.concurrency),
                       "depsim": lambda rep: run_depsim(url, msgs, args.concurrency, tmp / f"c{rep}.sqlite")}
            if why_not_inspect is None:
                runners["inspect"] = lambda rep: run_inspect(url, msgs, args.concurrency)
            for rep in range(args.repeats):  # interleaved, order alternating: drifting load hits all alike
                for name in (list(runners) if rep % 2 == 0 else list(runners)[::-1]):
                    rates[name].append(asyncio.run(runners[name](rep)))
            cached_rate, cached_s = cached_rerun(url, args.cached_items, tmp)
    finally:
        server.terminate()
        server.join(5)

    med = {k: statistics.median(v) for k, v in rates.items() if v}
    # ratios of runs made back to back (same load), then their median
    paired = {k: statistics.median(a / b for a, b in zip(v, rates["bare"])) for k, v in rates.items() if v}
    print(f"client throughput: {args.items} items x {args.repeats} runs, concurrency {args.concurrency}, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    print(f"server capacity (raw sockets): {capacity:,.0f} req/s = "
          f"{capacity / max(med.values()):.1f}x the fastest client, so it is not the bottleneck")
    print()
    print(f"| {'client':<34} | {'items/s (median)':>16} | {'runs (items/s)':<26} | {'vs bare':>8} |")
    print(f"|{'-' * 36}|{'-' * 18}|{'-' * 28}|{'-' * 10}|")
    labels = {"bare": "bare AsyncOpenAI + semaphore", "depsim": "depsim engine (cache + progress)",
              "inspect": "Inspect AI openai-api generate"}
    for k, label in labels.items():
        if k in med:
            runs = ", ".join(f"{x:,.0f}" for x in rates[k])
            print(f"| {label:<34} | {med[k]:>16,.0f} | {runs:<26} | {paired[k]:>7.2f}x |")
        else:
            print(f"| {label:<34} | {'n/a':>16} | {'':<26} | {'':>8} |")
    print(f"| {f'depsim cached rerun ({args.cached_items:,})':<34} | {cached_rate:>16,.0f} | "
          f"{f'{cached_s:.2f} s total':<26} | {'':>8} |")
    print()
    ratio = paired["depsim"]
    print("ratios: median over repeats of the items/s ratio of runs made back to back")
    print(f"depsim / bare    = {ratio:.2f}x  (acceptance >= 0.90: {'PASS' if ratio >= 0.9 else 'FAIL'})")
    if "inspect" in med:
        vs_inspect = statistics.median(a / b for a, b in zip(rates["depsim"], rates["inspect"]))
        print(f"depsim / inspect = {vs_inspect:.2f}x")
    else:
        print(f"depsim / inspect = n/a: Inspect AI could not run: {why_not_inspect}")
    print(f"cached rerun     = {cached_s:.2f} s for {args.cached_items:,} items "
          f"(acceptance < 5 s: {'PASS' if cached_s < 5 else 'FAIL'})")
    return 0 if ratio >= 0.9 and cached_s < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
