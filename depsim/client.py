"""The model-call layer: every role (candidate, grader, auditor, tool simulator, judge) talks
OpenAI chat completions through :func:`acomplete` / :func:`complete`.

- Each request has a content-addressed key (:func:`request_key`); responses are looked up in
  a :class:`depsim.cache.ResponseCache` first and only misses are sent, so a rerun or a
  resume never sends a stored request again. Failed calls are never cached.
- Misses go through ``openai.AsyncOpenAI.chat.completions.create`` (the real client code
  path; ``sim://`` endpoints use the simulated world's in-process transport, found
  through :mod:`depsim.registry`) under an adaptive concurrency
  limit (docs/design.md §3), optional rpm/tpm token buckets, and retries with exponential backoff
  and jitter that honour Retry-After.
- Every call fills a :class:`RunStats` (pass your own with ``stats=`` to accumulate over
  several calls; :func:`last_run_stats` returns the most recent one).

Usage::

    cache = ResponseCache("reports/demo/cache.sqlite")
    ep = Endpoint(base_url="http://localhost:8000/v1", model="x", api_key_env="MY_KEY")
    results = complete(ep, [ChatRequest("a", [{"role": "user", "content": "hi"}], {"seed": 0})], cache)
"""
from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import openai
from tqdm import tqdm

from depsim.cache import ResponseCache
from depsim.params import Endpoint
from depsim.registry import plugin, scheme

# Retry/backoff tuning (module constants so tests can shrink them).
BACKOFF_BASE_S = 1.0      #: first backoff delay, seconds (doubles per attempt)
BACKOFF_MAX_S = 60.0      #: cap on one backoff delay, seconds
MAX_RETRY_AFTER_S = 600.0  #: longest Retry-After we honour, seconds
# Adaptive concurrency tuning.
START_CONCURRENCY = 20    #: initial limit (capped by Endpoint.max_concurrency)
DECREASE_FACTOR = 0.8     #: limit multiplier after a run of 429s
RUN_OF_429 = 2            #: consecutive 429s (no success between) that count as a run
GROWTH_PAUSE_S = 5.0      #: seconds without growth after a 5xx / timeout / bad response
# Cache write batching: a kill loses at most the results of the last second / 200 items.
FLUSH_EVERY = 200
FLUSH_INTERVAL_S = 1.0
#: errors that hold for every request to an endpoint: after one, the rest are failed unsent
ENDPOINT_ERRORS = ("http 401", "http 403", "http 404")
#: the same error (status and message) this many times in a row, with no success yet in the
#: call, is an error every request gets: the call stops (the rest are failed unsent)
SAME_ERROR_LIMIT = 3
#: limit multiplier after a timeout (at most once per GROWTH_PAUSE_S): a one-slot local
#: server answers one request at a time, so the queue behind it times out
TIMEOUT_DECREASE = 0.5
#: what the error of a role stopped by an error every request gets says
STOPPED = "the role stops"
#: longest server error message kept, characters (after redaction)
ERROR_MESSAGE_MAX = 300
#: what a secret is replaced with in stored errors and logs
REDACTED = "[REDACTED]"
#: API-key-like tokens redacted from every kept error message, whatever key was sent
_KEYLIKE = re.compile(r"\b(?:sk|pk|rk|sess|gsk|xai|hf|ghp|glpat|key)[-_][A-Za-z0-9_\-*.]{6,}|\bBearer\s+\S+|\bAKIA[A-Z0-9]{12,}"
                      # a key a server masked itself ("Zq7XvT2m****dG0a", OpenAI's 401): its ends are the key's
                      r"|[\w.-]*\*{4,}[\w.-]*")

_CREATE_ARGS = {"audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
                "max_completion_tokens", "max_tokens", "metadata", "modalities", "n", "parallel_tool_calls",
                "prediction", "presence_penalty", "prompt_cache_key", "reasoning_effort", "safety_identifier",
                "seed", "service_tier", "stop", "store", "temperature", "top_logprobs", "top_p", "user",
                "verbosity", "web_search_options"}


class MissingAPIKeyError(RuntimeError):
    """An endpoint names an API-key environment variable that is not set."""


@dataclass
class ChatRequest:
    """One chat-completions request. ``params`` are sampling parameters (temperature, top_p,
    max_tokens, seed, ...); parameters the openai client does not know go in ``extra_body``.
    ``sample_index`` keeps repeated samples of one prompt apart in the cache; it is not sent."""
    item_id: str
    messages: list[dict]
    params: dict = field(default_factory=dict)
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    response_format: dict | None = None
    sample_index: int = 0
    #: the answer id a bound prompt asks the answer to echo (depsim.prompts.bind_answer); not
    #: sent (it is already in ``messages``), not part of the cache key
    answer_id: str | None = None


