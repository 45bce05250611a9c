"""Tests for depsim.deid (de-identification with consistent synthetic substitutes)."""

from __future__ import annotations

import copy
import importlib.util
import ipaddress
import json
import re
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depsim import deid
from depsim.deid import (
    PII_TYPES,
    STRUCTURED_TYPES,
    deidentify_many,
    deidentify_messages,
    deidentify_text,
    find_pii,
    iban_valid,
    luhn_valid,
)

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "pii_corpus.jsonl"


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _fixed_process_key(monkeypatch):
    """Substitutes drawn without an explicit secret use a key made at random per process; fixed
    here so that a property that holds for most keys but not all fails the same way on every run
    (CI once drew a key under which a substitute read as another type)."""
    monkeypatch.delenv("DEPSIM_DEID_KEY", raising=False)
    monkeypatch.setattr(deid, "_PROCESS_KEY", b"tests: fixed process key".ljust(32, b"."))


bench = _load_module("pii_recall_bench", ROOT / "benchmarks" / "pii_recall.py")
corpus_gen = _load_module("make_pii_corpus", ROOT / "tests" / "data" / "make_pii_corpus.py")


def types_in(text: str) -> list[str]:
    return [t for _, _, t in find_pii(text)]


def spans_text(text: str) -> list[tuple[str, str]]:
    return [(text[s:e], t) for s, e, t in find_pii(text)]


DOC_NETS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]

# --------------------------------------------------------------------------
# every type is detected and replaced; the original disappears
# --------------------------------------------------------------------------

