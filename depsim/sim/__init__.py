"""The simulated deployment world, depsim's embedded default and test bed (docs/design.md §7).

- :mod:`depsim.sim.world`: the generative model of traffic and model behaviour, with the truth.
- :mod:`depsim.sim.server`: the world behind the chat-completions interface (``sim://`` URLs).
- :mod:`depsim.sim.grader`, :mod:`depsim.sim.tools`: the simulated grader, tool simulator
  and realism judge.
- :mod:`depsim.sim.history`: simulated earlier releases; :mod:`depsim.sim.truth`: forecasts
  scored against the world's exact rates.

The core never imports this package: the model client and stage 1 reach it through the
plugin registry (:mod:`depsim.registry`, entry point ``sim``), and only the pipeline's demo
wiring imports it directly.
"""
from __future__ import annotations

from functools import lru_cache

import httpx
import pandas as pd

from depsim.sim.grader import KNOWN_CATEGORIES
from depsim.sim.server import make_transport
from depsim.sim.world import VERSION, World, WorldConfig


@lru_cache(maxsize=8)
def _world(settings: tuple) -> World:
    return World(WorldConfig(**dict(settings)))


class _Plugin:
    """The ``sim`` plugin (see :mod:`depsim.registry`)."""
    version = VERSION
    #: the category names its grader (sim://.../grade) grades exactly; others it refuses
    grader_categories = KNOWN_CATEGORIES

    @staticmethod
    def transport(base_url: str) -> httpx.MockTransport:
        """Return the in-process transport serving ``base_url`` (``sim://world/<env>?...``)."""
        return make_transport(base_url)

    @staticmethod
    def conversations(settings: dict, deployment: str) -> pd.DataFrame:
        """Return the world's conversation table of ``deployment`` ("Y", "X": production logs;
        "challenging": the challenging-prompts set) for world ``settings``."""
        world = _world(tuple(sorted(settings.items())))
        return world.challenging_prompts() if deployment == "challenging" else world.production_logs(deployment)


PLUGIN = _Plugin()