@dataclass
class ChatResult:
    """The outcome of one request. On failure ``message``/``finish_reason``/``usage`` are None
    and ``error`` says why (e.g. ``"http 500 after 7 attempts"``, ``"timeout (60 s)
    waiting for http://127.0.0.1:8080 after 7 attempts"``, ``"http 400: ..."``). ``latency_s``: wall-clock seconds from the first send
    to the final outcome, retries and waits included (0 for cache hits). ``attempts``: HTTP
    attempts made (0 for cache hits)."""
    item_id: str
    key: str
    message: dict | None  # {"role", "content", "tool_calls": [OpenAI-format dicts] | None,
                          #  "reasoning_content" only when the server returned reasoning text}
    finish_reason: str | None
    usage: dict | None    # {"prompt_tokens", "completion_tokens"}
    error: str | None = None
    cached: bool = False
    attempts: int = 0
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the call succeeded (``error`` is None)."""
        return self.error is None


@dataclass
class RunStats:
    """Counts of one or more :func:`acomplete` calls (they accumulate when the same object is
    passed again). ``tokens`` maps a label (``"<role>/<model>"``, or the model when no role is
    given) to prompt/completion tokens of responses generated in this run (cache hits are
    free and not counted). ``concurrency_history`` maps the same label to ``(unix time s,
    limit)`` points: the adaptive concurrency limit at the start and after every change."""
    items: int = 0        # requests passed in
    cached: int = 0       # answered from the cache
    sent: int = 0         # distinct requests sent to an endpoint (duplicates in a call are sent once)
    succeeded: int = 0    # distinct requests that got a response
    failed: int = 0       # distinct requests that failed (incl. ones not sent after a 401/403/404)
    retries: int = 0      # extra HTTP attempts beyond the first
    errors: Counter = field(default_factory=Counter)  # final failure reason -> count
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)
    concurrency_history: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    elapsed_s: float = 0.0  # wall-clock seconds spent in acomplete
    cost_usd: dict[str, float] = field(default_factory=dict)  # label -> USD, where prices are set

    def add_tokens(self, label: str, usage: dict | None, endpoint: "Endpoint | None" = None) -> None:
        """Add a response's prompt/completion token counts to ``tokens[label]``, and its cost
        in USD to ``cost_usd[label]`` when ``endpoint`` has prices."""
        t = self.tokens.setdefault(label, {"prompt_tokens": 0, "completion_tokens": 0})
        got = {k: int((usage or {}).get(k) or 0) for k in t}
        for k in t:
            t[k] += got[k]
        if endpoint is not None and (endpoint.usd_per_mtok_prompt or endpoint.usd_per_mtok_completion):
            self.cost_usd[label] = self.cost_usd.get(label, 0.0) + (
                got["prompt_tokens"] * (endpoint.usd_per_mtok_prompt or 0)
                + got["completion_tokens"] * (endpoint.usd_per_mtok_completion or 0)) / 1e6

    def usage_table(self) -> list[dict]:
        """Return one row per label: prompt and completion tokens generated in this run and
        their cost in USD (None where the endpoint has no prices)."""
        return [{"role/model": k, **v, "cost_usd": self.cost_usd.get(k)} for k, v in self.tokens.items()]

    def summary(self) -> dict:
        """Return the stats as a JSON-serialisable dict (for run logs)."""
        return {"items": self.items, "cached": self.cached, "sent": self.sent, "succeeded": self.succeeded,
                "failed": self.failed, "retries": self.retries, "errors": dict(self.errors),
                "tokens": self.tokens, "cost_usd": self.cost_usd, "elapsed_s": round(self.elapsed_s, 3),
                "concurrency_history": {k: [list(p) for p in v] for k, v in self.concurrency_history.items()}}


_last_stats: RunStats | None = None


def last_run_stats() -> RunStats | None:
    """Return the :class:`RunStats` of the most recent :func:`acomplete`/:func:`complete`
    call in this process (None before the first call)."""
    return _last_stats


# ---------------------------------------------------------------------------------------
# keys and clients


def _clean_params(params: dict) -> dict:
    # None means "unset": drop it so {"top_p": None} and {} are the same request.
    return {k: v for k, v in (params or {}).items() if v is not None}


def request_key(endpoint: Endpoint, req: ChatRequest) -> str:
    """Return the cache key of ``req`` at ``endpoint``: the sha256 hex digest of canonical
    JSON (sorted keys, no whitespace) of base URL, model, messages, sampling params, tools,
    tool_choice, response_format and sample_index. ``item_id`` is not part of it."""
    doc = {"base_url": endpoint.base_url.rstrip("/"), "model": endpoint.model, "messages": req.messages,
           "params": _clean_params(req.params), "tools": req.tools, "tool_choice": req.tool_choice,
           "response_format": req.response_format, "sample_index": req.sample_index}
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def mask_url(url: str) -> str:
    """Return ``url`` with any credentials in it (``https://user:pass@host``) and the values
    of its query string (``?api-key=...``, where some gateways take their key) replaced by
    ``***``, for messages and pages; the URL is otherwise unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"\?.*", "?***", re.sub(r"//[^/@]*@", "//***@", url))
    if "@" in parts.netloc:
        parts = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])
    if parts.query:
        parts = parts._replace(query="&".join(f"{k}=***" if sep else "***"
                                              for k, sep, _ in (q.partition("=") for q in parts.query.split("&"))))
    return urlunsplit(parts)


