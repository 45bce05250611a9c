"""The Batch backend (docs/design.md §3): export uncached requests as OpenAI Batch API JSONL, run
them anywhere, import the results into the response cache.

The pattern is HELM's: a run that is too big for one machine's request loop (or cheaper at
Batch API prices) goes through three steps, after which the normal path finds everything in
the cache::

    files = write_batch_files(ep, requests, cache, "reports/demo/batch")   # uncached only
    outputs = submit_and_wait(ep, files)                 # OpenAI (or any Batch API server)
    report = import_results(outputs, cache)              # report["errors"]: custom_id -> why
    results = complete(ep, requests, cache)              # served from the cache; only the
                                                         # failed lines are sent live

The file format (one JSON object a line)::

    {"custom_id": <request_key>, "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": ..., "messages": [...], <sampling params>, "tools": [...], ...}}

- ``custom_id`` is :func:`depsim.client.request_key`, so it is unique in a file (identical
  requests are exported once) and names the cache entry a result goes into;
- ``body`` is exactly the JSON the live client would POST (parameters the openai client does
  not know, e.g. ``top_k``, sit at the top level, as ``extra_body`` puts them);
- one model per file (the endpoint's), at most ``max_per_file`` (50,000) lines and
  ``max_bytes`` (200 MB) per file, the Batch API's limits;
- results come back in any order; :func:`import_results` matches them by ``custom_id``.

**Self-hosted models (vLLM).** The same files run offline on vLLM's batch runner, which reads
the OpenAI batch format and writes result lines of the same shape::

    python -m vllm.entrypoints.openai.run_batch -i batch.jsonl -o results.jsonl --model <model>
    # newer vLLM releases also spell it:  vllm run-batch -i batch.jsonl -o results.jsonl --model <model>

then ``import_results(["results.jsonl"], cache)``. vLLM answers only requests whose
``body.model`` is a name it serves: when ``--model`` is a path or hub id that differs from
the endpoint's ``model``, add ``--served-model-name <endpoint.model>``. vLLM writes failed
lines into the same output file (``response.status_code`` != 200 and an ``error``);
:func:`import_results` reports them like Batch API error-file lines.

Cache keys contain the endpoint's base URL, so export with the :class:`~depsim.client.Endpoint`
that the run's later :func:`~depsim.client.complete` calls use (for vLLM: the URL that
``vllm serve`` would have), or those calls will not find the imported results.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

import openai

from depsim.cache import ResponseCache
from depsim.client import (ChatRequest, create_kwargs, MalformedResponse, parse_body, api_key, mask_url, redact,
                           request_key, scrub, secrets_of)
from depsim.params import Endpoint
from depsim.records import file_sha256

log = logging.getLogger(__name__)

BATCH_URL = "/v1/chat/completions"
MAX_PER_FILE = 50_000            #: Batch API limit: requests per input file
MAX_FILE_BYTES = 200_000_000     #: Batch API limit: bytes per input file (200 MB)
#: batch statuses after which nothing changes any more
TERMINAL = ("completed", "failed", "expired", "cancelled")
IMPORT_CHUNK = 5_000             #: cache rows per transaction when importing


class BatchTimeoutError(TimeoutError):
    """:func:`submit_and_wait` gave up waiting. The batches keep running on the server; call
    :func:`submit_and_wait` again with the same files to resume waiting (nothing is
    resubmitted). ``batches`` maps input file -> batch id."""

    def __init__(self, message: str, batches: dict[str, str]):
        super().__init__(message)
        self.batches = batches


# ---------------------------------------------------------------------------------------
# export


def request_body(endpoint: Endpoint, req: ChatRequest) -> dict:
    """Return the JSON body the live client would POST to ``/chat/completions`` for ``req``
    (model, messages, sampling params, tools...; ``extra_body`` parameters at the top level;
    ``sample_index`` is not sent)."""
    kw = create_kwargs(endpoint, req)
    extra = kw.pop("extra_body", None) or {}
    return {**kw, **extra}


def batch_line(endpoint: Endpoint, req: ChatRequest, key: str | None = None) -> dict:
    """Return the Batch API input line of ``req``; its ``custom_id`` is the cache key."""
    return {"custom_id": key or request_key(endpoint, req), "method": "POST", "url": BATCH_URL,
            "body": request_body(endpoint, req)}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "model"


def uncached(endpoint: Endpoint, requests: Iterable[ChatRequest], cache: ResponseCache | None
             ) -> dict[str, ChatRequest]:
    """Return ``{key: request}`` (first request per key, in input order) for the requests
    whose response is not in ``cache`` (all of them when ``cache`` is None). A stored body
    that cannot be read counts as not cached, as in :func:`depsim.client.acomplete`."""
    todo: dict[str, ChatRequest] = {}
    for req in requests:
        todo.setdefault(request_key(endpoint, req), req)
    if cache is not None and todo:
        for key, body in cache.get_many(todo).items():
            try:
                parse_body(body)
            except MalformedResponse:
                continue
            del todo[key]
    return todo


def write_batch_files(endpoint: Endpoint, requests: Iterable[ChatRequest], cache: ResponseCache | None,
                      out_dir: str | Path, max_per_file: int = MAX_PER_FILE, *,
                      max_bytes: int = MAX_FILE_BYTES) -> list[Path]:
    """Write the requests whose responses are not cached as Batch API JSONL files in
    ``out_dir``; return their paths (none when everything is cached).

    Identical requests (same cache key) are written once; every line's ``custom_id`` is its
    cache key. All lines use ``endpoint.model`` (one model per file). A file holds at most
    ``max_per_file`` lines and ``max_bytes`` bytes; files are named
    ``<model>-<00000>.jsonl`` and written atomically (a temp file, then a rename)."""
    if not 0 < max_per_file <= MAX_PER_FILE:
        raise ValueError(f"max_per_file must be in 1..{MAX_PER_FILE}, got {max_per_file}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = uncached(endpoint, requests, cache)
    paths: list[Path] = []
    lines: list[bytes] = []
    size = 0

    def flush() -> None:
        nonlocal lines, size
        if not lines:
            return
        path = out_dir / f"{_slug(endpoint.model)}-{len(paths):05d}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_bytes(b"".join(lines))
        os.replace(tmp, path)
        paths.append(path)
        lines, size = [], 0

    for key, req in todo.items():
        data = (json.dumps(batch_line(endpoint, req, key), ensure_ascii=False, separators=(",", ":"),
                           allow_nan=False) + "\n").encode("utf-8")
        if len(data) > max_bytes:
            raise ValueError(f"item {req.item_id}: one request is {len(data)} bytes, over max_bytes={max_bytes}")
        if len(lines) >= max_per_file or size + len(data) > max_bytes:
            flush()
        lines.append(data)
        size += len(data)
    flush()
    log.info("wrote %d uncached requests to %d batch file(s) in %s", len(todo), len(paths), out_dir)
    return paths


# ---------------------------------------------------------------------------------------
# submit


def open_batch_client(endpoint: Endpoint, *, max_retries: int = 5, timeout_s: float = 600.0) -> openai.OpenAI:
    """Return a synchronous ``openai.OpenAI`` client for the endpoint's Files and Batches
    API (the client's own retries on: these are a few control calls, not the request loop)."""
    if endpoint.base_url.startswith("sim://"):
        raise ValueError("the simulated world (sim://) has no Batch API; use depsim.client.complete")
    return openai.OpenAI(base_url=endpoint.base_url, api_key=api_key(endpoint), max_retries=max_retries,
                         timeout=timeout_s)


def _state_path(path: Path) -> Path:
    return path.with_name(path.name + ".batch.json")


def _custom_ids(path: Path) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line)["custom_id"])
    return out


