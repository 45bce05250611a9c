"""Bad input never disappears silently: each malformed file in tests/data/bad gives a one-line
InputError naming the file and the line (or record), or, with a quarantine, a quarantine file
with the right count while the good records are kept. Regenerate the corpus with
``python tests/data/bad/make_bad.py``."""
import codecs
import csv
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depsim.params import PROMPT_SETS
from depsim.readers import InputError, convert, read_conversations, read_prompt_set

BAD = Path(__file__).resolve().parent / "data" / "bad"


def read(path, fmt, **kw):
    return (read_prompt_set if fmt in PROMPT_SETS else read_conversations)(path, fmt, **kw)


# file, format, where the first error is (":<line>" or ": record <i>"), its reason,
# all reasons with a quarantine, ids of the good records kept
RECORD_CASES = [
    ("truncated_json.jsonl", "openai_jsonl", ":2", "invalid_json", {"invalid_json": 1}, ["g1", "g2"]),
    ("messages_not_list.jsonl", "openai_jsonl", ":2", "wrong_type", {"wrong_type": 1}, ["g1", "g2"]),
    ("content_int.jsonl", "openai_jsonl", ":3", "wrong_type", {"wrong_type": 1}, ["g1", "g2"]),
    ("unknown_role.jsonl", "openai_jsonl", ":2", "unknown_role", {"unknown_role": 1}, ["g1", "g2"]),
    ("empty_conversation.jsonl", "openai_jsonl", ":2", "empty_conversation", {"empty_conversation": 1}, ["g1", "g2"]),
    ("no_user_turn.jsonl", "openai_jsonl", ":2", "no_user_turn", {"no_user_turn": 1}, ["g1", "g2"]),
    ("duplicate_id.jsonl", "openai_jsonl", ":3", "duplicate_id", {"duplicate_id": 1}, ["g1", "g2"]),
    ("tool_without_call.jsonl", "openai_jsonl", ":2", "unmatched_tool_message", {"unmatched_tool_message": 1},
     ["g1", "g2"]),
    ("missing_messages.jsonl", "openai_jsonl", ":2", "missing_field", {"missing_field": 1}, ["g1", "g2"]),
    ("missing_role.jsonl", "openai_jsonl", ":2", "missing_field", {"missing_field": 1}, ["g1", "g2"]),
    ("null_user_content.jsonl", "openai_jsonl", ":2", "missing_field", {"missing_field": 1}, ["g1", "g2"]),
    ("not_an_object.jsonl", "openai_jsonl", ":2", "not_an_object", {"not_an_object": 1}, ["g1", "g2"]),
    ("bad_tool_call.jsonl", "openai_jsonl", ":2", "bad_tool_call", {"bad_tool_call": 1}, ["g1", "g2"]),
    ("bad_timestamp.jsonl", "openai_jsonl", ":2", "bad_timestamp", {"bad_timestamp": 1}, ["g1", "g2"]),
    ("lone_surrogate.jsonl", "openai_jsonl", ":2", "invalid_unicode", {"invalid_unicode": 1}, ["g1", "g2"]),
    ("deep_nesting.jsonl", "openai_jsonl", ":2", "invalid_json", {"invalid_json": 1}, ["g1", "g2"]),
    ("not_utf8.jsonl", "openai_jsonl", ":2", "not_utf8", {"not_utf8": 1}, ["g1", "g2"]),
    ("nul_byte.jsonl", "openai_jsonl", ":2", "nul_byte", {"nul_byte": 1}, ["g1", "g2"]),
    ("two_bad.jsonl", "openai_jsonl", ":2", "unknown_role", {"unknown_role": 1, "invalid_json": 1},
     ["g1", "g2", "g3"]),
    ("wildchat_bad.jsonl", "wildchat", ":2", "unknown_role",
     {"unknown_role": 1, "missing_field": 1, "wrong_type": 1}, ["w1", "w4"]),
    ("sharegpt_bad.json", "sharegpt", ": record 1", "unknown_role",
     {"unknown_role": 1, "unmatched_tool_message": 1}, ["s1", "s4"]),
    ("hh_rlhf_bad.jsonl", "hh_rlhf", ":2", "bad_transcript", {"bad_transcript": 2, "missing_field": 1},
     ["hh_rlhf_bad:1", "hh_rlhf_bad:5"]),
    ("canonical_bad.parquet", "parquet", ": record 1", "invalid_json",
     {"invalid_json": 1, "duplicate_id": 1, "missing_field": 1, "unknown_role": 1}, ["p1", "p3"]),
    ("xstest_empty_prompt.csv", "xstest", ":3", "empty_prompt", {"empty_prompt": 1}, ["xstest:1", "xstest:3"]),
    # the bad row starts on line 6: row 3's quoted field spans lines 3-5
    ("harmbench_bad.csv", "harmbench", ":6", "empty_prompt", {"empty_prompt": 1, "duplicate_id": 1},
     ["harmbench:b1", "harmbench:b2", "harmbench:b4"]),
    ("strongreject_ragged.csv", "strongreject", ":3", "wrong_columns", {"wrong_columns": 1},
     ["strongreject:1", "strongreject:3"]),
    # an unterminated quote on line 3 is quarantined there; the rows it would have swallowed are kept
    ("strongreject_unterminated_quote.csv", "strongreject", ":3", "malformed_csv", {"malformed_csv": 1},
     ["strongreject:1", "strongreject:3", "strongreject:4", "strongreject:5"]),
]