CASES = [
    ("email", "Write to jane.doe+work@gmail.com today.", "jane.doe+work@gmail.com"),
    ("email", "or jane dot doe at gmail dot com", "jane dot doe at gmail dot com"),
    ("phone", "UK office +44 20 7946 0958 is open.", "+44 20 7946 0958"),
    ("phone", "Call (415) 867-5309 now.", "(415) 867-5309"),
    ("phone", "Call 415-867-5309 now.", "415-867-5309"),
    ("phone", "Call 415.867.5309 now.", "415.867.5309"),
    ("phone", "call me at 4158675309", "4158675309"),
    ("credit_card", "Card: 4111 1111 1111 1111 exp 12/26", "4111 1111 1111 1111"),
    ("credit_card", "Amex 3782-822463-10005 please", "3782-822463-10005"),
    ("credit_card", "num 5555555555554444.", "5555555555554444"),
    ("ssn", "SSN 078-05-1120 on file", "078-05-1120"),
    ("ip", "server 8.8.4.4 is slow", "8.8.4.4"),
    ("ip", "v6 host 2a00:1450:4001:82b::200e responded", "2a00:1450:4001:82b::200e"),
    ("url_secret", "see https://x.io/cb?user=7&access_token=AbC123xyz789QQ&lang=en", "AbC123xyz789QQ"),
    ("api_key", "key sk-proj-Abcdefghijklmnop1234567890QRSTuvwx is leaked", "sk-proj-Abcdefghijklmnop1234567890QRSTuvwx"),
    ("api_key", "aws AKIAZ3MPLE7KEY12345X ok", "AKIAZ3MPLE7KEY12345X"),
    ("api_key", "gh token ghp_aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uV1wX2", "ghp_aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uV1wX2"),
    ("api_key", "slack xoxb-123456789012-abcdefGHIJKL ok", "xoxb-123456789012-abcdefGHIJKL"),
    ("api_key", "maps AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY here", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    ("api_key", "api_key=9f86d081884c7d659a2feaa0c55ad015", "9f86d081884c7d659a2feaa0c55ad015"),
    ("street_address", "I live at 123 Main Street, in town.", "123 Main Street"),
    ("street_address", "ship to 45 Elm Ave, Apt 3 please", "45 Elm Ave, Apt 3"),
    ("person_name", "Yesterday Jennifer Lopez called.", "Jennifer Lopez"),
    ("person_name", "Hello, my name is Xiomara Quintanilla.", "Xiomara Quintanilla"),
    ("person_name", "Dear Thaddeus,\nthanks.", "Thaddeus"),
    ("person_name", "Best regards,\nPeregrine Achterberg", "Peregrine Achterberg"),
]


@pytest.mark.parametrize("typ,text,original", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_type_detected_and_replaced(typ, text, original):
    assert (original, typ) in spans_text(text)
    clean, counts = deidentify_text(text, key="k")
    assert original not in clean
    assert counts[typ] >= 1
    assert set(counts) == set(PII_TYPES)
    # the text around the span is kept
    before = text[: text.index(original)]
    assert clean.startswith(before)


def _sub_for(text: str, original: str, key: str = "k") -> str:
    mapping: dict = {}
    deidentify_text(text, mapping, key=key)
    return mapping[original]


def test_substitutes_look_like_their_type():
    email = _sub_for("mail a.b@gmail.com", "a.b@gmail.com")
    assert re.fullmatch(r"user_[0-9a-f]{4}@example\.com", email)

    phone = _sub_for("Call (415) 867-5309 now", "(415) 867-5309")
    assert re.fullmatch(r"\(\d{3}\) 555-01\d\d", phone)
    intl = _sub_for("ring +44 20 7946 0958", "+44 20 7946 0958")
    assert intl.startswith("+44 ") and len(intl) == len("+44 20 7946 0958")

    card = _sub_for("card 4111 1111 1111 1111", "4111 1111 1111 1111")
    assert re.fullmatch(r"\d{4} \d{4} \d{4} \d{4}", card) and luhn_valid(card)
    amex = _sub_for("card 378282246310005", "378282246310005")
    assert len(amex) == 15 and luhn_valid(amex)

    ssn = _sub_for("SSN 078-05-1120", "078-05-1120")
    assert re.fullmatch(r"9\d\d-[1-4]\d-\d{4}", ssn)

    ip4 = _sub_for("host 8.8.4.4", "8.8.4.4")
    ip6 = _sub_for("host 2a00:1450:4001:82b::200e", "2a00:1450:4001:82b::200e")
    for ip in (ip4, ip6):
        addr = ipaddress.ip_address(ip)
        assert any(addr in n for n in DOC_NETS if n.version == addr.version)

    key = "sk-proj-Abcdefghijklmnop1234567890QRSTuvwx"
    sub = _sub_for(f"key {key}", key)
    assert sub.startswith("sk-proj-") and len(sub) == len(key) and sub != key
    akia = _sub_for("AKIAZ3MPLE7KEY12345X", "AKIAZ3MPLE7KEY12345X")
    assert re.fullmatch(r"AKIA[0-9A-Z]{16}", akia)

    addr = _sub_for("I live at 123 Main Street.", "123 Main Street")
    assert re.fullmatch(r"\d+ [A-Z][a-z]+ Street", addr)

    name = _sub_for("Yesterday Jennifer Lopez called.", "Jennifer Lopez")
    assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", name)


def test_url_secret_keeps_url_shape():
    url = "https://api.svc.io/v1/data?user=5&access_token=AbC123xyz789QQ&format=json#top"
    clean, counts = deidentify_text(f"GET {url} failed", key="k")
    assert counts["url_secret"] == 1
    new_url = clean.split()[1]
    old, new = urlsplit(url), urlsplit(new_url)
    assert (old.scheme, old.netloc, old.path, old.fragment) == (new.scheme, new.netloc, new.path, new.fragment)
    oq, nq = parse_qs(old.query), parse_qs(new.query)
    assert list(oq) == list(nq)
    assert nq["user"] == ["5"] and nq["format"] == ["json"]
    assert nq["access_token"] != oq["access_token"]
    assert len(nq["access_token"][0]) == len(oq["access_token"][0])


def test_url_password_in_userinfo_replaced():
    text = "DATABASE_URL=postgres://admin:S3cretPa55@db.internal:5432/prod"
    clean, counts = deidentify_text(text)
    assert "S3cretPa55" not in clean
    assert clean.startswith("DATABASE_URL=postgres://admin:") and clean.endswith("@db.internal:5432/prod")
    assert counts["url_secret"] == 1


def test_private_key_block_replaced():
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1b2c3d4\nZ9y8x7w6v5\n-----END RSA PRIVATE KEY-----"
    clean, counts = deidentify_text(f"my key:\n{pem}\nthanks")
    assert counts["api_key"] == 1
    assert "MIIEowIBAAKCAQEA1b2c3d4" not in clean
    assert "-----BEGIN RSA PRIVATE KEY-----" in clean and clean.endswith("-----END RSA PRIVATE KEY-----\nthanks")


# --------------------------------------------------------------------------
# consistency and determinism
# --------------------------------------------------------------------------


def test_same_value_same_substitute_within_conversation():
    msgs = [
        {"role": "user", "content": "I'm Kevin Walsh, email kevin.walsh@gmail.com"},
        {"role": "assistant", "content": "Thanks! I'll write to kevin.walsh@gmail.com."},
        {"role": "user", "content": "Also cc kevin.walsh@gmail.com and ops@acme-corp.io. Kevin says hi."},
    ]
    out, counts = deidentify_messages(msgs, key="conv-key")
    subs = [re.findall(r"user_[0-9a-f]{4}@example\.com", m["content"]) for m in out]
    assert subs[0] == [subs[1][0]] == [subs[2][0]]
    assert subs[2][1] != subs[2][0]  # a different address gets a different fake
    assert counts["email"] == 4
    # the lone first name reuses the fake first name of the full name
    fake_full = out[0]["content"].split("I'm ")[1].split(",")[0]
    assert out[2]["content"].endswith(f"{fake_full.split()[0]} says hi.")


def test_mapping_shared_across_calls():
    mapping: dict = {}
    a, _ = deidentify_text("ping 8.8.8.8", mapping, key="k")
    b, _ = deidentify_text("8.8.8.8 is down", mapping, key="k")
    assert a.split()[1] == b.split()[0]
    assert mapping["8.8.8.8"] == a.split()[1]


def test_deterministic_across_runs_and_key_dependent():
    text = "Jennifer Lopez <jlo@gmail.com>, 415-867-5309, SSN 078-05-1120, card 4111111111111111"
    r1 = deidentify_text(text, key="alpha")[0]
    r2 = deidentify_text(text, key="alpha")[0]
    assert r1 == r2
    m1 = deidentify_messages([{"role": "user", "content": text}], key="alpha")[0]
    assert m1[0]["content"] == r1
    r3 = deidentify_text(text, key="beta")[0]
    assert r3 != r1  # a different key gives different substitutes
    # different conversations (fresh mappings) with the same key agree
    assert deidentify_text(text, {}, key="alpha")[0] == r1


def test_distinct_originals_never_collide_in_a_conversation():
    # 150 phones must get 150 distinct substitutes (the fiction range has only 100 lines)
    phones = [f"(415) 867-{i:04d}" for i in range(1000, 1150)]
    mapping: dict = {}
    clean, counts = deidentify_text("; ".join(phones), mapping, key="k")
    assert counts["phone"] == 150
    subs = [mapping[p] for p in phones]
    assert len(set(subs)) == 150


def test_substitute_never_equals_original():
    # originals that look like our own fakes must still change
    payload = "400000123456789"
    fake_like_card = payload + next(c for c in "0123456789" if luhn_valid(payload + c))
    for text, orig in [
        ("Hi, I'm Avery Ashford.", "Avery Ashford"),
        (f"card {fake_like_card}", fake_like_card),
        ("key sk-aaaaaaaaaaaa1aaaaaaaaaaa", "sk-aaaaaaaaaaaa1aaaaaaaaaaa"),
    ]:
        for key in ("", "k1", "k2"):
            mapping: dict = {}
            clean, _ = deidentify_text(text, mapping, key=key)
            assert mapping[orig] != orig and orig not in clean


def test_lone_surname_gets_fake_surname_and_title_kept():
    mapping: dict = {}
    clean, counts = deidentify_text("Dr. Smith said the results are fine.", mapping)
    assert counts["person_name"] == 1 and "Smith" not in clean and clean.startswith("Dr. ")


# --------------------------------------------------------------------------
# validators
# --------------------------------------------------------------------------


def test_luhn():
    for good in ("4111111111111111", "5555 5555 5555 4444", "378282246310005", "6011-1111-1111-1117", "79927398713"):
        assert luhn_valid(good)
    for bad in ("4111111111111112", "1234567812345678", "5555 5555 5555 4445", "79927398710", "7"):
        assert not luhn_valid(bad)


def test_non_luhn_numbers_not_flagged_as_cards():
    assert "credit_card" not in types_in("Card 4111 1111 1111 1112 was declined")
    assert "credit_card" not in types_in("order 1234567812345678 shipped")
    assert "credit_card" in types_in("Card 4111 1111 1111 1111 was declined")


def _with_check_digit(payload: str) -> str:
    return next(payload + c for c in "0123456789" if luhn_valid(payload + c))


def test_maestro_card_wins_over_phone():
    """Luhn-valid 12-19 digit Maestro numbers (Faker's 0604..., 5018..., 57...) that also look
    like phones are labelled cards, and fully covered; phones that are not such numbers stay phones."""
    for payload in ("06048968847", "57147701486", "50181234567", "630412345678"):
        num = _with_check_digit(payload)
        for text in (f"charge it to {num} please", f"use the card ending... actually the full number is {num}"):
            spans = [(text[s:e], t) for s, e, t in find_pii(text)]
            assert (num, "credit_card") in spans, (text, spans)
        grouped = " ".join(num[i:i + 4] for i in range(0, len(num), 4))
        assert (grouped, "credit_card") in [(f"charge it to {grouped}"[s:e], t)
                                            for s, e, t in find_pii(f"charge it to {grouped}")]
    bad = "06048968847" + next(c for c in "0123456789" if not luhn_valid("06048968847" + c))
    assert [t for *_, t in find_pii(f"call me on {bad}")] == ["phone"]  # not Luhn: still a phone
    for phone in ("+44 20 7946 0958", "07700 900456", "06 12 34 56 78", "+91 98765 43210"):
        assert [t for *_, t in find_pii(f"call me on {phone}")] == ["phone"], phone


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="0123456789", min_size=15, max_size=15).filter(lambda s: s[0] in "23456"))
def test_random_non_luhn_16_digit_never_a_card(prefix):
    for last in "0123456789":
        num = prefix + last
        if not luhn_valid(num):
            for fmt in (num, " ".join(num[i:i + 4] for i in range(0, 16, 4))):
                assert "credit_card" not in types_in(f"ref {fmt} ok")


def test_ssn_invalid_areas_and_groups_excluded():
    for bad in ("000-12-3456", "666-12-3456", "900-12-3456", "987-65-4321", "123-00-4567", "123-45-0000"):
        assert "ssn" not in types_in(f"SSN {bad}"), bad
    assert "ssn" in types_in("SSN 123-45-6789")
    assert "ssn" in types_in("my social security number is 123 45 6789")


