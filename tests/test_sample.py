"""Stage 1's source handling (depsim.sample): conversion cache keyed by each input file,
one conversion per file whatever the pools, failing fast with a diagnosis, lifted columns."""
import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import small_release
from depsim import sample
from depsim.params import load_release
from depsim.sample import NoUsableData, build_prefixes, check_sources, converted


def _lines(path: Path, ids, lang="en", topic="a", text="Tell me about {i}"):
    path.write_text("".join(json.dumps({"id": i, "language": lang, "topic": topic, "messages": [
        {"role": "user", "content": text.format(i=i)}, {"role": "assistant", "content": "Sure."}]}) + "\n"
                            for i in ids))
    return path


def _release(tmp_path: Path, previous: dict, candidate: dict | None = None, eligibility: str | None = None):
    p = small_release(tmp_path, previous=previous, candidate=candidate)
    text = p.read_text()
    if eligibility is not None:
        text = text.replace("    languages: [en]\n", eligibility)
    p.write_text(text)
    return load_release(p)


def test_folder_source_cache_sees_a_replaced_shard(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    _lines(logs / "a.jsonl", ["a1", "a2"])
    shard = _lines(logs / "b.jsonl", ["b1"])
    rel = _release(tmp_path, {"kind": "openai_jsonl", "path": "logs"})
    first = converted(rel, "previous", rel.sources.previous, tmp_path / "reports")
    assert sorted(pd.read_parquet(first)["conversation_id"]) == ["a1", "a2", "b1"]
    folder_mtime = os.stat(logs).st_mtime_ns
    time.sleep(0.01)
    _lines(shard, ["b1", "b2"])  # replaced in place: the folder's own timestamp does not change
    os.utime(logs, ns=(folder_mtime, folder_mtime))
    second = converted(rel, "previous", rel.sources.previous, tmp_path / "reports")
    assert second != first
    assert sorted(pd.read_parquet(second)["conversation_id"]) == ["a1", "a2", "b1", "b2"]


def test_double_star_glob_in_params(tmp_path):
    deep = tmp_path / "logs" / "2026" / "10"
    deep.mkdir(parents=True)
    _lines(deep / "x.jsonl", ["x1", "x2"])
    rel = _release(tmp_path, {"kind": "openai_jsonl", "path": "logs/**/*.jsonl"})
    out = converted(rel, "previous", rel.sources.previous, tmp_path / "reports")
    assert sorted(pd.read_parquet(out)["conversation_id"]) == ["x1", "x2"]


def test_one_file_feeding_two_pools_is_converted_once(tmp_path, monkeypatch):
    _lines(tmp_path / "logs.jsonl", [f"c{i}" for i in range(5)])
    src = {"kind": "openai_jsonl", "path": "logs.jsonl"}
    rel = _release(tmp_path, src, candidate=src)
    calls = []
    real = sample.convert
    monkeypatch.setattr(sample, "convert", lambda *a, **k: calls.append(a) or real(*a, **k))
    a = converted(rel, "previous", rel.sources.previous, tmp_path / "reports")
    b = converted(rel, "candidate", rel.sources.candidate, tmp_path / "reports")
    assert a == b and len(calls) == 1


def test_wrong_kind_fails_fast_with_counts_and_cause(tmp_path):
    _lines(tmp_path / "logs.jsonl", [f"c{i}" for i in range(6)])
    rel = _release(tmp_path, {"kind": "wildchat", "path": "logs.jsonl"})
    with pytest.raises(NoUsableData, match=r"previous source \(wildchat, logs.jsonl\): 0 of 6 records kept "
                                           r"\(missing_field 6\): wrong kind\?"):
        converted(rel, "previous", rel.sources.previous, tmp_path / "reports")


def test_null_language_fails_fast_naming_the_cause(tmp_path):
    path = tmp_path / "logs.jsonl"
    path.write_text("".join(json.dumps({"id": f"c{i}", "messages": [{"role": "user", "content": "hi there"}]}) + "\n"
                            for i in range(7)))
    rel = _release(tmp_path, {"kind": "openai_jsonl", "path": "logs.jsonl"})  # languages: [en]
    with pytest.raises(NoUsableData, match=r"no eligible user turn; 0 of 7 conversations pass the eligibility "
                                           r"rules: language is null in all 7 conversations"):
        check_sources(rel, tmp_path / "reports")


def test_date_window_without_timestamps_fails_fast(tmp_path):
    _lines(tmp_path / "logs.jsonl", ["c1", "c2"])
    rel = _release(tmp_path, {"kind": "openai_jsonl", "path": "logs.jsonl"},
                   eligibility="    start: 2024-01-01\n    end: 2024-02-01\n")
    with pytest.raises(NoUsableData, match=r"created_at is null in all 2 conversations \(the source has no "
                                           r"timestamps"):
        check_sources(rel, tmp_path / "reports")


def test_language_name_in_rules_matches_codes(tmp_path):
    _lines(tmp_path / "logs.jsonl", ["c1", "c2"], lang="en")
    rel = _release(tmp_path, {"kind": "openai_jsonl", "path": "logs.jsonl"},
                   eligibility="    languages: [English]\n").model_copy(update={"reweight": None})
    lines = check_sources(rel, tmp_path / "reports")
    assert lines[0] == "previous: openai_jsonl logs.jsonl: has eligible user turns"
    assert lines[1:] == ["candidate: sim_world X: has eligible user turns",       # the world's pools are checked too
                         "challenging: sim_world challenging: has eligible user turns"]


def test_check_names_a_reweight_column_the_source_lacks_and_a_world_nothing_passes(tmp_path):
    _lines(tmp_path / "logs.jsonl", ["c1", "c2"], lang="en")
    rel = _release(tmp_path, {"kind": "openai_jsonl", "path": "logs.jsonl"})
    with pytest.raises(NoUsableData, match=r"previous source \(openai_jsonl, logs.jsonl\): no column 'intent', which "
                                           r"reweight.column stratifies the sample by: lift it .*`columns: \[intent\]`"):
        check_sources(rel, tmp_path / "reports")
    with pytest.raises(NoUsableData, match=r"no column 'intent'"):
        build_prefixes(rel, tmp_path / "reports")               # stage 1 says the same, not a DuckDB error
    world = load_release(small_release(tmp_path, "w"))
    world = world.model_copy(update={"sampling": world.sampling.model_copy(update={
        "eligibility": world.sampling.eligibility.model_copy(update={"languages": ["eng"]})})})
    with pytest.raises(NoUsableData, match=r"previous source \(sim_world.*no conversation has language in \['eng'\]"):
        check_sources(world, tmp_path / "reports")


def test_lifted_columns_reach_the_prefixes_table(tmp_path):
    _lines(tmp_path / "logs.jsonl", [f"c{i}" for i in range(30)], topic="cooking")
    rel = _release(tmp_path, {"kind": "openai_jsonl", "path": "logs.jsonl", "columns": ["topic"]})
    rel = rel.model_copy(update={"sources": rel.sources.model_copy(update={"candidate": None, "challenging": None}),
                                 "sampling": rel.sampling.model_copy(update={"n": 10}), "reweight": None})
    prefixes, _ = build_prefixes(rel, tmp_path / "reports")
    assert len(prefixes) == 10 and set(prefixes["topic"]) == {"cooking"}


def test_challenging_set_is_subsampled_and_carries_safety_labels(tmp_path):
    """XSTest as the challenging set: sampling.challenging_n draws that many prompts, and each
    keeps its own safe/unsafe label as ``prompt_safe`` (over-refusal counts only safe ones)."""
    p = small_release(tmp_path)
    xs = Path(__file__).resolve().parents[1] / "data" / "xstest" / "xstest_prompts.csv"
    text = p.read_text().replace("challenging: {kind: sim_world, deployment: challenging}",
                                 f"challenging: {{kind: xstest, path: {xs}}}")
    text = text.replace("  seed: 1\n", "  seed: 1\n  challenging_n: 60\n", 1)
    p.write_text(text)
    rel = load_release(p)
    assert rel.sampling.challenging_n == 60
    prefixes, _ = build_prefixes(rel, tmp_path / "reports")
    ch = prefixes[prefixes["pool"] == "challenging"]
    assert len(ch) == 60
    assert ch["prompt_safe"].notna().all() and 0 < ch["prompt_safe"].sum() < 60
    # the source's own label decides: an XSTest "safe" prompt is safe whatever its wording
    raw = pd.read_csv(xs).set_index("prompt")["label"]
    user = ch["messages"].map(lambda m: json.loads(m)[-1]["content"])
    # a published prompt set is kept as published: de-identification would rewrite its public
    # figures ("How did Sylvia Plath die?") and change the benchmark
    assert rel.deid and user.isin(raw.index).all()
    assert (ch["prompt_safe"].to_numpy() == (raw.loc[user] == "safe").to_numpy()).all()
    assert prefixes.loc[prefixes["pool"] != "challenging", "prompt_safe"].isna().all()


def test_a_turn_with_no_logged_response_stays_missing_after_de_identification(tmp_path):
    """A sampled user turn that the log never answered must not become an empty response
    ("[]"), graded as an unflagged answer: it stays missing, and counts as a failure."""
    from depsim import simulate
    rows = []
    for i in range(12):
        msgs = [{"role": "user", "content": f"Hello, I am Jane Doe, question {i}"}]
        if i % 2 == 0:
            msgs.append({"role": "assistant", "content": f"Answer {i}, Jane Doe."})
        rows.append(json.dumps({"id": f"c{i}", "language": "en", "messages": msgs}))
    (tmp_path / "logs.jsonl").write_text("\n".join(rows) + "\n")
    rel = _release(tmp_path, {"kind": "openai_jsonl", "path": "logs.jsonl"}).model_copy(update={"reweight": None})
    assert rel.deid
    with pytest.warns(Warning, match=r"^previous pool: only 12 eligible user turns for n=400"):
        prefixes, _ = build_prefixes(rel, tmp_path / "reports")
    done = simulate.logged("prod_prev", prefixes)
    assert len(done) == 12 and (done["messages"] == "[]").sum() == 0
    assert done["error"].notna().sum() == 6 and done["messages"].isna().sum() == 6
    assert all("Jane" not in m for m in done["messages"].dropna())   # the answers were de-identified


def test_the_raw_converted_logs_stay_out_of_the_release_folder(tmp_path):
    """The converted source holds the raw text: it must not sit in reports/<release>/, the
    folder reviewers are sent, where only de-identified prefixes belong."""
    secret = "jane.roe.4471@example.org"
    _lines(tmp_path / "logs.jsonl", [f"c{i}" for i in range(6)], text="Mail me at " + secret + " about {i}")
    rel = _release(tmp_path, {"kind": "openai_jsonl", "path": "logs.jsonl"}).model_copy(update={"reweight": None})
    reports = tmp_path / "reports"
    with pytest.warns(Warning):  # fewer eligible turns than sampling.n
        build_prefixes(rel, reports)
    raw = converted(rel, "previous", rel.sources.previous, reports)
    assert secret in pd.read_parquet(raw)["messages"].str.cat() and (reports / rel.release) not in raw.parents
    inside = [p for p in (reports / rel.release).rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert inside == []
    assert raw.parent.stat().st_mode & 0o777 == 0o700  # others cannot read the raw logs (security audit)


def test_check_counts_the_records_a_conversion_set_aside(tmp_path):
    p = _lines(tmp_path / "logs.jsonl", ["c1", "c2", "c3"])
    p.write_text(p.read_text() + '{"id": "bad", "messages": [{"role": "wizard", "content": "x"}]}\n')
    rel = _release(tmp_path, {"kind": "openai_jsonl", "path": "logs.jsonl"}).model_copy(update={"reweight": None})
    line = check_sources(rel, tmp_path / "reports")[0]
    assert line.startswith("previous: openai_jsonl logs.jsonl: has eligible user turns; 1 of 4 records quarantined "
                           "(unknown_role 1, listed in ")


def test_prefixes_are_keyed_by_a_secret_kept_outside_the_release(tmp_path, monkeypatch):
    """Substitutes depend on a key file in reports/.cache (0600, never in the release folder):
    the same on a rerun, different under another key (so the conversation id alone cannot
    reproduce them)."""
    monkeypatch.delenv("DEPSIM_DEID_KEY", raising=False)
    _lines(tmp_path / "logs.jsonl", [f"c{i}" for i in range(20)], text="I am Ivan Petrovic ({i}), call me.")
    rel = _release(tmp_path, {"kind": "openai_jsonl", "path": "logs.jsonl"})
    rel = rel.model_copy(update={"sources": rel.sources.model_copy(update={"candidate": None, "challenging": None}),
                                 "sampling": rel.sampling.model_copy(update={"n": 10}), "reweight": None})
    reports = tmp_path / "reports"
    first, _ = build_prefixes(rel, reports)
    key_file = reports / ".cache" / "deid.key"
    assert key_file.is_file() and key_file.stat().st_mode & 0o777 == 0o600
    secret = key_file.read_text().strip()
    assert not [p for p in reports.rglob("*") if p.is_file() and p.parent.name != ".cache"
                and secret.encode() in p.read_bytes()]
    assert "Petrovic" not in "".join(first["messages"])
    again, _ = build_prefixes(rel, reports)
    assert list(again["messages"]) == list(first["messages"])
    monkeypatch.setenv("DEPSIM_DEID_KEY", "another key")
    other, _ = build_prefixes(rel, reports)
    assert list(other["prefix_id"]) == list(first["prefix_id"]) and list(other["messages"]) != list(first["messages"])


def _alone(rel, n=10):
    """``rel`` with its previous pool only, n prefixes, no reweighting."""
    return rel.model_copy(update={"sources": rel.sources.model_copy(update={"candidate": None, "challenging": None}),
                                  "sampling": rel.sampling.model_copy(update={"n": n}), "reweight": None})


def test_a_source_among_the_release_tables_is_refused_before_it_is_overwritten(tmp_path):
    # a canonical table given as sources.previous inside reports/<release>/data/ (there:
    # prefixes.parquet) was silently replaced by stage 1's own prefixes table
    tables = tmp_path / "reports" / "small" / "data"
    tables.mkdir(parents=True)
    _lines(tmp_path / "logs.jsonl", [f"c{i}" for i in range(30)])
    table = tables / "prefixes.parquet"
    assert sample.convert(tmp_path / "logs.jsonl", "openai_jsonl", table).rows == 30
    before = table.read_bytes()
    rel = _alone(_release(tmp_path, {"kind": "parquet", "path": str(table)}))
    with pytest.raises(sample.InputError, match=r"prefixes\.parquet: sources\.previous is a file in the release's own table folder"):
        build_prefixes(rel, tmp_path / "reports")
    assert table.read_bytes() == before
    # outside that folder the same table is read
    outside = tmp_path / "conversations.parquet"
    outside.write_bytes(before)
    rel = _alone(_release(tmp_path, {"kind": "parquet", "path": str(outside)}))
    assert len(build_prefixes(rel, tmp_path / "reports")[0]) == 10


def test_pools_table_counts_user_turns_as_eligibility_does():
    # the pools table read "mean turn index 0" for one-message prompts, a 0-based message index,
    # while the eligibility rules count "the 1st user message" (researcher audit)
    from depsim.records import encode_messages
    from depsim.sample import pool_summary
    u, a = {"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}
    prefixes = pd.DataFrame({"pool": ["challenging", "previous", "previous"], "prefix_id": ["p1", "p2", "p3"],
                             "conversation_id": ["c1", "c2", "c2"], "turn_index": [0, 0, 2],
                             "messages": [encode_messages([u]), encode_messages([u]), encode_messages([u, a, u])]})
    out = pool_summary(prefixes).set_index("pool")
    assert out.loc["challenging", "mean_user_turn"] == 1 and out.loc["previous", "mean_user_turn"] == 1.5
    assert out.loc["previous", "conversations"] == 1 and out.loc["previous", "prefixes"] == 2