def origin(url: str) -> str:
    """Return ``scheme://host:port`` of ``url`` (the port the scheme implies when none is
    given), without credentials or path, for messages that name an endpoint; ``url`` with
    its credentials masked (:func:`mask_url`) when it cannot be parsed."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # e.g. a port that is not a number
        return mask_url(url)
    if not parts.scheme or not parts.hostname:
        return mask_url(url)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def secrets_of(endpoint: Endpoint) -> list[str]:
    """Return the secrets an endpoint sends (its API key when set in the environment, and the
    user name and password of credentials in its URL), longest first, for :func:`redact`."""
    out = []
    if endpoint.api_key_env and (key := os.environ.get(endpoint.api_key_env)):
        out.append(key)
    try:
        parts = urlsplit(endpoint.base_url)
        out += [x for x in (parts.password, parts.username) if x]
    except ValueError:
        pass
    return sorted({s for s in out if len(s) >= 4}, key=len, reverse=True)


def redact(text: str, endpoint: Endpoint | None = None) -> str:
    """Return ``text`` with the endpoint's secrets (:func:`secrets_of`), URL credentials and
    API-key-like tokens replaced by :data:`REDACTED`. Every server message depsim keeps (in
    errors, tables and logs) goes through this."""
    for secret in secrets_of(endpoint) if endpoint is not None else []:
        text = text.replace(secret, REDACTED)
    text = re.sub(r"(\w+://)[^/\s@]+@", r"\1***@", text)
    return _KEYLIKE.sub(REDACTED, text)


def scrub(value, secrets: list[str]):
    """Return ``value`` (a decoded response body) with each of ``secrets`` replaced by
    :data:`REDACTED` in every string in it. Only the exact secrets an endpoint sends: a
    pattern (:data:`_KEYLIKE`) would rewrite model text that merely looks like a key."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    return value


def api_key(endpoint: Endpoint) -> str:
    """Return the endpoint's API key read from the environment variable it names (a
    placeholder when it names none; local servers ignore it)."""
    if endpoint.api_key_env is None:
        return "no-key"
    key = os.environ.get(endpoint.api_key_env)
    if not key:
        raise MissingAPIKeyError(f"environment variable {endpoint.api_key_env} is not set; it should hold "
                                 f"the API key for {endpoint.model} at {mask_url(endpoint.base_url)}")
    return key


def open_client(endpoint: Endpoint) -> openai.AsyncOpenAI:
    """Return an ``openai.AsyncOpenAI`` client for ``endpoint`` with the openai client's own
    retries off (we retry ourselves) and ``timeout_s`` seconds per request. A URL whose scheme
    names a plugin (:mod:`depsim.registry`; ``sim://``: the simulated world) gets that plugin's
    in-process transport."""
    name = scheme(endpoint.base_url)
    if name is not None:  # an in-process plugin transport (the simulated world's sim://)
        http = httpx.AsyncClient(transport=plugin(name).transport(endpoint.base_url), timeout=endpoint.timeout_s)
        return openai.AsyncOpenAI(base_url=f"http://{name}.local/v1", api_key=name, max_retries=0,
                                  timeout=endpoint.timeout_s, http_client=http)
    return openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=api_key(endpoint), max_retries=0,
                              timeout=endpoint.timeout_s)


def create_kwargs(endpoint: Endpoint, req: ChatRequest) -> dict:
    """Return the keyword arguments of ``chat.completions.create`` for ``req`` (the Batch
    API's request body is the same): model, messages, the sampling parameters the openai
    client knows, the others under ``extra_body``, and tools / tool_choice / response_format
    when set. Raises ValueError for streaming."""
    params = _clean_params(req.params)
    if params.get("stream"):
        raise ValueError(f"item {req.item_id}: streaming is not supported")
    kw: dict[str, Any] = {"model": endpoint.model, "messages": req.messages}
    kw.update({k: v for k, v in params.items() if k in _CREATE_ARGS})
    extra = {k: v for k, v in params.items() if k not in _CREATE_ARGS and k != "stream"}
    if extra:  # server-specific parameters (top_k, min_p, ...) pass through untouched
        kw["extra_body"] = extra
    for name in ("tools", "tool_choice", "response_format"):
        if getattr(req, name) is not None:  # omit rather than send null
            kw[name] = getattr(req, name)
    return kw


