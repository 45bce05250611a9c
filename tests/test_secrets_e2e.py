"""A canary key that a server's 401 body echoes, and canary credentials in an endpoint's URL,
appear in no table, notebook, HTML page, log or output of a whole `depsim run`."""
import os
import subprocess
import sys

import pandas as pd

from conftest import small_release

KEY = "sk-canary-KEY-5e8d1c7a9b3f2046"
PASSWORD = "canaryPW7781"


def _files_holding(root, needles):
    hits = []
    for path in root.rglob("*"):
        if not path.is_file() or path.name.endswith(".answer-secret"):
            continue
        if path.suffix == ".parquet":  # compressed: read the values, not the bytes
            text = pd.read_parquet(path).astype(str).to_csv()
        else:
            text = path.read_bytes().decode("utf-8", errors="replace")
        hits += [f"{path.relative_to(root)}: {n}" for n in needles if n in text]
    return hits


def test_canaries_reach_no_table_notebook_page_or_log(fake_server, tmp_path):
    fake_server.error_body = (401, {"error": {"message": f"Incorrect API key provided: {KEY}. Request to "
                                                         f"http://alice:{PASSWORD}@host was refused.",
                                              "type": "invalid_request_error", "code": "invalid_api_key"}})
    params = small_release(tmp_path, "canary")
    url = fake_server.url.replace("http://", f"http://alice:{PASSWORD}@")
    text = params.read_text()
    old = 'auditor: {base_url: "sim://world/resample", model: sim-auditor}'
    assert old in text
    params.write_text(text.replace(old, f'auditor: {{base_url: "{url}", model: real-auditor, api_key_env: CANARY_KEY}}'))
    reports = tmp_path / "reports"
    env = {**os.environ, "CANARY_KEY": KEY, "DEPSIM_PROGRESS": "0"}
    run = subprocess.run([sys.executable, "-m", "depsim.cli", "run", str(params), "--reports-dir", str(reports),
                          "--render", "nbconvert"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert fake_server.log, "the auditor's server was never called"
    findings = pd.read_parquet(next(reports.rglob("findings.parquet")))
    assert findings["error"].str.startswith("http 401: Incorrect API key provided: [REDACTED]").all()
    assert list(reports.rglob("*.html")) and list(reports.rglob("*.ipynb"))
    assert _files_holding(reports, [KEY, PASSWORD]) == []
    assert KEY not in run.stdout + run.stderr and PASSWORD not in run.stdout + run.stderr
