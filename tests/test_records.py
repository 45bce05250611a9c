"""The canonical tables: atomic writes, a missing table names the stage that writes it, and
one codec for ``messages`` cells."""
import math

import pandas as pd
import pytest

from depsim import records


def test_tables_round_trip_and_leave_no_temp_files(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "messages": ['[{"role": "user", "content": "x"}]', None]})
    path = records.write_table(df, tmp_path, "rel", "prefixes")
    assert path == tmp_path / "rel" / "data" / "prefixes.parquet"
    pd.testing.assert_frame_equal(records.read_table(tmp_path, "rel", "prefixes"), df)
    assert [p.name for p in path.parent.iterdir()] == ["prefixes.parquet"]


def test_a_missing_table_names_its_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="grades.parquet is missing: run 04_grade first"):
        records.read_table(tmp_path, "rel", "grades")


@pytest.mark.parametrize("raw, want", [
    ('[{"role": "user", "content": "x"}]', [{"role": "user", "content": "x"}]),
    ([{"role": "user", "content": "y"}], [{"role": "user", "content": "y"}]),
    (None, []), (math.nan, []), ("", []),
])
def test_messages_codec(raw, want):
    assert records.decode_messages(raw) == want


def test_messages_codec_round_trips_and_rejects_bad_json():
    msgs = [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]
    assert records.decode_messages(records.encode_messages(msgs)) == msgs
    assert records.encode_messages(None) is None
    with pytest.raises(ValueError):
        records.decode_messages("[{not json")


def test_content_ids_are_stable_hashes():
    assert records.content_id("a", 1) == records.content_id("a", "1")
    assert records.content_id("a", 1) != records.content_id("a", 2) and len(records.content_id("a", n=8)) == 8


def test_tables_carry_their_provenance_without_changing_content(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": ["x", None]})
    records.write_table(df, tmp_path, "rel", "rates", meta={"params_hash": "abc", "git_commit": "123"})
    meta = records.table_meta(tmp_path, "rel", "rates")
    assert meta["params_hash"] == "abc" and meta["table"] == "rates" and meta["written_at"] > 0
    pd.testing.assert_frame_equal(records.read_table(tmp_path, "rel", "rates"), df)
    assert records.table_meta(tmp_path, "rel", "missing") is None
    # a table written by hand (no stamp) still has a time: its file's
    df.to_parquet(records.table_path(tmp_path, "rel", "forecasts"), index=False)
    assert set(records.table_meta(tmp_path, "rel", "forecasts")) == {"written_at"}
