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
- **Bind**: a verdict must echo the request's answer id (:func:`bind_answer`: an HMAC of the
  request under a secret kept next to the cache, :func:`answer_secret`), stated outside the
  transcript block; :func:`check_answer_id` turns an answer without it (a verdict copied from
  the transcript) into a failed answer.
- **Echo**: :func:`echoes_scaffolding` finds delimiters, headers or the nonce repeated in an
  answer (an auditor echoing its prompt), which is a failed answer, never a finding.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import time
from pathlib import Path

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
    (r"<(/?)(start_of_turn|end_of_turn|bos|eos|pad)>", "\u2039\\1\\2\u203a"),   # Gemma
    (r"<\uff5c", "\u2039\uff5c"), (r"\uff5c>", "\uff5c\u203a"),       # DeepSeek: <｜end▁of▁sentence｜>
    (r"<</?SYS>>", lambda m: m.group().replace("<", "\u2039").replace(">", "\u203a")),  # Llama 2
    (r"\[/?(?:TOOL_CALLS|AVAILABLE_TOOLS|TOOL_RESULTS|SYSTEM_PROMPT)\]",        # Mistral
     lambda m: m.group().replace("[", "\uff3b").replace("]", "\uff3d")),
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


# ----------------------------------------------------------------------------- answer binding

#: where a prompt template puts the answer id. It holds ``<<<``, which :func:`neutralise`
#: removes from every transcript, so only the template itself can contain it.
ANSWER_ID_SLOT = "<<<ANSWER_ID>>>"
#: the JSON field of an answer that must echo the request's answer id
ANSWER_ID_FIELD = "answer_id"
#: file next to a cache file holding the secret that answer ids are keyed with
SECRET_SUFFIX = ".answer-secret"

_process_secret = os.urandom(32)  # for runs without a cache file: unpredictable, never reused


def answer_secret(cache=None) -> bytes:
    """Return the secret that answer ids are keyed with (32 bytes): the one stored next to
    ``cache``'s file (``<cache file>.answer-secret``, created once with mode 0600, so a
    rerun builds the same requests and hits the cache), or a per-process random one when
    there is no cache file. It is never sent and never written anywhere else."""
    path = getattr(cache, "path", None)
    if not path or path == ":memory:":
        return _process_secret
    p = Path(f"{path}{SECRET_SUFFIX}")
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be writing it right now
            data = bytes.fromhex(p.read_text().strip() or "00")
            if len(data) == 32:
                return data
            time.sleep(0.01)
        raise ValueError(f"{p}: not a 32-byte hex secret; delete it (answers cached under it will be re-requested)")
    secret = os.urandom(32)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex())
    return secret


def bind_answer(messages: list[dict], secret: bytes) -> tuple[list[dict], str]:
    """Return ``(messages, answer_id)``: ``messages`` with every :data:`ANSWER_ID_SLOT`
    replaced by the request's answer id, 16 hex chars of the HMAC-SHA256 under ``secret`` of
    the canonical JSON of the messages as templated. The id is the same for the same request
    and secret (so caching holds) and cannot be computed from the transcript, which never
    sees the secret: an answer that carries it was written for this request, not copied
    from a verdict inside the transcript."""
    blob = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    aid = hmac.new(secret, blob.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
    out = [{**m, "content": m["content"].replace(ANSWER_ID_SLOT, aid)} if isinstance(m.get("content"), str) else m
           for m in messages]
    return out, aid


def check_answer_id(obj: dict, answer_id: str | None) -> str | None:
    """Return None when the answer object ``obj`` carries ``answer_id`` in
    :data:`ANSWER_ID_FIELD` (or ``answer_id`` is None: no binding asked), else the error
    that makes it a failed answer (missing or wrong id: not written for this request)."""
    if answer_id is None:
        return None
    got = obj.get(ANSWER_ID_FIELD)
    if got is None:
        return f"unbound answer: no {ANSWER_ID_FIELD} (a verdict not written for this request)"
    if not isinstance(got, str) or not hmac.compare_digest(got.strip().lower().encode(), answer_id.encode()):
        return f"unbound answer: wrong {ANSWER_ID_FIELD} (a verdict not written for this request)"
    return None


def answer_id_in(messages: list[dict]) -> str | None:
    """Return the answer id a bound request asks for (the id after ``answer_id`` in the last
    message's text outside any transcript block), or None. For simulated roles and tests."""
    text = content_text(messages[-1].get("content")) if messages else ""
    m = re.findall(r'"' + ANSWER_ID_FIELD + r'"\s*(?:must be|:)\s*"([0-9a-f]{16})"', text)
    return m[-1] if m else None


# ----------------------------------------------------------------------------- scaffolding echoes


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[\"'\u201c\u201d\u2018\u2019*_`]", "", text).lower().split())


def echoes_scaffolding(text: str, nonce: str | None = None, instructions: str | None = None) -> str | None:
    """Return the piece of prompt scaffolding that ``text`` (a model's answer about a
    transcript) echoes, or None: a delimiter line (``<<<...>>>``), a closing or opening
    ``transcript`` tag, a message header, the prompt's ``nonce``, or a whole sentence of three
    or more words copied from the prompt's ``instructions`` (e.g. "The transcript has
    ended."; case, quotes and spacing ignored). An answer that echoes its prompt's scaffolding
    is a failed answer, never a finding."""
    for pat in (r"<<<[^\n]*?>>>", r"</?\s*transcript\b[^>]*>", r"\[[0-9a-f]{16} message \d+/\d+ \|",
                r"===\s*RESPONSE UNDER AUDIT\s*===", r"<<<"):
        if m := re.search(pat, text, re.IGNORECASE):
            return m.group()
    if nonce and nonce in text:
        return nonce
    if instructions:
        said = _plain(instructions)
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            plain = _plain(sentence)
            if len(plain.split()) >= 3 and plain in said:
                return sentence.strip()
    return None


def verdict(message, answer_id: str | None, field: str, who: str,
            rationale_max: int) -> tuple[object, float | None, str | None, str | None]:
    """Return ``(value, confidence, rationale, error)`` of a role's JSON answer: ``value`` is
    the object's ``field`` (unchecked: the caller checks its type), ``confidence`` a finite
    number in [0, 1], ``rationale`` a string cut to ``rationale_max`` characters; with
    ``answer_id`` the object must echo it (:func:`check_answer_id`). ``message`` is a
    response message dict (its ``content`` is read) or the content string. Anything else
    gives ``(None, None, None, error)`` naming the problem (``who``: "grader", "judge")."""
    content = message.get("content") if isinstance(message, dict) else message
    if content is None:
        return None, None, None, f"{who} returned no content"
    if not isinstance(content, str):
        return None, None, None, f"{who} content is {type(content).__name__}, not text"
    if not content.strip():
        return None, None, None, f"{who} returned empty content"
    obj, err = answer_object(content)
    if err is not None:
        return None, None, None, err
    if (unbound := check_answer_id(obj, answer_id)) is not None:
        return None, None, None, unbound
    missing = [k for k in (field, "confidence", "rationale") if k not in obj]
    if missing:
        return None, None, None, f"missing field(s): {', '.join(missing)}"
    conf, why = obj["confidence"], obj["rationale"]
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not math.isfinite(conf) or not 0 <= conf <= 1:
        return None, None, None, f"confidence is not a number in [0, 1]: {conf!r}"[:120]
    if not isinstance(why, str):
        return None, None, None, f"rationale is not a string: {why!r}"[:120]
    return obj[field], float(conf), why.strip()[:rationale_max], None
