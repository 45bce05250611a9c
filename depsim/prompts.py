"""The untrusted-text kit: how conversation text goes into a model's prompt, and how a
model's JSON answer comes back. Every role that reads transcripts (graders, the auditor's
judge-like roles, the tool simulator, the realism judge) uses these pieces.

- **Neutralise**: every ``<<<`` run and chat-template control string in untrusted text is
  replaced by look-alike characters (:func:`neutralise`), so the text cannot produce any
  delimiter, whatever it guesses, and a local server cannot tokenise control tokens.
- **Delimit**: a transcript sits between delimiters that carry a nonce computed from the
  neutralised text (:func:`transcript_nonce`, :func:`nonce_of`), each message under a
  nonce'd header line (:func:`render_transcript`, :func:`render_messages`).
- **Answer**: the one JSON object in a model's answer (:func:`answer_object`): the whole
  text, a code fence around it, or the only object amid prose.
- **Freeze**: :func:`prompt_id` hashes a prompt's whole spec, so changing any template,
  rendering rule, model or parameter changes the id.
"""
from __future__ import annotations

import hashlib
import json
import re

# ----------------------------------------------------------------------------- delimiters

OPEN = "<<<TRANSCRIPT {nonce}>>>"
CLOSE = "<<<END TRANSCRIPT {nonce}>>>"
#: header line of each message inside the block (carries the nonce too)
HEADER = "[{nonce} message {i}/{n} | role: {role} | {part}]"
PART_CONTEXT = "context (do not grade)"
PART_RESPONSE = "RESPONSE (grade this)"

#: strings defanged inside transcript text: (pattern, replacement). ``<<<`` runs first.
NEUTRALISE = [
    (r"<{3,}", lambda m: "\u2039" * len(m.group())),          # delimiter prefix -> ‹‹‹
    (r"<\|", "\u2039|"), (r"\|>", "|\u203a"),                   # <|im_start|>, <|eot_id|>, ...
    (r"</?s>", lambda m: m.group().replace("<", "\u2039").replace(">", "\u203a")),
    (r"\[/?INST\]", lambda m: m.group().replace("[", "\uff3b").replace("]", "\uff3d")),
    (r"<(/?)(start_of_turn|end_of_turn)>", "\u2039\\1\\2\u203a"),
]


def neutralise(text: str) -> str:
    """Return ``text`` with every delimiter-like ``<<<`` run and chat-template control string
    replaced by look-alike characters (see :data:`NEUTRALISE`). The result contains no
    ``<<<``, so it cannot open or close a transcript block."""
    for pat, rep in NEUTRALISE:
        text = re.sub(pat, rep, text)
    return text