class MalformedResponse(ValueError):
    """A server's answer is not a chat.completion we can read."""


def _body_of(body: Any) -> dict:
    """The response body as a plain dict, checked for the fields we read."""
    if not isinstance(body, dict):
        raise MalformedResponse("not a JSON chat.completion")
    parse_body(body)
    return body


def parse_body(body: dict) -> tuple[dict, str | None, dict]:
    """Return (message, finish_reason, usage in tokens) of a chat.completion body; raise
    MalformedResponse when its shape is wrong."""
    try:
        choice = body["choices"][0]
        msg = choice["message"]
        message = {"role": msg.get("role") or "assistant", "content": msg.get("content"),
                   "tool_calls": msg.get("tool_calls") or None}
        # reasoning text, where the server returns it (vLLM/DeepSeek: reasoning_content;
        # some servers: reasoning), is kept so graders can read it (docs/design.md §4)
        reasoning = msg.get("reasoning_content") or msg.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            message["reasoning_content"] = reasoning
        usage = body.get("usage") or {}
        usage = {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
                 "completion_tokens": int(usage.get("completion_tokens") or 0)}
        return message, choice.get("finish_reason"), usage
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
        raise MalformedResponse(f"unexpected response shape: {e!r}") from None


def _retry_after(headers: httpx.Headers | None) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, Retry-After seconds or date)."""
    if headers is None:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return min(max(float(ms) / 1000, 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        s = float(ra)
    except ValueError:
        try:
            s = email.utils.parsedate_to_datetime(ra).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(s, 0.0), MAX_RETRY_AFTER_S)


def _backoff(attempt: int, retry_after: float | None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: exponential with equal jitter; with a
    Retry-After, that plus up to 10% jitter (so waiting clients do not all return at once),
    but never less than half the exponential delay (a "Retry-After: 0" must not spin)."""
    d = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
    if retry_after is not None:
        return max(retry_after * (1 + 0.1 * random.random()), d / 2)
    return d / 2 + random.uniform(0, d / 2)


# ---------------------------------------------------------------------------------------
# limits


class AdaptiveLimiter:
    """Concurrency limit that adapts like Inspect's: start at ``min(START_CONCURRENCY,
    maximum)``; +1 after every ``limit`` successes while the endpoint keeps up;
    x0.8 after a run of 429s (at most once per Retry-After/1 s), and no new sends until
    Retry-After has passed; a 5xx/timeout pauses growth for ``GROWTH_PAUSE_S`` without
    shrinking; a timeout cuts the limit by half (:meth:`on_timeout`). ``history`` gets a ``(unix time s, limit)`` point at start and every change."""

    def __init__(self, maximum: int, history: list[tuple[float, int]] | None = None):
        self.maximum = max(1, maximum)
        self.limit = min(START_CONCURRENCY, self.maximum)
        self.active = 0
        self.history = history if history is not None else []
        self.history.append((time.time(), self.limit))
        self._cond = asyncio.Condition()
        self._paused_until = 0.0       # monotonic; Retry-After pause for new sends
        self._no_growth_until = 0.0
        self._next_cut = 0.0
        self._successes = 0
        self._run_429 = 0

    def _set(self, limit: int) -> None:
        if limit != self.limit:
            self.limit = limit
            self.history.append((time.time(), limit))

    async def acquire(self) -> None:
        """Wait for a free slot (and for any Retry-After pause to end), then take it."""
        while True:
            wait = self._paused_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            async with self._cond:
                await self._cond.wait_for(lambda: self.active < self.limit)
                if self._paused_until > time.monotonic():
                    continue  # a 429 arrived while we waited: sleep it out first
                self.active += 1
                return

    async def release(self) -> None:
        """Give a slot back."""
        async with self._cond:
            self.active -= 1
            self._cond.notify_all()

    def on_success(self) -> None:
        """Record a successful response (may raise the limit by 1)."""
        self._run_429 = 0
        self._successes += 1
        if self._successes >= self.limit and time.monotonic() >= self._no_growth_until:
            self._successes = 0
            self._set(min(self.maximum, self.limit + 1))

    def on_rate_limited(self, retry_after: float | None) -> None:
        """Record a 429; ``retry_after`` in seconds pauses all new sends (may cut the limit)."""
        now = time.monotonic()
        self._successes = 0
        self._paused_until = max(self._paused_until, now + (retry_after or 0.0))
        self._run_429 += 1
        if self._run_429 >= RUN_OF_429 and now >= self._next_cut:
            # one cut per burst: in-flight requests of the same burst all fail together
            self._run_429 = 0
            self._next_cut = now + max(retry_after or 0.0, 1.0)
            self._set(max(1, int(self.limit * DECREASE_FACTOR)))

    def on_server_error(self) -> None:
        """Record a 5xx / connection drop / bad body: pause growth, keep the limit."""
        self._successes = 0
        self._no_growth_until = time.monotonic() + GROWTH_PAUSE_S

    def on_timeout(self) -> None:
        """Record a timeout: pause growth and cut the limit by :data:`TIMEOUT_DECREASE` (at
        most once per ``GROWTH_PAUSE_S``, since the requests of one queue time out together):
        the server cannot keep up with this many requests at once."""
        now = time.monotonic()
        cut = now >= self._no_growth_until
        self.on_server_error()
        if cut:
            self._set(max(1, int(self.limit * TIMEOUT_DECREASE)))


