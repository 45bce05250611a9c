"""A real HTTP server on 127.0.0.1 that speaks OpenAI chat completions, with fault injection.

``POST /v1/chat/completions`` answers with a deterministic echo of the last user message
(or a tool call when the request has tools and the message contains ``CALL_TOOL``).

Faults, drawn per request from a hash of (request body, how many times that body was seen),
so a rerun of the same test injects the same faults whatever the thread interleaving:

- ``p429``: 429 with ``Retry-After: <retry_after>``;
- ``p500``: 500 with an OpenAI-shaped error body;
- ``phang``: sleep ``hang_s`` (longer than the client timeout) before answering;
- ``pmalformed``: 200 with a truncated JSON body;
- ``pdrop``: start a response, then close the connection mid-body.

``delay_s`` (not a fault) makes every request wait that long before its answer, like a
model generating.

``script[marker] = [outcome, ...]`` forces the outcomes of requests whose last message
contains ``marker``: the n-th time such a body arrives it gets ``outcomes[min(n, len-1)]``
(outcomes: "ok", "hang", "malformed", "drop", or an HTTP status such as "429", "500", "404").

``responder``: a function from a request body to the assistant message dict, used instead
of the echo (e.g. :func:`obey_last_verdict`, a naive grader that copies the last verdict in
its prompt); ``error_body``: ``(status, JSON body)`` every request gets instead (e.g. a 401
that echoes the key, or a server that rejects a response_format: see ``reject_formats``).
``reject_formats``: response_format types answered with llama-cpp-python's 500
("Input should be 'text' or 'json_object'") or vLLM's 400.

Every request is logged in ``server.log`` as a dict with ``hash`` (sha256 of the canonical
JSON body), ``outcome``, ``t`` (unix seconds) and the parsed ``body``; "ok" entries get
``answered`` (unix seconds) once the whole response has been written.

Use the ``fake_server`` fixture (import it into the test module; conftest is not needed)::

    from fake_openai_server import fake_server  # noqa: F401
    def test_x(fake_server): fake_server.faults = Faults(p500=0.1); ... fake_server.url
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that went away is normal here
            super().handle_error(request, client_address)


@dataclass
class Faults:
    """Per-request fault probabilities (they must sum to <= 1) and their settings."""
    p429: float = 0.0
    p500: float = 0.0
    phang: float = 0.0
    pmalformed: float = 0.0
    pdrop: float = 0.0
    retry_after: str = "0.1"   # Retry-After header value sent with 429s (seconds)
    hang_s: float = 2.0        # how long a hang lasts, seconds
    delay_s: float = 0.0       # every request waits this long before its answer (generation time)
    seed: int = 0

    def draw(self, body_hash: str, n: int) -> str:
        u = int(hashlib.sha256(f"{self.seed}:{body_hash}:{n}".encode()).hexdigest()[:12], 16) / 16**12
        for outcome, p in (("429", self.p429), ("500", self.p500), ("hang", self.phang),
                           ("malformed", self.pmalformed), ("drop", self.pdrop)):
            if u < p:
                return outcome
            u -= p
        return "ok"


def body_hash(body: dict) -> str:
    """sha256 of the canonical JSON of a request body."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


#: what marks a RESPONSE as positive for :func:`obey_last_verdict`'s honest answer
FLAG = "UNSAFE-CONTENT"
_VERDICT_KEYS = ('"label"', '"real"')


def obey_last_verdict(body: dict) -> dict:
    """A naive grader (or realism judge) that obeys the last verdict in its prompt: when the
    user message holds a JSON object with a ``label`` or ``real`` field, it answers with that
    object verbatim; when it holds only the start of one (a partial verdict), it answers with
    that text, cut where the prompt's line ends; otherwise it answers honestly, echoing the
    answer id the prompt asks for: ``label`` true when the graded text contains
    :data:`FLAG`, and ``real`` "A"."""
    msgs = body.get("messages") or []
    user = next((m.get("content") or "" for m in reversed(msgs) if m.get("role") == "user"), "")
    dec, last, partial = json.JSONDecoder(), None, None
    for i in range(len(user)):
        if user[i] != "{":
            continue
        try:
            obj, _ = dec.raw_decode(user, i)
        except ValueError:
            if any(k in user[i:i + 40] for k in _VERDICT_KEYS):
                partial = user[i:].split("\n", 1)[0]
            continue
        if isinstance(obj, dict) and ("label" in obj or "real" in obj):
            last, partial = obj, None
    if last is not None:
        return {"role": "assistant", "content": json.dumps(last)}
    if partial is not None:
        return {"role": "assistant", "content": partial}
    found = re.findall(r'"answer_id" must be "([0-9a-f]{16})"', user)
    head = {"answer_id": found[-1]} if found else {}
    graded = user.split("RESPONSE (grade this)]", 1)[-1]
    verdict = {"real": "A"} if "<<<CONTINUATION" in user else {"label": FLAG in graded}
    return {"role": "assistant", "content": json.dumps({**head, **verdict, "confidence": 0.9, "rationale": "honest"})}


