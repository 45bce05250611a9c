"""Shared fixtures: a small release that runs the whole pipeline in seconds, and the real
servers the tests talk to (a fake OpenAI-compatible server, a fake Batch API server, and
llama.cpp's server with SmolLM2). ``tests/`` is on ``sys.path`` (``pythonpath`` in
pyproject.toml), so helper modules import by name."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from batch_server import batch_server  # noqa: F401  (fixture)
from fake_openai_server import fake_server  # noqa: F401  (fixture)
from llama_server import llama_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = "<script>document.title='PWNED'</script>"


def small_release(folder: Path, name: str = "small", previous: dict | None = None,
                  candidate: dict | None = None) -> Path:
    """Write a small release params file (and its taxonomy) into ``folder``; return its path.
    ``previous`` / ``candidate``: a real source for that pool; the production model of that
    pool then answers in the simulated world (its logged answers are real text, which the
    simulated world's graders cannot read)."""
    for fname in ("taxonomy.yaml", "history.csv"):
        shutil.copyfile(ROOT / "params" / fname, folder / fname)
    shutil.copytree(ROOT / "params" / "validation", folder / "validation", dirs_exist_ok=True)  # grading.validation
    text = (ROOT / "params" / "demo.yaml").read_text()
    text = (text.replace("release: demo", f"release: {name}")
                .replace("conversations: 8000", "conversations: 1500")
                .replace("challenging: 1000 ", "challenging: 200 ")
                .replace("n: 4000", "n: 400")
                .replace("sample: 2000", "sample: 300")
                .replace("llm_sample: 200", "llm_sample: 80")
                .replace("fidelity_n: 800", "fidelity_n: 200"))
    judge = '  judge: {base_url: "sim://world/resample", model: sim-judge}'
    for pool, src, deployment, role, model in (("previous", previous, "Y", "previous_production", "sim-y"),
                                                ("candidate", candidate, "X", "candidate_production", "sim-x")):
        if src is not None:
            text = text.replace(f"{pool}: {{kind: sim_world, deployment: {deployment}}}", f"{pool}: {json.dumps(src)}")
            text = text.replace(judge, f'{judge}\n  {role}: {{base_url: "sim://world/production", model: {model}}}', 1)
    p = folder / f"{name}.yaml"
    p.write_text(text)
    return p


def payload_conversations(path: Path, n: int = 60) -> Path:
    """Write a conversation table whose user text carries a <script> payload."""
    rows = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"Please debug this function {PAYLOAD} #{i}"},
                {"role": "assistant", "content": f"It fails because {PAYLOAD} runs first."},
                {"role": "user", "content": f"Still broken: {PAYLOAD}"},
                {"role": "assistant", "content": "Try escaping it."}]
        rows.append({"conversation_id": f"p{i}", "messages": json.dumps(msgs), "source": "test", "model": "sim-y",
                     "language": "en", "surface": "chat", "created_at": pd.Timestamp("2026-10-01"),
                     "intent": "coding"})
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


@pytest.fixture
def small_params(tmp_path):
    return small_release(tmp_path)
