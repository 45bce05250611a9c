"""Fault injection end to end: a 500-item run against the fake OpenAI server (real HTTP on
127.0.0.1) that answers over 20% of requests with 429 + Retry-After, 500, a hang past the
client timeout, malformed JSON or a dropped connection. Every item must come back exactly
once, succeeded or failed with a reason; nothing completed may be requested twice; and the
real grading path must count failures as missing, never as negatives."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from depsim import client
from depsim.batch import request_body
from depsim.cache import ResponseCache
from depsim.client import ChatRequest, RunStats, complete, request_key
from depsim.params import Endpoint

from fake_openai_server import Faults, body_hash

ROOT = Path(__file__).resolve().parents[1]
N = 500
#: items that fail on every attempt, by marker -> (scripted outcome, expected error prefix)
PERMANENT = {"ALWAYS500": ("500", "http 500 after 4 attempts"),
             "ALWAYS429": ("429", "http 429 after 4 attempts"),
             "ALWAYSHANG": ("hang", "timeout (2 s) waiting for http://127.0.0.1:"),
             "ALWAYSMALFORMED": ("malformed", "malformed JSON after 4 attempts"),
             "ALWAYSDROP": ("drop", "connection error to http://127.0.0.1:"),
             "ALWAYS400": ("400", "http 400:")}
FLAG = "I'll get back to you tomorrow"  # the promising_background_tasks grader flags this


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(client, "BACKOFF_BASE_S", 0.02)
    monkeypatch.setattr(client, "BACKOFF_MAX_S", 0.2)
    monkeypatch.setattr(client, "FLUSH_INTERVAL_S", 0.2)


def make_requests() -> list[ChatRequest]:
    markers = list(PERMANENT)
    reqs = []
    for i in range(N):
        text = f"question {i}"
        if i % 10 == 0:
            text += f". {FLAG}"
        if i % 25 == 7:  # 20 permanent failures, spread over the run
            text += f" {markers[(i // 25) % len(markers)]}"
        reqs.append(ChatRequest(f"item-{i}", [{"role": "user", "content": text}],
                                {"temperature": 0.7, "max_tokens": 32, "seed": i % 3}))
    return reqs


def test_500_items_under_faults_resolve_once_and_failures_grade_as_missing(fake_server, tmp_path):
    fake_server.faults = Faults(p429=0.06, p500=0.05, phang=0.03, pmalformed=0.04, pdrop=0.04,
                                retry_after="0.05", hang_s=2.5, seed=4)
    for marker, (outcome, _) in PERMANENT.items():
        fake_server.script[marker] = [outcome]
    ep = Endpoint(base_url=fake_server.url, model="fake", timeout_s=2.0, max_retries=3, max_concurrency=32)
    reqs = make_requests()
    cache = ResponseCache(tmp_path / "c.sqlite")
    stats = RunStats()
    results = complete(ep, reqs, cache, progress=False, stats=stats, role="candidate")

    # the server really was that faulty, with every kind of fault
    log = list(fake_server.log)
    outcomes = Counter(e["outcome"] for e in log)
    assert sum(v for k, v in outcomes.items() if k != "ok") >= 0.2 * len(log), outcomes
    assert all(outcomes[k] > 0 for k in ("429", "500", "hang", "malformed", "drop")), outcomes

    # one result per item, in order; each succeeded or failed with a reason, never both
    assert [r.item_id for r in results] == [r.item_id for r in reqs]
    assert len({r.item_id for r in results}) == N
    for r in results:
        assert (r.error is None) == (r.message is not None), r
        assert r.error is None or r.error.strip()
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    by_id = {r.item_id: r for r in results}
    attempts = Counter(e["hash"] for e in log)
    ok_at = {e["hash"] for e in log if e["outcome"] == "ok"}
    unlucky = 0
    for q in reqs:  # the scripted items fail, each with its own reason; the others succeed
        marker = next((m for m in PERMANENT if m in q.messages[-1]["content"]), None)
        r = by_id[q.item_id]
        if marker:
            assert not r.ok and r.error.startswith(PERMANENT[marker][1]), (marker, r.error)
        elif not r.ok:  # ... unless random faults hit every attempt (rare, but legitimate)
            h = body_hash(request_body(ep, q))
            assert attempts[h] == 4 and h not in ok_at and r.error.endswith("after 4 attempts"), r
            unlucky += 1
    assert len(failed) == 20 + unlucky and unlucky <= 3
    assert stats.sent == N and stats.succeeded == len(ok) and stats.failed == len(failed)
    assert stats.retries > 0

    # nothing completed was served twice or requested again after it completed
    ok_hashes = [e["hash"] for e in log if e["outcome"] == "ok"]
    assert len(ok_hashes) == len(set(ok_hashes)) == len(ok)  # a 2 s timeout: no "ok" times out
    done_at = {e["hash"]: e["t"] for e in log if e["outcome"] == "ok"}
    assert not [e for e in log if e["hash"] in done_at and e["t"] > done_at[e["hash"]]]
    sent_bodies = {e["hash"] for e in log}
    assert len(sent_bodies) == N  # every item reached the server; no two items share a body
    assert len(cache) == len(ok) and set(cache.get_many(r.key for r in results)) == {r.key for r in ok}
    assert {r.key for r in results} == {request_key(ep, q) for q in reqs}

    # the real grading path: failures are missing labels, excluded from n, counted as failed
    from depsim.grade import grade
    from depsim.grade import rates
    from depsim.taxonomy import load_taxonomy

    categories = {n: c for n, c in load_taxonomy(ROOT / "params" / "taxonomy.yaml").items() if not c.is_llm}
    completions = pd.DataFrame({
        "item_id": [r.item_id for r in results],
        "target": "candidate",
        "prefix_id": [f"p{i}" for i in range(N)],
        # a str column: pandas 3 stores the failed items' None as NaN, as depsim.simulate does
        "messages": [json.dumps([r.message]) if r.ok else None for r in results],
        "error": [r.error for r in results],
    })
    grades = grade(completions, categories)
    assert len(grades) == N * len(categories)
    failed_ids = {r.item_id for r in failed}
    g_failed = grades[grades["item_id"].isin(failed_ids)]
    assert g_failed["label"].isna().all()  # never a negative
    assert g_failed["error"].str.startswith("no response to grade: ").all()
    assert grades.loc[~grades["item_id"].isin(failed_ids), "label"].notna().all()

    table = rates(grades, categories)
    assert len(table) == len(categories)
    assert (table["n"] == len(ok)).all() and (table["failed"] == len(failed)).all()
    flagged = sum(FLAG in r.message["content"] for r in ok)
    row = table.set_index("category").loc["promising_background_tasks"]
    assert flagged > 0 and row["k"] == flagged  # k / n over graded items only
    assert row["rate"] == pytest.approx((flagged + 0.5) / (len(ok) + 1), rel=1e-6)  # Jeffreys over n graded


def test_grading_a_completions_table_built_like_simulate_with_a_failure():
    """Regression: a failed item's missing response (NaN in a pandas 3 str column) once crashed
    graders.response_view; it must grade as a missing label."""
    from depsim.grade import grade
    from depsim.taxonomy import load_taxonomy

    categories = {n: c for n, c in load_taxonomy(ROOT / "params" / "taxonomy.yaml").items() if not c.is_llm}
    rows = [{"item_id": "a", "target": "t", "prefix_id": "p1", "error": None,
             "messages": json.dumps([{"role": "assistant", "content": FLAG}])},
            {"item_id": "b", "target": "t", "prefix_id": "p2", "messages": None, "error": "http 500 after 4 attempts"}]
    grades = grade(pd.DataFrame(rows), categories)  # the row dicts of depsim.simulate.generated
    assert grades.loc[grades["item_id"] == "b", "label"].isna().all()
    a = grades[grades["item_id"] == "a"].set_index("category")["label"]
    assert a.notna().all() and a["promising_background_tasks"] and a.sum() == 1
