"""A local OpenAI Batch API server on 127.0.0.1 (real HTTP, stdlib ThreadingHTTPServer).

Endpoints (the minimum the openai client's Files/Batches calls need):

- ``POST /v1/files`` (multipart: ``purpose``, ``file``) -> a file object;
- ``GET /v1/files/{id}/content`` -> the file's bytes;
- ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window``) -> a batch;
- ``GET /v1/batches/{id}``: each retrieve moves the batch one step, after
  ``polls_per_step`` retrieves per step: ``validating`` -> ``in_progress`` -> ``completed``
  (or ``failed`` when validation fails: bad JSON, duplicate custom_id, several models, more
  than ``max_lines`` lines, a url other than /v1/chat/completions);
- ``POST /v1/chat/completions``: answered like the fake server, and logged in ``chat_log``
  (a test asserts that nothing is sent live after an import).

Each input line is answered with :func:`fake_openai_server.completion` of its body (a
deterministic chat.completion), except lines whose last message contains

- ``FAIL_400``: an error-file line with ``response.status_code`` 400 and an error body;
- ``FAIL_INTERNAL``: an error-file line with ``response: null`` and an ``error`` object;
- ``LOSE_ME``: no line in either file (as when a batch expires part-way).

Output and error lines are shuffled (seeded) as the Batch API does not keep input order.
``processed`` counts how many times each custom_id was answered.
"""
from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fake_openai_server import completion