class TokenBucket:
    """A per-minute budget refilled continuously (capacity: one minute's worth)."""

    def __init__(self, per_minute: float):
        self.capacity = float(per_minute)
        self.level = float(per_minute)
        self.rate = per_minute / 60.0  # units per second
        self._t = time.monotonic()

    async def take(self, amount: float) -> None:
        """Wait until ``amount`` units (capped at the capacity) are available, then spend them."""
        amount = min(float(amount), self.capacity)
        while True:
            now = time.monotonic()
            self.level = min(self.capacity, self.level + (now - self._t) * self.rate)
            self._t = now
            if self.level >= amount:
                self.level -= amount
                return
            await asyncio.sleep((amount - self.level) / self.rate)


def _estimate_tokens(req: ChatRequest) -> int:
    # ~4 characters per token for the prompt, plus the completion budget if one is set
    prompt = len(json.dumps(req.messages, ensure_ascii=False)) // 4
    p = req.params or {}
    return prompt + int(p.get("max_tokens") or p.get("max_completion_tokens") or 0)


class _CacheWriter:
    """Buffers successful responses and writes them in small transactions."""

    def __init__(self, cache: ResponseCache | None):
        self.cache, self.rows, self.last = cache, [], time.monotonic()

    def add(self, key: str, body: dict) -> None:
        self.rows.append((key, body))
        if len(self.rows) >= FLUSH_EVERY or time.monotonic() - self.last >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        if self.cache is not None and self.rows:
            self.cache.put_many(self.rows)
        self.rows, self.last = [], time.monotonic()

    async def periodic(self) -> None:
        while True:  # flush a slow trickle of results too
            await asyncio.sleep(FLUSH_INTERVAL_S)
            self.flush()


# ---------------------------------------------------------------------------------------
# the request loop


class _SameErrors:
    """Watches one call's failures: :data:`SAME_ERROR_LIMIT` identical errors (status and
    message) in a row before any success is an error every request gets, and stops the call.
    A retryable error (5xx) counts only when it comes back on a retry."""

    def __init__(self):
        self.last, self.run, self.succeeded, self.stopped = None, 0, False, None

    def success(self) -> None:
        self.succeeded, self.run, self.last = True, 0, None

    def failure(self, signature: tuple | None) -> bool:
        """Record a failed attempt; return True when the call should stop."""
        if signature is None or self.succeeded:
            self.run, self.last = 0, None
            return False
        self.run = self.run + 1 if signature == self.last else 1
        self.last = signature
        return self.run >= SAME_ERROR_LIMIT


def _error_message(e: openai.APIStatusError, endpoint: Endpoint) -> str:
    """The server's own error message (redacted, cut to ERROR_MESSAGE_MAX characters)."""
    body = e.body
    msg = None
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        msg = inner.get("message") or body.get("detail") or body.get("error")
    if msg is None:
        msg = body if isinstance(body, str) and body else e.message
    if not isinstance(msg, str):
        msg = json.dumps(msg, ensure_ascii=False, default=str)
    return redact(" ".join(msg.split()), endpoint)[:ERROR_MESSAGE_MAX]