def test_ip_validation():
    for bad in ("256.1.1.1", "1.2.3", "1.2.3.4.5", "127.0.0.1", "0.0.0.0", "255.255.255.0",
                "192.0.2.44", "version 1.2.3.4", "v1.2.3.4", "12:30:45", "std::vector", "Face::Add"):
        assert "ip" not in types_in(f"x {bad} y"), bad
    for good in ("8.8.8.8", "10.0.0.12", "2001:4860:4860::8888", "fe80::1ff:fe23:4567:890a"):
        assert ("ip" in types_in(f"x {good} y")), good


def test_month_and_verb_words_not_names():
    for text in ("Will you check it again?", "May I ask a question?", "The deadline is in May 2024.",
                 "It starts June 3rd.", "Mark the task as done.", "There is a Grace period.",
                 "Hope this helps!", "I use Ruby on Rails.", "We flew to Jordan.", "Dear Customer,",
                 "I'm Canadian.", "This is Python 3.12.", "name=None", "Hi Team,",
                 "I bought it at Best Buy\n", "I love Paris\n", "Best\nPractices for testing"):
        assert "person_name" not in types_in(text), text
    assert ("Will Johnson", "person_name") in spans_text("Will Johnson be there?")
    assert ("Will", "person_name") in spans_text("Thanks Will!")


def test_id_like_numbers_not_flagged():
    for text in ("Order #415-867-5309 shipped", "ISBN 978-0-596-52068-7", "Part no. 412-55-0913",
                 "IMEI 356938035643809", "released 2024-03-15", "price $1,234.56",
                 "UUID 123e4567-e89b-12d3-a456-426614174000", "Chrome 120.0.6099.129",
                 "commit 9fceb02d0ae598e95dc970b74767f19372d61af8", "max_tokens=4096",
                 "password = os.environ['DB_PASSWORD']", "example: (555) 555-0123 or a@example.com",
                 "use sk-some-long-hyphenated-name-here"):
        assert find_pii(text) == [], (text, spans_text(text))


def test_find_pii_spans_sorted_and_disjoint():
    text = "Email a@b.co or call +1 (415) 867-5309; server 8.8.8.8, key=sk-" + "a1" * 15
    spans = find_pii(text)
    assert spans == sorted(spans)
    assert all(e1 <= s2 for (_, e1, _), (s2, _, _) in zip(spans, spans[1:]))


# --------------------------------------------------------------------------
# messages and tool calls
# --------------------------------------------------------------------------


def _conversation():
    args = {"to": "kevin.walsh@gmail.com", "body": "Hi Kevin, call 415-867-5309",
            "api_key": "9f86d081884c7d659a2feaa0c55ad015", "retries": 3,
            "card": 4111111111111111, "nested": [{"ip": "8.8.8.8"}], "note": "nothing here"}
    return [
        {"role": "system", "content": "You are helpful. Operator contact: ops@acme-corp.io"},
        {"role": "user", "content": "Email kevin.walsh@gmail.com please."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "send_email", "arguments": json.dumps(args)}},
            {"id": "call_2", "type": "function",
             "function": {"name": "lookup", "arguments": '{"query": "weather in Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "sent", "to": "kevin.walsh@gmail.com"}'},
        {"role": "user", "content": [{"type": "text", "text": "My SSN is 078-05-1120"},
                                     {"type": "image_url", "image_url": {"url": "https://img.example.org/a.png"}}]},
    ]


def test_messages_all_roles_and_tool_arguments():
    msgs = _conversation()
    out, counts = deidentify_messages(msgs, key="k")
    assert len(out) == len(msgs)
    dump = json.dumps(out)
    for secret in ("kevin.walsh@gmail.com", "ops@acme-corp.io", "415-867-5309", "9f86d081884c7d659a2feaa0c55ad015",
                   "4111111111111111", "8.8.8.8", "078-05-1120"):
        assert secret not in dump, secret
    args = json.loads(out[2]["tool_calls"][0]["function"]["arguments"])  # still valid JSON
    assert set(args) == {"to", "body", "api_key", "retries", "card", "nested", "note"}
    assert args["retries"] == 3 and args["note"] == "nothing here"
    assert isinstance(args["card"], int) and luhn_valid(str(args["card"]))
    assert args["body"].startswith("Hi ") and "Kevin" not in args["body"]
    # same email -> same fake everywhere (user content, tool args, tool output)
    fake = args["to"]
    assert fake in out[1]["content"] and fake in out[3]["content"]
    json.loads(out[3]["content"])  # tool output that was JSON text stays JSON
    # untouched arguments keep their exact formatting; ids and names are preserved
    assert out[2]["tool_calls"][1]["function"]["arguments"] == '{"query": "weather in Paris"}'
    assert out[2]["tool_calls"][0]["id"] == "call_1" and out[3]["tool_call_id"] == "call_1"
    assert out[2]["tool_calls"][0]["function"]["name"] == "send_email"
    assert out[4]["content"][1] == msgs[4]["content"][1]
    assert "078-05-1120" not in out[4]["content"][0]["text"]
    assert counts["email"] == 4 and counts["ssn"] == 1 and counts["api_key"] == 1
    assert counts["credit_card"] == 1 and counts["ip"] == 1 and counts["phone"] == 1


def test_messages_input_not_mutated():
    msgs = _conversation()
    snapshot = copy.deepcopy(msgs)
    out, _ = deidentify_messages(msgs, key="k")
    assert msgs == snapshot
    out[4]["content"][1]["image_url"]["url"] = "changed"
    out[2]["tool_calls"][0]["function"]["name"] = "changed"
    assert msgs == snapshot


def test_json_tool_output_walked_and_stays_valid():
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END PRIVATE KEY-----"
    payload = {"log": "user logged in\nKevin Walsh from 8.8.8.8", "key": pem,
               "kevin.walsh@gmail.com": {"visits": 3}}
    msgs = [{"role": "tool", "tool_call_id": "c", "content": json.dumps(payload)}]
    out, counts = deidentify_messages(msgs, key="k")
    new = json.loads(out[0]["content"])
    assert "Kevin" not in new["log"] and "8.8.8.8" not in new["log"]
    assert new["key"].startswith("-----BEGIN PRIVATE KEY-----\n") and "MIIEvQIBADANBgkqhkiG9w0B" not in new["key"]
    assert not any("gmail" in k for k in new) and list(new.values())[2] == {"visits": 3}
    assert counts["person_name"] == 1 and counts["ip"] == 1 and counts["api_key"] == 1 and counts["email"] == 1
    # a PEM block inside JSON *text* (escaped newlines) keeps the JSON valid too
    raw = json.dumps({"k": pem})
    clean, _ = deidentify_text(raw)
    assert json.loads(clean)["k"].count("\n") == 2 and "MIIEvQIBADANBgkqhkiG9w0B" not in clean


def test_invalid_json_arguments_are_deidentified_as_text():
    msgs = [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{to: a.b@gmail.com"}}]}]
    out, counts = deidentify_messages(msgs)
    assert "a.b@gmail.com" not in out[0]["tool_calls"][0]["function"]["arguments"]
    assert counts["email"] == 1


@settings(max_examples=60, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30)
    | st.sampled_from(["a.b@gmail.com", "call 415-867-5309", "8.8.8.8", "Hi Kevin Walsh", "sk-" + "ab12" * 8]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
))
def test_tool_arguments_always_valid_json(obj):
    args = json.dumps(obj)
    msgs = [{"role": "assistant", "content": None,
             "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": args}}]}]
    out, _ = deidentify_messages(msgs, key="k")
    new_args = out[0]["tool_calls"][0]["function"]["arguments"]
    new = json.loads(new_args)
    assert type(new) is type(obj)
    for secret in ("a.b@gmail.com", "415-867-5309", "8.8.8.8", "Kevin Walsh", "sk-" + "ab12" * 8):
        assert secret not in new_args


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_deidentify_text_total(text):
    spans = find_pii(text)
    assert all(0 <= s < e <= len(text) and t in PII_TYPES for s, e, t in spans)
    clean, counts = deidentify_text(text)
    assert sum(counts.values()) == len(spans)
    if not spans:
        assert clean == text