def _ids_in(path: Path) -> set[str]:
    ids = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                ids.add(json.loads(line)["custom_id"])
            except (ValueError, KeyError, TypeError):
                pass  # import_results reports unreadable lines
    return ids


def _download(client: openai.OpenAI, path: Path, batch) -> list[Path]:
    """Download a finished batch's output and error files next to ``path``; lines of the
    input that are in neither (a failed validation, an expired or cancelled batch) go into
    ``<stem>.missing.jsonl`` as error lines, so no request goes unreported."""
    got: list[Path] = []
    for file_id, suffix in ((batch.output_file_id, ".output.jsonl"), (batch.error_file_id, ".errors.jsonl")):
        if file_id:
            dest = path.with_name(path.stem + suffix)
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.write_bytes(client.files.content(file_id).content)
            os.replace(tmp, dest)
            got.append(dest)
    seen = set().union(*(_ids_in(p) for p in got)) if got else set()
    missing = [cid for cid in _custom_ids(path) if cid not in seen]
    miss_path = path.with_name(path.stem + ".missing.jsonl")
    if missing:
        why = "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "")
                        for e in ((batch.errors.data or []) if batch.errors else []))
        message = f"no result: batch {batch.id} ended {batch.status}" + (f" ({why})" if why else "")
        with open(miss_path, "w", encoding="utf-8") as f:
            for cid in missing:
                f.write(json.dumps({"custom_id": cid, "response": None,
                                    "error": {"code": f"batch_{batch.status}", "message": message}}) + "\n")
        got.append(miss_path)
    elif miss_path.exists():
        miss_path.unlink()  # stale, from an earlier attempt
    return got


