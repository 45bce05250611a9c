"""The simulated world's tool simulator (``sim-tools``) and realism judge (``sim-judge``),
served by :mod:`depsim.sim.server` (``ROLE_MODELS``). Like every simulated role, they read only
the request they are sent (the prompts of :mod:`depsim.toolloop` and :mod:`depsim.realism`),
never hidden labels.

``sim-tools`` (:func:`tool_output`) reads the CALL block of a tool-simulator prompt. With
probability ``tool_fidelity`` (the endpoint URL's setting; one seeded draw per request, from
the world seed, the prompt and the request seed) it writes the output in exactly the
production format, :meth:`depsim.sim.world.World.tool_output` for that call (production tool
failures included, at the world's ``tool_failure_rate``). Otherwise it writes a plausible
but telltale output: generic placeholder results that do not mention the query
(:data:`PLACEHOLDER_OUTPUTS`). A tool other than ``web_search`` (the world has no
production format for it) gets ``{"result": "ok"}`` in the faithful case.

``sim-judge`` (:func:`judge`) parses the prefix and the two continuations out of a realism
prompt and counts each continuation's tells of a simulated environment:

- a tool call that gets no tool output (stop mode's truncated turn, an unresolved replay);
- no final answer: the continuation does not end with an assistant message that says
  something to the user;
- a tool output that looks like a placeholder (:data:`PLACEHOLDER_PATTERN`, one tell each).

It picks the continuation with fewer tells as the real one; when both have as many (for
example, neither has any) it picks at random, seeded by the prompt's nonce. So the simulated
continuation's win rate tends to 50% as tool fidelity tends to 1, and a stop-mode
continuation loses whenever it holds an unanswered tool call and the real one does not.
"""
from __future__ import annotations

import json
import random
import re

from depsim.prompts import answer_id_in
from depsim.realism import CONT_CLOSE, CONT_OPEN, PREFIX_OPEN
from depsim.sim import world as simworld

#: telltale outputs of an unfaithful tool simulator: generic results, unrelated to the query
PLACEHOLDER_OUTPUTS = [
    json.dumps({"results": [{"title": "Example Result", "snippet": "Lorem ipsum dolor sit amet, consectetur adipiscing elit."}]}),
    json.dumps({"results": [{"title": "Search result 1", "snippet": "This is a placeholder snippet for the search query."}]}),
    "Search results: 1. Example Domain (https://example.com) - Sample content related to your query.",
]
#: what the judge recognises as placeholder tool output
PLACEHOLDER_PATTERN = r"lorem ipsum|placeholder|example\.com|example result|sample content"


def _user_text(body: dict) -> str:
    msgs = body.get("messages") or []
    return next((m.get("content") or "" for m in reversed(msgs) if m.get("role") == "user"), "")


def _block(text: str, open_: str, close: str) -> str | None:
    i = text.find(open_)
    if i == -1:
        return None
    i += len(open_)
    j = text.find(close, i)
    return text[i:j if j != -1 else len(text)].strip("\n")


def tool_output(world, env: str, body: dict) -> dict:
    """Return the assistant message answering one tool-simulator request (see the module
    docstring)."""
    user = _user_text(body)
    m = re.search(r"<<<CALL ([0-9a-f]{16})>>>", user)
    call_text = _block(user, f"<<<CALL {m.group(1)}>>>", f"<<<END CALL {m.group(1)}>>>") if m else None
    try:
        call = json.loads(call_text) if call_text else None
    except ValueError:
        call = None
    if not isinstance(call, dict):
        return {"role": "assistant", "content": "Error: no tool call found to simulate."}
    rng = random.Random(simworld._hash_int(world.config.seed, "sim-tools", body.get("messages"), body.get("seed") or 0))
    if rng.random() < world.config.tool_fidelity:
        name, args = str(call.get("name") or ""), call.get("arguments") or ""
        if name == "web_search":
            try:
                out = world.tool_output({"function": {"name": name, "arguments": args}}, "production", rng)
            except (ValueError, AttributeError):
                out = "Error: invalid arguments."
        else:
            out = json.dumps({"result": "ok"})
    else:
        out = rng.choice(PLACEHOLDER_OUTPUTS)
    return {"role": "assistant", "content": out}


def _messages(block: str, nonce: str) -> list[tuple[str, str]]:
    """(role, text) of each message of a rendered block (see depsim.toolloop.render_messages)."""
    header = re.compile(rf"^\[{nonce} message \d+/\d+ \| role: ([a-z_]+)\]$", re.MULTILINE)
    pieces = header.split(block)[1:]
    return [(role, text.strip("\n")) for role, text in zip(pieces[::2], pieces[1::2])]


def tells(messages: list[tuple[str, str]]) -> list[str]:
    """Return the tells of a simulated environment in one continuation (see the module
    docstring), as short phrases."""
    out = []
    if not messages:
        return ["the continuation is empty"]
    calls, results = [], set()
    for role, text in messages:
        calls += re.findall(r"^\(tool call ([^)\n]*)\) ", text, re.MULTILINE)
        if role == "tool":
            r = re.match(r"^\(tool result for ([^)\n]*)\)", text)
            if r:
                results.add(r.group(1))
            if re.search(PLACEHOLDER_PATTERN, text, re.IGNORECASE):
                out.append("a tool output is a generic placeholder")
    if any(c not in results for c in calls):
        out.append("a tool call gets no tool output")
    role, text = messages[-1]
    said = re.sub(r"^\((?:tool call|reasoning)[^\n]*$", "", text, flags=re.MULTILINE).strip()
    if role != "assistant" or not said:
        out.append("the turn has no final answer")
    return out


def judge(world, env: str, body: dict) -> dict:
    """Return the assistant message answering one realism-judge request: a JSON verdict
    (``real``, ``confidence``, ``rationale``), or a refusal text when the prompt holds no
    pair of continuations (which the parser counts as missing)."""

    user = _user_text(body)
    m = re.search(re.escape(PREFIX_OPEN).replace(re.escape("{nonce}"), "([0-9a-f]{16})"), user)
    if not m:
        return {"role": "assistant", "content": "I cannot find a prefix and two continuations to compare."}
    nonce = m.group(1)
    blocks = {x: _block(user, CONT_OPEN.format(label=x, nonce=nonce), CONT_CLOSE.format(label=x, nonce=nonce))
              for x in "AB"}
    if any(b is None for b in blocks.values()):
        return {"role": "assistant", "content": "I cannot find both continuations."}
    found = {x: tells(_messages(b, nonce)) for x, b in blocks.items()}
    if len(found["A"]) != len(found["B"]):
        real = "A" if len(found["A"]) < len(found["B"]) else "B"
        fake = "B" if real == "A" else "A"
        why = f"Continuation {fake} looks simulated: {'; '.join(found[fake])}."
        conf = 0.9
    else:
        real = random.Random(f"{nonce}:judge").choice("AB")
        why = "Neither continuation shows a tell of a simulated environment; this is a guess." if not found["A"] \
            else "Both continuations show tells of a simulated environment; this is a guess."
        conf = 0.5
    aid = answer_id_in(body.get("messages") or [])  # echoed as asked: binds the verdict to this request
    head = {} if aid is None else {"answer_id": aid}
    return {"role": "assistant", "content": json.dumps({**head, "real": real, "confidence": conf, "rationale": why})}