# whole-file problems: an InputError even with a quarantine
FILE_CASES = [
    ("empty.jsonl", "openai_jsonl", r":1: empty file \(no records\)"),
    ("blank_lines_only.jsonl", "openai_jsonl", r":1: empty file \(no records\)"),
    ("json_array.jsonl", "openai_jsonl", r":1: the file is a JSON array, not JSONL"),
    ("truncated.jsonl.gz", "openai_jsonl", r":\d+: compressed file is truncated or corrupt"),
    ("sharegpt_truncated.json", "sharegpt", r": record 2: invalid JSON .*cannot be read past a syntax error"),
    ("canonical_missing_column.parquet", "parquet", r": missing column\(s\) messages"),
    ("canonical_int_ids.parquet", "parquet", r": column conversation_id has type int64, expected string"),
    ("not_parquet.parquet", "parquet", r": not a readable Parquet file"),
    ("xstest_missing_column.csv", "xstest", r":1: missing column\(s\) prompt for xstest"),
    ("jbc_not_artifact.json", "jailbreakbench", r": not a JailbreakBench artifact"),
]


def test_corpus_is_complete():
    files = {p.name for p in BAD.iterdir() if p.suffix != ".py"}
    listed = {c[0] for c in RECORD_CASES} | {c[0] for c in FILE_CASES}
    assert files == listed, "every file in tests/data/bad needs an expected outcome here"
    assert len(files) >= 20
    assert all(p.stat().st_size < 64 * 1024 for p in BAD.iterdir())  # small, committed


