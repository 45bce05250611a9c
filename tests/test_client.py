"""Tests of the model-call layer (depsim.client) and the response cache (depsim.cache)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from depsim import client
from depsim.cache import ResponseCache
from depsim.client import AdaptiveLimiter, ChatRequest, MissingAPIKeyError, RunStats, TokenBucket, acomplete, complete, last_run_stats, open_client, request_key
from depsim.params import Endpoint

from fake_openai_server import Faults

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Shrink backoff so fault-heavy runs finish in seconds."""
    monkeypatch.setattr(client, "BACKOFF_BASE_S", 0.02)
    monkeypatch.setattr(client, "BACKOFF_MAX_S", 0.2)
    monkeypatch.setattr(client, "FLUSH_INTERVAL_S", 0.2)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def req(i: int | str, text: str | None = None, **kw) -> ChatRequest:
    return ChatRequest(item_id=f"item-{i}", messages=user(text or f"hello {i}"),
                       params=kw.pop("params", {"temperature": 0.7, "max_tokens": 32, "seed": 1}), **kw)


# --------------------------------------------------------------------------- cache key

EP = Endpoint(base_url="http://localhost:8000/v1", model="m")
TOOL = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}


def test_request_key_is_stable():
    r = ChatRequest("a", user("hi"), {"temperature": 0.0, "seed": 3})
    # golden value: changing the key format silently invalidates every stored cache
    assert request_key(EP, r) == "07e96121032742ad88ce66e6aeb0329adadf51df56265c49d57150de9d880fd8"
    same = ChatRequest("other-id", [{"content": "hi", "role": "user"}], {"seed": 3, "temperature": 0.0, "top_p": None})
    assert request_key(EP, same) == request_key(EP, r)  # item_id, dict order, None params don't matter
    assert request_key(EP.model_copy(update={"base_url": "http://localhost:8000/v1/"}), r) == request_key(EP, r)


@pytest.mark.parametrize("change", [
    lambda e, r: (e.model_copy(update={"base_url": "http://other:8000/v1"}), r),
    lambda e, r: (e.model_copy(update={"model": "m2"}), r),
    lambda e, r: (e, ChatRequest(r.item_id, user("hi!"), r.params)),
    lambda e, r: (e, ChatRequest(r.item_id, [{"role": "system", "content": "s"}, *r.messages], r.params)),
    lambda e, r: (e, ChatRequest(r.item_id, r.messages, {**r.params, "temperature": 0.5})),
    lambda e, r: (e, ChatRequest(r.item_id, r.messages, {**r.params, "seed": 4})),
    lambda e, r: (e, ChatRequest(r.item_id, r.messages, {**r.params, "top_p": 0.9})),
    lambda e, r: (e, ChatRequest(r.item_id, r.messages, {**r.params, "max_tokens": 10})),
    lambda e, r: (e, ChatRequest(r.item_id, r.messages, r.params, tools=[TOOL])),
    lambda e, r: (e, ChatRequest(r.item_id, r.messages, r.params, tool_choice="none")),
    lambda e, r: (e, ChatRequest(r.item_id, r.messages, r.params, response_format={"type": "json_object"})),
    lambda e, r: (e, ChatRequest(r.item_id, r.messages, r.params, sample_index=1)),
], ids=["base_url", "model", "message", "extra_message", "temperature", "seed", "top_p", "max_tokens",
        "tools", "tool_choice", "response_format", "sample_index"])
def test_request_key_changes_with_each_field(change):
    r = ChatRequest("a", user("hi"), {"temperature": 0.0, "seed": 3})
    e2, r2 = change(EP, r)
    assert request_key(e2, r2) != request_key(EP, r)


# --------------------------------------------------------------------------- endpoint

def test_endpoint_forbids_unknown_fields_and_takes_no_key():
    with pytest.raises(ValueError):
        Endpoint(base_url="http://x/v1", model="m", api_key="sk-secret")