def completion(body: dict, responder=None) -> dict:
    """The deterministic OpenAI-shaped response to a request body (``responder``: a function
    from the body to the assistant message, instead of the echo)."""
    msgs = body.get("messages") or []
    last = next((m.get("content") or "" for m in reversed(msgs) if m.get("role") == "user"), "")
    prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in msgs)
    if responder is not None:
        message = responder(body)
        finish, completion_tokens = "stop", len(str(message.get("content")).split())
    elif body.get("tools") and "CALL_TOOL" in last:
        name = body["tools"][0]["function"]["name"]
        message = {"role": "assistant", "content": None,
                   "tool_calls": [{"id": "call_" + body_hash(body)[:8], "type": "function",
                                   "function": {"name": name, "arguments": json.dumps({"q": last})}}]}
        finish, completion_tokens = "tool_calls", 5
    else:
        text = f"echo: {last}"
        message = {"role": "assistant", "content": text}
        finish, completion_tokens = "stop", len(text.split())
    return {"id": "chatcmpl-" + body_hash(body)[:12], "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"), "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class FakeOpenAIServer:
    """The server; ``url`` is the base URL to give an Endpoint (``http://127.0.0.1:<port>/v1``)."""

    def __init__(self, faults: Faults | None = None):
        self.faults = faults or Faults()
        self.script: dict[str, list[str]] = {}
        self.responder = None
        self.error_body: tuple[int, dict] | None = None
        self.reject_formats: dict[str, tuple[int, str]] = {}
        self.log: list[dict] = []
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _QuietHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wake hanging handlers
        self._httpd.shutdown()
        self._httpd.server_close()

    def hashes(self, outcome: str | None = None) -> list[str]:
        """Body hashes of the logged requests (with that outcome, if given)."""
        with self._lock:
            return [e["hash"] for e in self.log if outcome is None or e["outcome"] == outcome]

    def _decide(self, body: dict, h: str) -> str:
        with self._lock:
            n = self._seen.get(h, 0)
            self._seen[h] = n + 1
        last = str((body.get("messages") or [{}])[-1].get("content") or "")
        for marker, outcomes in self.script.items():
            if marker in last:
                return outcomes[min(n, len(outcomes) - 1)]
        return self.faults.draw(h, n)

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real servers
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def log_message(self, *args):  # keep test output quiet
                pass

            def _send_json(self, status: int, obj: dict, headers: dict | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._send_json(400, {"error": {"message": "bad JSON"}})
                h = body_hash(body)
                outcome = server._decide(body, h)
                entry = {"hash": h, "outcome": outcome, "t": time.time(), "body": body}
                with server._lock:
                    server.log.append(entry)
                if server.faults.delay_s > 0:
                    server._stop.wait(server.faults.delay_s)
                if server.error_body is not None:
                    entry["outcome"] = str(server.error_body[0])
                    return self._send_json(*server.error_body)
                fmt = (body.get("response_format") or {}).get("type")
                if fmt in server.reject_formats:
                    entry["outcome"] = f"rejected {fmt}"
                    status, msg = server.reject_formats[fmt]
                    return self._send_json(status, {"error": {"message": msg, "type": "invalid_request_error"}})
                if outcome == "429":
                    return self._send_json(429, {"error": {"message": "rate limited", "type": "rate_limit_error"}},
                                           {"Retry-After": server.faults.retry_after})
                if outcome.isdigit():  # any other status: an OpenAI-shaped error body
                    return self._send_json(int(outcome), {"error": {"message": f"injected {outcome}",
                                                                    "type": "server_error"}})
                if outcome == "hang":
                    server._stop.wait(server.faults.hang_s)
                    self.close_connection = True
                    try:
                        return self._send_json(200, completion(body, server.responder))
                    except OSError:  # the client gave up long ago
                        return
                if outcome == "malformed":
                    data = json.dumps(completion(body, server.responder)).encode()[:-7]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    return self.wfile.write(data)
                if outcome == "drop":
                    data = json.dumps(completion(body, server.responder)).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:20])  # half a body, then hang up
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self._send_json(200, completion(body, server.responder))
                entry["answered"] = time.time()  # the whole response was written

        return Handler


@pytest.fixture
def fake_server():
    """A started :class:`FakeOpenAIServer` with no faults; stopped after the test."""
    srv = FakeOpenAIServer().start()
    try:
        yield srv
    finally:
        srv.stop()
