"""Generate tests/data/pii_corpus.jsonl: a seeded, labelled PII corpus.

Run:  python tests/data/make_pii_corpus.py   (rewrites the jsonl next to this file)

Each line is {"text": str, "spans": [{"start", "end", "type"}]}.  Texts are built
from chat-style sentence templates; ``{placeholder}`` slots are filled by value
generators.  Placeholders whose name maps to a PII type (``PII_SLOTS``) are
labelled; all others are *distractors* (order numbers, dates, versions, prices,
ISBNs, non-Luhn 16-digit numbers, UUIDs, SHAs, month/verb words that are also
first names, ...) and are deliberately left unlabelled so that precision is
measured honestly.

The generator is independent of ``depsim.deid``: values are produced from the
type definitions (valid SSN areas, Luhn-valid cards with real IIN prefixes,
public IPs, ...), not from the detector's regexes.  It also contains hard cases
the detector is documented to miss (names whose first name is not in any
gazetteer and that have no cue, lower-case names, non-US addresses).
"""

from __future__ import annotations

import json
import random
import re
import string
from pathlib import Path
from urllib.parse import quote

SEED = 20240611
N_RECORDS = 700
OUT = Path(__file__).with_name("pii_corpus.jsonl")

# --------------------------------------------------------------------------
# word lists (independent of the detector's gazetteer)
# --------------------------------------------------------------------------
COMMON_FIRST = (
    "James Michael Robert David William Richard Joseph Thomas Christopher Daniel Matthew "
    "Kevin Brian Jason Ryan Eric Jonathan Justin Brandon Samuel Patrick Nathan Tyler "
    "Mary Patricia Jennifer Linda Elizabeth Susan Jessica Sarah Karen Lisa Emily Michelle "
    "Amanda Melissa Stephanie Rebecca Laura Rachel Olivia Emma Hannah Sophia Natalie "
    "Priya Aisha Fatima Omar Ahmed Rahul Arjun Carlos Miguel Diego Sofia Lucia Ivan Olga "
    "Hiroshi Kenji Wei Lars Ingrid Giulia Marco Stefan Pierre Siobhan Declan Kwame"
).split()
AMBIG_FIRST_WITH_SURNAME = [  # ambiguous first names with a very common surname
    ("Will", "Johnson"), ("May", "Chen"), ("Mark", "Davis"), ("Grace", "Kim"),
    ("Jordan", "Lee"), ("Bill", "Thompson"), ("June", "Park"), ("Frank", "Miller"),
]
SURNAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Wilson "
    "Anderson Taylor Thomas Moore Jackson Martin Lee Thompson White Harris Clark Lewis "
    "Robinson Walker Young Allen King Wright Scott Nguyen Hill Green Adams Baker Nelson "
    "Patel Kim Chen Wang Singh Kumar Okafor Mensah Rossi Muller Dubois Tanaka Ivanov "
    "Kowalski Murphy O'Brien McDonald Fitzgerald Hernandez Lopez Gonzalez Reyes Cruz "
    "Whitaker Pennington Castellanos Abernathy Ellingson Vasquez Holloway Marchetti"
).split()
RARE_FIRST = (  # first names unlikely to be in any embedded gazetteer
    "Xiomara Thaddeus Eulalia Zebulon Ottoline Peregrine Anneliese Cosimo Bronwen "
    "Leocadia Radomir Ximena Torvald Philippa Eamon Marisol Osvaldo Henrike Casimir"
).split()
RARE_LAST = (
    "Quintanilla Vanderploeg Oyelaran Brzezinski Achterberg Szczepanik Thistlewood "
    "Delacroix-Moreau Ekwueme Haraldsen Villaseñor Kallistratos"
).split()

EMAIL_DOMAINS = (
    "gmail.com yahoo.com outlook.com hotmail.com proton.me icloud.com acme-corp.io "
    "stanford.edu mail.co.uk web.de orange.fr company.com.au startup.ai fastmail.fm "
    "research.ox.ac.uk contoso.com"
).split()

STREET_NAMES = (
    "Main Oak Maple Elm Washington Lake Hill Park Pine Cedar Sunset Lincoln Highland "
    "Jackson Church Willow River Mill Spring Ridge Franklin Madison Chestnut Walnut "
    "Meadow Forest Valley Harbor Orchard"
).split()
STREET_SUFFIX = (
    "Street St Avenue Ave Road Rd Boulevard Blvd Lane Ln Drive Dr Court Ct Place Way "
    "Terrace Parkway Circle"
).split()
CITIES = [
    ("Springfield", "IL"), ("Austin", "TX"), ("Portland", "OR"), ("Denver", "CO"),
    ("San Jose", "CA"), ("Columbus", "OH"), ("Raleigh", "NC"), ("Madison", "WI"),
    ("Boise", "ID"), ("Tampa", "FL"), ("Albany", "NY"), ("Salt Lake City", "UT"),
]
INTL_ADDRESSES = [
    "Hauptstraße 5, 10115 Berlin", "Rue de Rivoli 27, 75004 Paris",
    "Calle Mayor 12, 28013 Madrid", "Via Roma 8, 00184 Roma",
    "Kerkstraat 112, 1017 GP Amsterdam", "Flat 2, 14 Baker Street, London NW1 6XE",
    "5-2-1 Ginza, Chuo-ku, Tokyo", "Ul. Marszałkowska 10, 00-590 Warszawa",
]