def test_no_catastrophic_backtracking():
    cases = ["1-" * 20000, "a-" * 20000, "Kevin " * 20000, "password=" * 20000, "a dot " * 20000 + " at gmail",
             "-----BEGIN PRIVATE KEY-----\n" * 2000, "1:" * 20000, "+1 " * 10000, "4111 " * 20000,
             "DE89 " * 10000, "Ab 1 " * 10000, "Flat 2, " * 8000, "City-123456 " * 6000, "at A, " * 10000,
             "Kevin Smith said " * 5000, "hi john " * 10000]
    for text in cases:
        t0 = time.perf_counter()
        find_pii(text)
        assert time.perf_counter() - t0 < 3.0, text[:20]


# --------------------------------------------------------------------------
# issue 14 "Found" items: each of these leaked on main (92f266b)
# --------------------------------------------------------------------------

FOUND_CASES = [
    ("iban", "Please send it to IBAN DE89 3704 0044 0532 0130 00 by Friday.", "DE89 3704 0044 0532 0130 00"),
    ("iban", "my iban is GB33BUKB20201555555555", "GB33BUKB20201555555555"),
    ("national_id", "My passport number is 533401372.", "533401372"),
    ("national_id", "passport no: M95604230, expires 2031", "M95604230"),
    ("national_id", "National Insurance number QQ 12 34 56 C on the payslip", "QQ 12 34 56 C"),
    ("national_id", "numéro de sécurité sociale 1 84 12 76 451 089 46", "1 84 12 76 451 089 46"),
    ("date_of_birth", "I was born on 14 March 1987 in Leeds.", "14 March 1987"),
    ("date_of_birth", "DOB: 03/07/1992", "03/07/1992"),
    ("date_of_birth", "Geburtsdatum: 12.05.1979", "12.05.1979"),
    ("phone", "ring me on 07700 900456 after six", "07700 900456"),
    ("phone", "Tel. (0113) 496 0244", "(0113) 496 0244"),
    ("phone", "meine Nummer: 030 12345678", "030 12345678"),
    ("phone", "appelle-moi au 06 12 34 56 78", "06 12 34 56 78"),
    ("phone", "my mobile is 98765 43210", "98765 43210"),
    ("street_address", "Ship to Flat 2, 14 Baker Street, London NW1 6XE please",
     "Flat 2, 14 Baker Street, London NW1 6XE"),
    ("street_address", "Ich wohne in der Hauptstraße 5, 10115 Berlin.", "Hauptstraße 5, 10115 Berlin"),
    ("person_name", "Karl-Heinz Müller-Lüdenscheidt called about the invoice.", "Karl-Heinz Müller-Lüdenscheidt"),
    ("person_name", "hi, my name is john smith and I need help", "john smith"),
    ("person_name", '<img src="team/photo3.jpg" alt="Markus Weber">', "Markus Weber"),
]


@pytest.mark.parametrize("typ,text,original", FOUND_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(FOUND_CASES)])
def test_found_items_detected_and_replaced(typ, text, original):
    spans = spans_text(text)
    covered = "".join(v for v, t in spans if t == typ)
    assert all(w in covered for w in original.split()), (text, spans)
    clean, counts = deidentify_text(text, key="k")
    assert counts[typ] >= 1
    assert original not in clean
    if typ in ("person_name", "street_address"):  # no part of a name or address survives
        for w in original.replace(",", " ").split():
            if len(w) >= 3 and w.lower() not in {"flat", "street"}:
                assert w not in clean, (w, clean)


def test_iban_checksum_and_substitute_fails_it():
    assert iban_valid("DE89 3704 0044 0532 0130 00") and iban_valid("GB33BUKB20201555555555")
    assert not iban_valid("DE89 3704 0044 0532 0130 01")  # one digit changed
    assert "iban" not in types_in("ref DE89 3704 0044 0532 0130 01 ok")
    mapping: dict = {}
    clean, _ = deidentify_text("IBAN DE89 3704 0044 0532 0130 00", mapping, key="k")
    sub = mapping["DE89 3704 0044 0532 0130 00"]
    assert sub.startswith("DE") and len(sub) == len("DE89 3704 0044 0532 0130 00") and sub[4] == " "
    assert not iban_valid(sub)  # nobody's account


def test_uk_phone_substitute_is_an_ofcom_drama_number():
    for orig, prefix in (("07700 123456", "07700900"), ("(0113) 496 0244", "01632960"), ("020 7123 4567", "02079460")):
        mapping: dict = {}
        deidentify_text(f"call me on {orig}", mapping, key="k")
        sub = mapping[orig]
        assert re.sub(r"\d", "0", sub) == re.sub(r"\d", "0", orig)  # same layout
        assert re.sub(r"\D", "", sub).startswith(prefix), sub


def test_common_phrases_are_not_names_or_addresses():
    for text in ("print('Hello World')", "I read the New York Times today", "The Amazon River is long",
                 "Order #123456789 for 2 items at $19.99", "We flew to San Jose and Los Angeles.",
                 "SELECT Name, Address FROM Users WHERE Id = 42"):
        assert find_pii(text) == [], (text, spans_text(text))
    # the German particle "in der" before a street is not part of the address
    assert ("Lindenallee 12, 50667 Köln", "street_address") in spans_text("Ich wohne in der Lindenallee 12, 50667 Köln.")


def test_passport_and_dob_need_their_cue():
    # the same strings without a cue are not identity numbers or birth dates
    assert find_pii("Order M95604230 shipped") == []
    assert "date_of_birth" not in types_in("The meeting is on 03/07/1992 at noon.")


def test_dob_substitute_is_another_date_in_the_same_layout():
    mapping: dict = {}
    deidentify_text("date of birth: 14.05.1957", mapping, key="k")
    sub = mapping["14.05.1957"]
    assert re.fullmatch(r"\d\d\.\d\d\.\d{4}", sub) and sub != "14.05.1957"
    d, m, y = (int(x) for x in sub.split("."))
    assert 1 <= d <= 12 and 1 <= m <= 12 and 1940 <= y <= 2004


def test_new_types_consistent_within_conversation():
    msgs = [
        {"role": "user", "content": "My IBAN is GB33BUKB20201555555555 and I'm Markus Weber."},
        {"role": "assistant", "content": "Thanks Markus Weber, I noted GB33BUKB20201555555555."},
        {"role": "user", "content": "Also call 07700 900456. Born on 14 March 1987."},
        {"role": "user", "content": "Again: 07700 900456"},
    ]
    out, counts = deidentify_messages(msgs, key="c1")
    text = " ".join(m["content"] for m in out)
    for raw in ("GB33BUKB20201555555555", "Markus", "Weber", "07700 900456", "14 March 1987"):
        assert raw not in text
    ibans = re.findall(r"GB\d\d[A-Z0-9]{18}", text)
    assert len(ibans) == 2 and ibans[0] == ibans[1]
    phones = [m["content"].split()[-1] for m in out[3:]]
    assert phones[0] in out[2]["content"]
    assert counts["iban"] == 2 and counts["phone"] == 2 and counts["date_of_birth"] == 1