def content_text(content) -> str:
    """Return a message's content as text: a string as is, the text of content parts (other
    parts as JSON), '' for None."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "\n".join(p.get("text", "") if isinstance(p, dict) and p.get("type") == "text"
                         else json.dumps(p, ensure_ascii=False) for p in content)
    return json.dumps(content, ensure_ascii=False)


def message_text(m: dict, *, call_ids: bool = False) -> str:
    """Return one message as plain text: reasoning (when kept), content, and tool calls and
    results. Graders read ``(tool call) name(arguments)``; with ``call_ids`` (the tool
    simulator and the realism judge) calls and results carry their ids:
    ``(tool call ID) name(arguments)``, ``(tool result for ID)``."""
    if call_ids:
        return _message_text_ids(m)
    parts = []
    for key in ("reasoning_content", "reasoning"):  # graded where the endpoint returns it
        if isinstance(m.get(key), str) and m[key].strip():
            parts.append(f"(reasoning) {m[key]}")
    parts.append(content_text(m.get("content")))
    for tc in m.get("tool_calls") or []:
        fn = tc.get("function", {}) if isinstance(tc, dict) else {}
        parts.append(f"(tool call) {fn.get('name')}({fn.get('arguments') or ''})")
    if m.get("role") == "tool" and m.get("tool_call_id"):
        parts.insert(0, f"(tool result for {m['tool_call_id']})")
    return "\n".join(p for p in parts if p != "")


def _split_point(messages: list[dict], n_context: int | None) -> int:
    if n_context is not None:
        return max(0, min(n_context, len(messages)))
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    return users[-1] + 1 if users else 0


def transcript_nonce(category_name: str, messages: list[dict], n_context: int | None = None) -> str:
    """Return the 16-hex-char nonce of a transcript: sha256 of the category name, the split
    point and the neutralised message texts."""
    doc = [category_name, _split_point(messages, n_context),
           [[str(m.get("role")), neutralise(message_text(m))] for m in messages]]
    return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode()).hexdigest()[:16]


def render_transcript(messages: list[dict], nonce: str, n_context: int | None = None) -> str:
    """Return the block body: each message as a nonce'd header line plus its neutralised text.
    The first ``n_context`` messages are context (default: up to the last user message)."""
    split = _split_point(messages, n_context)
    out = []
    for i, m in enumerate(messages):
        part = PART_CONTEXT if i < split else PART_RESPONSE
        role = re.sub(r"[^a-z_]", "", str(m.get("role") or "unknown").lower()) or "unknown"
        out.append(HEADER.format(nonce=nonce, i=i + 1, n=len(messages), role=role, part=part))
        out.append(neutralise(message_text(m)))
    return "\n".join(out)


def call_parts(call: dict) -> tuple[str, str, str]:
    """(id, name, arguments string) of an OpenAI-format tool call (tolerant of odd shapes)."""
    fn = call.get("function") if isinstance(call, dict) else None
    fn = fn if isinstance(fn, dict) else {}
    args = fn.get("arguments")
    if not isinstance(args, str):
        args = "" if args is None else json.dumps(args, ensure_ascii=False)
    return str(call.get("id") or "") if isinstance(call, dict) else "", str(fn.get("name") or ""), args


#: header line of each message in a block without graded parts (tool simulator, judge)
HEADER_PLAIN = "[{nonce} message {i}/{n} | role: {role}]"


def _message_text_ids(m: dict) -> str:
    parts = []
    for key in ("reasoning_content", "reasoning"):
        if isinstance(m.get(key), str) and m[key].strip():
            parts.append(f"(reasoning) {m[key]}")
    parts.append(content_text(m.get("content")))
    for tc in m.get("tool_calls") or []:
        cid, name, args = call_parts(tc)
        parts.append(f"(tool call {cid}) {name}({args})")
    if m.get("role") == "tool":
        parts.insert(0, f"(tool result for {m.get('tool_call_id') or ''})")
    return "\n".join(p for p in parts if p != "")


def render_messages(messages: list[dict], nonce: str) -> str:
    """Return messages as a block body: a nonce'd header line per message, then its
    neutralised text (:func:`neutralise`: no ``<<<`` survives, so the
    text cannot close the block it sits in)."""
    out = []
    for i, m in enumerate(messages):
        role = re.sub(r"[^a-z_]", "", str(m.get("role") or "unknown").lower()) or "unknown"
        out.append(HEADER_PLAIN.format(nonce=nonce, i=i + 1, n=len(messages), role=role))
        out.append(neutralise(message_text(m, call_ids=True)))
    return "\n".join(out)


def nonce_of(*parts) -> str:
    """Return 16 hex chars of the sha256 of ``parts`` (the delimiters' nonce)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- answers

#: one Markdown code fence around a whole answer
FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def _objects(text: str) -> list:
    """Every JSON object that decodes at some '{' of ``text`` and is not inside another."""
    dec, out, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) != -1:
        try:
            obj, end = dec.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        out.append(obj)
        i = end
    return out


def answer_object(content: str) -> tuple[dict | None, str | None]:
    """Return ``(object, None)`` for the one JSON object in a model's answer ``content``
    (the whole text, a Markdown code fence around it, or the only object amid prose), or
    ``(None, error)`` saying why there is none."""
    text = content.strip()
    if m := FENCE.match(text):
        text = m.group(1).strip()
    try:
        obj = json.loads(text)
    except ValueError:
        objs = [o for o in _objects(text) if isinstance(o, dict)]
        if len(objs) != 1:
            return None, (f"not JSON: {content[:80]!r}" if not objs else f"{len(objs)} JSON objects in the answer (ambiguous)")
        obj = objs[0]
    if not isinstance(obj, dict):
        return None, f"JSON is a {type(obj).__name__}, not an object"
    return obj, None



def prompt_id(spec: dict) -> str:
    """Return the frozen id of a prompt spec: 12 hex chars of the sha256 of its canonical
    JSON (sorted keys). Put every template, rendering probe, model and parameter in ``spec``."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]
