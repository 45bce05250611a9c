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
    assert "wrong --format? (`--format wildchat` reads" in res.output


def test_a_file_in_windows_1252_is_diagnosed_as_an_encoding_problem_not_a_format(tmp_path):
    src = tmp_path / "logs.jsonl"
    src.write_bytes("".join(f'{{"id": "c{i}", "messages": [{{"role": "user", "content": "caf\u00e9 \u201cno\u201d"}}]}}\n'
                            for i in range(3)).encode("cp1252"))
    res = CliRunner().invoke(app, ["convert", str(src), "-f", "openai_jsonl", "-o", str(tmp_path / "out.parquet"),
                                   "--quarantine", str(tmp_path / "q.jsonl")])
    assert res.exit_code == 1
    assert "(not_utf8 3): the file is not UTF-8 (Windows-1252 or Latin-1?)" in res.output
    assert "wrong --format" not in res.output


def test_convert_refuses_to_overwrite_its_input(tmp_path):
    src = _lines(tmp_path / "logs.jsonl", ["c1"])
    before = src.read_text()
    res = CliRunner().invoke(app, ["convert", str(src), "-f", "openai_jsonl", "-o", str(src)])
    assert res.exit_code == 2 and "would overwrite an input file" in res.output
    assert src.read_text() == before


def test_convert_output_paths_that_cannot_work_get_one_line(tmp_path):
    src = _lines(tmp_path / "logs.jsonl", ["c1"])
    (tmp_path / "adir").mkdir()
    res = CliRunner().invoke(app, ["convert", str(src), "-f", "openai_jsonl", "-o", str(tmp_path / "adir")])
    assert res.exit_code == 2 and "the output is a folder; give a file path" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    same = tmp_path / "same.parquet"
    res = CliRunner().invoke(app, ["convert", str(src), "-f", "openai_jsonl", "-o", str(same), "--quarantine", str(same)])
    assert res.exit_code == 2 and "the output and the quarantine file are the same file" in res.output
    assert not same.exists()
    res = CliRunner().invoke(app, ["convert", str(src), "-f", "openai_jsonl", "-o", str(tmp_path / "m.parquet"),
                                   "--memory-limit", "lots"])
    assert res.exit_code == 2 and "memory limit 'lots' is not a size such as 4GB" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "m.parquet").exists()


def test_a_conversion_that_keeps_nothing_leaves_an_earlier_output_alone(tmp_path):
    good = _lines(tmp_path / "logs.jsonl", ["c1", "c2", "c3"])
    out, q = tmp_path / "out.parquet", tmp_path / "q.jsonl"
    assert CliRunner().invoke(app, ["convert", str(good), "-f", "openai_jsonl", "-o", str(out),
                                    "--quarantine", str(q)]).exit_code == 0
    before = out.read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"conversation": []}\n')  # not this format: quarantined
    res = CliRunner().invoke(app, ["convert", str(bad), "-f", "openai_jsonl", "-o", str(out), "--quarantine", str(q)])
    assert res.exit_code == 1 and "no record kept" in res.output
    assert f"{out} was left as it was" in res.output
    assert out.read_bytes() == before and len(pd.read_parquet(out)) == 3


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


def test_a_misspelt_column_is_named_in_a_note(tmp_path):
    src = tmp_path / "logs.jsonl"
    src.write_text("".join(json.dumps({"id": i, "toxicity": t, "messages": [{"role": "user", "content": "hi"}]}) + "\n"
                           for i, t in (("c1", None), ("c2", 1))))
    out = tmp_path / "out.parquet"
    res = CliRunner().invoke(app, ["convert", str(src), "-f", "openai_jsonl", "-o", str(out), "--column", "toxcity",
                                   "--column", "toxicity"])
    assert res.exit_code == 0, res.output
    assert "Column 'toxcity' (--column) is null in every row" in res.output
    assert "Column 'toxicity'" not in res.output and pd.read_parquet(out)["toxicity"].isna().tolist() == [True, False]