def test_deidentify_many_matches_one_by_one():
    convs = [[{"role": "user", "content": f"I'm Markus Weber, call 07700 900{i:03d} or mail m{i}@gmail.com"},
              {"role": "assistant", "content": "Noted, Markus Weber."}] for i in range(40)]
    keys = [f"k{i}" for i in range(40)]
    expected = [deidentify_messages(c, k) for c, k in zip(convs, keys)]
    assert deidentify_many(convs, keys, processes=2, chunksize=8) == expected
    assert deidentify_many(convs, keys, processes=1) == expected
    with pytest.raises(ValueError, match="40 conversations but 39 keys"):
        deidentify_many(convs, keys[:-1])


def test_one_call_per_conversation_equals_message_by_message():
    msgs = [{"role": "user", "content": "Hi, I'm Priya Sharma, my number is 98765 43210"},
            {"role": "assistant", "content": "Hello Priya Sharma! What's your address?"},
            {"role": "user", "content": "Flat 2, 14 Baker Street, London NW1 6XE. Regards,\nPriya"},
            {"role": "tool", "content": '{"ip": "8.8.8.8"}'}]
    out, _ = deidentify_messages(msgs, key="k")
    mapping: dict = {}
    ref = [deidentify_text(m["content"], mapping, key="k")[0] for m in msgs[:3]]
    assert [m["content"] for m in out[:3]] == ref
    assert "8.8.8.8" not in out[3]["content"] and json.loads(out[3]["content"])


# --------------------------------------------------------------------------
# Faker-based corpus (text the detector's author did not write): recall floors
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus():
    return bench.load_corpus(CORPUS)


@pytest.fixture(scope="module")
def evaluation(corpus):
    return bench.evaluate(corpus)


def test_corpus_is_faker_based_multilocale_and_held_out(corpus):
    locales = {r["locale"] for r in corpus}
    assert len(locales) >= 5, locales
    assert {r["split"] for r in corpus} == {"test"}
    by_type = {t: 0 for t in PII_TYPES}
    for rec in corpus:
        for sp in rec["spans"]:
            assert 0 <= sp["start"] < sp["end"] <= len(rec["text"])
            by_type[sp["type"]] += 1
    assert all(n >= 80 for n in by_type.values()), by_type
    negatives = [r for r in corpus if not r["spans"]]
    assert len(negatives) >= 1000
    kinds = {r["kind"] for r in negatives}
    for k in ("isbn", "uuid", "version", "order", "code", "sha1"):
        assert f"negative:{k}" in kinds


def test_corpus_file_is_the_generators_output(corpus):
    faker = pytest.importorskip("faker")
    if faker.VERSION != corpus_gen.GENERATED_WITH_FAKER:
        pytest.skip(f"corpus written with Faker {corpus_gen.GENERATED_WITH_FAKER}, {faker.VERSION} installed")
    assert corpus_gen.make(corpus_gen.TEST_SEED, "test") == corpus


def test_recall_floors_on_held_out_corpus(evaluation):
    rows = {r["type"]: r for r in bench.summarize(evaluation)}
    for t in STRUCTURED_TYPES:
        assert rows[t]["recall_any"] >= 0.98, rows[t]  # replaced (under its own type or another)
        assert rows[t]["recall"] >= 0.97, rows[t]
    for t in ("person_name", "street_address", "date_of_birth"):
        assert rows[t]["recall"] >= 0.9, rows[t]


def test_lookalikes_rarely_flagged(evaluation):
    assert bench.fp_rate(evaluation) <= 0.01, evaluation["fps"][:10]


def test_recall_floor_on_fresh_faker_corpus():
    """A small corpus generated now with another seed (not the shipped file, not the tuning seed)."""
    pytest.importorskip("faker")
    recs = corpus_gen.make(seed=7, split="test", n_positive=700, n_negative=300)
    ev = bench.evaluate(recs)
    rows = {r["type"]: r for r in bench.summarize(ev)}
    structured_hit = sum(ev["types"][t]["hit_any"] for t in STRUCTURED_TYPES)
    structured_n = sum(ev["types"][t]["n"] for t in STRUCTURED_TYPES)
    assert structured_hit / structured_n >= 0.98
    assert rows["person_name"]["recall"] >= 0.85 and rows["street_address"]["recall"] >= 0.85
    assert bench.fp_rate(ev) <= 0.02


@pytest.mark.parametrize("secret", [b"fixed-1", b"fixed-2"])
def test_substitutes_are_not_redetected_as_other_types(corpus, secret):
    # explicit secrets: with the machine's random key this failed once in CI (1 key in ~2,000)
    for rec in corpus[:1500]:
        before = {t for _, _, t in find_pii(rec["text"])}
        clean, _ = deidentify_text(rec["text"], key="k", secret=secret)
        after = {t for _, _, t in find_pii(clean)}
        assert after <= before | {"person_name", "street_address", "phone", "national_id"}, (rec["text"], clean)
        # reserved-range fakes (example.com, documentation IPs, 9xx SSNs, bad-checksum IBANs) vanish
        assert not ({"email", "ip", "ssn", "iban"} & after), clean


def test_a_scrambled_id_that_passes_luhn_is_drawn_again():
    # under this secret the NIR's first substitute was 346056027199723: Luhn-valid with an AmEx
    # prefix, so it read as a credit card and was counted and replaced a second time downstream
    clean, counts = deidentify_text("ok carte vitale 235069730213547", key="k", secret=b"s850")
    assert counts["national_id"] == 1
    assert {t for _, _, t in find_pii(clean)} <= {"national_id", "phone"}, clean


# --------------------------------------------------------------------------
# the secret key: substitutes cannot be reversed from the conversation id alone
# --------------------------------------------------------------------------


def _brute_force(published: str, typ: str, candidates, conv_key: bytes) -> list[str]:
    """The audit's attack: every candidate whose substitute under ``conv_key`` is ``published``."""
    from depsim.deid import _substitute
    return [c for c in candidates if _substitute(c, typ, {}, conv_key, set()) == published]


def test_guessed_original_cannot_be_confirmed_without_the_key(monkeypatch):
    import datetime
    import hashlib
    from depsim.deid import _conv_key

    monkeypatch.setenv("DEPSIM_DEID_KEY", "the operator's secret")
    cid = "pii037"
    days = [datetime.date(1920, 1, 1) + datetime.timedelta(days=i) for i in range(365 * 91)]
    ssns = [f"219-{g:02d}-{s:04d}" for g in range(1, 100) for s in range(1, 101)]
    for typ, original, text, candidates in (
        ("date_of_birth", "1987-05-14", "I was born on 1987-05-14.", [d.isoformat() for d in days]),
        ("ssn", "219-45-0077", "my SSN is 219-45-0077", ssns),
    ):
        mapping: dict = {}
        deidentify_text(text, mapping, key=cid)
        published = mapping[original]
        # what the published code computed from the conversation id alone (no secret)
        public = hashlib.blake2b(cid.encode(), digest_size=32).digest()
        assert original not in _brute_force(published, typ, candidates, public)
        # with the key the same search confirms it: the key is what protects the value
        assert original in _brute_force(published, typ, candidates, _conv_key(cid, None))


