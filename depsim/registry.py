"""Plugins: what extends depsim without the core importing it.

A plugin is an object registered under a name in the ``depsim.plugins`` entry-point group
(``pyproject.toml``). It supplies any of:

- ``transport(base_url) -> httpx.AsyncBaseTransport``: the model client talks to URLs of the
  plugin's scheme (``<name>://...``) through it, in process;
- ``version``: a string that changes whenever the plugin's behaviour does (part of the
  endpoints' URLs, hence of the request cache keys);
- ``conversations(settings: dict, deployment: str) -> pandas.DataFrame``: a generated
  conversation table, for prefix sources of kind ``<name>_world``.

The simulated deployment world (:mod:`depsim.sim`, scheme ``sim``) is the one built in.
"""
from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points

GROUP = "depsim.plugins"


class PluginError(LookupError):
    """No plugin is registered under a name (the package is not installed with it)."""


@lru_cache(maxsize=None)
def plugin(name: str):
    """Return the plugin object registered as ``name`` in the ``depsim.plugins`` entry-point
    group; raise PluginError naming what is missing."""
    found = entry_points(group=GROUP, name=name)
    if not found:
        raise PluginError(f"no depsim plugin named {name!r} (entry-point group {GROUP!r}); "
                          "install depsim with `pip install -e .` so its entry points are registered")
    return next(iter(found)).load()


def scheme(base_url: str) -> str | None:
    """Return the plugin name that serves ``base_url`` (its URL scheme), or None for http(s)."""
    s = base_url.split("://", 1)[0].lower() if "://" in base_url else ""
    return None if s in ("http", "https", "") else s