# --------------------------------------------------------------------------
# value generators
# --------------------------------------------------------------------------


def luhn_digit(payload: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def is_luhn(num: str) -> bool:
    return luhn_digit(num[:-1]) == num[-1]


def rdigits(r: random.Random, n: int) -> str:
    return "".join(r.choice(string.digits) for _ in range(n))


def g_email(r):
    f, l = r.choice(COMMON_FIRST).lower(), r.choice(SURNAMES).lower().replace("'", "")
    local = r.choice([
        f"{f}.{l}", f"{f}{l}", f"{f[0]}{l}", f"{f}_{l}{r.randint(1, 99)}", f"{l}.{f}",
        f"{f}{r.randint(70, 2005)}", f"{f}.{l}+{r.choice(['news', 'shop', 'work'])}",
        f"{f[0]}.{l}", f"{f}-{l}",
    ])
    return f"{local}@{r.choice(EMAIL_DOMAINS)}"


def _nanp(r):
    while True:
        area = f"{r.randint(2, 9)}{rdigits(r, 2)}"
        ex = f"{r.randint(2, 9)}{rdigits(r, 2)}"
        line = rdigits(r, 4)
        if not (ex == "555" and line.startswith("01")):
            return area, ex, line


def g_phone(r):
    kind = r.random()
    if kind < 0.55:  # US formats
        a, e, l = _nanp(r)
        return r.choice([
            f"({a}) {e}-{l}", f"{a}-{e}-{l}", f"{a}.{e}.{l}", f"+1 {a} {e} {l}",
            f"+1-{a}-{e}-{l}", f"1-{a}-{e}-{l}", f"({a}){e}-{l}", f"+1 ({a}) {e}-{l}",
            f"{a} {e} {l}", f"{a}-{e}-{l} ext. {r.randint(10, 9999)}",
        ])
    intl = [
        lambda: f"+44 20 {rdigits(r, 4)} {rdigits(r, 4)}",
        lambda: f"+44 7{rdigits(r, 3)} {rdigits(r, 6)}",
        lambda: f"+49 30 {rdigits(r, 8)}",
        lambda: f"+49 (0)89 {rdigits(r, 3)} {rdigits(r, 4)}",
        lambda: f"+33 {r.randint(1, 9)} {rdigits(r, 2)} {rdigits(r, 2)} {rdigits(r, 2)} {rdigits(r, 2)}",
        lambda: f"+91 {r.randint(7, 9)}{rdigits(r, 4)} {rdigits(r, 5)}",
        lambda: f"+81 3-{rdigits(r, 4)}-{rdigits(r, 4)}",
        lambda: f"+61 2 {rdigits(r, 4)} {rdigits(r, 4)}",
        lambda: f"+55 11 9{rdigits(r, 4)}-{rdigits(r, 4)}",
        lambda: f"+34 {r.randint(6, 9)}{rdigits(r, 2)} {rdigits(r, 3)} {rdigits(r, 3)}",
        lambda: f"+353 1 {rdigits(r, 3)} {rdigits(r, 4)}",
        lambda: f"+86 10 {rdigits(r, 4)} {rdigits(r, 4)}",
        lambda: f"+27 21 {rdigits(r, 3)} {rdigits(r, 4)}",
        lambda: f"+{r.choice(['44', '49', '33', '39', '31'])}{rdigits(r, 10)}",
    ]
    return r.choice(intl)()


def g_phone_bare(r):
    a, e, l = _nanp(r)
    return f"{a}{e}{l}"


def g_ssn(r):
    while True:
        area = r.randint(1, 899)
        if area == 666:
            continue
        grp, ser = r.randint(1, 99), r.randint(1, 9999)
        return f"{area:03d}-{grp:02d}-{ser:04d}"


def g_ssn_spaced(r):
    return g_ssn(r).replace("-", r.choice([" ", ""]))


CARD_KINDS = [  # (prefixes, length, grouping)
    (["4"], 16, [4, 4, 4, 4]),
    (["4"], 13, None),
    ([str(p) for p in range(51, 56)] + ["2221", "2500", "2720"], 16, [4, 4, 4, 4]),
    (["34", "37"], 15, [4, 6, 5]),
    (["6011", "65", "644"], 16, [4, 4, 4, 4]),
    (["35"], 16, [4, 4, 4, 4]),
    (["36", "38"], 14, [4, 6, 4]),
    (["62"], 19, [4, 4, 4, 4, 3]),
]


def g_card(r):
    prefixes, n, grouping = r.choice(CARD_KINDS)
    p = r.choice(prefixes)
    payload = p + rdigits(r, n - 1 - len(p))
    num = payload + luhn_digit(payload)
    if grouping is None or r.random() < 0.3:
        return num
    sep = r.choice([" ", "-"])
    out, i = [], 0
    for g in grouping:
        out.append(num[i:i + g])
        i += g
    return sep.join(out)


def g_ipv4(r):
    return g_ip(r, v6=False)


def g_ipv6(r):
    return g_ip(r, v6=True)


def g_ip(r, v6=None):
    if v6 is False or (v6 is None and r.random() < 0.7):
        while True:
            # unicast host addresses only (224+ is multicast/reserved, 127 loopback)
            o = [r.randint(1, 223), r.randint(0, 255), r.randint(0, 255), r.randint(1, 254)]
            if o[0] == 127 or (o[0], o[1], o[2]) in ((192, 0, 2), (198, 51, 100), (203, 0, 113)):
                continue
            return ".".join(map(str, o))
    groups = [f"{r.randint(0, 0xFFFF):x}" for _ in range(8)]
    groups[0] = r.choice(["2a00", "2607", "2001", "2400", "2a02", "fe80", "2804"])
    if groups[0] == "2001":
        groups[1] = r.choice(["4860", "0470", "67c"])
    if r.random() < 0.5:
        return ":".join(groups)
    k = r.randint(2, 5)
    return ":".join(groups[:k]) + "::" + ":".join(groups[-r.randint(1, 2):])


def _rand(r, alphabet, n):
    return "".join(r.choice(alphabet) for _ in range(n))


ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B64URL = ALNUM + "-_"


def g_api_key(r):
    kinds = [
        lambda: "sk-" + _rand(r, ALNUM, 48),
        lambda: "sk-proj-" + _rand(r, B64URL, r.randint(60, 120)),
        lambda: "sk-ant-api03-" + _rand(r, B64URL, 90),
        lambda: "AKIA" + _rand(r, string.ascii_uppercase + string.digits, 16),
        lambda: "ghp_" + _rand(r, ALNUM, 36),
        lambda: "github_pat_" + _rand(r, ALNUM, 22) + "_" + _rand(r, ALNUM, 59),
        lambda: f"xoxb-{rdigits(r, 12)}-{rdigits(r, 13)}-" + _rand(r, ALNUM, 24),
        lambda: f"xoxp-{rdigits(r, 11)}-{rdigits(r, 12)}-" + _rand(r, ALNUM, 32),
        lambda: "AIza" + _rand(r, B64URL, 35),
        lambda: "sk_live_" + _rand(r, ALNUM, 24),
        lambda: "glpat-" + _rand(r, B64URL, 20),
        lambda: "hf_" + _rand(r, string.ascii_letters, 34),
        lambda: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ" + _rand(r, B64URL, 40) + "." + _rand(r, B64URL, 43),
    ]
    return r.choice(kinds)()


def g_hex_secret(r):
    return _rand(r, HEX, r.choice([32, 40, 64]))


def g_b64_secret(r):
    return _rand(r, ALNUM + "+/", 40)


def g_token_value(r):
    return r.choice([
        lambda: _rand(r, ALNUM, r.randint(20, 40)),
        lambda: _rand(r, HEX, 32),
        lambda: _rand(r, B64URL, 43),
        lambda: "ya29." + _rand(r, B64URL, 60),
    ])()


def g_password(r):
    words = ["Summer", "Tiger", "Blue", "Dragon", "Coffee", "Winter", "Falcon", "Maple"]
    return r.choice(words) + str(r.randint(10, 9999)) + r.choice(["!", "#", "$", "", "?"])


def g_url_password(r):  # a password as it appears inside a URL (percent-encoded)
    return quote(g_password(r), safe="")


def g_oauth_code(r):
    return _rand(r, B64URL, r.randint(20, 44))


def g_obf_email(r):
    f, l = r.choice(COMMON_FIRST).lower(), r.choice(SURNAMES).lower().replace("'", "")
    return r.choice([
        f"{f} dot {l} at gmail dot com", f"{f}{l} at yahoo dot com",
        f"{f}.{l} [at] {r.choice(['acme', 'uni-bonn', 'contoso'])} [dot] {r.choice(['com', 'de', 'org'])}",
        f"{f}(at){l}(dot)io", f"{f[0]}{l} (at) outlook (dot) com",
    ])


def g_street(r):
    num = str(r.randint(1, 9999)) if r.random() < 0.9 else f"{r.randint(1, 999)}{r.choice('AB')}"
    name = r.choice(STREET_NAMES)
    if r.random() < 0.15:
        name = r.choice(["N", "S", "E", "W", "North", "West"]) + " " + name
    if r.random() < 0.1:
        name = f"{r.randint(2, 99)}th"
    return f"{num} {name} {r.choice(STREET_SUFFIX)}"


def g_addr(r):
    s = g_street(r)
    if r.random() < 0.3:
        s += r.choice([", Apt ", ", Apt. ", " Suite ", ", Unit ", " #"]) + str(r.randint(1, 999))
    if r.random() < 0.35:
        city, st = r.choice(CITIES)
        s += f", {city}, {st} {rdigits(r, 5)}"
    return s


def g_intl_addr(r):
    return r.choice(INTL_ADDRESSES)


def g_name(r):
    x = r.random()
    if x < 0.75:
        return f"{r.choice(COMMON_FIRST)} {r.choice(SURNAMES)}"
    if x < 0.85:
        f, l = r.choice(AMBIG_FIRST_WITH_SURNAME)
        return f"{f} {l}"
    return r.choice(COMMON_FIRST)


def g_cue_name(r):  # used after strong cues ("my name is", "Dear", "signed,")
    x = r.random()
    if x < 0.5:
        return f"{r.choice(RARE_FIRST)} {r.choice(RARE_LAST + SURNAMES)}"
    if x < 0.75:
        return r.choice(RARE_FIRST)
    return f"{r.choice(COMMON_FIRST)} {r.choice(SURNAMES)}"


def g_rare_name(r):  # no cue, not in any common-name list: the detector should miss most
    return f"{r.choice(RARE_FIRST)} {r.choice(RARE_LAST)}"


def g_lower_name(r):
    return f"{r.choice(COMMON_FIRST).lower()} {r.choice(SURNAMES).lower()}"


def g_surname(r):
    return r.choice(SURNAMES)


# ---- distractors ----------------------------------------------------------


def d_order(r):
    return r.choice([
        f"#{rdigits(r, 6)}", f"ORD-{r.randint(2019, 2025)}-{rdigits(r, 6)}",
        f"{rdigits(r, 3)}-{rdigits(r, 7)}-{rdigits(r, 7)}", f"A{rdigits(r, 9)}",
        f"{rdigits(r, 10)}", f"#{rdigits(r, 3)}-{rdigits(r, 3)}-{rdigits(r, 4)}",
    ])


def d_date(r):
    y, m, d = r.randint(1990, 2026), r.randint(1, 12), r.randint(1, 28)
    months = ["January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"]
    return r.choice([
        f"{y}-{m:02d}-{d:02d}", f"{m:02d}/{d:02d}/{y}", f"{d:02d}.{m:02d}.{y}",
        f"{months[m - 1]} {d}, {y}", f"{d} {months[m - 1]} {y}", f"{y}/{m:02d}/{d:02d}",
        f"{y}-{m:02d}-{d:02d}T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z",
    ])


def d_version(r):
    return r.choice([
        f"v{r.randint(0, 9)}.{r.randint(0, 30)}.{r.randint(0, 99)}",
        f"{r.randint(1, 4)}.{r.randint(0, 12)}.{r.randint(0, 30)}",
        f"version {r.randint(1, 12)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 99)}",
        f"{r.randint(1, 3)}.{r.randint(0, 9)}.{r.randint(0, 9)}-rc{r.randint(1, 5)}",
        f"build {r.randint(10, 22)}.0.{r.randint(10000, 22631)}.{r.randint(1, 999)}",
    ])


def d_price(r):
    return r.choice([
        f"${r.randint(1, 9)},{rdigits(r, 3)}.{rdigits(r, 2)}", f"${r.randint(1, 999)}.{rdigits(r, 2)}",
        f"€{r.randint(1, 500)},{rdigits(r, 2)}", f"£{r.randint(1, 2000)}", f"{r.randint(10, 99999)} USD",
    ])


def d_isbn(r):
    p = "978" + rdigits(r, 9)
    s = 0
    for i, c in enumerate(p):
        s += int(c) * (1 if i % 2 == 0 else 3)
    isbn13 = p + str((10 - s % 10) % 10)
    return r.choice([
        f"ISBN {isbn13[:3]}-{isbn13[3]}-{isbn13[4:7]}-{isbn13[7:12]}-{isbn13[12]}",
        f"ISBN-13: {isbn13}", f"{isbn13[:3]}-{isbn13[3:5]}-{isbn13[5:9]}-{isbn13[9:12]}-{isbn13[12]}",
        f"ISBN 0-{rdigits(r, 3)}-{rdigits(r, 5)}-{r.randint(0, 9)}",
    ])


def d_nonluhn(r):
    while True:
        num = r.choice("3456") + rdigits(r, 15)
        if not is_luhn(num):
            break
    sep = r.choice([" ", "-", ""])
    return sep.join(num[i:i + 4] for i in range(0, 16, 4))


def d_uuid(r):
    h = _rand(r, HEX, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def d_sha(r):
    return _rand(r, HEX, r.choice([7, 40]))


def d_time(r):
    return f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"


def d_num(r):
    return r.choice([rdigits(r, 9), rdigits(r, 12), f"{r.randint(1, 999)},{rdigits(r, 3)},{rdigits(r, 3)}",
                     f"{r.randint(1, 99)}.{rdigits(r, 2)}%", f"{r.randint(100, 999)}-{rdigits(r, 2)}"])


def d_coords(r):
    return f"{r.uniform(-80, 80):.4f}, {r.uniform(-170, 170):.4f}"


def d_idnum(r):  # identifier-shaped numbers after an id cue
    imei_payload = "35" + rdigits(r, 12)
    return r.choice([
        f"IMEI {imei_payload}{luhn_digit(imei_payload)}",
        f"tracking number {r.choice('123456789')}{rdigits(r, r.randint(15, 18))}",
        f"reference no. {r.choice('3456')}{rdigits(r, 15)}",
        f"Part no. {r.randint(100, 899)}-{r.randint(10, 99)}-{rdigits(r, 4)}",
        f"order #{r.randint(200, 999)}-{rdigits(r, 3)}-{rdigits(r, 4)}",
        f"case {r.randint(2, 9)}{rdigits(r, 2)}.{rdigits(r, 3)}.{rdigits(r, 4)}",
        f"section {r.randint(1, 9)}.{r.randint(1, 9)}.{r.randint(1, 9)}.{r.randint(1, 9)}",
        f"OID 1.3.6.1.4.1.{r.randint(100, 99999)}",
        f"firmware {r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 9)}.{r.randint(0, 200)}",
        f"MAC 00:1A:{_rand(r, '0123456789ABCDEF', 2)}:3C:{_rand(r, '0123456789ABCDEF', 2)}:5E",
        f"SHA256 {_rand(r, HEX, 64)}",
        f"timestamp {r.randint(1600000000, 1800000000)}",
    ])


def d_localip(r):
    return r.choice(["127.0.0.1", "0.0.0.0", "255.255.255.0", "localhost:8080", "::1"])


def d_url(r):
    return r.choice([
        "https://docs.python.org/3/library/re.html",
        f"https://www.amazon.com/dp/B0{_rand(r, string.ascii_uppercase + string.digits, 8)}?ref=sr_1_{r.randint(1, 9)}",
        f"https://shop.example.org/search?q=running+shoes&page={r.randint(1, 9)}&sort_key=price",
        f"https://github.com/pandas-dev/pandas/issues/{r.randint(1000, 60000)}",
        "https://en.wikipedia.org/wiki/Special:Search?search=isbn&keyword=books",
        f"https://maps.google.com/?q={r.uniform(-80, 80):.4f},{r.uniform(-170, 170):.4f}",
        "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s",
    ])


def d_code(r):
    return r.choice([
        "password = os.environ['DB_PASSWORD']", "token = get_token()", "api_key = None",
        "for key, value in cfg.items():", "max_tokens=1024", "secret_name: prod/db/creds",
        "headers = {'Authorization': f'Bearer {token}'}", "num_keys = 16",
        "password: ********", "key_field = 'customer_id'",
    ])


def d_word(r):  # capitalised words that are also first names, in non-name use
    return r.choice([
        "Will you check it again?", "May I ask a follow-up question?", "in May 2024",
        "on June 3rd", "Mark the task as done.", "There is a 30-day Grace period.",
        "Hope this helps!", "I use Ruby on Rails at work.", "It is written in Julia.",
        "We flew to Jordan last spring.", "The Paris office is closed.",
        "I moved to Austin, Texas.", "My Chase Bank statement is wrong.",
        "An Amber Alert was issued.", "Victoria Station was crowded.",
        "April showers bring May flowers.", "Bill Payment failed twice.",
        "Frank feedback is welcome.", "Sue the landlord?", "Joy is a feeling.",
        "the Lincoln Memorial", "Ask Alexa to set a timer.", "Hunter boots are waterproof.",
        "August is the hottest month.", "Summer Sale ends Friday.", "Chapter 3 The Road",
        "the Top 10 Drive Tips", "a 5 Star Review", "Dear Customer,", "Hi Team,",
        "Thanks, Everyone!", "I'm Canadian.", "I'm Sorry about that.", "This is Python 3.12.",
        "Regards,\nThe Support Team", "I'm Vegan now.", "I am Confused by this.",
"Jasmine rice or basmati?",
        "Victoria's Secret sale", "The Jordan River is long.", "In Paris, France.",
        "Sydney Harbour Bridge", "Washington Post article", "Christian Dior perfume",
        "Travis CI failed", "Hugo static site", "Max Payne is a game.",
        "std::vector<int> and Face::Add()", "meet at noon dot com",
    ])


GENERATORS = {
    "email": g_email, "phone": g_phone, "phone_bare": g_phone_bare, "ssn": g_ssn,
    "ssn_spaced": g_ssn_spaced, "card": g_card, "ip": g_ip, "api_key": g_api_key,
    "hex_secret": g_hex_secret, "b64_secret": g_b64_secret, "token_value": g_token_value,
    "addr": g_addr, "street": g_street, "intl_addr": g_intl_addr,
    "name": g_name, "cue_name": g_cue_name, "rare_name": g_rare_name,
    "lower_name": g_lower_name, "surname": g_surname, "first": lambda r: r.choice(COMMON_FIRST),
    "order": d_order, "date": d_date, "version": d_version, "price": d_price,
    "isbn": d_isbn, "nonluhn": d_nonluhn, "uuid": d_uuid, "sha": d_sha, "time": d_time,
    "num": d_num, "coords": d_coords, "localip": d_localip, "url": d_url, "code": d_code,
    "word": d_word, "idnum": d_idnum, "url_password": g_url_password,
    "oauth_code": g_oauth_code, "obf_email": g_obf_email, "ipv4": g_ipv4, "ipv6": g_ipv6,
}
PII_SLOTS = {
    "email": "email", "phone": "phone", "phone_bare": "phone", "ssn": "ssn",
    "ssn_spaced": "ssn", "card": "credit_card", "ip": "ip", "ipv4": "ip", "ipv6": "ip", "api_key": "api_key",
    "hex_secret": "api_key", "b64_secret": "api_key", "token_value": "url_secret",
    "url_password": "url_secret", "oauth_code": "url_secret", "obf_email": "email",
    "addr": "street_address", "street": "street_address",
    "intl_addr": "street_address", "name": "person_name", "cue_name": "person_name",
    "rare_name": "person_name", "lower_name": "person_name", "surname": "person_name",
    "first": "person_name",
    # slots whose type depends on the template: see "key_pw" and "bearer" below
    "key_pw": "api_key", "bearer": "api_key",
}
GENERATORS["key_pw"] = g_password
GENERATORS["bearer"] = g_token_value

TEMPLATES = [
    # email
    "You can reach me at {email} if anything changes.",
    "Please forward the invoice {order} to {email} by {date}.",
    "my email is {email}",
    "CC {email} and {email} on the thread, thanks.",
    "Contact: {email} | Phone: {phone}",
    "The error says 'user {email} not found' when I log in (v {version}).",
    "Send the report to <{email}>.",
    "email me: {obf_email} (spam filters...)",
    "mailto:{email}?subject=Refund",
    "Login: {email} / reset link sent {date}.",
    # phone
    "Call me at {phone} after {time} please.",
    "My number is {phone}, text is fine too.",
    "Our office line: {phone}. Fax: {phone}.",
    "call me at {phone_bare} tomorrow",
    "The hotline {phone} was busy; my order number is {order}.",
    "For urgent issues dial {phone}.",
    "Reach me on WhatsApp at {phone} (I'm travelling until {date}).",
    # ssn
    "My SSN is {ssn} and I need to update my W-2.",
    "SSN: {ssn_spaced}",
    "The form has social security number {ssn} but the ZIP is {num}.",
    "Applicant SSN {ssn}; DOB {date}.",
    # credit card
    "My card number is {card}, exp 08/27, CVV 123.",
    "Charge {card} for the ${price} order.",
    "Card ending... actually here is the full one: {card}",
    "Payment failed for card {card} on {date}.",
    "Is {nonluhn} a valid card? It got rejected.",
    # ip
    "The server at {ip} keeps timing out.",
    "Whitelist {ip} and {ip} in the firewall.",
    "curl http://{ipv4}:8080/health returns 503",
    "The API at http://[{ipv6}]:8443/v1 is unreachable.",
    "Set the DNS to {ip}; the gateway is {ip}.",
    "ssh admin@{ip} -p 2222 fails with 'connection refused'.",
    "My public IP is {ip} according to whatismyip.",
    "nginx logs show requests from {ip} at {time}.",
    "Bind to {localip} for local testing, but prod uses {ip}.",
    # api keys
    "Here is my key: {api_key} - why does it return 401?",
    "export OPENAI_API_KEY={api_key}",
    "I set api_key={hex_secret} in config.ini but it is ignored.",
    'config = {{"api_key": "{hex_secret}", "region": "us-east-1"}}',
    "SECRET_KEY = '{b64_secret}'",
    "curl -H 'Authorization: Bearer {bearer}' https://api.service.io/v2/me",
    "client_secret: {hex_secret}",
    "The db password: {key_pw}",
    "token={api_key}",
    "aws_secret_access_key = {b64_secret}",
    # url secrets
    "The callback is https://app.acme.io/oauth/cb?code={oauth_code}&access_token={token_value}&state=xyz",
    "Download via https://files.service.net/get?file=report.pdf&token={token_value}",
    "GET https://maps.googleapis.com/maps/api/geocode/json?address=Denver&key={token_value}",
    "S3 link: https://bucket.s3.amazonaws.com/img.png?X-Amz-Expires=3600&X-Amz-Signature={token_value}",
    "https://api.weather.io/v1/forecast?lat=40.7&lon=-74.0&api_key={token_value}",
    "Webhook: https://hooks.example-app.com/in?sig={token_value}&ts=1700000000",
    "DATABASE_URL=postgres://admin:{url_password}@db.internal.acme.io:5432/prod",
    "Login link https://portal.bank.com/reset?user=jdoe&password={url_password} expired",
    # addresses
    "Ship it to {addr}.",
    "I live at {addr} and the package never arrived.",
    "Our new office is {addr}, next to the {word}",
    "Billing address: {addr}",
    "Meet me at {street} at {time}.",
    "Return address: {intl_addr}",
    # names
    "My name is {cue_name} and I'm having trouble with my account.",
    "Hi, I'm {cue_name}. I need help with {order}.",
    "Dear {cue_name},\nThank you for your message.",
    "Signed, {cue_name}",
    "Best regards,\n{cue_name}",
    "{name} from accounting asked me to follow up.",
    "Can you draft an email to {name} about the delay?",
    "I spoke with {name} yesterday; {word}",
    "Please add {name} and {name} to the meeting.",
    "Hi {first}, thanks for the quick reply.",
    "This is {first} from the help desk.",
    "Dr. {surname} said the results are fine.",
    "{rare_name} reviewed the PR last week.",
    "ping {lower_name} on slack",
    "Name: {name}\nEmail: {email}\nPhone: {phone}",
    # mixed
    "Customer {name}, {addr}, card {card}, phone {phone}.",
    "{name} <{email}> wrote: my SSN {ssn} was exposed, IP {ip}.",
    "Hi, I'm {cue_name}. My email is {email} and my cell is {phone}.",
    "Tool output: {{\"user\": \"{name}\", \"email\": \"{email}\", \"ip\": \"{ip}\"}}",
]
DISTRACTOR_TEMPLATES = [
    "Order {order} was placed on {date} for {price}.",
    "Upgrade to {version}; the old {version} is deprecated.",
    "The book is {isbn}.",
    "Tracking {order}, invoice {order}, total {price}.",
    "{word}",
    "{word} The meeting is at {time} on {date}.",
    "Card {nonluhn} was declined (that one is fake).",
    "Request id {uuid}, commit {sha}.",
    "Population grew to {num} by {date}.",
    "Coordinates: {coords}.",
    "Run it on {localip} first.",
    "See {url} for details.",
    "{code}",
    "Ticket #{num} is assigned; ETA {date} at {time}.",
    "Part number {num}, {version}, {price}.",
    "Score was 3-2 at {time}, rating {num}.",
    "{word} {word}",
    "Python {version} fixed it, see {url}.",
    "Device info: {idnum}.",
    "Please quote {idnum} when you call.",
    "See {idnum} and {idnum}.",
]

# --------------------------------------------------------------------------
# Hand-written records, written to probe the detector's weak spots rather than
# generated from the templates above.  Labels are (substring, type) in order of
# appearance; some are known misses (documented in depsim/deid.py).
# --------------------------------------------------------------------------
HANDWRITTEN: list[tuple[str, list[tuple[str, str]]]] = [
    ("hey can u call me back at 415.555.2671? its urgent", [("415.555.2671", "phone")]),
    ("Tel: +1 415 555 2671 x204 (desk)", [("+1 415 555 2671 x204", "phone")]),
    ("my uk mobile is 07700 900123", [("07700 900123", "phone")]),  # known miss: no +44
    ("text me 4155552671", [("4155552671", "phone")]),
    ("Ring +44 (0)20 7946 0958 before noon.", [("+44 (0)20 7946 0958", "phone")]),
    ("Email: John.Smith@Company.COM.", [("John.Smith@Company.COM", "email")]),
    ("forward to ops-team+alerts@mail.acme-corp.co.uk, pls", [("ops-team+alerts@mail.acme-corp.co.uk", "email")]),
    ("the test card 5555 5555 5555 4444 works but 378282246310005 doesnt",
     [("5555 5555 5555 4444", "credit_card"), ("378282246310005", "credit_card")]),
    ("SSN 078-05-1120 appears on the sample card.", [("078-05-1120", "ssn")]),
    ("ssn is 219099999 fyi", [("219099999", "ssn")]),
    ("router at 192.168.0.1/24, server 10.0.0.12:3000 and 172.16.254.1",
     [("192.168.0.1", "ip"), ("10.0.0.12", "ip"), ("172.16.254.1", "ip")]),
    ("ip addr shows fe80::1ff:fe23:4567:890a%eth0 and 2a02:26f0:fd::1", [("fe80::1ff:fe23:4567:890a", "ip"), ("2a02:26f0:fd::1", "ip")]),
    ("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ9kLm2aTd",
     [("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzQ9kLm2aTd", "api_key")]),
    ('{"user": "admin", "password": "hunter22"}', [("hunter22", "api_key")]),
    ("DB_PASS=Tr0ub4dor&3 in my .env", [("Tr0ub4dor&3", "api_key")]),
    ("Authorization: Basic dXNlcjpwYXNzd29yZDEyMw==", [("dXNlcjpwYXNzd29yZDEyMw==", "api_key")]),
    ("git clone https://ghp_R2d2C3poBb8Ll9KkAa0Qq7Ww1Ee5Tt6Yy4Uu@github.com/acme/api.git",
     [("ghp_R2d2C3poBb8Ll9KkAa0Qq7Ww1Ee5Tt6Yy4Uu", "api_key")]),
    ("POST to https://hooks.slack.com/services/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",
     [("aB3dEf6hIj9kLm2nOp5qRs8t", "url_secret")]),
    ("mongodb+srv://app_user:S3cretPa55@cluster0.ab1cd.mongodb.net/prod",
     [("S3cretPa55", "url_secret")]),
    ("DefaultEndpointsProtocol=https;AccountName=acmestore;AccountKey=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg==;",
     [("Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg==", "api_key")]),
    ("my secret hex is 3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c", [("3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c", "api_key")]),  # known miss: no assignment cue
    ("Dear Mr. O'Connor,\nyour refund is approved.", [("O'Connor", "person_name")]),
    ("Thanks for the help!\n\nRegards,\nJames", [("James", "person_name")]),
    ("- Jon", [("Jon", "person_name")]),
    ("I'm Jon, a PM at Globex.", [("Jon", "person_name")]),
    ("Thanks, Priya!", [("Priya", "person_name")]),
    ("attendees: Kevin, Maria and Tom", [("Kevin", "person_name"), ("Maria", "person_name"), ("Tom", "person_name")]),
    ("Will Johnson be at the standup?", [("Will Johnson", "person_name")]),
    ("Can you ask Siobhan Kelly to sign?", [("Siobhan Kelly", "person_name")]),
    ("@jsmith can you review this", [("jsmith", "person_name")]),  # known miss: handle
    ("my address is 55 water st apt 4, pls deliver before 5", [("55 water st apt 4", "street_address")]),
    ("We're at 221B Baker Street.", [("221B Baker Street", "street_address")]),
    ("Send it to PO Box 1234, Springfield, IL 62704", [("PO Box 1234, Springfield, IL 62704", "street_address")]),  # known miss
    ("Office: 1 Infinite Loop, Cupertino, CA 95014", [("1 Infinite Loop, Cupertino, CA 95014", "street_address")]),
    ("the venue is 350 5th Ave, New York, NY 10118", [("350 5th Ave, New York, NY 10118", "street_address")]),
    # distractors only
    ("Version 1.0.0.1 and v1.2.3.4 both crash; see RFC 1918 section 3.", []),
    ("Meeting on 12/25/2024 at 10:30:00, room 4-112.", []),
    ("I paid $1,234.56 for order 112-4567890-1234567.", []),
    ("Will it rain in May? Hope not. Mark my words.", []),
    ("Virginia Beach and Georgia Tech are in the South.", []),
    ("Use Chrome 120.0.6099.129 or later.", []),
    ("The ISBN is 978-0-596-52068-7 and the price is $39.99.", []),
    ("commit 9fceb02d0ae598e95dc970b74767f19372d61af8 fixed it", []),
    ("UUID 123e4567-e89b-12d3-a456-426614174000 not found", []),
    ("Listening on 0.0.0.0:8000 and 127.0.0.1:5432", []),
    ("Example: call (555) 555-0123 or write to someone@example.com", []),
    ("Tracking number 9400111899223344556677 is in transit.", []),
    ("The patch is 2.4.1; subnet mask 255.255.255.0.", []),
    ("See std::vector and Face::Add in the docs.", []),
    ("password = os.environ['DB_PASSWORD']  # never hardcode", []),
    ("max_tokens=4096, temperature=0.7, top_p=0.95", []),
    ("The Top 10 Drive Tips for winter", []),
    ("I'm Canadian but I live in Texas.", []),
]


def handwritten_records() -> list[dict]:
    recs = []
    for text, labels in HANDWRITTEN:
        spans, pos = [], 0
        for sub, typ in labels:
            start = text.index(sub, pos)
            spans.append({"start": start, "end": start + len(sub), "type": typ})
            pos = start + 1
        recs.append({"text": text, "spans": spans})
    return recs


def fill(template: str, r: random.Random) -> tuple[str, list[dict]]:
    out, spans, pos = [], [], 0
    for m in re.finditer(r"\{\{|\}\}|\{(\w+)\}", template):
        out.append(template[pos:m.start()])
        pos = m.end()
        tok = m.group(0)
        if tok in ("{{", "}}"):
            out.append(tok[0])
            continue
        slot = m.group(1)
        value = GENERATORS[slot](r)
        start = sum(len(x) for x in out)
        out.append(value)
        if slot in PII_SLOTS:
            spans.append({"start": start, "end": start + len(value), "type": PII_SLOTS[slot]})
    out.append(template[pos:])
    return "".join(out), spans


def make(n: int = N_RECORDS, seed: int = SEED) -> list[dict]:
    r = random.Random(seed)
    records = []
    for i in range(n):
        parts = []
        k = r.choice([1, 1, 2, 2, 3])
        for _ in range(k):
            pool = DISTRACTOR_TEMPLATES if r.random() < 0.3 else TEMPLATES
            parts.append(fill(r.choice(pool), r))
        # make sure every template appears at least once
        if i < len(TEMPLATES):
            parts[0] = fill(TEMPLATES[i], r)
        elif i < len(TEMPLATES) + len(DISTRACTOR_TEMPLATES):
            parts[0] = fill(DISTRACTOR_TEMPLATES[i - len(TEMPLATES)], r)
        text, spans = "", []
        for t, sp in parts:
            if text:
                text += r.choice([" ", "\n", "\n\n"])
            off = len(text)
            text += t
            spans += [{**s, "start": s["start"] + off, "end": s["end"] + off} for s in sp]
        for s in spans:
            assert text[s["start"]:s["end"]], (text, s)
        records.append({"text": text, "spans": spans})
    return records


def main() -> None:
    recs = make() + handwritten_records()
    with OUT.open("w", encoding="utf-8") as f:
        for rec in recs:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    n_spans = sum(len(r["spans"]) for r in recs)
    by_type: dict[str, int] = {}
    for rec in recs:
        for s in rec["spans"]:
            by_type[s["type"]] = by_type.get(s["type"], 0) + 1
    print(f"wrote {len(recs)} records, {n_spans} spans to {OUT}")
    print(json.dumps(dict(sorted(by_type.items())), indent=1))


if __name__ == "__main__":
    main()
