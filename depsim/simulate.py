"""Stage 2: the response sets that get graded, one per target (DESIGN §2).

- ``sim``: X regenerates the next turn on Y's prefixes; ``sim_self``: on X's own prefixes;
  ``challenging``: on the challenging set. These go through the model layer
  (:mod:`depsim.engine`), so every request is cached and never sent twice.
- ``prod_prev`` / ``prod_new``: the responses Y and X actually gave in production, read from
  the logs.

Tool mode ``stop``: the response is the candidate's first assistant message, tool calls
included, with no tool outputs.
"""
from __future__ import annotations

import json

import pandas as pd

from depsim.engine import ChatRequest, Endpoint, complete
from depsim.params import Release, endpoint_url
from depsim.tables import content_id

#: target -> prefix pool it reads
POOL = {"sim": "previous", "prod_prev": "previous", "sim_self": "candidate", "prod_new": "candidate",
        "challenging": "challenging"}
GENERATED = ("sim", "sim_self", "challenging")
COLUMNS = ["item_id", "target", "prefix_id", "model", "request_hash", "messages", "finish",
           "prompt_tokens", "completion_tokens", "error"]


def candidate_requests(rel: Release, target: str, prefixes: pd.DataFrame) -> list[ChatRequest]:
    """Return the chat requests of a generated target: one per prefix of its pool."""
    pool = prefixes[prefixes["pool"] == POOL[target]]
    g = rel.generation
    reqs = []
    for pid, raw, tools in zip(pool["prefix_id"], pool["messages"], pool["tools"]):
        tl = json.loads(tools) if isinstance(tools, str) and tools else None
        # a seed per prefix: reproducible, yet two prefixes with the same text are sampled
        # independently, as two users would be served
        seed = (g.seed * 1_000_003 + int(content_id(pid, n=8), 16)) % 2**31
        params = {"temperature": g.temperature, "max_tokens": g.max_tokens, "seed": seed}
        reqs.append(ChatRequest(item_id=content_id(target, pid, 0), messages=json.loads(raw), params=params,
                                tools=tl or None, sample_index=0))
    return reqs


def generated(rel: Release, target: str, prefixes: pd.DataFrame, cache, stats=None) -> pd.DataFrame:
    """Return the completions of a generated target (failed items keep their error)."""
    ep: Endpoint = endpoint_url(rel, rel.models.candidate)
    reqs = candidate_requests(rel, target, prefixes)
    results = complete(ep, reqs, cache, progress=f"{target} ({ep.model})", stats=stats)
    pids = prefixes.loc[prefixes["pool"] == POOL[target], "prefix_id"].tolist()
    rows = []
    for pid, r in zip(pids, results):
        usage = r.usage or {}
        rows.append({"item_id": r.item_id, "target": target, "prefix_id": pid, "model": ep.model,
                     "request_hash": r.key, "messages": json.dumps([r.message]) if r.message else None,
                     "finish": r.finish_reason, "prompt_tokens": usage.get("prompt_tokens"),
                     "completion_tokens": usage.get("completion_tokens"), "error": r.error})
    return pd.DataFrame(rows, columns=COLUMNS)


def logged(target: str, prefixes: pd.DataFrame) -> pd.DataFrame:
    """Return the completions of a production target: the logged responses."""
    pool = prefixes[prefixes["pool"] == POOL[target]]
    missing = pool["logged_response"].isna()
    return pd.DataFrame({
        "item_id": [content_id(target, p, 0) for p in pool["prefix_id"]], "target": target,
        "prefix_id": pool["prefix_id"].to_numpy(), "model": pool["model"].to_numpy(), "request_hash": None,
        "messages": pool["logged_response"].to_numpy(), "finish": "logged", "prompt_tokens": None,
        "completion_tokens": None,
        "error": missing.map({True: "no response was logged after this user turn", False: None}).to_numpy(),
    }, columns=COLUMNS)


def build_completions(rel: Release, prefixes: pd.DataFrame, cache, stats=None) -> pd.DataFrame:
    """Return the completions table for every target the release lists."""
    frames = [generated(rel, t, prefixes, cache, stats) if t in GENERATED else logged(t, prefixes)
              for t in rel.targets]
    return pd.concat(frames, ignore_index=True)