async def _send(client: openai.AsyncOpenAI, endpoint: Endpoint, req: ChatRequest, limiter: AdaptiveLimiter,
                buckets: list[tuple[TokenBucket, int]], stats: RunStats,
                watch: _SameErrors | None = None) -> tuple[dict | None, str | None, int]:
    """Send one request with retries. Returns (response body or None, error or None, attempts).
    An error keeps the server's message (redacted): ``"http 500 after 7 attempts: <message>"``."""
    kwargs = create_kwargs(endpoint, req)
    watch = watch or _SameErrors()
    attempt = 0
    while True:
        if watch.stopped is not None:
            return None, f"{watch.stopped} (not sent again)", attempt
        attempt += 1
        for bucket, amount in buckets:
            await bucket.take(amount)
        await limiter.acquire()
        retry_after, retryable, detail, signature = None, True, "", None
        try:
            # the client's own timeout is per network phase; this bounds the whole call
            # the raw response: the body is read as JSON once, with no pydantic model in between
            raw = await asyncio.wait_for(client.chat.completions.with_raw_response.create(**kwargs),
                                         endpoint.timeout_s)
            body = _body_of(raw.http_response.json())
        except openai.APIStatusError as e:
            status = e.status_code
            retry_after = _retry_after(e.response.headers if e.response is not None else None)
            reason, detail = f"http {status}", _error_message(e, endpoint)
            code = (e.body or {}).get("code") if isinstance(e.body, dict) else None
            if status == 429 and code != "insufficient_quota":
                limiter.on_rate_limited(retry_after)
            elif status >= 500 or status in (408, 409):
                limiter.on_server_error()
                if status not in (502, 503, 504):  # overload and gateway errors pass
                    signature = (status, detail)
                if is_format_rejection(f"{reason}: {detail}"):  # a rejected parameter: retrying cannot help
                    retryable = False
            else:  # a client error (or exhausted quota) will not go away by retrying
                retryable = False
                signature = (status, detail)
        except (openai.APITimeoutError, asyncio.TimeoutError):
            # name the server and the limit: a one-slot local server is the usual cause
            reason = f"timeout ({endpoint.timeout_s:g} s) waiting for {redact(origin(endpoint.base_url), endpoint)}"
            limiter.on_timeout()
        except openai.APIConnectionError:
            # name the server: a dead URL is the usual cause (never its credentials)
            reason = f"connection error to {redact(origin(endpoint.base_url), endpoint)}"
            limiter.on_server_error()
        except (openai.APIResponseValidationError, ValueError):  # JSONDecodeError, MalformedResponse
            reason = "malformed JSON"
            limiter.on_server_error()
        else:
            limiter.on_success()
            watch.success()
            # a server that echoes the key it got (a debug proxy, a hostile endpoint) would put
            # it in the cache, the tables and the pages
            if secrets := secrets_of(endpoint):
                body = scrub(body, secrets)
            return body, None, attempt
        finally:
            await limiter.release()
        tail = f": {detail}" if detail else ""
        # a retryable error counts once it survived a retry: a brief outage is not "every request"
        if watch.failure(signature if attempt >= 2 or not retryable else None):
            watch.stopped = f"{reason}{tail} (the same error {SAME_ERROR_LIMIT} times in a row and no success: {STOPPED})"
            return None, watch.stopped, attempt
        if not retryable:
            return None, f"{reason}{tail}", attempt
        if attempt > endpoint.max_retries:
            return None, f"{reason} after {attempt} attempts{tail}", attempt
        stats.retries += 1
        await asyncio.sleep(_backoff(attempt, retry_after))


def error_kind(error: str) -> str:
    """Return the part of a failed request's ``error`` before the server's message (the key
    of :attr:`RunStats.errors`), e.g. ``"http 500 after 7 attempts"``. Split at ": ", not
    ":", so a URL in it (``connection error to http://host:port``) stays whole."""
    return error.split(": ")[0]


def _result(req: ChatRequest, key: str, body: dict, *, cached: bool, attempts: int = 0,
             latency_s: float = 0.0) -> ChatResult:
    message, finish, usage = parse_body(body)
    return ChatResult(req.item_id, key, message, finish, usage, None, cached, attempts, latency_s)


