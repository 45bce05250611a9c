"""Tests of the Batch backend (depsim.batch) against a local Batch API server over real HTTP,
driven by the real openai client."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from depsim.batch import (BatchTimeoutError, import_results, request_body, run_batch, submit_and_wait, uncached,
                          write_batch_files)
from depsim.cache import ResponseCache
from depsim.client import ChatRequest, RunStats, complete, request_key
from depsim.params import Endpoint

from batch_server import BatchServer
from fake_openai_server import completion

TOOL = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}


def req(i, text=None, **kw) -> ChatRequest:
    return ChatRequest(f"item-{i}", [{"role": "user", "content": text or f"hello {i}"}],
                       kw.pop("params", {"temperature": 0.7, "max_tokens": 16, "seed": 1}), **kw)


def read_lines(paths) -> list[dict]:
    return [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- export

def test_write_batch_files_splits_dedups_and_skips_cached(tmp_path):
    ep = Endpoint(base_url="http://127.0.0.1:9/v1", model="org/model:v1")
    reqs = [req(i) for i in range(30)]
    reqs += [req(f"dup{i}", f"hello {i}") for i in range(10)]            # same requests, other item ids
    reqs += [req(f"s{i}", "hello 0", sample_index=i) for i in range(1, 4)]  # same prompt, new samples
    reqs.append(req("tool", "CALL_TOOL x", tools=[TOOL], tool_choice="auto",
                    params={"temperature": 0, "top_k": 5, "top_p": None}))
    cache = ResponseCache(tmp_path / "c.sqlite")
    cached = reqs[3:8]
    cache.put_many([(request_key(ep, r), completion(request_body(ep, r))) for r in cached])
    cache.put_many([(request_key(ep, reqs[9]), {"not": "a chat completion"})])  # unreadable: re-export

    files = write_batch_files(ep, reqs, cache, tmp_path / "out", max_per_file=7)
    lines = read_lines(files)
    want = {request_key(ep, r) for r in reqs} - {request_key(ep, r) for r in cached}
    assert len(want) == 30 + 3 + 1 - 5
    ids = [x["custom_id"] for x in lines]
    assert len(ids) == len(set(ids)) and set(ids) == want  # unique, only the uncached, each once
    assert [len(read_lines([f])) for f in files] == [7, 7, 7, 7, 1]
    assert [f.name for f in files] == [f"org_model_v1-{i:05d}.jsonl" for i in range(5)]
    assert all(x["method"] == "POST" and x["url"] == "/v1/chat/completions" for x in lines)
    assert {x["body"]["model"] for x in lines} == {"org/model:v1"}  # one model per file
    by_id = {x["custom_id"]: x["body"] for x in lines}
    tool = by_id[request_key(ep, reqs[-1])]
    assert tool["tools"] == [TOOL] and tool["tool_choice"] == "auto" and tool["top_k"] == 5
    assert "top_p" not in tool and "extra_body" not in tool and "sample_index" not in tool
    plain = by_id[request_key(ep, reqs[0])]
    assert plain == {"model": "org/model:v1", "messages": reqs[0].messages, "temperature": 0.7,
                     "max_tokens": 16, "seed": 1}
    assert not list((tmp_path / "out").glob("*.tmp"))

    # everything cached: nothing to export
    full = ResponseCache(tmp_path / "full.sqlite")
    full.put_many([(request_key(ep, r), completion(request_body(ep, r))) for r in reqs])
    assert write_batch_files(ep, reqs, full, tmp_path / "out2") == []
    assert uncached(ep, reqs, full) == {}


def test_write_batch_files_respects_byte_limit(tmp_path):
    ep = Endpoint(base_url="http://127.0.0.1:9/v1", model="m")
    reqs = [req(i, f"{i} " + "x" * 1000) for i in range(10)]
    files = write_batch_files(ep, reqs, None, tmp_path, max_bytes=3500)
    per_line = len(json.dumps(read_lines(files)[0], separators=(",", ":"))) + 1
    assert 1100 < per_line <= 1750  # so two lines fit in 3500 bytes and three do not
    assert len(files) == 5 and all(f.stat().st_size <= 3500 for f in files)
    assert len(read_lines(files)) == 10
    with pytest.raises(ValueError):
        write_batch_files(ep, reqs, None, tmp_path, max_per_file=50_001)


# --------------------------------------------------------------------------- end to end

def test_batch_round_trip_then_complete_sends_nothing(batch_server, tmp_path):
    ep = Endpoint(base_url=batch_server.url, model="fake")
    reqs = [req(i) for i in range(40)] + [req("again", "hello 3")]
    reqs += [req("bad", "FAIL_400 please"), req("boom", "FAIL_INTERNAL please"), req("lost", "LOSE_ME please")]
    cache = ResponseCache(tmp_path / "c.sqlite")
    pre = reqs[:5]  # already cached: not exported, not sent
    assert complete(ep, pre, cache, progress=False)
    batch_server.chat_log.clear()

    files = write_batch_files(ep, reqs, cache, tmp_path / "batch", max_per_file=10)
    exported = {x["custom_id"] for x in read_lines(files)}
    assert len(exported) == 35 + 3 and len(files) == 4
    outputs = submit_and_wait(ep, files, poll_s=0.01, timeout_s=30)

    assert len(batch_server.batches) == 4
    for statuses in batch_server.statuses.values():  # it really polled through the states
        assert statuses[0] == "validating" and "in_progress" in statuses and statuses[-1] == "completed"
    assert set(batch_server.processed) == exported - {request_key(ep, reqs[-1])}
    assert max(batch_server.processed.values()) == 1
    names = sorted(p.name for p in outputs)
    assert all(n.startswith("fake-0000") for n in names)
    assert any(n.endswith(".errors.jsonl") for n in names) and any(n.endswith(".missing.jsonl") for n in names)
    assert not list((tmp_path / "batch").glob("*.batch.json"))  # done: no resume state left

    lines = read_lines(p for p in outputs if p.name.endswith(".output.jsonl"))
    order = [x["custom_id"] for x in lines]
    assert order != [k for k in (x["custom_id"] for x in read_lines(files)) if k in set(order)]  # shuffled

    report = import_results(outputs, cache, expected=exported)
    assert report["succeeded"] == report["imported"] == 35 and report["already_cached"] == 0
    assert report["failed"] == 3 and report["unreadable"] == report["unexpected"] == report["missing"] == 0
    errs = report["errors"]
    assert errs[request_key(ep, reqs[-3])].startswith("http 400: invalid_request_error: injected bad request")
    assert errs[request_key(ep, reqs[-2])] == "batch error: server_error: injected internal error"
    assert errs[request_key(ep, reqs[-1])].startswith("batch error: batch_completed: no result")
    assert len(cache) == 40

    # the normal path now finds every success in the cache and sends nothing
    ok = reqs[:-3]
    stats = RunStats()
    results = complete(ep, ok, cache, progress=False, stats=stats)
    assert batch_server.chat_log == [] and stats.sent == 0 and stats.cached == len(ok)
    assert all(r.cached and r.message["content"] == f"echo: {q.messages[-1]['content']}" for r, q in zip(results, ok))
    # the failed lines are the only ones the live path sends
    stats = RunStats()
    complete(ep, reqs, cache, progress=False, stats=stats)
    assert stats.sent == 3 and len(batch_server.chat_log) == 3

    # importing the same results again changes nothing
    again = import_results(outputs, cache)
    assert again["imported"] == 0 and again["already_cached"] == 35


def test_run_batch_one_call(batch_server, tmp_path):
    ep = Endpoint(base_url=batch_server.url, model="fake")
    reqs = [req(i) for i in range(12)]
    cache = ResponseCache(tmp_path / "c.sqlite")
    report = run_batch(ep, reqs, cache, tmp_path / "b", poll_s=0.01, timeout_s=30, max_per_file=5)
    assert report["imported"] == 12 and report["failed"] == 0 and len(report["files"]) == 3
    assert run_batch(ep, reqs, cache, tmp_path / "b2", poll_s=0.01)["files"] == []  # nothing left to run
    assert complete(ep, reqs, cache, progress=False) and batch_server.chat_log == []


def test_failed_validation_reports_every_line(batch_server, tmp_path):
    ep = Endpoint(base_url=batch_server.url, model="fake")
    [f] = write_batch_files(ep, [req(i) for i in range(6)], None, tmp_path)
    lines = read_lines([f])
    lines[2]["body"]["model"] = "other"  # two models in one file: the server rejects the batch
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    outputs = submit_and_wait(ep, [f], poll_s=0.01, timeout_s=30)
    assert [p.name for p in outputs] == ["fake-00000.missing.jsonl"]
    report = import_results(outputs, ResponseCache(tmp_path / "c.sqlite"))
    assert report["failed"] == 6 and report["succeeded"] == 0
    assert all("batch_failed" in e and "mismatched_model" in e for e in report["errors"].values())


def test_timeout_then_resume_does_not_resubmit(tmp_path):
    srv = BatchServer(polls_per_step=4).start()
    try:
        ep = Endpoint(base_url=srv.url, model="fake")
        files = write_batch_files(ep, [req(i) for i in range(5)], None, tmp_path)
        with pytest.raises(BatchTimeoutError) as e:
            submit_and_wait(ep, files, poll_s=0.01, timeout_s=0.0)
        assert list(e.value.batches.values()) == list(srv.batches)
        outputs = submit_and_wait(ep, files, poll_s=0.01, timeout_s=30)
        assert len(srv.batches) == 1 and len(srv.files) == 2  # one upload, one batch, one output
        assert import_results(outputs, ResponseCache(tmp_path / "c.sqlite"))["imported"] == 5
        # a changed file is a new batch
        files = write_batch_files(ep, [req(i) for i in range(6)], None, tmp_path)
        submit_and_wait(ep, files, poll_s=0.01, timeout_s=30)
        assert len(srv.batches) == 2
    finally:
        srv.stop()


# --------------------------------------------------------------------------- import

def test_import_redacts_a_key_the_answer_echoes(tmp_path, monkeypatch):
    # as with live answers: a body quoting the endpoint's key is cached without it
    key = "sk-batch-canary-0a9f8e7d6c5b"
    monkeypatch.setenv("BATCH_KEY", key)
    body = completion({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    body["choices"][0]["message"]["content"] = f"debug: {key}"
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps({"custom_id": "a", "response": {"status_code": 200, "body": body}}) + "\n")
    cache = ResponseCache(tmp_path / "c.sqlite")
    import_results([p], cache, endpoint=Endpoint(base_url="https://api.example.com/v1", model="m",
                                                 api_key_env="BATCH_KEY"))
    assert cache.get_many(["a"])["a"]["choices"][0]["message"]["content"] == "debug: [REDACTED]"


def test_import_reports_every_kind_of_line(tmp_path):
    good = completion({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    rows = [
        {"custom_id": "a", "response": {"status_code": 200, "body": good}, "error": None},
        {"custom_id": "b", "response": {"status_code": 500, "body": {"error": {"message": "oops"}}}, "error": None},
        {"custom_id": "c", "response": {"status_code": 200, "body": {"choices": []}}, "error": None},
        # vLLM run_batch failures: status 400, no body, error as a string or an ErrorResponse
        {"id": "vllm-1", "custom_id": "d", "response": {"status_code": 400, "request_id": "x", "body": None},
         "error": "Request must not be sent in stream mode"},
        {"id": "vllm-2", "custom_id": "e", "response": {"status_code": 400, "request_id": "y", "body": None},
         "error": {"error": {"message": "model not found", "type": "NotFoundError", "code": 404}}},
        # f fails in one file and succeeds in another (a retried batch): the success wins
        {"custom_id": "f", "response": None, "error": {"code": "batch_expired", "message": "expired"}},
        {"custom_id": "zzz", "response": {"status_code": 200, "body": good}, "error": None},
    ]
    p1, p2 = tmp_path / "r1.jsonl", tmp_path / "r2.jsonl"
    p1.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n\n{\"no_id\": 1}\n")
    p2.write_text(json.dumps({"custom_id": "f", "response": {"status_code": 200, "body": good}}) + "\n")
    cache = ResponseCache(tmp_path / "c.sqlite")
    rep = import_results([p1, p2], cache, expected=["a", "b", "c", "d", "e", "f", "g"])
    assert rep["lines"] == 10 and rep["succeeded"] == rep["imported"] == 2
    assert rep["errors"] == {"b": "http 500: oops", "c": rep["errors"]["c"],
                             "d": "http 400: Request must not be sent in stream mode",
                             "e": "http 400: 404: model not found"}
    assert rep["errors"]["c"].startswith("http 200: malformed body")
    assert rep["unreadable"] == 2 and rep["unreadable_lines"] == [f"{p1}:8", f"{p1}:10"]
    assert rep["unexpected"] == 1 and rep["missing"] == 1 and rep["missing_ids"] == ["g"]
    assert set(cache.get_many("abcdefgz")) == {"a", "f"} and "zzz" not in cache
    assert Counter(rep) and rep["failed"] == 4