def test_run_with_quarto_missing_fails_before_any_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no quarto (the kernel is never started)
    p = small_release(tmp_path)
    res = CliRunner().invoke(app, ["run", str(p), "--render", "quarto", "--reports-dir", str(tmp_path / "r")])
    assert res.exit_code == 2 and "quarto is not on PATH; use --render nbconvert" in res.output
    assert "running" not in res.output  # said before anything runs (researcher audit)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*.ipynb"))


def test_render_of_a_run_that_stopped_says_so(tmp_path):
    d = tmp_path / "r" / "mini"
    d.mkdir(parents=True)
    res = CliRunner().invoke(app, ["render", str(d)])
    assert res.exit_code == 2 and "no executed notebooks here" in res.output
    for stem in ("01_sample", "02_simulate"):
        (d / f"{stem}.ipynb").write_text("{}")
    res = CliRunner().invoke(app, ["render", str(d)])
    assert res.exit_code == 2 and "the run stopped after 01_sample, 02_simulate" in res.output
    # the runner kept the failed run of the next stage: it is named, with the command that resumes there
    (d / "03_audit.failed.ipynb").write_text("{}")
    res = CliRunner().invoke(app, ["render", str(d)])
    assert res.exit_code == 2, res.output
    assert f"the run stopped after 01_sample, 02_simulate (03_audit failed: {d / '03_audit.failed.ipynb'})" in res.output
    assert f"--from audit --reports-dir {d.parent.resolve()}" in res.output.replace("\n", "")


def test_depsim_check_reads_the_history_rows(tmp_path):
    p = small_release(tmp_path)
    h = pd.read_csv(tmp_path / "history.csv", dtype=str)
    h.loc[8, "n_real"] = "4,000"                                     # a thousands separator: line 10
    h.to_csv(tmp_path / "history.csv", index=False)
    res = CliRunner().invoke(app, ["check", str(p), "--no-data", "--no-env"])
    assert res.exit_code == 2 and "history.csv:10: column n_real: '4,000' is not a number" in res.output


