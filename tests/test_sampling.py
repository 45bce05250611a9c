"""Tests for depsim.sampling: uniform-over-user-turns prefix sampling from conversation logs."""
from __future__ import annotations

import json
import math
import random
import re
import warnings
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

import depsim.sampling as S
from depsim.params import EligibilityRules
from depsim.sampling import SamplingWarning, prefix_id, sample_prefixes, turn_hash, user_turns

T0 = pd.Timestamp("2025-01-15 12:00:00")


# --- fixture helpers ----------------------------------------------------------------------------

def u(text):
    return {"role": "user", "content": text}


def a(text="ok"):
    return {"role": "assistant", "content": text}


def row(cid, msgs, **meta):
    base = {"conversation_id": cid, "messages": json.dumps(msgs), "source": "test-log",
            "model": "prev", "language": "en", "surface": "chat", "created_at": T0}
    base.update(meta)
    return base


def write(tmp_path, rows, name="log.parquet", row_group_size=None):
    path = tmp_path / name
    pq.write_table(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False), path,
                   row_group_size=row_group_size)
    return str(path)


def sample_all(source, rules=None, **kw):
    """A sample larger than the population: every eligible turn (and the expected warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        return sample_prefixes(source, 10_000, rules=rules, **kw)


def keys(df):
    return set(zip(df["conversation_id"], df["turn_index"]))


def binom_two_sided_bounds(trials, p, alpha):
    """Smallest lo and largest hi with P(X < lo) <= alpha/2 and P(X > hi) <= alpha/2."""
    def log_pmf(k):
        return (math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
                + k * math.log(p) + (trials - k) * math.log(1 - p))
    pmf = [math.exp(log_pmf(k)) for k in range(trials + 1)]
    lo, acc = 0, 0.0
    while acc + pmf[lo] <= alpha / 2:
        acc += pmf[lo]
        lo += 1
    hi, acc = trials, 0.0
    while acc + pmf[hi] <= alpha / 2:
        acc += pmf[hi]
        hi -= 1
    return lo, hi


def py_eligible(rows, rules):
    """Independent Python reference of the eligibility rules: {(cid, turn_index): ordinal}."""
    out = {}
    for r in rows:
        if rules.languages is not None and r.get("language") not in rules.languages:
            continue
        if rules.surfaces is not None and r.get("surface") not in rules.surfaces:
            continue
        ts = r.get("created_at")
        if rules.start is not None and not (ts is not None and ts >= pd.Timestamp(rules.start)):
            continue
        if rules.end is not None and not (ts is not None and ts < pd.Timestamp(rules.end)):
            continue
        msgs = json.loads(r["messages"])
        if any(not isinstance(m, dict) or m.get("role") is None for m in msgs):
            continue  # malformed
        users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
        for k, ti in enumerate(users, start=1):
            if k < rules.min_turn or (rules.max_turn is not None and k > rules.max_turn):
                continue
            m = msgs[ti]
            content, att = m.get("content"), m.get("attachments")
            nontext = att not in (None, [], {}, "", False)
            if isinstance(content, str):
                chars = len(content)
            elif isinstance(content, list):
                chars = 0
                for p in content:
                    if isinstance(p, str):
                        chars += len(p)
                    elif isinstance(p, dict) and p.get("type") in ("text", "input_text"):
                        chars += len(p.get("text") or "")
                    else:
                        nontext = True
            elif content is None:
                chars = 0
            else:
                chars, nontext = 0, True
            if chars < rules.min_chars or (rules.max_chars is not None and chars > rules.max_chars):
                continue
            if nontext and not rules.allow_multimodal:
                continue
            out[(r["conversation_id"], ti)] = k
    return out


def varied_rows(n_conv, seed=1):
    """A log with a bit of everything: 1-6 user turns, system prompts, tool calls, empty and
    multimodal user turns, attachments, malformed conversations, unicode and escapes."""
    rng = random.Random(seed)
    rows = []
    for j in range(n_conv):
        msgs = [{"role": "system", "content": "Be helpful."}] if rng.random() < 0.3 else []
        for t in range(rng.randint(1, 6)):
            kind = rng.random()
            if kind < 0.05:
                msgs.append(u(""))
            elif kind < 0.10:
                msgs.append({"role": "user", "content": [
                    {"type": "text", "text": "what is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "https://x.invalid/i.png"}}]})
            elif kind < 0.13:
                msgs.append({"role": "user", "content": [{"type": "text", "text": "parts only"}]})
            elif kind < 0.16:
                msgs.append({"role": "user", "content": "see file", "attachments": [{"file_id": "f"}]})
            elif kind < 0.18:
                msgs.append(u("[1, 2, 3]"))  # a text that looks like JSON
            else:
                msgs.append(u("q" * rng.randint(1, 400) + ' café "quoted" \\ \n 😀 "user"'))
            if rng.random() < 0.1:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [
                    {"id": f"c{t}", "type": "function",
                     "function": {"name": "search", "arguments": "{\"q\": \"x\"}"}}]})
                msgs.append({"role": "tool", "tool_call_id": f"c{t}", "content": "result"})
            if rng.random() < 0.9:
                msgs.append(a("answer " * rng.randint(1, 30)))
        if j % 97 == 0:
            msgs.append({"content": "no role here"})  # malformed: excluded entirely
        rows.append(row(f"c{j:05d}", msgs, language=rng.choice(["en", "en", "de", None]),
                        surface=rng.choice(["chat", "api"]),
                        created_at=T0 + pd.Timedelta(hours=j)))
    return rows


@pytest.fixture
def eligibility_log(tmp_path):
    rows = [
        row("en1", [{"role": "system", "content": "sys"}, u("hello there"), a(), u("x" * 500), a()],
            created_at=pd.Timestamp("2025-01-10")),
        row("de1", [u("guten tag"), a()], language="de", surface="api",
            created_at=pd.Timestamp("2025-02-10")),
        row("mm1", [
            {"role": "user", "content": [{"type": "text", "text": "look at this"},
                                         {"type": "image_url", "image_url": {"url": "http://i"}}]},
            a(),
            {"role": "user", "content": [{"type": "text", "text": "only text"}]},
            a(),
            {"role": "user", "content": "see attached", "attachments": [{"file_id": "f1"}]},
            a(),
            {"role": "user", "content": "no files", "attachments": []},
            a()], created_at=pd.Timestamp("2025-02-20")),
        row("empty1", [u(""), a(), u("ok then"), a()], created_at=pd.Timestamp("2025-02-28")),
        row("late1", [u("at the boundary"), a()], created_at=pd.Timestamp("2025-03-01")),
        row("nolang", [u("who am i"), a()], language=None, surface=None, created_at=None),
    ]
    return write(tmp_path, rows), rows


# --- uniform over user turns --------------------------------------------------------------------

def test_uniform_over_user_turns_not_conversations(tmp_path):
    # one conversation with 9 user turns, 9 with 1: half of all user turns are in the long one
    rows = [row("long", sum(([u(f"question {i}"), a()] for i in range(9)), []))]
    rows += [row(f"short{j}", [u("hi"), a()]) for j in range(9)]
    path = write(tmp_path, rows)
    turns = [("long", 2 * i, i + 1) for i in range(9)] + [(f"short{j}", 0, 1) for j in range(9)]

    seeds = 60
    hits = 0
    for seed in range(seeds):
        df = sample_prefixes(path, 1, seed=seed)
        assert len(df) == 1
        # the implementation picks exactly the turn with the smallest reference hash
        best = min(turns, key=lambda t: (turn_hash(seed, t[0], t[2]), t[0]))
        assert (df.conversation_id[0], df.turn_index[0]) == best[:2]
        hits += df.conversation_id[0] == "long"
    # Per-turn uniform: hits ~ Binomial(60, 1/2). (Per-conversation sampling would give 1/10.)
    # The seeds are fixed, so this is deterministic; the bound has a 1e-6 false-alarm rate.
    lo, hi = binom_two_sided_bounds(seeds, 0.5, 1e-6)
    assert lo <= hits <= hi, (hits, lo, hi)
    assert not (lo <= seeds * 0.1 <= hi)  # the test can tell the two designs apart

    # the same property of the hash over many more seeds (reference implementation, fast)
    many = 4000
    hits = sum(min(turns, key=lambda t: turn_hash(s, t[0], t[2]))[0] == "long" for s in range(many))
    lo, hi = binom_two_sided_bounds(many, 0.5, 1e-6)
    assert lo <= hits <= hi, (hits, lo, hi)


def test_turn_keys_are_uniform_over_ordinals_and_blocks():
    # The key of ordinal k takes its 4-hex-digit head from a per-block md5 (8 ordinals a block)
    # and the rest from a per-turn md5: no ordinal, slot within a block or block may be favoured.
    # Conversation "c" has 20 user turns (blocks 0-2, the last one partial); the turn with the
    # smallest key over many seeds must be uniform over the 20 ordinals (chi-square test).
    ordinals, seeds = 20, 6000
    counts = [0] * ordinals
    for seed in range(seeds):
        best = min(range(1, ordinals + 1), key=lambda k: turn_hash(seed, "c", k))
        counts[best - 1] += 1
    expected = seeds / ordinals
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < 50.0, (chi2, counts)  # 19 degrees of freedom: P(chi2 > 50) ~ 1e-4
    # and the heads alone (the part the sampling pass tests first) are uniform 16-bit values
    heads = [int(turn_hash(seed, "c", k)[:4], 16) for seed in range(500) for k in (1, 8, 9, 17)]
    assert abs(sum(heads) / len(heads) / 65535 - 0.5) < 0.02
    assert all(re.fullmatch(r"[0-9a-f]{36}", turn_hash(s, "c", k)) for s in range(3) for k in (1, 9, 100))


def test_turn_hash_sql_twin_matches_python(tmp_path):
    # 20 user turns: ordinals in three head blocks, on the exact route (user_turns) and in samples
    msgs = sum(([u(f"question {i}"), a()] for i in range(20)), [])
    rows = [row("long", msgs), row("o'quote", [u("hi"), a(), u("again"), a()]), row("x", [u("yo")])]
    path = write(tmp_path, rows)
    for seed in (0, 12345):
        ut = user_turns(path, seed=seed).to_pandas()
        assert len(ut) == 23
        for cid, k, h in zip(ut.conversation_id, ut.user_ordinal, ut.turn_hash):
            assert h == turn_hash(seed, cid, k)
        df = sample_all(path, seed=seed)
        ref = sorted(zip(ut.conversation_id, ut.user_ordinal),
                     key=lambda t: (turn_hash(seed, t[0], t[1]), t[0]))
        assert list(zip(df.conversation_id, df.user_ordinal)) == ref


def test_sample_is_the_n_smallest_hashes_and_in_hash_order(tmp_path):
    rows = varied_rows(300)
    path = write(tmp_path, rows)
    elig = py_eligible(rows, EligibilityRules())
    ref = sorted(elig, key=lambda ct: (turn_hash(7, ct[0], elig[ct]), ct[0]))
    df = sample_prefixes(path, 50, seed=7)
    assert list(zip(df.conversation_id, df.turn_index)) == ref[:50]
    assert list(df.user_ordinal) == [elig[k] for k in ref[:50]]
    # first k rows of a sample of n == the sample of k
    small = sample_prefixes(path, 10, seed=7)
    assert list(small.prefix_id) == list(df.prefix_id[:10])
    assert (df.weight == 1.0).all()


def test_reproducible_same_seed_different_seed(tmp_path):
    path = write(tmp_path, varied_rows(200))
    a1 = sample_prefixes(path, 40, seed=3)
    a2 = sample_prefixes(path, 40, seed=3, threads=1)
    b = sample_prefixes(path, 40, seed=4)
    pd.testing.assert_frame_equal(a1, a2)
    assert keys(a1) != keys(b)
    assert len(keys(a1) & keys(b)) < 40


def test_prefix_ids_are_stable_and_seed_independent(tmp_path):
    path = write(tmp_path, varied_rows(100))
    df = sample_prefixes(path, 30, seed=1)
    assert all(re.fullmatch(r"[0-9a-f]{16}", p) for p in df.prefix_id)
    assert df.prefix_id.is_unique
    for cid, ti, src, pid in zip(df.conversation_id, df.turn_index, df.source, df.prefix_id):
        assert pid == prefix_id(cid, ti, src)
    other = sample_prefixes(path, 30, seed=2)
    both = df.merge(other, on=["conversation_id", "turn_index"])
    assert len(both) and (both.prefix_id_x == both.prefix_id_y).all()


# --- eligibility --------------------------------------------------------------------------------

def test_default_rules_exclude_empty_and_multimodal(eligibility_log):
    path, _ = eligibility_log
    assert keys(sample_all(path)) == {
        ("en1", 1), ("en1", 3), ("de1", 0), ("mm1", 2), ("mm1", 6), ("empty1", 2),
        ("late1", 0), ("nolang", 0)}


def test_multimodal_allowed_and_text_parts_counted(eligibility_log):
    path, _ = eligibility_log
    df = sample_all(path, EligibilityRules(allow_multimodal=True))
    got = dict(zip(zip(df.conversation_id, df.turn_index), df.chars))
    assert {k for k in got if k[0] == "mm1"} == {("mm1", 0), ("mm1", 2), ("mm1", 4), ("mm1", 6)}
    assert got[("mm1", 0)] == len("look at this")  # only the text part is counted
    assert got[("mm1", 2)] == len("only text")


def test_language_filter(eligibility_log):
    path, _ = eligibility_log
    assert keys(sample_all(path, EligibilityRules(languages=["de"]))) == {("de1", 0)}
    df = sample_all(path, EligibilityRules(languages=["en"]))
    assert set(df.conversation_id) == {"en1", "mm1", "empty1", "late1"}  # null language excluded


def test_surface_filter(eligibility_log):
    path, _ = eligibility_log
    assert keys(sample_all(path, EligibilityRules(surfaces=["api"]))) == {("de1", 0)}
    assert "de1" not in set(sample_all(path, EligibilityRules(surfaces=["chat"])).conversation_id)


def test_length_bounds(eligibility_log):
    path, _ = eligibility_log
    df = sample_all(path, EligibilityRules(min_chars=10, max_chars=12))
    assert keys(df) == {("en1", 1)} and list(df.chars) == [11]  # "hello there"
    df = sample_all(path, EligibilityRules(min_chars=9, max_chars=11))  # bounds are inclusive
    assert keys(df) == {("en1", 1), ("de1", 0), ("mm1", 2)}
    long_only = sample_all(path, EligibilityRules(min_chars=400))
    assert keys(long_only) == {("en1", 3)} and list(long_only.chars) == [500]
    zero_ok = sample_all(path, EligibilityRules(min_chars=0, max_chars=0))
    assert keys(zero_ok) == {("empty1", 0)}


def test_date_window_start_inclusive_end_exclusive(eligibility_log):
    path, _ = eligibility_log
    rules = EligibilityRules(start=datetime(2025, 2, 10), end=datetime(2025, 3, 1))
    assert set(sample_all(path, rules).conversation_id) == {"de1", "mm1", "empty1"}
    rules = EligibilityRules(start=datetime(2025, 3, 1, tzinfo=timezone.utc))
    assert set(sample_all(path, rules).conversation_id) == {"late1"}  # null created_at excluded


def test_turn_ordinal_bounds(eligibility_log):
    path, _ = eligibility_log
    df = sample_all(path, EligibilityRules(min_turn=2, max_turn=3))
    assert keys(df) == {("en1", 3), ("mm1", 2), ("empty1", 2)}
    assert set(df.user_ordinal) == {2}


def test_eligibility_matches_python_reference(tmp_path):
    rows = varied_rows(400, seed=5)
    path = write(tmp_path, rows)
    for rules in [EligibilityRules(), EligibilityRules(allow_multimodal=True, min_chars=0),
                  EligibilityRules(languages=["en"], surfaces=["chat"], min_chars=20,
                                   max_chars=200, min_turn=2, max_turn=4,
                                   start=T0.to_pydatetime(),
                                   end=(T0 + pd.Timedelta(hours=300)).to_pydatetime())]:
        ref = py_eligible(rows, rules)
        ut = user_turns(path, rules).to_pandas()
        assert dict(zip(zip(ut.conversation_id, ut.turn_index), ut.user_ordinal)) == ref
        assert keys(sample_all(path, rules)) == set(ref)


# --- prefixes -----------------------------------------------------------------------------------

def test_prefix_is_cut_at_the_user_message_and_next_message_is_the_reply(tmp_path):
    msgs = [
        {"role": "system", "content": "You are terse."},
        u("weather in Zürich? \"quotes\" \\ and\nnewlines 😀"),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": "{\"city\": \"Zürich\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 3.5}"},
        a("It is 3.5 °C."),
        u("and tomorrow?"),
        u("hello??"),
        a("Sorry - tomorrow: 5 °C."),
        u("thanks"),
    ]
    path = write(tmp_path, [row("p1", msgs)])
    df = sample_all(path).set_index("turn_index")
    assert sorted(df.index) == [1, 5, 6, 8]
    for ti in df.index:
        assert json.loads(df.loc[ti, "messages"]) == msgs[:ti + 1]
    assert json.loads(df.loc[1, "next_message"]) == msgs[2]  # tool-calling assistant message
    assert pd.isna(df.loc[5, "next_message"])  # followed by another user message
    assert json.loads(df.loc[6, "next_message"]) == msgs[7]
    assert pd.isna(df.loc[8, "next_message"])  # last message
    assert list(df.loc[[1, 5, 6, 8], "user_ordinal"]) == [1, 2, 3, 4]


def test_key_order_and_unusual_roles(tmp_path, monkeypatch):
    msgs = [{"content": "sys", "role": "system"}, {"content": "first", "role": "user"},
            {"content": "reply", "name": "bot", "role": "assistant"}, {"role": "developer", "content": "d"},
            {"role": "user", "content": "second"}, {"role": "assistant"}]
    path = write(tmp_path, [row("k", msgs)])
    for one_pass in (False, True):  # the exact route, then the one-pass route
        monkeypatch.setattr(S, "_PILOT_MIN_ROWS", 0 if one_pass else 10**9)
        monkeypatch.setattr(S, "_FAST_MAX_SHARE", math.inf if one_pass else 0.25)
        df = sample_prefixes(path, 2).set_index("turn_index")
        assert sorted(df.index) == [1, 4]
        assert json.loads(df.loc[1, "next_message"]) == msgs[2]
        assert json.loads(df.loc[4, "next_message"]) == msgs[5]
        assert json.loads(df.loc[4, "messages"]) == msgs[:5]


def test_output_columns_and_metadata(tmp_path):
    rows = varied_rows(30)
    for r in rows:
        r["intent"] = "coding"
        r["tools"] = "[]"
    path = write(tmp_path, rows)
    df = sample_prefixes(path, 5, seed=0, stratum_column="intent", extra_columns=["tools"])
    assert list(df.columns) == ["prefix_id", "conversation_id", "turn_index", "messages",
                                "next_message", "source", "weight", "model", "language",
                                "surface", "created_at", "intent", "tools", "user_ordinal", "chars"]
    meta = pd.DataFrame(rows).set_index("conversation_id")
    for _, r in df.iterrows():
        assert r.source == "test-log" and r.model == "prev" and r.tools == "[]"
        assert r.created_at == meta.loc[r.conversation_id, "created_at"]
    # metadata columns absent from the input come back as nulls
    bare = [{"conversation_id": "z", "messages": json.dumps([u("hi")]), "source": "s"}]
    out = sample_prefixes(pd.DataFrame(bare), 1)
    assert out.model.isna().all() and out.created_at.isna().all()


# --- inputs -------------------------------------------------------------------------------------

def test_same_sample_from_file_glob_list_dataframe_and_table(tmp_path):
    rows = varied_rows(120)
    one = write(tmp_path, rows)
    (tmp_path / "parts").mkdir()
    p1 = write(tmp_path / "parts", rows[:50], "a.parquet")
    p2 = write(tmp_path / "parts", rows[50:], "b.parquet")
    ref = sample_prefixes(one, 25, seed=9)
    for src in [str(tmp_path / "parts" / "*.parquet"), [p2, p1], str(tmp_path / "parts"),
                pd.DataFrame(rows), pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)]:
        got = sample_prefixes(src, 25, seed=9)
        assert list(got.prefix_id) == list(ref.prefix_id)
        assert list(got.messages) == list(ref.messages)


def test_one_pass_route_matches_exact_route(tmp_path, monkeypatch):
    rows = varied_rows(3000, seed=11)
    path = write(tmp_path, rows, row_group_size=250)
    rules = EligibilityRules(min_chars=5)
    ref = py_eligible(rows, rules)
    want = sorted(ref, key=lambda ct: (turn_hash(0, ct[0], ref[ct]), ct[0]))[:200]

    exhaustive, passes = [], []
    real_turns_sql, real_sample_sql = S._turns_sql, S._sample_sql
    monkeypatch.setattr(S, "_turns_sql", lambda *a: exhaustive.append(a[-1]) or real_turns_sql(*a))
    monkeypatch.setattr(S, "_sample_sql", lambda *a: passes.append(a[4]) or real_sample_sql(*a))
    monkeypatch.setattr(S, "_PILOT_MIN_ROWS", 0)
    fast = sample_prefixes(path, 200, rules=rules, seed=0)
    assert exhaustive == [None]  # only the pilot tested every turn (on its few rows) ...
    assert len(passes) == 1  # ... and the data was read once
    assert list(zip(fast.conversation_id, fast.turn_index)) == want

    # an estimate far too high: the threshold lets too few through and is widened
    exhaustive.clear(), passes.clear()
    real_estimate = S._estimate_turns
    monkeypatch.setattr(S, "_estimate_turns", lambda *a: 50 * real_estimate(*a))
    widened = sample_prefixes(path, 200, rules=rules, seed=0)
    assert exhaustive == [None] and len(passes) >= 2
    pd.testing.assert_frame_equal(widened, fast)

    # no usable estimate (e.g. a small log): the exact route, same sample
    exhaustive.clear(), passes.clear()
    monkeypatch.setattr(S, "_estimate_turns", lambda *a: None)
    exact = sample_prefixes(path, 200, rules=rules, seed=0)
    assert exhaustive == [0] and len(passes) == 1
    pd.testing.assert_frame_equal(exact, fast)


def long_rows(n_conv, seed=3):
    """Conversations of 1-24 user turns (so ordinals beyond the first head block), some with
    multimodal or empty turns and an occasional tool call."""
    rng = random.Random(seed)
    rows = []
    for j in range(n_conv):
        msgs = []
        for t in range(rng.choice([1, 2, 3, 5, 8, 9, 12, 17, 24])):
            kind = rng.random()
            if kind < 0.05:
                msgs.append(u(""))
            elif kind < 0.08:
                msgs.append({"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "https://x.invalid/i.png"}}]})
            else:
                msgs.append(u("q" * rng.randint(1, 60) + f" {t} \"user\""))
            if rng.random() < 0.05:
                msgs.append({"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
                msgs.append({"role": "tool", "tool_call_id": "c", "content": "user"})
            msgs.append(a(f"answer {t}"))
        rows.append(row(f"L{j:05d}", msgs, language=rng.choice(["en", "de"])))
    return rows


@pytest.mark.parametrize("rules", [
    EligibilityRules(),
    EligibilityRules(min_turn=3, max_turn=12, min_chars=10),
    EligibilityRules(min_turn=10, languages=["en"]),
])
def test_one_pass_route_long_conversations(tmp_path, monkeypatch, rules):
    rows = long_rows(2500)
    path = write(tmp_path, rows, row_group_size=300)
    ref = py_eligible(rows, rules)
    n = 150
    want = sorted(ref, key=lambda ct: (turn_hash(5, ct[0], ref[ct]), ct[0]))[:n]
    passes, exhaustive = [], []
    real_sample_sql, real_turns_sql = S._sample_sql, S._turns_sql
    monkeypatch.setattr(S, "_sample_sql", lambda *a: passes.append(a[4]) or real_sample_sql(*a))
    monkeypatch.setattr(S, "_turns_sql", lambda *a: exhaustive.append(a[-1]) or real_turns_sql(*a))
    monkeypatch.setattr(S, "_PILOT_MIN_ROWS", 0)
    fast = sample_prefixes(path, n, rules=rules, seed=5)
    assert exhaustive == [None] and len(passes) == 1  # the one-pass route: pilot, one pass
    assert list(zip(fast.conversation_id, fast.turn_index)) == want
    assert list(fast.user_ordinal) == [ref[k] for k in want]
    by_id = {r["conversation_id"]: json.loads(r["messages"]) for r in rows}
    for cid, ti, prefix in zip(fast.conversation_id, fast.turn_index, fast.messages):
        assert json.loads(prefix) == by_id[cid][:ti + 1]
    monkeypatch.setattr(S, "_PILOT_MIN_ROWS", 10**9)  # the exact route: the same sample
    pd.testing.assert_frame_equal(sample_prefixes(path, n, rules=rules, seed=5), fast)


def test_capped_pass_falls_back_to_a_top_n(tmp_path, monkeypatch):
    # a sampling pass returns at most cap rows; one that hits the cap may be incomplete and is
    # rerun with the top-N in DuckDB: the sample is the same
    rows = varied_rows(600, seed=2)
    path = write(tmp_path, rows)
    ref_uniform = sample_prefixes(path, 40, seed=4)
    for r in rows:
        r["intent"] = "a" if r["conversation_id"] < "c00300" else "b"
    spath = write(tmp_path, rows, "strata.parquet")
    ref_strat = sample_prefixes(spath, 30, seed=4, strata={"a": 1, "b": 2}, stratum_column="intent")
    calls = []
    real_sample_sql = S._sample_sql
    monkeypatch.setattr(S, "_sample_sql", lambda *a: calls.append(a[7:]) or real_sample_sql(*a))
    monkeypatch.setattr(S, "_CAP_FACTOR", 0.5)
    monkeypatch.setattr(S, "_CAP_SLACK", 0)
    pd.testing.assert_frame_equal(sample_prefixes(path, 40, seed=4), ref_uniform)
    assert calls == [(20,), (None,)]  # capped at 0.5 * 40, then uncapped
    calls.clear()
    got = sample_prefixes(spath, 30, seed=4, strata={"a": 1, "b": 2}, stratum_column="intent")
    pd.testing.assert_frame_equal(got, ref_strat)
    assert calls == [(15,), (None,)]
    assert got.intent.value_counts().to_dict() == {"b": 20, "a": 10}


def test_string_view_results_match_plain_results(tmp_path, monkeypatch):
    # DuckDB may hand strings over as Arrow string views (no copy); the sample is reordered by
    # moving the views. Same result as with plain strings, nested extra columns included.
    rows = varied_rows(400, seed=8)
    for j, r in enumerate(rows):
        r["tags"] = [f"tag-{j % 3}", "a much longer tag than twelve bytes"] if j % 4 else None
    path = write(tmp_path, rows, row_group_size=50)
    with_views = sample_prefixes(path, 60, seed=3, extra_columns=["tags"], threads=2)
    monkeypatch.setattr(S, "_VIEWS", False)
    plain = sample_prefixes(path, 60, seed=3, extra_columns=["tags"], threads=2)
    pd.testing.assert_frame_equal(with_views, plain)
    assert with_views.next_message.isna().any() and with_views.tags.isna().any()


def test_take_moves_string_views_across_chunks():
    rng = random.Random(0)
    vals = [None if rng.random() < 0.1 else "x" * rng.randint(0, 40) + str(i) for i in range(1000)]
    if not S._VIEWS:
        pytest.skip("this pyarrow has no string views")
    chunks = pa.chunked_array([pa.array(vals[:400], pa.string_view()).slice(50),
                               pa.array(vals[400:], pa.string_view())])
    expect = vals[50:]
    order = pa.array(random.Random(1).sample(range(len(expect)), 700))
    out = S._take(chunks, order)
    assert out.type == pa.large_string()
    assert out.to_pylist() == [expect[i] for i in order.to_pylist()]
    with S.ThreadPoolExecutor(3) as pool:  # in parts, in parallel
        assert S._take(chunks, order, pool, 3).to_pylist() == out.to_pylist()
    nested = pa.chunked_array([pa.array([["a", "b" * 20], None, []], pa.list_(pa.string_view()))])
    assert S._take(nested, pa.array([2, 0, 1])).to_pylist() == [[], ["a", "b" * 20], None]


def test_malformed_conversation_is_skipped(tmp_path):
    rows = [row("ok", [u("fine"), a()]),
            row("bad", [u("fine"), {"content": "no role"}, u("again")]),
            row("bad2", [u("fine"), 42])]
    assert set(sample_all(write(tmp_path, rows)).conversation_id) == {"ok"}


# --- stratified ---------------------------------------------------------------------------------

@pytest.fixture
def strata_log(tmp_path):
    rows = [row(f"a{j}", [u("alpha"), a()], intent="a") for j in range(30)]
    rows += [row(f"b{j}", [u("beta"), a(), u("beta 2"), a()], intent="b") for j in range(10)]
    rows += [row(f"c{j}", [u("gamma"), a()], intent="c") for j in range(5)]
    return write(tmp_path, rows)


def test_stratified_allocation_and_weights(strata_log):
    df = sample_prefixes(strata_log, 10, seed=0, strata={"a": 0.5, "b": 0.5}, stratum_column="intent")
    assert df.intent.value_counts().to_dict() == {"a": 5, "b": 5}
    # population: 30 turns in a, 20 in b -> weight = population share / sample share
    w = df.groupby("intent").weight.first()
    assert w["a"] == pytest.approx((30 / 50) / (5 / 10))
    assert w["b"] == pytest.approx((20 / 50) / (5 / 10))
    assert df.weight.mean() == pytest.approx(1.0)
    # weighted shares recover the population shares
    assert df[df.intent == "a"].weight.sum() / len(df) == pytest.approx(30 / 50)
    # within a stratum: the smallest hashes, i.e. uniform sampling within the stratum
    turns_b = [(f"b{j}", k) for j in range(10) for k in (1, 2)]
    best_b = sorted(turns_b, key=lambda t: (turn_hash(0, t[0], t[1]), t[0]))[:5]
    got_b = df[df.intent == "b"]
    assert set(zip(got_b.conversation_id, got_b.user_ordinal)) == set(best_b)
    assert df.attrs["population"] == {"a": 30, "b": 20}


def test_largest_remainder_allocation(strata_log):
    df = sample_prefixes(strata_log, 10, seed=1, strata={"a": 1, "b": 1, "c": 1},
                         stratum_column="intent")
    assert df.intent.value_counts().to_dict() == {"a": 4, "b": 3, "c": 3}
    assert S._largest_remainder(7, {"x": 0.5, "y": 0.3, "z": 0.2}) == {"x": 4, "y": 2, "z": 1}
    assert S._largest_remainder(100, {"x": 1, "y": 2}) == {"x": 33, "y": 67}


def test_stratum_short_of_its_allocation_warns(strata_log):
    with pytest.warns(SamplingWarning) as rec:
        df = sample_prefixes(strata_log, 20, seed=0, strata={"a": 0.5, "c": 0.5},
                             stratum_column="intent")
    assert any("'c'" in str(w.message) for w in rec)
    assert df.intent.value_counts().to_dict() == {"a": 10, "c": 5}
    w = df.groupby("intent").weight.first()
    assert w["a"] == pytest.approx((30 / 35) / (10 / 15))
    assert w["c"] == pytest.approx((5 / 35) / (5 / 15))
    assert df.weight.mean() == pytest.approx(1.0)


# --- small populations and errors ---------------------------------------------------------------

def test_fewer_eligible_than_n_warns_and_returns_all(tmp_path):
    path = write(tmp_path, [row("x", [u("one"), a(), u("two")]), row("y", [u(""), a()])])
    with pytest.warns(SamplingWarning, match="only 2 eligible"):
        df = sample_prefixes(path, 5)
    assert keys(df) == {("x", 0), ("x", 2)}
    with pytest.warns(SamplingWarning, match="only 0 eligible"):
        empty = sample_prefixes(path, 5, rules=EligibilityRules(languages=["fr"]))
    assert len(empty) == 0 and list(empty.columns) == list(df.columns)


def test_missing_file_errors(tmp_path):
    missing = tmp_path / "nope.parquet"
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        sample_prefixes(str(missing), 1)
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        sample_prefixes(str(tmp_path / "nothing-here" / "*.parquet"), 1)
    ok = write(tmp_path, [row("x", [u("hi")])])
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        sample_prefixes([ok, str(missing)], 1)


def test_missing_column_errors(tmp_path):
    good = write(tmp_path, [row("x", [u("hi")])], "good.parquet")
    no_source = write(tmp_path, [{"conversation_id": "x", "messages": json.dumps([u("hi")])}],
                      "nosource.parquet")
    with pytest.raises(ValueError, match=r"nosource\.parquet.*'source'"):
        sample_prefixes([good, no_source], 1)
    no_lang = write(tmp_path, [{"conversation_id": "x", "messages": json.dumps([u("hi")]),
                                "source": "s"}], "nolang.parquet")
    sample_prefixes(no_lang, 1)  # optional metadata may be absent ...
    with pytest.raises(ValueError, match=r"nolang\.parquet.*'language'"):
        sample_prefixes(no_lang, 1, rules=EligibilityRules(languages=["en"]))  # ... unless used
    with pytest.raises(ValueError, match="'intent'"):
        sample_prefixes(good, 1, strata={"a": 1.0}, stratum_column="intent")
    with pytest.raises(ValueError, match="messages"):
        sample_prefixes(pd.DataFrame({"conversation_id": ["x"], "source": ["s"]}), 1)


def test_argument_errors(tmp_path):
    path = write(tmp_path, [row("x", [u("hi")])])
    for bad_n in (0, -3):
        with pytest.raises(ValueError, match="positive"):
            sample_prefixes(path, bad_n)
    with pytest.raises(TypeError):
        sample_prefixes(path, 1.5)
    with pytest.raises(ValueError, match="stratum_column"):
        sample_prefixes(path, 1, strata={"a": 1.0})
    with pytest.raises(ValueError):
        sample_prefixes(path, 1, strata={"a": -1.0}, stratum_column="language")
    with pytest.raises(ValidationError):
        EligibilityRules(max_chars=5, min_chars=10)
    with pytest.raises(ValidationError):
        EligibilityRules(langauges=["en"])  # typo: extra keys are forbidden
    with pytest.raises(ValidationError):
        EligibilityRules(start=datetime(2025, 2, 1), end=datetime(2025, 1, 1))


# --- issue 14: long conversations under a memory limit, language names, diagnoses ----------------

def test_one_long_conversation_sampled_many_times_fits_a_small_memory_limit(tmp_path):
    """One 10,000-turn conversation at n = 1,000 under a 1 GB DuckDB limit (main: the prefix
    lists of every candidate turn were materialised, OutOfMemoryException). The prefixes are
    still exactly messages[0..turn_index] and the sample is the reference one."""
    msgs = []
    for i in range(10_000):
        msgs += [u(f"q{i} hi"), a(f"a{i} ok")]
    path = write(tmp_path, [row("long", msgs)])
    df = sample_prefixes(path, 1000, seed=3, memory_limit="1GB")
    assert len(df) == 1000
    want = sorted(range(1, 10_001), key=lambda k: turn_hash(3, "long", k))[:1000]
    assert df["user_ordinal"].tolist() == want
    for _, r in df.sample(20, random_state=0).iterrows():
        assert json.loads(r["messages"]) == msgs[: r["turn_index"] + 1]
        assert json.loads(r["next_message"]) == msgs[r["turn_index"] + 1]


def test_many_conversations_of_thirty_turns_fit_a_small_memory_limit(tmp_path):
    rows = [row(f"c{c}", [m for i in range(30) for m in (u(f"q{i} " + "w " * 40), a("x " * 40))])
            for c in range(4000)]
    path = write(tmp_path, rows, row_group_size=500)
    df = sample_prefixes(path, 5000, seed=1, memory_limit="1GB")
    assert len(df) == 5000 and df["prefix_id"].is_unique


def test_spill_dir_is_used_and_cleaned(tmp_path, monkeypatch):
    path = write(tmp_path, [row("c1", [u("hello"), a()])])
    made = []
    real = S.tempfile.mkdtemp
    monkeypatch.setattr(S.tempfile, "mkdtemp", lambda **k: made.append(k.get("dir")) or real(**k))
    sample_prefixes(path, 1, spill_dir=str(tmp_path / "spill"))
    assert made == [str(tmp_path / "spill")] and list((tmp_path / "spill").iterdir()) == []


@pytest.mark.parametrize("stored, asked", [("en", "English"), ("English", "en"), ("en-US", "en"),
                                           ("EN", "english"), ("de", "German")])
def test_languages_accept_names_and_codes(tmp_path, stored, asked):
    path = write(tmp_path, [row("c1", [u("hello there")], language=stored),
                            row("c2", [u("bonjour")], language="fr")])
    with pytest.warns(SamplingWarning, match="only 1 eligible user turns"):
        df = sample_prefixes(path, 5, rules=EligibilityRules(languages=[asked]))
    assert df["conversation_id"].tolist() == ["c1"]


def test_explain_ineligible_names_the_cause(tmp_path):
    path = write(tmp_path, [row(f"c{i}", [u("hello there")], language=None, created_at=None) for i in range(5)])
    assert S.explain_ineligible(path, EligibilityRules()) == ""
    assert S.explain_ineligible(path, EligibilityRules(languages=["en"])) == (
        "0 of 5 conversations pass the eligibility rules: language is null in all 5 conversations "
        "(the source gives no language: drop `languages` or add one)")
    msg = S.explain_ineligible(path, EligibilityRules(start=datetime(2024, 1, 1)))
    assert "created_at is null in all 5 conversations (the source has no timestamps" in msg
    msg = S.explain_ineligible(path, EligibilityRules(min_chars=100))
    assert msg.startswith("5 of 5 conversations pass the conversation filters, but none of their 5 user turns "
                          "passes the turn rules (min_chars=100")
    path2 = write(tmp_path, [row("c1", [u("hi")], language="fr")], name="fr.parquet")
    assert S.explain_ineligible(path2, EligibilityRules(languages=["en"])).endswith(
        "no conversation has language in ['en'] (most common: fr 1)")
