"""A key pasted where the name of its environment variable belongs is refused without being
echoed, by load_release and by `depsim check`."""
import os
import subprocess
import sys

import pytest

from depsim.params import ParamsError, load_release, looks_like_key
from conftest import small_release

CANARY = "sk-proj-CANARY9f8e7d6c5b4a3210"


@pytest.mark.parametrize("value, is_key", [("OPENAI_API_KEY", False), ("MY_KEY", False), ("HF_TOKEN", False),
                                           ("LLAMA_SERVER_KEY_2", False), (CANARY, True), ("hf_abcdefgh", True),
                                           ("a8f9d8s7f6a5s4d3f2g1h0j9k8", True), ("my key", True)])
def test_looks_like_key(value, is_key):
    assert looks_like_key(value) is is_key


def test_a_pasted_key_is_refused_without_echo(tmp_path):
    p = small_release(tmp_path)
    text = p.read_text()
    assert "grader: {" in text
    p.write_text(text.replace("grader: {", f"grader: {{api_key_env: {CANARY}, ", 1))
    with pytest.raises(ParamsError) as e:
        load_release(p)
    assert "looks like an API key" in str(e.value) and CANARY not in str(e.value)
    out = subprocess.run([sys.executable, "-m", "depsim.cli", "check", str(p)], capture_output=True, text=True)
    assert out.returncode != 0 and "looks like an API key" in out.stderr
    assert CANARY not in out.stdout + out.stderr


def test_check_fails_when_the_key_of_a_called_model_is_not_in_the_environment():
    """`depsim check` says which variable is missing (one line each, never a value) instead of
    "ok" and a run that fails at its first model call; --no-env validates the file alone."""
    def check(*args, **env):
        base = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        return subprocess.run([sys.executable, "-m", "depsim.cli", "check", "params/example-openai.yaml", "--no-data",
                               *args], capture_output=True, text=True, env={**base, **env})
    for out in (check(), check(OPENAI_API_KEY="")):
        assert out.returncode == 1 and "ok" not in out.stdout
        assert out.stderr.strip().splitlines() == [
            "depsim: error: params/example-openai.yaml: environment variable OPENAI_API_KEY is not set or empty: "
            "it holds the API key of models.candidate (gpt-4.1-mini), models.grader (gpt-4.1)"]
    out = check(OPENAI_API_KEY=CANARY)
    assert out.returncode == 0 and "ok (release example-openai" in out.stdout
    assert CANARY not in out.stdout + out.stderr
    out = check("--no-env")
    assert out.returncode == 0 and "ok (release example-openai" in out.stdout