def test_record_appends_a_scored_release_to_the_history_once(tmp_path):
    from depsim.history import COLUMNS, load_history
    from depsim.records import write_table
    p = small_release(tmp_path)
    hist = tmp_path / "history.csv"
    before = load_history(hist)
    last = before[before["release"] == before["release"].iloc[-1]]
    # a score stage's table: the forecasts with their realised counts (and more columns)
    scored = last.drop(columns="release").assign(nll=1.0, k_real=lambda d: d["k_real"].astype(float))
    scored.loc[scored.index[0], ["k_real", "n_real"]] = float("nan")        # not realised: left out
    write_table(scored, tmp_path / "reports", "small", "scores")
    args = ["record", str(p), "--reports-dir", str(tmp_path / "reports")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and f"recorded release small ({len(last) - 1} rows)" in res.output, res.output
    after = load_history(hist)
    assert len(after) == len(before) + len(last) - 1 and list(after.columns) == COLUMNS
    res = CliRunner().invoke(app, args)                                       # twice: refused
    assert res.exit_code == 2 and "release 'small' is already recorded" in res.output
    assert CliRunner().invoke(app, args + ["--replace"]).exit_code == 0
    assert len(load_history(hist)) == len(after)                              # replaced, not added
    res = CliRunner().invoke(app, ["record", "params/public-hh-rlhf.yaml", "--reports-dir", str(tmp_path / "r")])
    assert res.exit_code == 2 and "stand-in" in res.output                   # never a stand-in's counts


def test_depsim_check_stops_at_a_rule_grader_whose_regex_does_not_compile(tmp_path):
    p = small_release(tmp_path)
    tax = tmp_path / "taxonomy.yaml"
    tax.write_text(tax.read_text().replace("pattern: 'Journal of Applied Outcomes|", "pattern: '(Journal of Applied Outcomes|", 1))
    line = next(i for i, l in enumerate(tax.read_text().splitlines(), 1) if "'(Journal" in l)
    res = CliRunner().invoke(app, ["check", str(p), "--no-data", "--no-env"])
    assert res.exit_code == 2, res.output
    assert (f"{tax}:{line}: categories.fabricated_facts.grader.pattern: invalid regex: missing ), unterminated "
            "subpattern at position 0 of '(Journal of Applied Outcomes|") in res.output


def test_run_of_a_missing_params_file_says_so_before_running_anything(tmp_path):
    res = CliRunner().invoke(app, ["run", str(tmp_path / "nope.yaml"), "--reports-dir", str(tmp_path / "r")])
    assert res.exit_code == 2 and f"{tmp_path / 'nope.yaml'}: file not found" in res.output
    assert "running" not in res.output and not (tmp_path / "r").exists()


def test_convert_map_takes_comma_separated_pairs_as_validate_grader_does(tmp_path):
    # README shows `--map prompt=question,response=answer` for validate-grader; convert's --map
    # read the same spelling as one field named "user_input,response=model_output"
    src = tmp_path / "toxicchat.json"
    src.write_text(json.dumps({"instances": [{"conv_id": "t1", "user_input": "hi", "model_output": "hello"}]}))
    out = tmp_path / "out.parquet"
    res = CliRunner().invoke(app, ["convert", str(src), "-f", "openai_jsonl", "-o", str(out), "--json-path",
                                   "instances", "--map", "id=conv_id,prompt=user_input,response=model_output"])
    assert res.exit_code == 0, res.output
    msgs = json.loads(pd.read_parquet(out)["messages"].iloc[0])
    assert [(m["role"], m["content"]) for m in msgs] == [("user", "hi"), ("assistant", "hello")]
    res = CliRunner().invoke(app, ["convert", str(src), "-f", "openai_jsonl", "-o", str(out), "--map", "prompt"])
    assert res.exit_code == 2 and "'prompt' is not KEY=VALUE" in res.output


def test_grader_prompt_finds_the_shipped_taxonomy_from_any_folder(tmp_path, monkeypatch):
    # validate-grader's --taxonomy default is the repository's file; grader-prompt's was
    # relative to the working folder, so it failed anywhere but the repository root
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["grader-prompt", "violence"])
    assert res.exit_code == 0, res.output
    assert "# Category: violence" in res.output


def test_record_says_a_release_without_a_post_release_pool_has_nothing_to_record(tmp_path):
    # a release with no prod_new target had "scores.parquet is missing: run 06_score first",
    # though 06_score had run: there is nothing realised to record until after release
    p = small_release(tmp_path)
    text = p.read_text().replace("targets: [sim, sim_self, challenging, prod_prev, prod_new]", "targets: [sim, challenging]")
    assert text != p.read_text()
    p.write_text(text.replace("  candidate: {kind: sim_world, deployment: X}\n", ""))
    res = CliRunner().invoke(app, ["record", str(p), "--reports-dir", str(tmp_path / "reports")])
    assert res.exit_code == 2 and "Not released yet" in res.output and "prod_new" in res.output, res.output
    assert "run 06_score first" not in res.output


def test_convert_without_quarantine_names_a_wrong_format_at_the_first_record(tmp_path):
    # with --quarantine the command said "wrong --format?", without it only the field (researcher audit)
    src = tmp_path / "x.jsonl"
    src.write_text('{"id": "a", "messages": [{"role": "user", "content": "hi"}]}\n'
                   '{"id": "b", "messages": [{"role": "user", "content": "yo"}]}\n')
    res = CliRunner().invoke(app, ["convert", str(src), "--format", "sharegpt", "--out", str(tmp_path / "o.parquet")])
    assert res.exit_code == 2
    assert f"{src}:1: missing required field 'conversations': wrong --format? (`--format sharegpt` reads" in res.output
    res = CliRunner().invoke(app, ["convert", str(src), "--format", "sharegpt", "--out", str(tmp_path / "o.parquet"),
                                   "--quarantine", str(tmp_path / "q.jsonl")])
    assert res.exit_code == 1 and "were left out" not in res.output  # no note about fields of nothing kept