def submit_and_wait(endpoint: Endpoint, files: Iterable[str | Path], poll_s: float = 30.0,
                    timeout_s: float = 24 * 3600.0, *, client: openai.OpenAI | None = None,
                    metadata: dict[str, str] | None = None) -> list[Path]:
    """Upload each batch file (``files.create(purpose="batch")``), start a batch on it
    (``batches.create(endpoint="/v1/chat/completions", completion_window="24h")``), poll
    ``batches.retrieve`` every ``poll_s`` seconds until every batch has ended, then download
    the output and error files (``files.content``) next to the input files. Returns the
    result JSONL paths, for :func:`import_results`:

    - ``<stem>.output.jsonl``: the output file (successes, and failures where the server
      writes them there);
    - ``<stem>.errors.jsonl``: the error file, when the batch has one;
    - ``<stem>.missing.jsonl``: an error line for every input line that came back in
      neither (the batch failed validation, expired or was cancelled).

    The batch id of each file is kept in ``<file>.batch.json`` until its results are
    downloaded: after a crash or a :class:`BatchTimeoutError`, calling again with the same
    (unchanged) files resumes waiting on the same batches instead of submitting them again.
    ``client``: an ``openai.OpenAI`` to use (default: :func:`open_batch_client`)."""
    files = [Path(p) for p in files]
    if not files:
        return []
    client = client or open_batch_client(endpoint)
    pending: dict[Path, str] = {}
    for path in files:
        digest = file_sha256(path)
        state_path = _state_path(path)
        if state_path.exists():
            state = json.loads(state_path.read_text())
            if state.get("sha256") == digest and state.get("base_url") == mask_url(endpoint.base_url):
                pending[path] = state["batch_id"]
                log.info("%s: resuming batch %s", path.name, state["batch_id"])
                continue
        with open(path, "rb") as f:
            uploaded = client.files.create(file=(path.name, f), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint=BATCH_URL, completion_window="24h",
                                      metadata={"source": "depsim", "file": path.name[:500], **(metadata or {})})
        tmp = state_path.with_name(state_path.name + ".tmp")
        tmp.write_text(json.dumps({"batch_id": batch.id, "input_file_id": uploaded.id, "sha256": digest,
                                   "base_url": mask_url(endpoint.base_url), "submitted_at": time.time()}))
        os.replace(tmp, state_path)
        pending[path] = batch.id
        log.info("%s: submitted as batch %s", path.name, batch.id)

    deadline = time.monotonic() + timeout_s
    out: dict[Path, list[Path]] = {}
    while True:
        for path, batch_id in list(pending.items()):
            batch = client.batches.retrieve(batch_id)
            if batch.status in TERMINAL:
                out[path] = _download(client, path, batch)
                _state_path(path).unlink(missing_ok=True)
                del pending[path]
                counts = batch.request_counts
                log.info("%s: batch %s %s (%s)", path.name, batch_id, batch.status,
                         counts.model_dump() if counts else "no counts")
        if not pending:
            break
        if time.monotonic() >= deadline:
            ids = {str(p): b for p, b in pending.items()}
            raise BatchTimeoutError(f"{len(ids)} batch(es) still running after {timeout_s:g} s: {ids}; call "
                                    f"submit_and_wait again with the same files to keep waiting", ids)
        time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
    return [p for path in files for p in out[path]]


# ---------------------------------------------------------------------------------------
# import


def _error_reason(line: dict) -> str:
    """A one-line reason for a failed result line (Batch API or vLLM shape)."""
    resp = line.get("response") or {}
    status = resp.get("status_code") if isinstance(resp, dict) else None
    err = line.get("error")
    body = resp.get("body") if isinstance(resp, dict) else None
    if not err and isinstance(body, dict):
        err = body.get("error")
    if isinstance(err, dict) and isinstance(err.get("error"), dict):  # vLLM's ErrorResponse
        err = err["error"]
    if isinstance(err, dict):
        text = ": ".join(str(x) for x in (err.get("code") or err.get("type"), err.get("message")) if x)
    else:
        text = str(err) if err else ""
    head = f"http {status}" if status is not None else "batch error"
    return f"{head}: {redact(text)[:300]}" if text else head  # key-like tokens and URL credentials removed