def test_key_file_is_made_once_private_and_outside_releases(tmp_path, monkeypatch):
    from depsim.deid import KEY_ENV, deid_key, key_fingerprint

    monkeypatch.delenv(KEY_ENV, raising=False)
    reports = tmp_path / "reports"
    k1 = deid_key(reports)
    path = reports / ".cache" / "deid.key"
    assert path.is_file() and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["deid.key"]  # no temporary file left
    assert deid_key(reports) == k1  # reruns on this machine give the same substitutes
    assert deid_key(tmp_path / "elsewhere") != k1  # random, not derived from anything public
    fp = key_fingerprint(k1)
    assert fp == key_fingerprint(deid_key(reports)) and fp not in (k1.hex(), path.read_text())
    msgs = [{"role": "user", "content": "I am Ivan Petrovic, born 1987-05-14"}]
    a = deidentify_messages(msgs, "c1", secret=k1)[0]
    assert deidentify_messages(msgs, "c1", secret=deid_key(reports))[0] == a
    assert deidentify_messages(msgs, "c1", secret=deid_key(tmp_path / "elsewhere"))[0] != a
    monkeypatch.setenv(KEY_ENV, path.read_text().strip())  # the file's text, shared, is the same key
    assert deid_key() == k1 and deid_key(tmp_path / "third") == k1
    assert not (tmp_path / "third").exists()


def test_workers_use_the_callers_key():
    from depsim.deid import deid_key

    convs = [[{"role": "user", "content": f"I am Ivan Petrovic, SSN 219-45-{i:04d}"}] for i in range(1, 9)]
    keys = [f"c{i}" for i in range(len(convs))]
    secret = bytes(range(32))
    many = deidentify_many(convs, keys, processes=2, chunksize=2, secret=secret)
    assert many == [deidentify_messages(c, k, secret=secret) for c, k in zip(convs, keys)]
    assert many != deidentify_many(convs, keys, processes=1, secret=deid_key())


# --------------------------------------------------------------------------
# names with letters of Latin Extended-A/B and Latin Extended Additional
# --------------------------------------------------------------------------


@pytest.mark.parametrize("text, name", [
    ("My name is Łukasz Żółtowski.", "Łukasz Żółtowski"),
    ("My colleague Ayşe Yılmaz said no.", "Ayşe Yılmaz"),
    ("Dear Mrs. Dvořáková,", "Dvořáková"),
    ("my name is Ivan Petrović", "Ivan Petrović"),
    ("Regards,\nTomasz Wiśniewski", "Tomasz Wiśniewski"),
    ("My name is Nguyễn Thị Hồng.", "Nguyễn Thị Hồng"),
    ("Please ask Đorđe Šćepanović about it.", "Đorđe Šćepanović"),
    ("my name is łukasz żółtowski", "łukasz żółtowski"),
])
def test_names_with_extended_latin_letters_are_replaced_whole(text, name):
    start = text.index(name)
    assert any(t == "person_name" and s <= start and start + len(name) <= e for s, e, t in find_pii(text))
    clean, counts = deidentify_text(text)
    assert counts["person_name"] >= 1
    assert not any(tok in clean for tok in name.split())
    assert not [c for c in clean if ord(c) > 127]  # no letter of the name survives (fakes are ASCII)


# --------------------------------------------------------------------------
# date-of-birth substitutes are valid dates in the original's layout
# --------------------------------------------------------------------------


def _ordinal(n: int) -> str:
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


DOB_LAYOUTS = ["%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y", "%d-%m-%y", "%d %B %Y",
               "%B %d, %Y", "%b %d, %Y", "%d %b %Y"]


def _prints_back(text: str, layout: str) -> bool:
    """True when ``text`` is a valid date in ``layout`` that prints back unchanged."""
    import datetime
    try:
        return datetime.datetime.strptime(text, layout).strftime(layout) == text
    except ValueError:
        return False


@pytest.mark.parametrize("layout", DOB_LAYOUTS)
def test_dob_substitutes_are_valid_dates_in_the_same_layout(layout):
    import datetime
    days = [datetime.date(1931, 1, 1) + datetime.timedelta(days=97 * i) for i in range(300)]
    for i, d in enumerate(days):
        orig = d.strftime(layout)
        mapping: dict = {}
        deidentify_text(f"I was born on {orig}.", mapping, key=f"c{i}")
        sub = mapping[orig]
        assert sub != orig
        # a valid date that prints back the same way: same layout, same zero padding
        # "May" is both the full and the short name, so it may become a full name
        layouts = [layout, layout.replace("%b", "%B")] if "May" in orig else [layout]
        assert any(_prints_back(sub, lay) for lay in layouts), (orig, sub)


def test_dob_substitutes_keep_unpadded_and_ordinal_layouts_valid():
    import datetime
    days = [datetime.date(1931, 1, 1) + datetime.timedelta(days=97 * i) for i in range(300)]
    for i, d in enumerate(days):
        for orig in (f"{d.month}/{d.day}/{d.year}", f"{d:%B} {d.day}{_ordinal(d.day)}, {d.year}",
                     f"{d.day}{_ordinal(d.day)} of {d:%B} {d.year}"):
            mapping: dict = {}
            deidentify_text(f"my date of birth is {orig}.", mapping, key=f"c{i}")
            sub = mapping[orig]
            nums = [int(x) for x in re.findall(r"\d+", sub)]
            if "/" in orig:
                datetime.date(nums[2], nums[0], nums[1])
            else:
                m = re.search(r"(\d+)([a-z]+)", sub)
                assert m.group(2) == _ordinal(int(m.group(1))), (orig, sub)
                datetime.datetime.strptime(re.sub(r"(\d)(st|nd|rd|th)", r"\1", sub).replace(" of ", " "),
                                           "%B %d, %Y" if orig[0].isalpha() else "%d %B %Y")


# --------------------------------------------------------------------------
# names under "name"/"full_name"/"first_name"/"last_name" keys
# --------------------------------------------------------------------------


NAME_RECORD = {"full_name": "Bartholomew Quince", "first_name": "Zebulon", "last_name": "Quince",
               "customer": {"name": "Wilhelmina Fairweather"},
               "address": "742 Evergreen Terrace, Springfield, IL 62704"}