def test_missing_api_key_env_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("DEPSIM_TEST_NO_SUCH_KEY", raising=False)
    ep = Endpoint(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="DEPSIM_TEST_NO_SUCH_KEY")
    with pytest.raises(MissingAPIKeyError, match="DEPSIM_TEST_NO_SUCH_KEY"):
        open_client(ep)
    with pytest.raises(MissingAPIKeyError, match="DEPSIM_TEST_NO_SUCH_KEY"):
        complete(ep, [req(0)], ResponseCache(tmp_path / "c.sqlite"), progress=False)
    monkeypatch.setenv("DEPSIM_TEST_NO_SUCH_KEY", "sk-test-123")
    client = open_client(ep)
    assert client.api_key == "sk-test-123" and client.max_retries == 0
    assert "sk-test-123" not in repr(ep)


# --------------------------------------------------------------------------- cache

def test_cache_roundtrip(tmp_path):
    path = tmp_path / "sub" / "cache.sqlite"
    c = ResponseCache(path)
    assert len(c) == 0 and c.get_many([]) == {}
    c.put_many([("k1", {"a": 1, "s": "café 日本"}), ("k2", {"b": [1, None]})])
    c.put_many([("k1", {"a": "changed"})])  # first stored value wins
    assert c.get_many(["k1", "k2", "nope"]) == {"k1": {"a": 1, "s": "café 日本"}, "k2": {"b": [1, None]}}
    assert len(c) == 2 and "k1" in c and c.get("nope") is None
    c.close()
    with ResponseCache(path) as again:  # persistent
        assert again.get("k2") == {"b": [1, None]}
        assert again._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_cache_bulk_get_is_fast(tmp_path):
    c = ResponseCache(tmp_path / "c.sqlite")
    rows = [(f"{i:064x}", {"i": i}) for i in range(20_000)]
    c.put_many(rows)
    t = time.perf_counter()
    got = c.get_many([k for k, _ in rows] + ["missing"])
    assert time.perf_counter() - t < 2.0
    assert len(got) == 20_000 and got[rows[123][0]] == {"i": 123}


WRITER = textwrap.dedent("""
    import sys
    from depsim.cache import ResponseCache
    c = ResponseCache(sys.argv[1])
    name, batches = sys.argv[2], int(sys.argv[3])
    blob = "x" * 2000
    for b in range(batches):
        c.put_many([(f"{name}-{b}-{j}", {"b": b, "j": j, "blob": blob}) for j in range(500)])
        print(b, flush=True)
""")