def parse_multipart(content_type: str, data: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``{field name: (filename or None, bytes)}`` of a multipart/form-data body."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise ValueError("no multipart boundary")
    sep = b"--" + m.group(1).encode()
    out = {}
    for part in data.split(sep)[1:]:
        if part.startswith(b"--"):
            break
        head, _, body = part.partition(b"\r\n\r\n")
        disp = next((h for h in head.decode("utf-8", "replace").split("\r\n")
                     if h.lower().startswith("content-disposition")), "")
        name = re.search(r'\bname="([^"]*)"', disp)
        filename = re.search(r'\bfilename="([^"]*)"', disp)
        if name:
            out[name.group(1)] = (filename.group(1) if filename else None, body[:-2] if body.endswith(b"\r\n") else body)
    return out


class BatchServer:
    """The server; ``url`` is the base URL (``http://127.0.0.1:<port>/v1``)."""

    def __init__(self, *, polls_per_step: int = 1, max_lines: int = 50_000, seed: int = 0):
        self.polls_per_step = polls_per_step
        self.max_lines = max_lines
        self.rng = random.Random(seed)
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.statuses: dict[str, list[str]] = {}   # batch id -> statuses returned, in order
        self.processed: Counter = Counter()        # custom_id -> times answered
        self.chat_log: list[dict] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> BatchServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # ------------------------------------------------------------------ state

    def _add_file(self, name: str, purpose: str, data: bytes) -> dict:
        fid = "file-" + uuid.uuid4().hex[:24]
        obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
               "filename": name, "purpose": purpose, "status": "processed"}
        self.files[fid] = {**obj, "data": data}
        return obj

    def _validate(self, data: bytes) -> tuple[list[dict], list[dict]]:
        lines, errors, ids, models = [], [], set(), set()
        for n, raw in enumerate(data.decode("utf-8").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                cid, body = line["custom_id"], line["body"]
            except (ValueError, KeyError, TypeError):
                errors.append({"code": "invalid_json_line", "line": n, "message": "not a JSON request line"})
                continue
            if cid in ids:
                errors.append({"code": "duplicate_custom_id", "line": n, "message": f"duplicate custom_id {cid}"})
            if line.get("url") != "/v1/chat/completions" or line.get("method") != "POST":
                errors.append({"code": "invalid_url", "line": n, "message": "url must be /v1/chat/completions"})
            ids.add(cid)
            models.add(body.get("model"))
            lines.append(line)
        if len(models) > 1:
            errors.append({"code": "mismatched_model", "line": None,
                           "message": f"one model per file; got {sorted(map(str, models))}"})
        if len(lines) > self.max_lines:
            errors.append({"code": "too_many_requests", "line": None,
                           "message": f"{len(lines)} requests; at most {self.max_lines}"})
        return lines, errors

    def _run(self, batch: dict) -> None:
        """Answer every line; write the shuffled output and error files."""
        lines = batch.pop("_lines")
        out, err = [], []
        for line in lines:
            cid, body = line["custom_id"], line["body"]
            last = str((body.get("messages") or [{}])[-1].get("content") or "")
            rid = "req_" + uuid.uuid4().hex[:16]
            if "LOSE_ME" in last:
                continue
            self.processed[cid] += 1
            if "FAIL_400" in last:
                err.append({"id": "batch_req_" + uuid.uuid4().hex[:16], "custom_id": cid,
                            "response": {"status_code": 400, "request_id": rid,
                                         "body": {"error": {"message": "injected bad request",
                                                            "type": "invalid_request_error", "code": None}}},
                            "error": None})
            elif "FAIL_INTERNAL" in last:
                err.append({"id": "batch_req_" + uuid.uuid4().hex[:16], "custom_id": cid, "response": None,
                            "error": {"code": "server_error", "message": "injected internal error"}})
            else:
                out.append({"id": "batch_req_" + uuid.uuid4().hex[:16], "custom_id": cid,
                            "response": {"status_code": 200, "request_id": rid, "body": completion(body)},
                            "error": None})
        self.rng.shuffle(out)
        self.rng.shuffle(err)
        if out:
            batch["output_file_id"] = self._add_file(f"{batch['id']}_output.jsonl", "batch_output",
                                                     "".join(json.dumps(x) + "\n" for x in out).encode())["id"]
        if err:
            batch["error_file_id"] = self._add_file(f"{batch['id']}_error.jsonl", "batch_output",
                                                    "".join(json.dumps(x) + "\n" for x in err).encode())["id"]
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}

    def _advance(self, batch: dict) -> None:
        batch["_polls"] += 1
        if batch["_polls"] < self.polls_per_step or batch["status"] in ("completed", "failed"):
            return
        batch["_polls"] = 0
        now = int(time.time())
        if batch["status"] == "validating":
            lines, errors = self._validate(self.files[batch["input_file_id"]]["data"])
            if errors:
                batch.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
            else:
                batch.update(status="in_progress", in_progress_at=now, _lines=lines,
                             request_counts={"total": len(lines), "completed": 0, "failed": 0})
        elif batch["status"] == "in_progress":
            self._run(batch)
            batch.update(status="completed", finalizing_at=now, completed_at=now)

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    # ------------------------------------------------------------------ HTTP

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def log_message(self, *args):
                pass

            def _send(self, status: int, data: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _json(self, status: int, obj: dict) -> None:
                self._send(status, json.dumps(obj).encode())

            def _not_found(self) -> None:
                self._json(404, {"error": {"message": f"no route {self.command} {self.path}",
                                           "type": "invalid_request_error"}})

            def do_GET(self):
                path = self.path.split("?")[0].rstrip("/")
                with server._lock:
                    if m := re.fullmatch(r"/v1/files/([^/]+)/content", path):
                        f = server.files.get(m.group(1))
                        return self._send(200, f["data"], "application/octet-stream") if f else self._not_found()
                    if m := re.fullmatch(r"/v1/files/([^/]+)", path):
                        f = server.files.get(m.group(1))
                        return self._json(200, {k: v for k, v in f.items() if k != "data"}) if f else self._not_found()
                    if m := re.fullmatch(r"/v1/batches/([^/]+)", path):
                        b = server.batches.get(m.group(1))
                        if b is None:
                            return self._not_found()
                        server._advance(b)
                        server.statuses[b["id"]].append(b["status"])
                        return self._json(200, server._public(b))
                return self._not_found()

            def do_POST(self):
                path = self.path.split("?")[0].rstrip("/")
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server._lock:
                    if path == "/v1/files":
                        parts = parse_multipart(self.headers.get("Content-Type", ""), raw)
                        if "file" not in parts:
                            return self._json(400, {"error": {"message": "no file part"}})
                        name, data = parts["file"]
                        purpose = parts.get("purpose", (None, b""))[1].decode()
                        return self._json(200, server._add_file(name or "upload.jsonl", purpose, data))
                    if path == "/v1/batches":
                        req = json.loads(raw)
                        if req.get("input_file_id") not in server.files:
                            return self._json(400, {"error": {"message": "unknown input_file_id"}})
                        bid = "batch_" + uuid.uuid4().hex[:24]
                        server.batches[bid] = {
                            "id": bid, "object": "batch", "endpoint": req.get("endpoint"),
                            "input_file_id": req["input_file_id"], "completion_window": req.get("completion_window"),
                            "status": "validating", "created_at": int(time.time()),
                            "metadata": req.get("metadata"), "output_file_id": None, "error_file_id": None,
                            "errors": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
                            "_polls": 0}
                        server.statuses[bid] = ["validating"]
                        return self._json(200, server._public(server.batches[bid]))
                    if path == "/v1/chat/completions":
                        body = json.loads(raw)
                        server.chat_log.append(body)
                        return self._json(200, completion(body))
                return self._not_found()

        return Handler


@pytest.fixture
def batch_server():
    """A started :class:`BatchServer`; stopped after the test."""
    srv = BatchServer().start()
    try:
        yield srv
    finally:
        srv.stop()