async def acomplete(endpoint: Endpoint, requests: list[ChatRequest], cache: ResponseCache | None, *,
                    progress: bool | str = True, client: openai.AsyncOpenAI | None = None,
                    stats: RunStats | None = None, role: str | None = None) -> list[ChatResult]:
    """Return one :class:`ChatResult` per request, in the order of ``requests``.

    Cached responses are looked up in one bulk query; only misses are sent (identical
    requests once). Successes are written to ``cache`` (None: no caching) in batches as
    they arrive; failures come back with ``error`` set and are not cached. ``progress``:
    show a tqdm bar (a str is its description). ``client``: an ``openai.AsyncOpenAI`` to use
    instead of :func:`open_client` (not closed here). ``stats``: a :class:`RunStats` to add
    counts to (a new one otherwise; either way :func:`last_run_stats` returns it).
    ``role``: labels the token counts and concurrency history (e.g. "grader")."""
    global _last_stats
    stats = stats if stats is not None else RunStats()
    _last_stats = stats
    t0 = time.monotonic()
    label = f"{role}/{endpoint.model}" if role else endpoint.model
    keys = [request_key(endpoint, r) for r in requests]
    hits = cache.get_many(keys) if cache is not None and keys else {}

    results: list[ChatResult | None] = [None] * len(requests)
    todo: dict[str, list[int]] = {}  # key -> indices of the requests that share it
    for i, (req, key) in enumerate(zip(requests, keys)):
        if key in hits:
            try:
                results[i] = _result(req, key, hits[key], cached=True)
                continue
            except MalformedResponse:
                pass  # an unreadable stored body (e.g. a bad import): fetch again
        todo.setdefault(key, []).append(i)
    n_todo = sum(len(v) for v in todo.values())
    stats.items += len(requests)
    stats.cached += len(requests) - n_todo
    if not todo:
        stats.elapsed_s += time.monotonic() - t0
        return results  # type: ignore[return-value]

    own_client = client is None
    client = client or open_client(endpoint)
    limiter = AdaptiveLimiter(endpoint.max_concurrency, stats.concurrency_history.setdefault(label, []))
    writer = _CacheWriter(cache)
    bar = tqdm(total=len(requests), initial=len(requests) - n_todo, unit="req", mininterval=0.5,
               desc=progress if isinstance(progress, str) else endpoint.model,
               disable=progress is False or os.environ.get("DEPSIM_PROGRESS") == "0")
    rpm = TokenBucket(endpoint.rpm) if endpoint.rpm else None
    tpm = TokenBucket(endpoint.tpm) if endpoint.tpm else None

    def buckets_for(req: ChatRequest) -> list[tuple[TokenBucket, int]]:
        out = [(rpm, 1)] if rpm else []
        return out + ([(tpm, _estimate_tokens(req))] if tpm else [])

    work = iter(todo.items())  # shared by the workers; safe, the loop is single-threaded

    fatal: list[str] = []  # an endpoint-wide error (bad key, model, URL) stops further sends
    watch = _SameErrors()  # ... and so does the same error on every request

    async def worker() -> None:
        for key, idxs in work:
            req = requests[idxs[0]]
            start = time.monotonic()
            if fatal:
                body, error, attempts = None, f"{fatal[0]} (not sent)", 0
            else:
                body, error, attempts = await _send(client, endpoint, req, limiter, buckets_for(req), stats, watch)
                stats.sent += 1 if attempts else 0
                if error and (error.startswith(ENDPOINT_ERRORS) or watch.stopped is not None):
                    fatal.append(error if watch.stopped is None else watch.stopped)
            latency = time.monotonic() - start
            if body is not None:
                res = _result(req, key, body, cached=False, attempts=attempts, latency_s=latency)
                writer.add(key, body)
                stats.succeeded += 1
                stats.add_tokens(label, res.usage, endpoint)
            else:
                res = ChatResult(req.item_id, key, None, None, None, error, False, attempts, latency)
                stats.failed += 1
                stats.errors[error_kind(error)] += 1
            for j in idxs:
                results[j] = replace(res, item_id=requests[j].item_id)
            bar.update(len(idxs))
            bar.set_postfix(failed=stats.failed, limit=limiter.limit, refresh=False)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(endpoint.max_concurrency, len(todo)))]
    flusher = asyncio.ensure_future(writer.periodic())
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in [*tasks, flusher]:
            t.cancel()
        await asyncio.gather(*tasks, flusher, return_exceptions=True)
        writer.flush()  # also on Ctrl-C / errors: keep what was generated
        bar.close()
        if own_client:
            await client.close()
        stats.elapsed_s += time.monotonic() - t0
    return results  # type: ignore[return-value]


def complete(endpoint: Endpoint, requests: list[ChatRequest], cache: ResponseCache | None, *,
             progress: bool | str = True, client: openai.AsyncOpenAI | None = None,
             stats: RunStats | None = None, role: str | None = None) -> list[ChatResult]:
    """Synchronous :func:`acomplete`: returns one :class:`ChatResult` per request, in order.
    Works inside a running event loop (Jupyter) by running the coroutine on its own loop in
    a worker thread; an interrupt there cancels the run, after it has stored what arrived.
    Do not pass a ``client`` that was used on another event loop."""
    coro = acomplete(endpoint, requests, cache, progress=progress, client=client, stats=stats, role=role)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    return _run_in_thread(coro)


