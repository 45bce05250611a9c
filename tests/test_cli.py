"""The `depsim convert` and `depsim check` commands: exit codes and messages a user sees."""
import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from conftest import small_release
from depsim.cli import app


def _lines(path: Path, ids, lang="en"):
    path.write_text("".join(json.dumps({"id": i, "language": lang, "messages": [
        {"role": "user", "content": f"Tell me about {i}"}, {"role": "assistant", "content": "Sure."}]}) + "\n"
                            for i in ids))
    return path


def test_depsim_check_exits_nonzero_with_the_diagnosis(tmp_path):
    _lines(tmp_path / "logs.jsonl", ["c1"], lang=None)
    p = small_release(tmp_path, previous={"kind": "openai_jsonl", "path": "logs.jsonl"})
    res = CliRunner().invoke(app, ["check", str(p), "--reports-dir", str(tmp_path / "reports")])
    assert res.exit_code == 1, res.output
    assert "language is null in all 1 conversations" in res.output
    res = CliRunner().invoke(app, ["check", str(p), "--no-data"])
    assert res.exit_code == 0 and "ok" in res.output


def test_convert_exits_nonzero_when_everything_is_quarantined(tmp_path):
    _lines(tmp_path / "logs.jsonl", ["c1", "c2"])
    res = CliRunner().invoke(app, ["convert", str(tmp_path / "logs.jsonl"), "-f", "wildchat", "-o",
                                   str(tmp_path / "out.parquet"), "--quarantine", str(tmp_path / "q.jsonl")])
    assert res.exit_code == 1
    assert "no record kept: all 2 quarantined (missing_field 2)" in res.output


def test_convert_refuses_to_overwrite_its_input(tmp_path):
    src = _lines(tmp_path / "logs.jsonl", ["c1"])
    before = src.read_text()
    res = CliRunner().invoke(app, ["convert", str(src), "-f", "openai_jsonl", "-o", str(src)])
    assert res.exit_code == 2 and "would overwrite an input file" in res.output
    assert src.read_text() == before


def test_convert_reads_a_toxicchat_like_file_without_jq(tmp_path):
    src = tmp_path / "toxicchat.json"
    src.write_text(json.dumps({"instances": [{"conv_id": "t1", "user_input": "hi", "model_output": "hello",
                                              "toxicity": 0}]}))
    out = tmp_path / "out.parquet"
    res = CliRunner().invoke(app, ["convert", str(src), "-f", "openai_jsonl", "-o", str(out), "--json-path",
                                   "instances", "--map", "id=conv_id", "--map", "prompt=user_input",
                                   "--map", "response=model_output", "--column", "toxicity", "--no-meta"])
    assert res.exit_code == 0, res.output
    assert "1 conversations from 1 records" in res.output
    df = pd.read_parquet(out)
    assert df["conversation_id"].tolist() == ["t1"] and "meta" not in df and df["toxicity"].tolist() == ["0"]
