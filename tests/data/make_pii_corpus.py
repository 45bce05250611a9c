"""Generate the labelled PII evaluation corpus from Faker values (text the detector's author did not write).

Run:  python tests/data/make_pii_corpus.py            (rewrites tests/data/pii_corpus.jsonl: test split)
      python tests/data/make_pii_corpus.py --split dev --seed 1 --out /tmp/dev.jsonl

Each line is ``{"text", "spans": [{"start", "end", "type"}], "locale", "split", "kind"}``; ``kind`` is
the PII type of the record's main value, or ``"negative:<look-alike>"`` for a record that holds no PII
but a look-alike (version, ISBN, UUID, order number, hash, code, price, date, city, ...).

Where the values come from: every PII value is produced by Faker (names, phone numbers, addresses,
IBANs, SSNs, NINOs, NIRs, Aadhaar numbers, passport numbers, dates of birth, IPs, card numbers, email
addresses) in five locales (en_US, en_GB, de_DE, fr_FR, en_IN), in Faker's own formats; API keys and
URL secrets, which Faker does not make, are built from the providers' documented shapes around
Faker-made random strings and URLs.  The look-alike negatives are Faker values too (ISBN, EAN, UUID,
SHA-1/MD5/SHA-256, user agents, prices, file paths, dates, cities, company names, licence plates,
SWIFT codes) or numbers after an order/invoice/tracking cue.

Held-out split: the carrier sentences (written for this file, not taken from the detector) are split
by position, even positions ``dev`` and odd positions ``test``.  The detector was tuned on the ``dev``
split with seed 1 only; ``pii_corpus.jsonl`` (and the numbers reported by benchmarks/pii_recall.py) is
the ``test`` split with seed 2, so neither its sentences nor its values were seen while tuning.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import string
from pathlib import Path

from faker import Faker

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "en_IN")
OUT = Path(__file__).with_name("pii_corpus.jsonl")
TEST_SEED = 2
DEV_SEED = 1
# fixed date ranges (Faker's defaults are relative to today, which would change the corpus daily)
_DOB_FROM, _DOB_TO = dt.date(1935, 1, 1), dt.date(2007, 12, 31)
_DATE_FROM, _DATE_TO = dt.date(2015, 1, 1), dt.date(2026, 12, 31)
_TIME_FROM, _TIME_TO = dt.datetime(2015, 1, 1), dt.datetime(2026, 12, 31)
# Faker's values for a seed change between its releases; pii_corpus.jsonl was written with this one
GENERATED_WITH_FAKER = "39.1.0"

# --------------------------------------------------------------------------
# carrier sentences: {v} is the value; chat-like, varied, some without any cue word
# --------------------------------------------------------------------------

CARRIERS: dict[str, list[str]] = {
    "email": [
        "You can reach me at {v} if anything changes.",
        "my email is {v}",
        "Please cc {v} on the reply, thanks",
        "Sent from {v}",
        "can u forward it to {v} asap",
        "From: {v}\nSubject: Re: quarterly numbers",
        "contact: {v}",
        "Write to {v} and ask about the refund.",
        "<a href=\"mailto:{v}\">email us</a>",
        "{v} keeps bouncing, is the address wrong?",
        "is {v} a valid email format?",
        "{{\"user\": {{\"email\": \"{v}\", \"active\": true}}}}",
    ],
    "phone": [
        "Call me on {v} after 6pm.",
        "my number is {v}",
        "Phone: {v}",
        "You can text {v} if the door is locked.",
        "reach the office at {v} during business hours",
        "Tel. {v}",
        "I tried {v} three times and nobody picked up",
        "{v} is my mobile, the landline is dead",
        "Contact number - {v}",
        "ring {v} and ask for the manager",
        "The hotel's number was {v}, can you check it?",
        "whatsapp me: {v}",
    ],
    "credit_card": [
        "My card number is {v}, expiry 09/27.",
        "card: {v}",
        "I paid with {v} but the charge failed",
        "Visa {v} exp 11/26 cvv 123",
        "why was {v} declined?",
        "use the card ending... actually the full number is {v}",
        "CC# {v}",
        "charge it to {v} please",
        "{v} is the card on file",
        "Can you check whether {v} passes the Luhn check?",
    ],
    "iban": [
        "Please transfer the deposit to IBAN {v}.",
        "my iban is {v}",
        "Bank details: {v} (Account holder: see above)",
        "send the money to {v} by Friday",
        "IBAN: {v}\nBIC: see letter",
        "is {v} a valid account number?",
        "Kontoverbindung {v}",
        "the refund should go to {v}",
        "Überweisung bitte auf {v}",
        "Can you format {v} with spaces for the invoice?",
    ],
    "ssn": [
        "My SSN is {v}.",
        "social security number: {v}",
        "ssn {v} dob on file",
        "They asked for my social security number ({v}) on the form",
        "SSN: {v}",
        "is it safe to email my ssn {v} to the landlord?",
        "Social Security No. {v}",
        "the W-2 shows {v} as my SSN",
    ],
    "national_id": [
        "My passport number is {v}.",
        "passport no: {v}",
        "Passport {v}, expires next year",
        "I lost my passport ({v}) in the taxi",
        "passport number {v} nationality on file",
        "the visa form wants passport no. {v}",
        "Passport: {v}",
        "can I book the flight with passport {v}?",
    ],
    "date_of_birth": [
        "I was born on {v}.",
        "date of birth: {v}",
        "DOB {v}",
        "my birthday is {v} so I'm a Leo",
        "D.O.B.: {v}",
        "born {v} in a small town",
        "Date of Birth - {v}",
        "She was born on {v}, can you compute her age?",
        "birth date {v}",
        "Geburtsdatum: {v}",
    ],
    "ip": [
        "My server at {v} keeps dropping connections.",
        "ssh root@{v} -p 22 fails",
        "blocked IP: {v}",
        "the logs show requests from {v}",
        "ping {v} returns timeout",
        "whitelist {v} in the firewall please",
        "curl http://{v}:8080/health",  # IPv6: bracketed when the record is built
        "{v} - - [10/Oct/2023:13:55:36] \"GET / HTTP/1.1\" 200",
        "my home ip is {v}",
        "host={v}",
    ],
    "api_key": [
        "here is my key {v} why does it fail",
        "OPENAI_API_KEY={v}",
        "api_key = \"{v}\"",
        "Authorization: Bearer {v}",
        "token: {v}",
        "client = Client(api_key=\"{v}\")",
        "I accidentally pushed {v} to github, what now?",
        "export SECRET_KEY={v}",
        "{{\"api_key\": \"{v}\"}}",
        "is {v} a valid key format?",
    ],
    "url_secret": [
        "Open {v} to reset it.",
        "the webhook is {v}",
        "GET {v} returns 403",
        "curl \"{v}\"",
        "link: {v}",
        "why does {v} expire so fast?",
        "redirect_uri was {v}",
        "DATABASE_URL={v}",
    ],
    "street_address": [
        "I live at {v}.",
        "Please ship it to:\n{v}",
        "my address is {v}",
        "Delivery address: {v}",
        "send the letter to {v} thanks",
        "We moved to {v} last month",
        "{v}\n\nDear Sir or Madam,",
        "the package went to {v} instead of my place",
        "Address:\n{v}",
        "can you check if {v} is in the delivery zone?",
    ],
    "person_name": [
        "My name is {v} and I need help with my account.",
        "Dear {v},\n\nthank you for your letter.",
        "I met {v} at the conference yesterday.",
        "Best regards,\n{v}",
        "{v} said the report is late.",
        "write an email to {v} asking for the invoice",
        "Thanks, {v}",
        "my colleague {v} keeps taking credit for my work",
        "Name: {v}",
        "Can you help {v} with the form?",
        "Hi {v}, how are you?",
        "{v} called about the car.",
        "this is {v} from accounting",
        "<img src=\"team/photo3.jpg\" alt=\"{v}\">",
        "I'm {v}, the new tenant.",
        "please add {v} to the meeting",
        "Signed: {v}",
        "ask {v} whether the keys are back",
        "Reviewer: {v}",
        "{v} wrote: see attached",
    ],
}

# look-alike negatives: {v} is a non-PII value that resembles PII
NEG_CARRIERS = [
    "The value is {v}, can you explain it?",
    "see {v} for details",
    "{v}",
    "what does {v} mean here?",
    "I copied {v} from the docs",
    "Got {v} in the output",
    "Ref: {v}",
    "compare {v} with the previous one",
]

FILLERS = [
    "Thanks in advance!",
    "Sorry for the long message.",
    "hope that makes sense",
    "It worked yesterday.",
    "Can you help?",
    "I'm on Windows 11 and Python 3.12.",
    "This started after the update.",
    "Let me know if you need more info.",
    "ok",
    "The meeting is at 3pm on Monday.",
]


def _split_items(items: list, split: str) -> list:
    if split == "all":
        return items
    return items[0::2] if split == "dev" else items[1::2]


# --------------------------------------------------------------------------
# values (from Faker; secrets from documented provider shapes)
# --------------------------------------------------------------------------

def _group4(s: str) -> str:
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


def _date_formats(fk: Faker, r: random.Random) -> str:
    d = fk.date_between_dates(_DOB_FROM, _DOB_TO)  # fixed range: Faker's own default moves with today
    fmt = r.choice([
        "%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%B %d, %Y", "%d %B %Y", "%-d %b %Y",
        "%d-%m-%Y",
    ])
    return d.strftime(fmt)


def _api_key(fk: Faker, r: random.Random) -> str:
    alnum = string.ascii_letters + string.digits

    def rs(n: int, alphabet: str = alnum) -> str:
        return "".join(r.choice(alphabet) for _ in range(n))

    return r.choice([
        lambda: "sk-proj-" + rs(48),
        lambda: "sk-" + rs(48),
        lambda: "sk-ant-api03-" + rs(40),
        lambda: "AKIA" + rs(16, string.ascii_uppercase + string.digits),
        lambda: "ghp_" + rs(36),
        lambda: "xoxb-" + rs(12, string.digits) + "-" + rs(24),
        lambda: "AIza" + rs(35, alnum + "-_"),
        lambda: "hf_" + rs(34),
        lambda: fk.sha256()[:40],
        lambda: fk.password(length=24, special_chars=False),
        lambda: "sk_live_" + rs(24),
        lambda: "glpat-" + rs(20),
    ])()


def _url_secret(fk: Faker, r: random.Random) -> tuple[str, int, int]:
    """Return (url, start, end) of the secret inside the url."""
    tok = fk.password(length=r.randint(16, 40), special_chars=False)
    base = fk.url().rstrip("/")
    path = "/" + fk.uri_path()
    kind = r.randrange(4)
    if kind == 0:
        name = r.choice(["token", "access_token", "api_key", "key", "sig", "auth", "secret"])
        pre = f"{base}{path}?{name}="
        url = pre + tok + r.choice(["", "&lang=en", f"&page={r.randint(1, 9)}"])
    elif kind == 1:
        pre = f"{base}{path}?user={fk.user_name()}&{r.choice(['password', 'client_secret', 'apikey'])}="
        url = pre + tok
    elif kind == 2:
        user = fk.user_name()
        host = fk.domain_name()
        scheme = r.choice(["postgres", "mysql", "https", "redis", "mongodb"])
        pre = f"{scheme}://{user}:"
        url = pre + tok + f"@{host}:{r.randint(1000, 9999)}/{fk.word()}"
    else:
        pre = f"https://hooks.slack.com/services/T{fk.numerify('#######')}/B{fk.numerify('#######')}/"
        tok = "".join(r.choice(string.ascii_letters + string.digits) for _ in range(24))
        url = pre + tok
    return url, len(pre), len(pre) + len(tok)


def _value(typ: str, loc: str, fk: Faker, r: random.Random) -> tuple[str, list[tuple[int, int]]]:
    """A Faker value of ``typ`` and the PII span(s) inside it (offsets into the value)."""
    if typ == "email":
        v = r.choice([fk.free_email, fk.company_email])()
        return v, [(0, len(v))]
    if typ == "phone":
        v = fk.phone_number()
        return v, [(0, len(v))]
    if typ == "credit_card":
        v = fk.credit_card_number()
        if len(v) == 16 and r.random() < 0.4:
            v = r.choice([_group4(v), _group4(v).replace(" ", "-")])
        return v, [(0, len(v))]
    if typ == "iban":
        v = fk.iban()
        if r.random() < 0.4:
            v = _group4(v)
        return v, [(0, len(v))]
    if typ == "ssn":
        v = fk.ssn()
        return v, [(0, len(v))]
    if typ == "national_id":
        v = fk.passport_number()
        return v, [(0, len(v))]
    if typ == "date_of_birth":
        v = _date_formats(fk, r)
        return v, [(0, len(v))]
    if typ == "ip":
        v = fk.ipv4_public() if r.random() < 0.75 else fk.ipv6()
        return v, [(0, len(v))]  # (an IPv6 address in a URL is bracketed by the carrier below)
    if typ == "api_key":
        v = _api_key(fk, r)
        return v, [(0, len(v))]
    if typ == "url_secret":
        v, s, e = _url_secret(fk, r)
        return v, [(s, e)]
    if typ == "street_address":
        v = fk.address()
        if r.random() < 0.5:
            v = v.replace("\n", ", ")
        return v, [(0, len(v))]
    if typ == "person_name":
        v = f"{fk.first_name()} {fk.last_name()}"
        return v, [(0, len(v))]
    raise ValueError(typ)


# national IDs that have their own carriers (locale-specific formats, no passport cue needed)
NATIONAL_CARRIERS = {
    "en_GB": ["My National Insurance number is {v}.", "NI number: {v}", "NINO {v} on the payslip",
              "my NI no is {v}", "National Insurance No. {v}", "is {v} a valid NI number?"],
    "fr_FR": ["Mon numéro de sécurité sociale est {v}.", "numéro INSEE: {v}", "NIR {v}",
              "my French social security number is {v}", "sécu: {v}", "carte vitale {v}"],
    "en_IN": ["My Aadhaar number is {v}.", "aadhaar: {v}", "Aadhaar No. {v}",
              "UIDAI number {v} linked to my bank", "aadhar card {v}", "is {v} a valid aadhaar?"],
    "de_DE": ["Meine Rentenversicherungsnummer ist {v}.", "RVNR: {v}", "pension insurance number {v}",
              "Sozialversicherungsnummer {v}", "SV-Nummer: {v}", "my German social security number is {v}"],
}


def _national_value(loc: str, fk: Faker, r: random.Random) -> str:
    if loc == "en_GB":
        return fk.ssn()
    if loc == "fr_FR":
        v = fk.ssn()
        return v if r.random() < 0.6 else f"{v[0]} {v[1:3]} {v[3:5]} {v[5:7]} {v[7:10]} {v[10:13]} {v[13:]}"
    if loc == "en_IN":
        v = fk.aadhaar_id()
        return v if r.random() < 0.5 else _group4(v)
    return fk.rvnr(birthdate=fk.date_between_dates(_DOB_FROM, _DOB_TO))  # Faker's default birthdate moves with today


def _negative(fk: Faker, r: random.Random) -> tuple[str, str]:
    """A look-alike value and its kind (no PII)."""
    kind = r.choice([
        "isbn", "ean", "uuid", "sha1", "md5", "sha256", "version", "user_agent", "order", "invoice",
        "tracking", "price", "date", "time", "file_path", "code", "city", "company", "license_plate",
        "swift", "semver", "coordinates", "hex_color", "private_ip_version", "build", "port",
    ])
    v = {
        "isbn": lambda: r.choice([fk.isbn13, fk.isbn10])(),
        "ean": lambda: fk.ean13(),
        "uuid": lambda: fk.uuid4(),
        "sha1": lambda: fk.sha1(),
        "md5": lambda: fk.md5(),
        "sha256": lambda: fk.sha256(),
        "version": lambda: f"version {r.randint(1, 20)}.{r.randint(0, 30)}.{r.randint(0, 300)}.{r.randint(0, 9999)}",
        "user_agent": lambda: fk.user_agent(),
        "order": lambda: f"order #{fk.numerify('#' * r.randint(6, 12))}",
        "invoice": lambda: f"invoice no. {fk.bothify('INV-####-????').upper()}",
        "tracking": lambda: f"tracking number {fk.numerify('1Z###########' if r.random() < 0.5 else '#' * 12)}",
        "price": lambda: fk.pricetag(),
        "date": lambda: f"meeting on {fk.date_between_dates(_DATE_FROM, _DATE_TO).isoformat()}",
        "time": lambda: fk.date_time_between_dates(_TIME_FROM, _TIME_TO).strftime("%Y-%m-%d %H:%M:%S"),
        "file_path": lambda: fk.file_path(depth=r.randint(1, 4)),
        "code": lambda: r.choice([
            f"x = np.zeros(({r.randint(2, 512)}, {r.randint(2, 512)}))",
            f"for i in range({r.randint(10, 10**6)}):\n    total += i * {r.randint(2, 99)}",
            f"SELECT * FROM users WHERE id = {fk.numerify('#######')} LIMIT {r.randint(1, 100)};",
            f"timeout={r.randint(1, 600)}, retries={r.randint(1, 9)}, max_tokens={r.randint(64, 8192)}",
            f"const {fk.word()}Id = '{fk.uuid4()}';",
            f"assert checksum == 0x{fk.hexify('^^^^^^^^')}",
        ]),
        "city": lambda: f"flying to {fk.city()} next week",
        "company": lambda: f"I work at {fk.company()}",
        "license_plate": lambda: fk.license_plate(),
        "swift": lambda: f"BIC {fk.swift()}",
        "semver": lambda: f"v{r.randint(0, 9)}.{r.randint(0, 40)}.{r.randint(0, 99)}",
        "coordinates": lambda: f"{fk.latitude()}, {fk.longitude()}",
        "hex_color": lambda: fk.hex_color(),
        "private_ip_version": lambda: f"Chrome {r.randint(90, 130)}.0.{r.randint(1000, 6999)}.{r.randint(10, 250)}",
        "build": lambda: f"build {fk.numerify('####.##.##')}-{fk.hexify('^^^^^^^')}",
        "port": lambda: f"localhost:{r.randint(1024, 65535)}",
    }[kind]()
    return v, kind


# --------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------

TYPE_WEIGHTS = {
    "email": 1.0, "phone": 1.6, "credit_card": 1.0, "iban": 1.0, "ssn": 0.6, "national_id": 1.6,
    "date_of_birth": 1.0, "ip": 1.0, "api_key": 1.0, "url_secret": 0.8, "street_address": 1.6,
    "person_name": 2.0,
}


def _record(typ: str, split: str, r: random.Random, fakers: dict[str, Faker]) -> dict:
    loc = "en_US" if typ == "ssn" else r.choice(LOCALES)  # the SSN is a US number
    fk = fakers[loc]
    if typ == "national_id" and loc != "en_US" and r.random() < 0.6:
        carriers = _split_items(NATIONAL_CARRIERS[loc], split)
        value = _national_value(loc, fk, r)
        inner = [(0, len(value))]
    else:
        carriers = _split_items(CARRIERS[typ], split)
        value, inner = _value(typ, loc, fk, r)
    carrier = r.choice(carriers)
    lower = typ == "person_name" and r.random() < 0.12  # chat written all in lower case
    if lower:
        value = value.lower()
        carrier = carrier.lower()
    if typ == "ip" and ":" in value and "http://{v}" in carrier:
        carrier = carrier.replace("http://{v}", "http://[{v}]")  # RFC 3986: IPv6 hosts are bracketed
    pre, post = carrier.split("{v}", 1)
    pre, post = pre.replace("{{", "{").replace("}}", "}"), post.replace("{{", "{").replace("}}", "}")
    parts: list[str] = []
    if r.random() < 0.4:
        parts.append(r.choice(FILLERS) + " ")
    start = sum(len(p) for p in parts) + len(pre)
    text = "".join(parts) + pre + value + post
    if r.random() < 0.3:
        text += " " + r.choice(FILLERS)
    if r.random() < 0.25:  # a chat turn around it
        head = "User: "
        text = head + text + "\nAssistant: I can help with that."
        start += len(head)
    spans = [{"start": start + s, "end": start + e, "type": typ} for s, e in inner]
    return {"text": text, "spans": spans, "locale": loc, "split": split,
            "kind": typ + (":lower" if lower else "")}


def _negative_record(split: str, r: random.Random, fakers: dict[str, Faker]) -> dict:
    loc = r.choice(LOCALES)
    value, kind = _negative(fakers[loc], r)
    carrier = r.choice(_split_items(NEG_CARRIERS, split))
    text = carrier.replace("{v}", value)
    if r.random() < 0.3:
        text = r.choice(FILLERS) + " " + text
    return {"text": text, "spans": [], "locale": loc, "split": split, "kind": "negative:" + kind}


def make(seed: int = TEST_SEED, split: str = "test", n_positive: int = 2400, n_negative: int = 1200) -> list[dict]:
    """Return ``n_positive`` labelled records and ``n_negative`` look-alike records (shuffled)."""
    r = random.Random(seed)
    fakers = {}
    for i, loc in enumerate(LOCALES):
        fk = Faker(loc)
        fk.seed_instance(seed * 100 + i)
        fakers[loc] = fk
    types = list(TYPE_WEIGHTS)
    weights = [TYPE_WEIGHTS[t] for t in types]
    recs = [_record(r.choices(types, weights)[0], split, r, fakers) for _ in range(n_positive)]
    recs += [_negative_record(split, r, fakers) for _ in range(n_negative)]
    r.shuffle(recs)
    return recs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=TEST_SEED)
    ap.add_argument("--split", choices=("dev", "test", "all"), default="test")
    ap.add_argument("--positive", type=int, default=2400)
    ap.add_argument("--negative", type=int, default=1200)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    recs = make(a.seed, a.split, a.positive, a.negative)
    with open(a.out, "w", encoding="utf-8") as f:
        for rec in recs:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"wrote {len(recs)} records to {a.out}")


if __name__ == "__main__":
    main()