@pytest.mark.parametrize("name, fmt, where, reason, reasons, kept", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_bad_record_raises_one_line_error(name, fmt, where, reason, reasons, kept):
    path = BAD / name
    with pytest.raises(InputError) as e:
        read(path, fmt)
    msg = str(e.value)
    assert msg.startswith(f"{path}{where}: "), msg
    assert "\n" not in msg and len(msg) < 400
    assert e.value.reason == reason and e.value.file == str(path)


@pytest.mark.parametrize("name, fmt, where, reason, reasons, kept", RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_bad_record_quarantined_and_good_kept(name, fmt, where, reason, reasons, kept, tmp_path):
    q = tmp_path / "q" / "bad.jsonl"
    res = read(BAD / name, fmt, quarantine=q)
    assert res.table["conversation_id"].tolist() == kept
    assert res.quarantined == sum(reasons.values()) and dict(res.reasons) == reasons
    assert res.rows + res.quarantined == res.records
    entries = [json.loads(x) for x in q.read_text(encoding="utf-8").splitlines()]
    assert len(entries) == res.quarantined
    assert Counter(x["reason"] for x in entries) == Counter(reasons)
    for x in entries:
        assert x["file"] == str(BAD / name) and (x["line"] is None) != (x["record"] is None)
        assert x["raw"] is None and x["message"].startswith(str(BAD / name))  # no raw text unless asked
    assert entries[0]["message"].startswith(f"{BAD / name}{where}: ")
    assert sorted(p.name for p in q.parent.iterdir()) == ["bad.jsonl"]  # no temp file left


@pytest.mark.parametrize("name, fmt, pattern", FILE_CASES, ids=[c[0] for c in FILE_CASES])
@pytest.mark.parametrize("quarantine", [False, True])
def test_bad_file_raises(name, fmt, pattern, quarantine, tmp_path):
    q = tmp_path / "q.jsonl" if quarantine else None
    path = BAD / name
    with pytest.raises(InputError, match="^" + re.escape(str(path)) + pattern) as e:
        read(path, fmt, quarantine=q)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # neither a quarantine file nor a temp file


def _count_records(path: Path, fmt: str) -> int:
    """Records in a file, counted independently of the reader."""
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            text = fh.read()
        try:
            return sum(1 for row in list(csv.reader(text.splitlines(keepends=True), strict=True))[1:] if any(row))
        except csv.Error:  # an unterminated quote: each line was meant as one record
            return sum(1 for line in text.splitlines()[1:] if line.strip())
    if path.suffix == ".json":
        return len(json.loads(path.read_text()))
    return sum(1 for line in path.read_bytes().split(b"\n") if line.strip())


@pytest.mark.parametrize("name, fmt", [(c[0], c[1]) for c in RECORD_CASES], ids=[c[0] for c in RECORD_CASES])
def test_nothing_lost(name, fmt, tmp_path):
    res = read(BAD / name, fmt, quarantine=tmp_path / "q.jsonl")
    n = _count_records(BAD / name, fmt)
    assert res.records == n
    assert len(res.table) + res.quarantined == n


# ---------------------------------------------------------------------------------------------
# huge input, generated at run time


def test_50mb_message(tmp_path):
    p = tmp_path / "huge.jsonl"
    good = json.dumps({"id": "ok", "messages": [{"role": "user", "content": "hi"}]})
    with open(p, "w") as fh:
        fh.write(good + "\n")
        fh.write('{"id": "huge", "messages": [{"role": "user", "content": "')
        fh.write("A" * (50 * 1024 * 1024))
        fh.write('"}]}\n')
        fh.write(good.replace('"ok"', '"ok2"') + "\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:2: message 0 \(user\) has 52,428,800 characters "
                                         r"\(limit max_message_chars=1,000,000: --max-message-chars\)$"):
        read_conversations(p, "openai_jsonl")
    q = tmp_path / "q.jsonl"
    res = read_conversations(p, "openai_jsonl", quarantine=q, quarantine_raw=True)
    assert res.table["conversation_id"].tolist() == ["ok", "ok2"] and res.reasons == {"message_too_large": 1}
    entry = json.loads(q.read_text())
    assert entry["line"] == 2 and len(entry["raw"]) == 2000 and q.stat().st_size < 5000
    # a higher limit lets it through
    assert read_conversations(p, "openai_jsonl", max_message_chars=60_000_000).rows == 3


@pytest.mark.parametrize("fmt, name", [("openai_jsonl", "two_bad.jsonl"), ("wildchat", "wildchat_bad.jsonl")])
def test_quarantine_holds_no_raw_text_unless_asked(fmt, name, tmp_path):
    """The raw record may hold personal data: the quarantine file says where and why only,
    unless quarantine_raw=True."""
    q = tmp_path / "q.jsonl"
    read_conversations(BAD / name, fmt, quarantine=q)
    entries = [json.loads(x) for x in q.read_text().splitlines()]
    assert entries and all(x["raw"] is None for x in entries)
    raw_text = (BAD / name).read_text(encoding="utf-8", errors="replace").splitlines()
    assert not any(line[:200] in q.read_text() for line in raw_text if len(line) > 40)
    read_conversations(BAD / name, fmt, quarantine=q, quarantine_raw=True)
    assert all(json.loads(x)["raw"] for x in q.read_text().splitlines())


def test_line_longer_than_the_line_limit_is_skipped_not_parsed(tmp_path):
    p = tmp_path / "long.jsonl"
    good = json.dumps({"id": "ok", "messages": [{"role": "user", "content": "hi"}]})
    long = '{"id": "x", "messages": "' + "B" * 5000 + '"}\n'
    p.write_text(good + "\n" + long + good.replace("ok", "ok2") + "\n")
    with pytest.raises(InputError, match=rf":2: line has {len(long):,} bytes \(limit 1,000\)$"):
        read_conversations(p, "openai_jsonl", max_line_bytes=1000)
    res = read_conversations(p, "openai_jsonl", max_line_bytes=1000, quarantine=tmp_path / "q.jsonl")
    assert res.rows == 2 and res.reasons == {"line_too_long": 1}


# ---------------------------------------------------------------------------------------------
# convert: atomic, and with a quarantine


def test_convert_failure_leaves_nothing(tmp_path):
    out = tmp_path / "out.parquet"
    out.write_bytes(b"previous good output")
    with pytest.raises(InputError, match=r"two_bad\.jsonl:2: "):
        convert(BAD / "two_bad.jsonl", "openai_jsonl", out, chunk_rows=1)
    assert out.read_bytes() == b"previous good output"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_convert_with_quarantine(tmp_path):
    out, q = tmp_path / "out.parquet", tmp_path / "bad" / "quarantine.jsonl"
    res = convert(BAD / "two_bad.jsonl", "openai_jsonl", out, quarantine=q, chunk_rows=1)
    assert (res.rows, res.quarantined, res.records) == (3, 2, 5)
    assert pq.read_table(out).column("conversation_id").to_pylist() == ["g1", "g2", "g3"]
    assert [json.loads(x)["line"] for x in q.read_text().splitlines()] == [2, 4]


def test_quarantine_file_written_even_when_clean(tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text("stale entries from an earlier run\n")
    res = read_conversations(Path(__file__).parent / "data" / "readers" / "openai.jsonl", "openai_jsonl", quarantine=q)
    assert res.quarantined == 0 and q.read_text() == ""


# ---------------------------------------------------------------------------------------------
# fuzz: any line is either kept or quarantined; nothing else happens


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
                         st.sampled_from(["role", "content", "id", "messages", "tool_calls", "tool_call_id", "x"]),
                         kids, max_size=4), max_leaves=12)
_line = st.one_of(
    _json.map(json.dumps),
    st.builds(lambda m: json.dumps({"messages": m}), _json),
    st.builds(lambda role, content: json.dumps({"messages": [{"role": role, "content": content}]}),
              st.sampled_from(["user", "assistant", "tool", "system", "bot", ""]), _json),
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b" ").decode("latin-1")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_line, min_size=1, max_size=8))
def test_fuzz_every_line_is_kept_or_quarantined(tmp_path, lines):
    lines = [x.replace("\n", " ").replace("\r", " ") for x in lines]
    p = tmp_path / "fuzz.jsonl"
    p.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))
    n = sum(1 for x in p.read_bytes().split(b"\n") if x.strip())
    try:
        res = read_conversations(p, "openai_jsonl", quarantine=tmp_path / "q.jsonl")
    except InputError as e:  # only whole-file problems may raise with a quarantine
        assert e.reason == "invalid_file" and "\n" not in str(e)
        return
    assert res.rows + res.quarantined == res.records == n