def _run_in_thread(coro) -> Any:
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    out: dict[str, Any] = {}
    done = threading.Event()  # not Thread.join: an interrupted join can later return early

    def run() -> None:
        try:
            out["result"] = loop.run_until_complete(task)
        except BaseException as e:  # handed to the caller's thread below
            out["error"] = e
        finally:
            loop.close()
            done.set()

    threading.Thread(target=run, name="depsim-complete", daemon=True).start()
    try:
        while not done.wait(0.1):  # short waits so a notebook interrupt (SIGINT) reaches us
            pass
    except KeyboardInterrupt:
        loop.call_soon_threadsafe(task.cancel)
        done.wait()  # acomplete's cleanup writes the finished results to the cache
        raise
    if "error" in out:
        raise out["error"]
    return out["result"]


# ---------------------------------------------------------------------------------------
# structured output

#: structured-output modes, in the order ``"auto"`` tries them: OpenAI's strict json_schema
#: (OpenAI, vLLM, llama.cpp's server), json_object with a schema (llama-cpp-python's server,
#: vLLM), and no response_format at all (the prompt alone asks for the JSON object)
STRUCTURED_MODES = ("json_schema", "json_object", "prompt")
#: an error that says the server does not take a response_format: a client error, or a
#: 500 that names the format (llama-cpp-python: "Input should be 'text' or 'json_object'")
_REJECTION = re.compile(r"^http (?:400|415|422)\b|^http 50[01]\b.*(?:response_format|json_schema|json_object|schema|"
                        r"grammar|Input should be)", re.IGNORECASE)


def structured_format(mode: str, name: str, schema: dict) -> dict | None:
    """Return the ``response_format`` of ``mode`` (see :data:`STRUCTURED_MODES`) for the JSON
    ``schema`` called ``name``; None for ``"prompt"``."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64],
                                                       "strict": True, "schema": schema}}
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    if mode == "prompt":
        return None
    raise ValueError(f"structured-output mode must be auto or one of {', '.join(STRUCTURED_MODES)}, not {mode!r}")


def unsent(endpoint: Endpoint, requests: list[ChatRequest], error: str, stats: RunStats | None = None) -> list[ChatResult]:
    """Return failed results for ``requests``, not sent because of ``error`` (an error every
    request gets), counted in ``stats`` as items and failures."""
    if stats is not None:
        stats.items += len(requests)
        stats.failed += len(requests)
        stats.errors[error_kind(error)] += len(requests)
    why = error if error.endswith("(not sent)") else f"{error} (not sent)"
    return [ChatResult(r.item_id, request_key(endpoint, r), None, None, None, why) for r in requests]


def is_format_rejection(error: str | None) -> bool:
    """True when a request's final ``error`` says the server rejects its response_format."""
    return bool(error) and bool(_REJECTION.search(error))


@dataclass
class Structured:
    """What :func:`complete_structured` returns: ``results`` (one :class:`ChatResult` per
    request, in order), ``mode`` (the structured-output mode used), and ``notes`` (why each
    earlier mode was given up, with the server's redacted message)."""
    results: list[ChatResult]
    mode: str
    notes: list[str]


def complete_structured(endpoint: Endpoint, requests: list[ChatRequest], cache: ResponseCache | None, *, name: str,
                        schema: dict, mode: str = "auto", progress: bool | str = True, stats: RunStats | None = None,
                        role: str | None = None) -> Structured:
    """Send ``requests`` (their prompts ask for a JSON object matching ``schema``) with the
    structured output the endpoint supports, through :func:`complete` (cached).

    ``mode``: one of :data:`STRUCTURED_MODES`, or ``"auto"``: the first request is sent as a
    probe in each mode in turn, and the first mode that the server does not reject
    (:func:`is_format_rejection`) is used for all; the last, ``"prompt"``, sends no
    response_format. A probe is an ordinary cached request, so a rerun decides at once.
    A probe that fails for another reason (timeout, bad key) does not change the mode."""
    modes = STRUCTURED_MODES if mode == "auto" else (mode,)
    notes: list[str] = []
    for i, m in enumerate(modes):
        fmt = structured_format(m, name, schema)
        reqs = [replace(r, response_format=fmt) for r in requests]
        if reqs and i < len(modes) - 1:
            probe = complete(endpoint, reqs[:1], cache, progress=False, stats=stats, role=role)[0]
            if not probe.ok and is_format_rejection(probe.error):
                notes.append(f"{m} rejected by {endpoint.model}: {probe.error}")
                continue
            if not probe.ok and STOPPED in probe.error:  # every request gets this error: send no more
                return Structured([probe] + unsent(endpoint, reqs[1:], probe.error, stats), m, notes)
        return Structured(complete(endpoint, reqs, cache, progress=progress, stats=stats, role=role) if reqs else [],
                          m, notes)
    raise AssertionError("unreachable: the last mode is always used")