@pytest.mark.parametrize("indent", [None, 2])
def test_names_under_name_keys_are_replaced_in_json_tool_output_and_arguments(indent):
    record = json.dumps(NAME_RECORD, indent=indent)
    msgs = [{"role": "assistant", "content": "", "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "lookup", "arguments": record}}]},
            {"role": "tool", "tool_call_id": "1", "content": record},
            {"role": "user", "content": f"the tool said {json.dumps(NAME_RECORD)} ok"}]
    out, counts = deidentify_messages(msgs, key="k")
    for text in (out[0]["tool_calls"][0]["function"]["arguments"], out[1]["content"], out[2]["content"]):
        for value in ("Bartholomew", "Quince", "Zebulon", "Wilhelmina", "Fairweather", "Evergreen"):
            assert value not in text
    assert json.loads(out[1]["content"]).keys() == NAME_RECORD.keys()
    assert counts["person_name"] >= 12


def test_a_name_substitute_never_reuses_a_word_of_the_conversation():
    # real surnames that are also in the fake-name list: a substitute drawn for one person must
    # not carry another's real surname (under the fixed test key "Emerson Fairweather" did)
    msgs = [{"role": "user", "content": "Bartholomew Quince wrote to Wilhelmina Fairweather."},
            {"role": "user", "content": "Then Quince phoned Kai Lockwood and Avery Marchetti."}]
    real = {"Bartholomew", "Quince", "Wilhelmina", "Fairweather", "Kai", "Lockwood", "Avery",
            "Marchetti"}
    for i in range(60):
        out, counts = deidentify_messages(msgs, key=f"c{i}", secret=b"s")
        words = set(re.findall(r"\w+", " ".join(m["content"] for m in out)))
        assert counts["person_name"] >= 4 and not (words & real), out
        clean, _ = deidentify_text(msgs[0]["content"], key=f"c{i}", secret=b"s")
        assert not (set(re.findall(r"\w+", clean)) & {"Bartholomew", "Quince", "Wilhelmina", "Fairweather"}), clean


def test_a_lone_mention_of_a_replaced_name_is_replaced_too():
    msgs = [{"role": "user", "content": "My manager Jan Kowalski keeps shouting."},
            {"role": "assistant", "content": "Have you told Kowalski how that feels?"},
            {"role": "user", "content": [{"type": "text", "text": "Kowalski will not listen, and Jan laughs."}]}]
    out, counts = deidentify_messages(msgs, key="c", secret=b"s")
    text = json.dumps(out)
    assert "Kowalski" not in text and "Jan" not in text, text
    sub_first, sub_last = out[0]["content"].split()[2:4]
    assert out[1]["content"] == f"Have you told {sub_last} how that feels?"
    assert out[2]["content"][0]["text"].startswith(f"{sub_last} will not listen, and {sub_first} laughs")
    assert counts["person_name"] == 4
    clean, c = deidentify_text("Ask Jan Kowalski. Kowalski knows.", key="c", secret=b"s")
    assert "Kowalski" not in clean and c["person_name"] == 2
    # a part that is an English word is left alone ("Will Brown ... will")
    clean, _ = deidentify_text("Will Brown said it will rain; Brown left.", key="c", secret=b"s")
    assert " will rain" in clean


def test_cyrillic_names_under_name_keys_are_replaced():
    rec = {"first_name": "Иван", "last_name": "Петров", "customer": {"name": "Мария Сидорова"},
           "city": {"name": "Москва"}}
    out, counts = deidentify_messages([{"role": "tool", "content": json.dumps(rec, ensure_ascii=False)}],
                                      key="k", secret=b"s")
    new = json.loads(out[0]["content"])
    assert new["first_name"] != "Иван" and new["last_name"] != "Петров" and "Сидорова" not in out[0]["content"]
    assert re.fullmatch("[А-ЯЁ][а-яё]+", new["first_name"]) and new["city"]["name"] == "Москва"
    assert counts["person_name"] == 3


def test_name_keys_leave_non_names_alone():
    record = {"name": "get_weather", "tool": {"name": "search"}, "city": {"name": "Paris"},
              "first_name_label": "First name", "items": [{"name": "Widget 3000"}]}
    text = json.dumps(record)
    out, counts = deidentify_messages([{"role": "tool", "content": text}], key="k")
    assert out[0]["content"] == text and not any(counts.values())


# --------------------------------------------------------------------------
# person names in Cyrillic
# --------------------------------------------------------------------------


@pytest.mark.parametrize("text, name", [
    ("Иван Петров пришёл на встречу.", "Иван Петров"),
    ("Вчера звонила Мария Архиповна Быкова из бухгалтерии.", "Мария Архиповна Быкова"),
    ("Передай Петрову Ивану, что отчёт готов.", "Петрову Ивану"),
    ("Я говорил с Петровым Иваном Сергеевичем.", "Петровым Иваном Сергеевичем"),
    ("Напиши поздравление для Анны Сергеевны Кузнецовой.", "Анны Сергеевны Кузнецовой"),
    ("Стихи написал А. С. Пушкин.", "А. С. Пушкин"),
    ("Стихи А.С. Пушкина знают все.", "А.С. Пушкина"),
    ("Иванов И.И. назначен директором.", "Иванов И.И."),
    ("Здравствуйте, Мария Петровна!", "Мария Петровна"),
    ("Позвони Саше Петровой вечером.", "Саше Петровой"),
    ("Спроси у Олега Кима про отпуск.", "Олега Кима"),
    ("Ольга Кравчук работает у нас с мая.", "Ольга Кравчук"),
    ("Документы подписал Олександр Коваленко.", "Олександр Коваленко"),
    ("Николай Андреевич Римский-Корсаков написал оперу.", "Николай Андреевич Римский-Корсаков"),
    ("Вера Петрова ушла в отпуск.", "Вера Петрова"),
    ("Меня зовут Аня, мне 25 лет.", "Аня"),
    ("Контактное лицо: Ювеналий Ааронович, тел. уточняется.", "Ювеналий Ааронович"),
])
def test_cyrillic_names_are_found_and_replaced(text, name):
    start = text.index(name)
    assert any(t == "person_name" and s <= start and start + len(name) <= e for s, e, t in find_pii(text)), \
        spans_text(text)
    clean, counts = deidentify_text(text, key="k", secret=b"s")
    assert counts["person_name"] >= 1
    for tok in re.findall(r"\w+", name):
        if len(tok) > 1:  # initials may come back as other initials, never as the same word
            assert not re.search(r"(?<!\w)" + tok + r"(?!\w)", clean), (tok, clean)
    sub = clean[start:start + len(clean) - len(text) + len(name)]
    assert len(sub.split()) == len(name.split()), (name, sub)  # same number of words
    assert re.search("[А-Яа-я]", sub), sub  # a Cyrillic name gets a Cyrillic substitute


@pytest.mark.parametrize("text", [
    "Москва — столица России, а Санкт-Петербург называют северной столицей.",
    "Мы поехали в Иваново, а потом вернулись в Москву.",
    "В Иванове Мария работает учительницей.",
    "Сегодня Мария пришла раньше всех.",
    "Слава Богу, всё закончилось хорошо.",
    "Слава Украине!",
    "Лада Гранта или Лада Калина: что выбрать?",
    "Алиса Яндекс, включи музыку.",
    "Московский Метрополитен закрыл станцию.",
    "Витамин С. Потом пей воду.",
    "Сбербанк Онлайн не работает.",
    "Moscow and Saint Petersburg are the largest cities of Russia.",
])
def test_cyrillic_non_names_are_left_alone(text):
    assert "person_name" not in types_in(text), spans_text(text)


def test_latin_text_never_runs_the_cyrillic_detector(monkeypatch):
    def boom(text):
        raise AssertionError("Cyrillic detector ran on Latin text")
    monkeypatch.setattr(deid, "_cyrillic_names", boom)
    assert spans_text("My name is Ivan Petrov, I live in Moscow.") == [("Ivan Petrov", "person_name")]


def test_cyrillic_substitutes_keep_case_initials_and_shape():
    for i in range(40):
        mapping: dict = {}
        clean, _ = deidentify_text("Передай Петрову Ивану и А. С. Пушкину привет.", mapping, key=f"c{i}",
                                   secret=b"s")
        dat = mapping["Петрову Ивану"].split()
        assert len(dat) == 2 and dat[0].endswith("у") and dat[1].endswith("у"), dat  # dative kept
        ini = mapping["А. С. Пушкину"]
        assert re.fullmatch(r"[А-Я]\. [А-Я]\. [А-Я][а-яё]+у", ini), ini
        assert not set(re.findall(r"\w+", ini)) & {"А", "С", "Пушкину"}
        fem, _ = deidentify_text("Звонила Анна Сергеевна Кузнецова.", key=f"c{i}", secret=b"s")
        assert re.search(r"Звонила [А-Я][а-я]+[ая] [А-Я][а-я]+овна [А-Я][а-яё]+(?:ова|ева|ёва|ина|ская)\.",
                         fem), fem


def test_a_cyrillic_substitute_never_reuses_a_word_of_the_conversation():
    # real names that are also fakes ("Тихон", "Ракитин", "Агния", "Ветлугина")
    msgs = [{"role": "user", "content": "Вчера Тихон Ракитин написал Агнии Ветлугиной."},
            {"role": "user", "content": "Потом Мирон Дубравин позвонил Глафире Ивановне."}]
    real = {"Тихон", "Ракитин", "Агнии", "Ветлугиной", "Мирон", "Дубравин", "Глафире", "Ивановне"}
    for i in range(60):
        out, counts = deidentify_messages(msgs, key=f"c{i}", secret=b"s")
        words = set(re.findall(r"\w+", " ".join(m["content"] for m in out)))
        assert counts["person_name"] >= 4 and not (words & real), out


# Russian sentence frames around Faker's names (text whose names the detector's author did not write)
RU_TEMPLATES = [
    "Меня зовут {name}, помоги составить резюме.",
    "Руководитель проекта — {name}, все вопросы через почту.",
    "Контактное лицо: {name}. Звонить после обеда.",
    "Что ты знаешь про человека по имени {name}?",
    "Подпись: {name}, главный инженер.",
    "Заявитель {name} просит предоставить отпуск с понедельника.",
    "Здравствуйте! Я {name}, хочу записаться на приём.",
    "Автор статьи — {name}, а рецензент пока не назначен.",
]
# Russian sentences with capitalised words, places and organisations but no person's name
RU_NO_NAMES = [
    "Москва — столица России, а Санкт-Петербург называют северной столицей.",
    "Мы поехали в Иваново, а потом вернулись в Москву на поезде.",
    "Сегодня утром в Новосибирске выпал первый снег.",
    "Вчера Сбербанк повысил ставки по вкладам.",
    "Напиши письмо в службу поддержки Яндекс Маркета о возврате товара.",
    "Помоги составить план поездки: Казань, Нижний Новгород, Ярославль.",
    "Расскажи, чем Ростов-на-Дону отличается от Краснодара.",
    "Как настроить роутер Ростелеком для работы с Wi-Fi?",
    "Какие документы нужны для получения загранпаспорта через Госуслуги?",
    "Переведи на английский: Красная площадь находится рядом с Кремлём.",
    "Почему Волга считается главной рекой Европейской части России?",
    "Объясни разницу между Газпромом и Роснефтью простыми словами.",
    "Слава Богу, всё закончилось хорошо.",
    "Слава Украине! Героям слава!",
    "Лада Гранта или Лада Веста: что выбрать для города?",
    "Алиса, включи музыку на кухне.",
    "Новый Год мы встречали в Сочи, было тепло.",
    "Большой Театр открыл новый сезон в сентябре.",
    "Пушкинский музей продлил выставку импрессионистов до марта.",
    "Напиши сочинение на тему «Война и мир» и образ Наташи в романе.",
    "Моя собака любит гулять в Парке Горького по выходным.",
    "Вопрос: Сколько стоит билет из Москвы в Санкт-Петербург на Сапсане?",
    "Здравствуйте! Подскажите, пожалуйста, как доехать до Казанского вокзала.",
    "Университет ИТМО и МГУ заняли высокие места в рейтинге.",
    "Ответ: Да, Тихий океан больше Атлантического.",
    "Компания Аэрофлот отменила рейсы в Екатеринбург из-за погоды.",
    "Спасибо большое, Вы очень помогли!",
    "Телеграм и ВКонтакте сегодня работают с перебоями.",
    "Через Озон и Вайлдберриз теперь можно оплатить картой Мир.",
    "В Харькове и Одессе прошли концерты под открытым небом.",
    "Дай рецепт борща, как готовят на Кубани.",
    "Сравни Тинькофф Банк и Альфа-Банк по условиям кредитных карт.",
    "Какой смартфон лучше: Самсунг или Сяоми?",
    "Где находится Невский проспект и как туда добраться от Московского вокзала?",
    "Оцени мой текст: Летом мы отдыхали на Байкале, вода была холодной.",
    "Итак, Первый канал покажет парад на Красной площади.",
    "Составь резюме для вакансии в Минздраве Московской области.",
    "Тверская улица была перекрыта из-за Дня Победы.",
    "Помоги решить задачу: Поезд вышел из Самары в Уфу со скоростью 80 км/ч.",
    "Напиши стихотворение про Белые ночи в Петербурге.",
    "Объясни, что такое Государственная Дума и Совет Федерации.",
    "Конечно, Калининград — самый западный регион России.",
    "В Иванове Мария работает учительницей, а я — инженером.",
    "Сколько лет Эрмитажу и кто основал Третьяковскую галерею?",
    "Мой брат учится в Высшей Школе Экономики на Факультете Права.",
    "Правила игры Монополия: Банк выдаёт каждому игроку деньги.",
    "Срочно! Завтра Росгидромет обещает ураган в Приморском крае.",
    "Составь меню на неделю: Понедельник — гречка, Вторник — рыба.",
    "Почему Луна всегда повёрнута к Земле одной стороной?",
    "Лучшие места Крыма: Ялта, Севастополь, Судак и Новый Свет.",
]


def ru_faker_names(seed: int, n: int, locale: str = "ru_RU") -> list[str]:
    """``n`` names from Faker(``locale``) in six layouts (Faker's own three-word names, first + last,
    last + first, first + patronymic, "И. О. Фамилия", "Фамилия И.О."), one gender per name."""
    from faker import Faker
    import random
    fk, rnd = Faker(locale), random.Random(seed)
    fk.seed_instance(seed)
    out = []
    for _ in range(n):
        sfx = rnd.choice(("_male", "_female"))
        first, last, mid = (getattr(fk, f"first_name{sfx}")(), getattr(fk, f"last_name{sfx}")(),
                            getattr(fk, f"middle_name{sfx}")())
        out.append([getattr(fk, f"name{sfx}")(), f"{first} {last}", f"{last} {first}", f"{first} {mid}",
                    f"{first[0]}. {mid[0]}. {last}", f"{last} {first[0]}.{mid[0]}."][rnd.randrange(6)])
    return out


NAME_TITLES = ("тов.", "г-н", "г-жа", "пан", "пані", "добродій", "добродійка")


def ru_name_recall(seed: int = 2026, n: int = 400, locale: str = "ru_RU") -> tuple[float, list[str]]:
    """Share of Faker(``locale``) names in RU_TEMPLATES fully covered by person_name spans (a title
    such as "тов." or "г-н" before a name is not part of it), and the missed sentences."""
    import random
    rnd = random.Random(seed + 1)
    hit, missed = 0, []
    for name in ru_faker_names(seed, n, locale):
        core = name.split(" ", 1)[1] if name.split(" ", 1)[0] in NAME_TITLES else name
        text = rnd.choice(RU_TEMPLATES).format(name=name)
        s0 = text.index(core)
        ok = bench._covered(text, s0, s0 + len(core), find_pii(text), "person_name")
        hit += ok
        if not ok:
            missed.append(text)
    return hit / n, missed


def ru_false_positive_rate() -> tuple[float, list]:
    """Share of RU_NO_NAMES sentences in which a person_name is found, and those found."""
    found = [(t, spans_text(t)) for t in RU_NO_NAMES if "person_name" in types_in(t)]
    return len(found) / len(RU_NO_NAMES), found


def test_cyrillic_name_recall_on_faker_ru_names():
    pytest.importorskip("faker")
    recall, missed = ru_name_recall()
    assert recall >= 0.9, (recall, missed[:10])


def test_cyrillic_names_rarely_found_in_russian_text_without_names():
    assert len(RU_NO_NAMES) >= 40
    rate, found = ru_false_positive_rate()
    assert rate <= 0.02, found
