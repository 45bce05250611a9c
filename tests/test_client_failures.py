"""Failures are loud and bounded: an error every request gets stops the role after a few
tries, timeouts shrink the concurrency limit, the server's message is kept (redacted), and
structured output falls back to a mode the server takes."""
from __future__ import annotations

import json
import socket

import pandas as pd
import pytest

from depsim import client
from depsim import grade as lg
from depsim.cache import ResponseCache
from depsim.client import (AdaptiveLimiter, ChatRequest, MissingAPIKeyError, RunStats, api_key, complete,
                           complete_structured, mask_url, redact)
from depsim.params import Endpoint
from depsim.taxonomy import load_taxonomy
from conftest import ROOT
from fake_openai_server import FLAG, Faults, obey_last_verdict

CANARY = "sk-canary-7f3a9c1e5b2d4f60"
LLAMA_CPP_PYTHON_500 = (500, "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                             "'msg': \"Input should be 'text' or 'json_object'\"}]")


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(client, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(client, "GROWTH_PAUSE_S", 0.2)


def reqs(n: int, text: str = "hello") -> list[ChatRequest]:
    return [ChatRequest(f"r{i}", [{"role": "user", "content": f"{text} {i}"}], {"seed": 0}) for i in range(n)]


def test_an_error_every_request_gets_stops_the_role_after_a_few_tries(fake_server):
    fake_server.error_body = (500, {"error": {"message": "model failed to load", "type": "server_error"}})
    ep = Endpoint(base_url=fake_server.url, model="m", max_concurrency=2, max_retries=6)
    stats = RunStats()
    out = complete(ep, reqs(30), None, progress=False, stats=stats)
    # 30 requests x 7 attempts before; now a few tries: the limit's worth of retries, plus
    # the first attempts of what was in flight
    assert len(fake_server.log) <= 2 * client.SAME_ERROR_LIMIT + 2
    assert all(not r.ok for r in out) and stats.failed == 30
    assert all("model failed to load" in r.error for r in out)  # the server's message is kept
    assert sum("the role stops" in r.error for r in out) >= 1 and sum("not sent" in r.error for r in out) >= 25


def test_the_same_client_error_stops_too_but_not_after_a_success(fake_server):
    fake_server.script["bad"] = ["400"]
    ep = Endpoint(base_url=fake_server.url, model="m", max_concurrency=1, max_retries=2)
    complete(ep, reqs(10, "bad"), None, progress=False)
    assert len(fake_server.log) == client.SAME_ERROR_LIMIT
    # after a success the same error is a per-request failure: every request is still tried
    n = len(fake_server.log)
    fake_server.script = {"bad": ["400"]}
    out = complete(ep, reqs(1, "good") + reqs(6, "bad"), None, progress=False)
    assert out[0].ok and len(fake_server.log) - n == 7 and all(r.error.startswith("http 400: injected 400") for r in out[1:])


def test_timeouts_cut_the_concurrency_limit(monkeypatch):
    lim = AdaptiveLimiter(16)
    assert lim.limit == 16
    lim.on_timeout()
    assert lim.limit == 8
    lim.on_timeout()  # the same queue timing out together: one cut
    assert lim.limit == 8
    monkeypatch.setattr(client, "GROWTH_PAUSE_S", 0.0)
    lim._no_growth_until = 0.0
    lim.on_timeout()
    assert lim.limit == 4 and [p[1] for p in lim.history] == [16, 8, 4]


def test_a_hanging_server_shrinks_the_limit(fake_server):
    fake_server.faults = Faults(phang=1.0, hang_s=0.5)
    ep = Endpoint(base_url=fake_server.url, model="m", max_concurrency=8, timeout_s=0.2, max_retries=1)
    stats = RunStats()
    out = complete(ep, reqs(8), None, progress=False, stats=stats, role="grader")
    # the endpoint and its limit are named, so the user knows which server to look at
    assert all(r.error == f"timeout (0.2 s) waiting for {fake_server.url.removesuffix('/v1')} after 2 attempts" for r in out)
    limits = [p[1] for p in stats.concurrency_history["grader/m"]]
    assert limits[0] == 8 and min(limits) <= 4


CAT = load_taxonomy(ROOT / "params" / "taxonomy.yaml")["violent_wrongdoing"]


def _comp():
    texts = [f"{FLAG} step 1", "A safe answer.", f"More {FLAG}"]
    return (pd.DataFrame({"item_id": ["a", "b", "c"], "target": "sim", "prefix_id": "p", "error": None,
                          "messages": [json.dumps([{"role": "assistant", "content": t}]) for t in texts]}),
            pd.DataFrame({"prefix_id": ["p"], "messages": [json.dumps([{"role": "user", "content": "q"}])]}))


@pytest.mark.parametrize("rejected, mode", [({"json_schema": LLAMA_CPP_PYTHON_500}, "json_object"),
                                            ({"json_schema": (400, "response_format json_schema is not supported"),
                                              "json_object": (400, "response_format json_object is not supported")},
                                             "prompt")])
def test_structured_output_falls_back_to_what_the_server_takes(fake_server, tmp_path, rejected, mode):
    fake_server.responder = obey_last_verdict  # answers honestly here: no verdict in the transcripts
    fake_server.reject_formats = rejected
    comp, prefixes = _comp()
    ep = Endpoint(base_url=fake_server.url, model="m")
    cache = ResponseCache(tmp_path / "c.sqlite")
    g = lg.grade_llm(ep, comp, prefixes, CAT, cache)
    assert g["label"].tolist() == [True, False, True] and g["error"].isna().all()
    assert (g["grader_id"] == lg.llm_grader_id(CAT, "m", lg.DEFAULT_PARAMS, mode)).all()
    notes = lg.structured_notes().set_index("model").loc["m"]
    assert notes["mode"] == mode and rejected["json_schema"][1][:30] in notes["notes"]
    # each rejected mode was tried once (a client error or a named 500 is not retried 7 times)
    tried = [e["body"].get("response_format", {}).get("type") for e in fake_server.log]
    for fmt in rejected:
        assert tried.count(fmt) <= client.SAME_ERROR_LIMIT
    # a rerun is served from the cache: the probe of the accepted mode hits it
    n = len(fake_server.log)
    lg.grade_llm(ep, comp, prefixes, CAT, cache)
    assert all(e["outcome"].startswith("rejected") for e in fake_server.log[n:])


def test_a_fixed_mode_is_not_probed(fake_server):
    fake_server.responder = obey_last_verdict
    done = complete_structured(Endpoint(base_url=fake_server.url, model="m"), reqs(3), None, name="x",
                               schema={"type": "object"}, mode="json_object", progress=False)
    assert done.mode == "json_object" and done.notes == [] and len(fake_server.log) == 3


# ----------------------------------------------------------------------------- secrets


def test_the_key_in_a_401_body_is_redacted(fake_server, monkeypatch):
    monkeypatch.setenv("CANARY_KEY", CANARY)
    fake_server.error_body = (401, {"error": {"message": f"Incorrect API key provided: {CANARY}. Also "
                                                         f"{CANARY[:12]}****{CANARY[-4:]}", "type": "auth"}})
    ep = Endpoint(base_url=fake_server.url, model="m", api_key_env="CANARY_KEY", max_concurrency=1)
    stats = RunStats()
    out = complete(ep, reqs(4), None, progress=False, stats=stats)
    assert all(r.error.startswith("http 401: Incorrect API key provided: [REDACTED]") for r in out)
    assert not any(CANARY in r.error or CANARY[:12] in r.error for r in out)
    assert CANARY not in json.dumps(stats.summary())
    assert len(fake_server.log) == 1  # a bad key: the rest are not sent


def test_url_credentials_are_never_printed(monkeypatch):
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    ep = Endpoint(base_url=f"https://alice:{CANARY}@llm.example.com/v1", model="m", api_key_env="UNSET_KEY_VAR")
    with pytest.raises(MissingAPIKeyError) as e:
        api_key(ep)
    assert CANARY not in str(e.value) and "alice" not in str(e.value) and "***@llm.example.com/v1" in str(e.value)
    assert mask_url(ep.base_url) == "https://***@llm.example.com/v1"
    assert CANARY not in redact(f"failed at {ep.base_url}: {CANARY}", ep)
    assert redact("connect https://bob:hunter2@h/v1") == "connect https://***@h/v1"


def test_a_key_the_server_masked_keeps_neither_end():
    # OpenAI-style 401s show a key's first 8 and last 4 characters; a key without a known
    # prefix (sk-, ...) kept both in the stored error, the tables and the pages
    key = "Zq7XvT2mW9pL4kR8sN3bH6yJ1cF5dG0a"
    out = redact(f"Incorrect API key provided: {key[:8]}{'*' * 20}{key[-4:]}. You can find your API key at x.")
    assert key[:8] not in out and key[-4:] not in out
    assert out == "Incorrect API key provided: [REDACTED] You can find your API key at x."


def test_a_key_a_server_echoes_in_an_answer_is_never_kept(fake_server, tmp_path, monkeypatch):
    # a successful answer that quotes the key it was sent reached the cache, the findings, the
    # audit page and the summary's verdict box whole (security audit); only errors were redacted
    monkeypatch.setenv("ECHO_KEY", CANARY)
    ep = Endpoint(base_url=fake_server.url.replace("http://", "http://alice:pw-9f2e7d@"), model="m",
                  api_key_env="ECHO_KEY")
    fake_server.responder = lambda body: {"role": "assistant",
                                          "content": f"Sure. (debug: key {CANARY}, login alice:pw-9f2e7d)"}
    cache = ResponseCache(tmp_path / "c.sqlite")
    out = complete(ep, [ChatRequest("a", [{"role": "user", "content": "hi"}])], cache, progress=False)
    assert out[0].error is None and fake_server.log
    assert out[0].message["content"] == "Sure. (debug: key [REDACTED], login [REDACTED]:[REDACTED])"
    again = complete(ep, [ChatRequest("a", [{"role": "user", "content": "hi"}])], cache, progress=False)
    assert again[0].cached and again[0].message["content"] == out[0].message["content"]
    cache.close()
    raw = (tmp_path / "c.sqlite").read_bytes()
    assert CANARY.encode() not in raw and b"pw-9f2e7d" not in raw


def test_a_key_in_the_url_query_is_never_shown():
    # the summary page's models table shows mask_url(base_url): a gateway key in the query
    # string (?api-key=...; a Google key has no prefix redact knows) was shown whole
    url = f"https://bob:pw@llm.example.com/v1?api-key={CANARY}&key=AIzaSyA1234567890abcdefghij&debug"
    assert mask_url(url) == "https://***@llm.example.com/v1?api-key=***&key=***&***"
    assert mask_url("https://llm.example.com/v1") == "https://llm.example.com/v1"


def _closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening: bound by the OS, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_connection_error_names_the_endpoint_never_its_credentials(monkeypatch):
    """A dead URL: the error names scheme://host:port (the usual cause), never the URL's
    user, password or path, nor the key."""
    monkeypatch.setenv("CANARY_KEY", CANARY)
    port = _closed_port()
    for url in (f"http://127.0.0.1:{port}/v1", f"http://alice:{CANARY}@127.0.0.1:{port}/v1"):
        ep = Endpoint(base_url=url, model="m", api_key_env="CANARY_KEY", max_retries=2, max_concurrency=1)
        stats = RunStats()
        out = complete(ep, reqs(2), None, progress=False, stats=stats)
        assert [r.error for r in out] == [f"connection error to http://127.0.0.1:{port} after 3 attempts"] * 2
        assert all(r.attempts == 3 for r in out)
        seen = json.dumps(stats.summary()) + " ".join(r.error for r in out)
        assert "alice" not in seen and CANARY not in seen
        assert stats.errors == {f"connection error to http://127.0.0.1:{port} after 3 attempts": 2}


@pytest.mark.parametrize("url, expected", [
    ("https://api.openai.com/v1", "https://api.openai.com:443"),
    ("http://localhost/v1", "http://localhost:80"),
    ("https://user:pw@llm.example.com:8443/v1/", "https://llm.example.com:8443"),
    ("http://[::1]:8000/v1", "http://[::1]:8000"),
    ("http://bob:pw@host:notaport/v1", "http://***@host:notaport/v1"),
])
def test_origin_is_scheme_host_port_without_credentials(url, expected):
    assert client.origin(url) == expected


def test_a_dead_grader_url_is_named_in_the_grades(tmp_path):
    comp, prefixes = _comp()
    port = _closed_port()
    ep = Endpoint(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1)
    g = lg.grade_llm(ep, comp, prefixes, CAT, ResponseCache(tmp_path / "c.sqlite"))
    assert g["label"].isna().all()
    assert g["error"].str.startswith(f"grader call failed: connection error to http://127.0.0.1:{port}").all(), g["error"]


def test_an_error_every_grader_request_gets_stops_the_later_categories_unsent(fake_server):
    # a dead grader model: the first category stops the role; the second sends nothing
    fake_server.error_body = (500, {"error": {"message": "model failed to load", "type": "server_error"}})
    comp, prefixes = _comp()
    tax = load_taxonomy(ROOT / "params" / "taxonomy.yaml")
    ep = Endpoint(base_url=fake_server.url, model="m", max_concurrency=1, max_retries=6)
    g = lg.grade_llm(ep, comp, prefixes, {CAT.name: CAT, "hate": tax["hate"]}, None, response_style="json_object")
    sent = list(fake_server.log)
    assert 0 < len(sent) <= client.SAME_ERROR_LIMIT + 1
    assert g["label"].isna().all() and (g["error"].str.contains("model failed to load")).all()
    hate = g[g["category"] == "hate"]
    assert len(hate) == 3 and hate["error"].str.contains("not sent").all()
    # the unsent category is graded (and identified) in the mode of the one that stopped
    assert (hate["grader_id"] == lg.llm_grader_id(tax["hate"], "m", lg.DEFAULT_PARAMS, "json_object")).all()