def import_results(paths: Iterable[str | Path], cache: ResponseCache, *,
                   expected: Iterable[str] | None = None, endpoint: Endpoint | None = None) -> dict:
    """Read Batch API result lines (output, error or vLLM ``run_batch`` files; any order) and
    store every successful ``response.body`` in ``cache`` under its ``custom_id``.

    Returns a report (nothing is dropped silently)::

        {"lines": result lines read, "succeeded": custom_ids with a usable response,
         "imported": of those, newly stored, "already_cached": of those, already stored,
         "failed": custom_ids with only error lines, "errors": {custom_id: reason},
         "unreadable": lines that are not JSON result lines, "unreadable_lines": ["file:line", ...],
         "unexpected": custom_ids not in ``expected`` (not imported),
         "missing": expected custom_ids with no result line at all, "missing_ids": [...]}

    A success is a line with ``response.status_code`` 200 and a chat.completion body that
    has a message; anything else is an error with a reason (``"http 400: ..."``, ``"http
    200: malformed body ..."``, ``"batch error: batch_expired: ..."``). When a custom_id has
    both (e.g. results of a retried batch), the success wins. Failed requests are not
    cached, so a later :func:`~depsim.client.complete` sends them live. ``expected``: the
    exported custom_ids (e.g. from :func:`uncached`); when given, lines for other ids are
    counted as unexpected and not imported, and expected ids without a line are reported as
    missing. ``endpoint``: the batch's endpoint, whose secrets (:func:`depsim.client.secrets_of`)
    are redacted from every body before it is cached."""
    want = set(expected) if expected is not None else None
    ok: dict[str, dict] = {}
    errors: dict[str, str] = {}
    unreadable: list[str] = []
    unexpected: set[str] = set()
    n_lines = 0
    for path in map(Path, paths):
        with open(path, encoding="utf-8") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                n_lines += 1
                try:
                    line = json.loads(raw)
                    cid = line["custom_id"]
                    if not isinstance(cid, str):
                        raise TypeError("custom_id is not a string")
                except (ValueError, KeyError, TypeError):
                    unreadable.append(f"{path}:{lineno}")
                    continue
                if want is not None and cid not in want:
                    unexpected.add(cid)
                    continue
                if cid in ok:
                    continue
                resp = line.get("response")
                body = resp.get("body") if isinstance(resp, dict) else None
                if isinstance(resp, dict) and resp.get("status_code") == 200 and not line.get("error"):
                    try:
                        parse_body(body)
                    except MalformedResponse as e:
                        errors[cid] = f"http 200: malformed body ({e})"[:300]
                        continue
                    # the endpoint's own secrets never reach the cache, as with live answers
                    ok[cid] = scrub(body, secrets_of(endpoint)) if endpoint is not None else body
                    errors.pop(cid, None)
                else:
                    errors[cid] = _error_reason(line)
    stored = cache.get_many(ok) if ok else {}
    new = [(k, v) for k, v in ok.items() if k not in stored]
    for i in range(0, len(new), IMPORT_CHUNK):
        cache.put_many(new[i:i + IMPORT_CHUNK])
    missing = sorted(want - ok.keys() - errors.keys()) if want is not None else []
    report = {"lines": n_lines, "succeeded": len(ok), "imported": len(new), "already_cached": len(ok) - len(new),
              "failed": len(errors), "errors": errors, "unreadable": len(unreadable),
              "unreadable_lines": unreadable, "unexpected": len(unexpected), "missing": len(missing),
              "missing_ids": missing}
    if errors or unreadable or unexpected or missing:
        log.warning("batch import: %d failed, %d unreadable lines, %d unexpected, %d missing (of %d lines)",
                    len(errors), len(unreadable), len(unexpected), len(missing), n_lines)
    return report


def run_batch(endpoint: Endpoint, requests: list[ChatRequest], cache: ResponseCache, out_dir: str | Path, *,
              poll_s: float = 30.0, timeout_s: float = 24 * 3600.0, max_per_file: int = MAX_PER_FILE,
              client: openai.OpenAI | None = None) -> dict:
    """Export the uncached requests, run them through the endpoint's Batch API and import
    the results: :func:`write_batch_files`, :func:`submit_and_wait`, :func:`import_results`
    in one call. Returns the import report plus ``"files"`` (the input files written).
    Afterwards ``complete(endpoint, requests, cache)`` serves the successes from the cache."""
    expected = uncached(endpoint, requests, cache)
    files = write_batch_files(endpoint, requests, cache, out_dir, max_per_file)
    outputs = submit_and_wait(endpoint, files, poll_s, timeout_s, client=client)
    report = import_results(outputs, cache, expected=expected, endpoint=endpoint)
    report["files"] = [str(p) for p in files]
    return report