def test_cache_put_many_is_atomic_under_sigkill(tmp_path):
    path = tmp_path / "c.sqlite"
    ResponseCache(path).close()
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "w", "100000"], cwd=ROOT,
                         stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # let a few batches commit, then kill mid-stream
        p.stdout.readline()
    time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    c = ResponseCache(path)
    per_batch = Counter(int(k.split("-")[1]) for k in c.get_many(
        f"w-{b}-{j}" for b in range(len(c) // 500 + 2) for j in range(500)))
    assert len(per_batch) >= 3
    assert set(per_batch.values()) == {500}  # every batch is all there or absent
    assert sorted(per_batch) == list(range(len(per_batch)))


def test_cache_concurrent_writers_from_several_processes(tmp_path):
    path = tmp_path / "c.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"p{i}", "10"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    assert len(ResponseCache(path)) == 3 * 10 * 500


# --------------------------------------------------------------------------- limits

def test_adaptive_limiter_grows_shrinks_and_pauses(monkeypatch):
    hist: list = []
    lim = AdaptiveLimiter(maximum=30, history=hist)
    assert lim.limit == 20 and hist[-1][1] == 20
    for _ in range(20):
        lim.on_success()
    assert lim.limit == 21  # +1 per window of `limit` successes
    lim.on_server_error()   # 5xx: growth paused, no shrink
    for _ in range(100):
        lim.on_success()
    assert lim.limit == 21
    monkeypatch.setattr(client, "GROWTH_PAUSE_S", 0.0)
    lim.on_server_error()
    lim.on_rate_limited(0.0)
    assert lim.limit == 21  # a single 429 is not a run
    lim.on_rate_limited(0.0)
    assert lim.limit == 16  # int(21 * 0.8)
    lim.on_rate_limited(0.0)
    lim.on_rate_limited(0.0)
    assert lim.limit == 16  # at most one cut per burst (1 s)
    assert [h[1] for h in hist] == [20, 21, 16]
    assert AdaptiveLimiter(maximum=4).limit == 4


def test_token_bucket_paces_after_burst():
    async def go():
        b = TokenBucket(per_minute=600)  # 10 per second, starts with a minute's worth
        t = time.monotonic()
        for _ in range(600):
            await b.take(1)
        burst = time.monotonic() - t
        for _ in range(5):
            await b.take(1)
        return burst, time.monotonic() - t
    burst, total = asyncio.run(go())
    assert burst < 0.2 and total >= 0.4


@pytest.mark.parametrize("headers, expected", [
    ({"retry-after": "2"}, 2.0), ({"retry-after": "0.5"}, 0.5), ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after": "soon"}, None), ({}, None)])
def test_retry_after_parsing(headers, expected):
    assert client._retry_after(httpx.Headers(headers)) == expected


def test_retry_after_http_date():
    from email.utils import formatdate
    assert 1.0 < client._retry_after(httpx.Headers({"retry-after": formatdate(time.time() + 3, usegmt=True)})) <= 3.0


# --------------------------------------------------------------------------- end to end

PERMANENT = {"ALWAYS500": ("500", "http 500 after 4 attempts"), "ALWAYS400": ("400", "http 400:"),
             "ALWAYSMALFORMED": ("malformed", "malformed JSON after 4 attempts"),
             "ALWAYSDROP": ("drop", "connection error to http://127.0.0.1:"),
             "ALWAYSHANG": ("hang", "timeout (0.5 s) waiting for http://127.0.0.1:")}


def test_faulty_server_every_item_resolved_no_duplicates_and_resume(fake_server, tmp_path):
    fake_server.faults = Faults(p429=0.06, p500=0.06, phang=0.03, pmalformed=0.05, pdrop=0.05,
                                retry_after="0.05", hang_s=1.5)
    for marker, (outcome, _) in PERMANENT.items():
        fake_server.script[marker] = [outcome]
    ep = Endpoint(base_url=fake_server.url, model="fake", timeout_s=0.5, max_retries=3, max_concurrency=24)
    reqs = [req(i) for i in range(195)] + [req(m, f"please {m}") for m in PERMANENT]
    cache = ResponseCache(tmp_path / "c.sqlite")

    stats = RunStats()
    results = complete(ep, reqs, cache, progress=False, stats=stats, role="candidate")
    assert last_run_stats() is stats
    assert [r.item_id for r in results] == [r.item_id for r in reqs]  # order kept
    log1 = list(fake_server.log)
    faults = Counter(e["outcome"] for e in log1)
    assert sum(v for k, v in faults.items() if k != "ok") >= 0.2 * len(log1)
    assert all(faults[k] > 0 for k in ("429", "500", "hang", "malformed", "drop"))

    for r in results:  # each item either succeeded or failed with a reason, never both
        assert (r.error is None) == (r.message is not None)
    by_id = {r.item_id: r for r in results}
    for marker, (_, reason) in PERMANENT.items():
        r = by_id[f"item-{marker}"]
        assert r.error.startswith(reason), (marker, r.error)
    assert by_id["item-ALWAYS400"].attempts == 1  # a client error is not retried
    assert by_id["item-ALWAYSDROP"].error == f"connection error to {fake_server.url.removesuffix('/v1')} after 4 attempts"
    ok = [r for r in results if r.error is None]
    assert len(ok) >= 190 and ok[0].message["content"].startswith("echo: ")
    assert stats.sent == len(reqs) and stats.succeeded == len(ok) and stats.failed == len(reqs) - len(ok)
    assert stats.retries > 0 and stats.tokens["candidate/fake"]["completion_tokens"] > 0
    assert stats.concurrency_history["candidate/fake"][0][1] == 20

    # nothing that completed was requested again
    ok_hashes = [e["hash"] for e in log1 if e["outcome"] == "ok"]
    assert len(ok_hashes) == len(set(ok_hashes)) == len(ok)
    done_at = {e["hash"]: e["t"] for e in log1 if e["outcome"] == "ok"}
    assert not [e for e in log1 if e["hash"] in done_at and e["t"] > done_at[e["hash"]]]
    assert len(cache) == len(ok)  # failures are never cached

    # a second run sends nothing for the items that succeeded
    fake_server.faults = Faults()
    stats2 = RunStats()
    results2 = complete(ep, reqs, cache, progress=False, stats=stats2)
    log2 = fake_server.log[len(log1):]
    assert not {e["hash"] for e in log2} & set(ok_hashes)
    assert stats2.cached == len(ok) and stats2.sent == len(reqs) - len(ok)
    for r1, r2 in zip(results, results2):
        if r1.error is None:
            assert r2.cached and r2.message == r1.message and r2.attempts == 0


def test_retry_after_is_honoured(fake_server, tmp_path):
    fake_server.faults.retry_after = "1"
    fake_server.script["RATELIMITED"] = ["429", "ok"]
    ep = Endpoint(base_url=fake_server.url, model="fake", timeout_s=5)
    t = time.monotonic()
    [r] = complete(ep, [req(0, "RATELIMITED please")], ResponseCache(tmp_path / "c.sqlite"), progress=False)
    elapsed = time.monotonic() - t
    assert r.error is None and r.attempts == 2
    assert elapsed >= 1.0 and r.latency_s >= 1.0
    t429, tok = (e["t"] for e in fake_server.log)
    assert tok - t429 >= 1.0


def test_duplicates_sent_once_and_sample_index_kept_apart(fake_server, tmp_path):
    ep = Endpoint(base_url=fake_server.url, model="fake")
    cache = ResponseCache(tmp_path / "c.sqlite")
    reqs = [req("a", "same"), req("b", "same"), req("c", "same", sample_index=1)]
    results = complete(ep, reqs, cache, progress=False)
    assert [r.item_id for r in results] == ["item-a", "item-b", "item-c"]
    assert results[0].key == results[1].key != results[2].key
    assert len(fake_server.log) == 2 and len(cache) == 2  # a+b once, c on its own


def test_tools_and_extra_params_reach_the_server(fake_server):
    ep = Endpoint(base_url=fake_server.url, model="fake")
    r = req(0, "CALL_TOOL 2+2", tools=[TOOL], tool_choice="auto",
            params={"temperature": 0.0, "top_k": 5, "seed": 7, "top_p": None})
    [res] = complete(ep, [r], None, progress=False)
    body = fake_server.log[0]["body"]
    assert body["top_k"] == 5 and body["seed"] == 7 and "top_p" not in body and body["tool_choice"] == "auto"
    assert "response_format" not in body  # unset fields are omitted, not sent as null
    [call] = res.message["tool_calls"]
    assert isinstance(call, dict) and call["function"]["name"] == "search" and res.finish_reason == "tool_calls"


def test_complete_works_inside_a_running_event_loop(fake_server, tmp_path):
    ep = Endpoint(base_url=fake_server.url, model="fake")
    cache = ResponseCache(tmp_path / "c.sqlite")  # made in this thread, used in the worker's

    async def notebook_cell():
        return complete(ep, [req(i) for i in range(5)], cache, progress=False)

    results = asyncio.run(notebook_cell())
    assert all(r.error is None for r in results) and len(cache) == 5


def test_cancelled_run_keeps_what_arrived(fake_server, tmp_path):
    fake_server.script["SLOW"] = ["hang"]
    fake_server.faults.hang_s = 3.0
    ep = Endpoint(base_url=fake_server.url, model="fake", timeout_s=10, max_concurrency=4)
    cache = ResponseCache(tmp_path / "c.sqlite")
    reqs = [req(i) for i in range(8)] + [req("slow", "SLOW")]

    async def interrupted():
        task = asyncio.ensure_future(acomplete(ep, reqs, cache, progress=False))
        await asyncio.sleep(0.5)
        task.cancel()  # like Ctrl-C in a notebook
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    assert len(cache) == 8  # flushed on the way out
    fake_server.script.clear()
    n = len(fake_server.log)
    results = complete(ep, reqs, cache, progress=False)
    assert all(r.error is None for r in results)
    assert len(fake_server.log) == n + 1  # only the slow one is sent again


def test_progress_bar_uses_description(fake_server, capsys):
    ep = Endpoint(base_url=fake_server.url, model="fake")
    complete(ep, [req(0)], None, progress="candidate (fake)")
    assert "candidate (fake)" in capsys.readouterr().err


def test_sim_endpoint_uses_in_process_transport():
    pytest.importorskip("depsim.sim.server")
    ep = Endpoint(base_url="sim://world/resample", model="sim-x")
    [r] = complete(ep, [req(0, "What is the capital of France?")], None, progress=False)
    assert r.error is None and r.message["role"] == "assistant"


def test_endpoint_wide_error_stops_sending(fake_server):
    fake_server.script["hello"] = ["404"]
    ep = Endpoint(base_url=fake_server.url, model="no-such-model", max_concurrency=2)
    results = complete(ep, [req(i) for i in range(50)], None, progress=False)
    assert all(r.error and r.error.startswith("http 404") for r in results)
    assert len(fake_server.log) <= 2  # the in-flight ones; the rest fail unsent
    assert sum(r.error.endswith("(not sent)") for r in results) >= 48


INTERRUPT = textwrap.dedent("""
    import asyncio, faulthandler, os, signal, sys, tempfile, threading, time
    faulthandler.dump_traceback_later(20)  # where it waits, should the interrupt not stop it
    # a kernel turns SIGINT into KeyboardInterrupt; a process started from a background job
    # (`cmd &` in a script) inherits SIGINT ignored, and Python then installs no handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, sys.argv[1])
    from fake_openai_server import FakeOpenAIServer, Faults
    from depsim.cache import ResponseCache
    from depsim import client
    from depsim.client import ChatRequest, complete
    from depsim.params import Endpoint
    srv = FakeOpenAIServer(Faults(hang_s=30)).start()
    srv.script["SLOW"] = ["hang"]
    ep = Endpoint(base_url=srv.url, model="m", timeout_s=60, max_concurrency=4)
    cache = ResponseCache(os.path.join(tempfile.mkdtemp(), "c.sqlite"))
    reqs = [ChatRequest(f"i{i}", [{"role": "user", "content": f"hi {i}"}]) for i in range(10)]
    reqs.append(ChatRequest("slow", [{"role": "user", "content": "SLOW"}]))
    async def cell():  # a notebook cell: complete() inside a running loop
        return complete(ep, reqs, cache, progress=False)
    def interrupt():  # once the ten quick ones are answered and the slow one hangs
        while not (client.last_run_stats() and client.last_run_stats().succeeded == 10):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=interrupt, daemon=True).start()
    t = time.monotonic()
    try:
        asyncio.new_event_loop().run_until_complete(cell())
    except KeyboardInterrupt:
        print(f"interrupted {time.monotonic() - t:.1f} {len(cache)}")
""")


def test_interrupting_complete_in_a_running_loop_stops_and_keeps_results():
    out = subprocess.run([sys.executable, "-c", INTERRUPT, str(Path(__file__).parent)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    # not interrupted: the slow request's 30 s hang ends the run, with the stacks dumped at 20 s
    assert out.returncode == 0 and out.stdout.startswith("interrupted"), (out.stdout, out.stderr[-4000:])
    _, secs, stored = out.stdout.split()
    assert float(secs) < 10 and int(stored) == 10  # the slow one hangs for 30 s


def test_usage_and_cost_accounting_per_role():
    from depsim.client import RunStats
    from depsim.params import Endpoint

    ep = Endpoint(base_url="http://x/v1", model="m", usd_per_mtok_prompt=2.0, usd_per_mtok_completion=8.0)
    st = RunStats()
    st.add_tokens("grader/m", {"prompt_tokens": 1000, "completion_tokens": 500}, ep)
    st.add_tokens("grader/m", {"prompt_tokens": 1000, "completion_tokens": 0}, ep)
    st.add_tokens("candidate/free", {"prompt_tokens": 10, "completion_tokens": 10}, Endpoint(base_url="http://y/v1", model="f"))
    rows = {r["role/model"]: r for r in st.usage_table()}
    assert rows["grader/m"]["prompt_tokens"] == 2000 and rows["grader/m"]["completion_tokens"] == 500
    assert rows["grader/m"]["cost_usd"] == pytest.approx((2000 * 2 + 500 * 8) / 1e6)
    assert rows["candidate/free"]["cost_usd"] is None
