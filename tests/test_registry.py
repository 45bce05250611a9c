"""The plugin registry: the simulated world is found through its entry point, and a missing
plugin is a clear error."""
import pytest

from depsim import registry
from depsim.client import ChatRequest, complete
from depsim.params import Endpoint


def test_the_sim_plugin_is_registered():
    sim = registry.plugin("sim")
    assert isinstance(sim.version, str) and len(sim.version) == 10
    logs = sim.conversations({"seed": 3, "conversations": 20, "challenging": 5}, "Y")
    assert len(logs) == 20 and {"conversation_id", "messages"} <= set(logs.columns)
    assert len(sim.conversations({"seed": 3, "conversations": 20, "challenging": 5}, "challenging")) == 5


@pytest.mark.parametrize("url, want", [("sim://world/production", "sim"), ("http://localhost:8000/v1", None),
                                       ("https://api.openai.com/v1", None), ("SIM://world/resample", "sim")])
def test_scheme_names_the_plugin(url, want):
    assert registry.scheme(url) == want


def test_an_unknown_scheme_is_a_clear_error():
    with pytest.raises(registry.PluginError, match="no depsim plugin named 'nope'"):
        registry.plugin("nope")
    ep = Endpoint(base_url="nope://x", model="m", max_retries=0)
    with pytest.raises(registry.PluginError):
        complete(ep, [ChatRequest("a", [{"role": "user", "content": "hi"}])], None)


def test_the_client_reaches_the_world_through_the_registry():
    ep = Endpoint(base_url=f"sim://world/production?seed=3&version={registry.plugin('sim').version}", model="sim-y")
    [res] = complete(ep, [ChatRequest("a", [{"role": "user", "content": "Write a short poem about a key in autumn."}],
                                      {"seed": 0})], None)
    assert res.ok and isinstance(res.message.get("content"), str)