# ---------------------------------------------------------------------------------------------
# issue 14: encodings, arrays, legacy function calls, non-finite numbers, zstd, overwriting


def _good_line(i="g1"):
    return json.dumps({"id": i, "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize("encoding, bom", [("utf-16-le", True), ("utf-16-be", True), ("utf-16-le", False)])
def test_utf16_is_named_not_a_nul_byte(tmp_path, encoding, bom):
    p = tmp_path / "u16.jsonl"
    text = _good_line() + "\n" + _good_line("g2") + "\n"
    p.write_bytes((codecs.BOM_UTF16_LE if encoding.endswith("le") else codecs.BOM_UTF16_BE) * bom
                  + text.encode(encoding))
    for q in (None, tmp_path / "q.jsonl"):  # a whole-file problem: raised even with a quarantine
        with pytest.raises(InputError, match=rf"^{re.escape(str(p))}:1: the file (is|looks like) UTF-16") as e:
            read_conversations(p, "openai_jsonl", quarantine=q)
        assert "NUL" not in str(e.value).split("(")[0]


def test_one_line_json_array_in_jsonl_gets_a_hint(tmp_path):
    p = tmp_path / "arr.jsonl"
    p.write_text("[" + _good_line() + ", " + _good_line("g2") + "]\n")
    with pytest.raises(InputError, match=r":1: the file is a JSON array, not JSONL .*jq -c"):
        read_conversations(p, "openai_jsonl", quarantine=tmp_path / "q.jsonl")
    # named .json, the same array is read as one
    j = tmp_path / "arr.json"
    j.write_text(p.read_text())
    assert read_conversations(j, "openai_jsonl").table["conversation_id"].tolist() == ["g1", "g2"]


def test_legacy_function_call_becomes_a_tool_call(tmp_path):
    p = tmp_path / "fc.jsonl"
    p.write_text(json.dumps({"id": "f1", "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
        {"role": "function", "name": "get_weather", "content": "4C, rain"},
        {"role": "assistant", "content": "4C and rain."}]}) + "\n")
    msgs = json.loads(read_conversations(p, "openai_jsonl").table["messages"][0])
    assert msgs[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}
    assert msgs[2] == {"role": "tool", "content": "4C, rain", "tool_call_id": "call_1", "name": "get_weather"}


def test_non_finite_numbers_are_nulled_in_meta(tmp_path):
    p = tmp_path / "inf.jsonl"
    p.write_text('{"id": "i1", "score": Infinity, "s": [NaN, 1.5], "messages": [{"role": "user", "content": "hi"}]}\n')
    meta = read_conversations(p, "openai_jsonl").table["meta"][0]
    assert "Infinity" not in meta and "NaN" not in meta
    assert json.loads(meta) == {"score": None, "s": [None, 1.5]}


def test_zstd_file_is_read(tmp_path):
    import pyarrow as pa
    p = tmp_path / "logs.jsonl.zst"
    with pa.CompressedOutputStream(str(p), "zstd") as out:
        out.write((_good_line() + "\n" + _good_line("g2") + "\n").encode())
    assert read_conversations(p, "openai_jsonl").table["conversation_id"].tolist() == ["g1", "g2"]
    assert read_conversations(tmp_path, "openai_jsonl").rows == 2  # found in a folder too


def test_folder_extensions_are_case_insensitive(tmp_path):
    (tmp_path / "A.JSONL").write_text(_good_line() + "\n")
    (tmp_path / "b.Jsonl").write_text(_good_line("g2") + "\n")
    assert read_conversations(tmp_path, "openai_jsonl").table["conversation_id"].tolist() == ["g1", "g2"]


def test_output_or_quarantine_equal_to_an_input_is_refused(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(_good_line() + "\n")
    before = src.read_bytes()
    with pytest.raises(InputError, match="would overwrite an input file"):
        convert(src, "openai_jsonl", src)
    with pytest.raises(InputError, match="would overwrite an input file"):
        convert(src, "openai_jsonl", tmp_path / "out.parquet", quarantine=src)
    with pytest.raises(InputError, match="would overwrite an input file"):
        read_conversations(tmp_path, "openai_jsonl", quarantine=tmp_path / "in.jsonl")
    assert src.read_bytes() == before


def test_json_path_and_mapping_read_a_toxicchat_like_file(tmp_path):
    """ToxicChat-like: {"instances": [{conv_id, user_input, model_output, toxicity, ...}]}."""
    p = tmp_path / "toxicchat.json"
    p.write_text(json.dumps({"version": 1, "instances": [
        {"conv_id": "t1", "user_input": "how do I pick a lock", "model_output": "I can't help.", "toxicity": 1},
        {"conv_id": "t2", "user_input": "hello", "model_output": None, "toxicity": 0},
        {"conv_id": "t3", "user_input": None, "model_output": "x", "toxicity": 0}]}))
    res = read_conversations(p, "openai_jsonl", json_path="instances", quarantine=tmp_path / "q.jsonl",
                             mapping={"id": "conv_id", "prompt": "user_input", "response": "model_output"},
                             columns=["toxicity"])
    assert res.table["conversation_id"].tolist() == ["t1", "t2"] and res.reasons == {"missing_field": 1}
    assert json.loads(res.table["messages"][0]) == [{"role": "user", "content": "how do I pick a lock"},
                                                     {"role": "assistant", "content": "I can't help."}]
    assert res.table["toxicity"].tolist() == ["1", "0"]
    with pytest.raises(InputError, match=r"json_path 'data': no key 'data' \(has version, instances\)"):
        read_conversations(p, "openai_jsonl", json_path="data")
    # a misspelt field would silently leave every conversation without its logged answer
    with pytest.raises(InputError, match=r"toxicchat.json: mapping response=model_outptu: no record has this field "
                                         r"\(misspelt\?\); the records' fields: conv_id, model_output"):
        read_conversations(p, "openai_jsonl", json_path="instances", quarantine=tmp_path / "q2.jsonl",
                           mapping={"id": "conv_id", "prompt": "user_input", "response": "model_outptu"})


def test_ambiguous_slashed_dates_are_set_aside_not_guessed(tmp_path):
    """01/03/2024 reads month-first and 13/03/2024 day-first: a file would mix both readings,
    and date-window eligibility would silently move turns between months."""
    p = tmp_path / "logs.jsonl"
    stamps = ["01/03/2024 12:00", "13/03/2024 12:00", "03/03/2024 12:00", "2024-03-01T12:00:00"]
    p.write_text("".join(json.dumps({"id": f"c{i}", "created_at": s, "messages": [{"role": "user", "content": "hi"}]})
                         + "\n" for i, s in enumerate(stamps)))
    res = read_conversations(p, "openai_jsonl", quarantine=tmp_path / "q.jsonl")
    assert res.reasons == {"ambiguous_date": 1} and res.records == 4
    got = dict(zip(res.table["conversation_id"], res.table["created_at"].astype(str)))
    assert got == {"c1": "2024-03-13 12:00:00", "c2": "2024-03-03 12:00:00", "c3": "2024-03-01 12:00:00"}
    bad = json.loads((tmp_path / "q.jsonl").read_text().splitlines()[0])
    assert bad["line"] == 1 and "day/month or as month/day" in bad["message"]


def test_openai_created_epoch_is_the_timestamp(tmp_path):
    p = tmp_path / "logs.jsonl"
    p.write_text(json.dumps({"id": "c0", "created": 1709294400, "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    res = read_conversations(p, "openai_jsonl")
    assert str(res.table["created_at"][0]) == "2024-03-01 12:00:00" and not isinstance(res.table["meta"][0], str)


def test_quarantine_messages_do_not_quote_long_values_unless_raw_is_kept(tmp_path):
    p = tmp_path / "logs.jsonl"
    p.write_text("".join(json.dumps({"id": f"c{i}", "messages": [{"role": r, "content": "hi"}]}) + "\n"
                         for i, r in enumerate(["My SSN is 219-09-9999 call me", "wizard", "user"])))
    read_conversations(p, "openai_jsonl", quarantine=tmp_path / "q.jsonl")
    text = (tmp_path / "q.jsonl").read_text()
    assert "219-09-9999" not in text and "unknown role <29 characters>" in text and "'wizard'" in text
    read_conversations(p, "openai_jsonl", quarantine=tmp_path / "raw.jsonl", quarantine_raw=True)
    assert "unknown role 'My SSN is 219-09-9999 call me'" in (tmp_path / "raw.jsonl").read_text()


def test_text_under_an_unknown_part_type_is_set_aside_not_read_as_media(tmp_path):
    p = tmp_path / "logs.jsonl"
    p.write_text("".join(json.dumps({"id": f"c{i}", "messages": [{"role": "user", "content": [{"type": t, "text": "hi"}]}]})
                         + "\n" for i, t in enumerate(["txt", "text"])))
    res = read_conversations(p, "openai_jsonl", quarantine=tmp_path / "q.jsonl")
    assert res.table["conversation_id"].tolist() == ["c1"] and res.reasons == {"wrong_type": 1}
    assert "content part 0 has type 'txt' and a 'text' field" in (tmp_path / "q.jsonl").read_text()
