"""Per-type recall of depsim.deid.find_pii on the Faker-based corpus, and false positives on look-alikes.

Usage:  python benchmarks/pii_recall.py                       (tests/data/pii_corpus.jsonl: held-out test split)
        python benchmarks/pii_recall.py --generate --seed 1 --split dev   (the split the detector was tuned on)
        python benchmarks/pii_recall.py path/to/corpus.jsonl

A labelled value counts as *recalled* when detected spans of its own type cover every letter and digit
of it (a partial hit that leaves a surname or the last digits in the text is a miss); ``any type``
also accepts coverage by spans of other types (the value is still replaced, under another label).
``fp rate`` is the share of look-alike negative records (versions, ISBNs, UUIDs, hashes, order numbers,
code, prices, dates, cities, ...) in which anything at all is detected.  The corpus is built by
tests/data/make_pii_corpus.py from Faker values in five locales; see its docstring for the split.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from depsim.deid import PII_TYPES, STRUCTURED_TYPES, find_pii  # noqa: E402

DEFAULT_CORPUS = ROOT / "tests" / "data" / "pii_corpus.jsonl"
# acceptance floors of issue 14: structured types 0.98, names and addresses 0.9
FLOORS = {t: 0.98 for t in STRUCTURED_TYPES} | {"person_name": 0.9, "street_address": 0.9,
                                                 "date_of_birth": 0.9}
MAX_FP_RATE = 0.01


def load_corpus(path: Path | str = DEFAULT_CORPUS) -> list[dict]:
    """Read a corpus jsonl file; a malformed line raises ValueError naming file and line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise ValueError(f"{path}:{i}: not JSON ({e})") from None
    return out


def _covered(text: str, start: int, end: int, spans: list[tuple[int, int, str]], typ: str | None) -> bool:
    need = [i for i in range(start, end) if text[i].isalnum()]
    cover = [(s, e) for s, e, t in spans if typ is None or t == typ]
    return all(any(s <= i < e for s, e in cover) for i in need)


def evaluate(records: list[dict]) -> dict:
    """Return ``{"types": {type: {n, hit, hit_any}}, "by_locale": {(type, locale): [n, hit]},
    "neg": {n, flagged}, "neg_by_kind": {kind: [n, flagged]}, "misses": [...], "fps": [...]}``."""
    types = {t: {"n": 0, "hit": 0, "hit_any": 0} for t in PII_TYPES}
    by_loc: dict = defaultdict(lambda: [0, 0])
    neg = {"n": 0, "flagged": 0}
    neg_kind: dict = defaultdict(lambda: [0, 0])
    misses, fps = [], []
    for rec in records:
        pred = find_pii(rec["text"])
        if not rec["spans"]:
            kind = rec.get("kind", "negative")
            neg["n"] += 1
            neg_kind[kind][0] += 1
            if pred:
                neg["flagged"] += 1
                neg_kind[kind][1] += 1
                fps.append((rec["text"], [(rec["text"][s:e], t) for s, e, t in pred]))
            continue
        for sp in rec["spans"]:
            t = sp["type"]
            ok = _covered(rec["text"], sp["start"], sp["end"], pred, t)
            types[t]["n"] += 1
            types[t]["hit"] += ok
            types[t]["hit_any"] += _covered(rec["text"], sp["start"], sp["end"], pred, None)
            key = (t + (":lower" if rec.get("kind", "").endswith(":lower") else ""), rec.get("locale", "?"))
            by_loc[key][0] += 1
            by_loc[key][1] += ok
            if not ok:
                misses.append((t, rec.get("locale"), rec["text"][sp["start"]:sp["end"]], rec["text"],
                               [(rec["text"][s:e], tt) for s, e, tt in pred]))
    return {"types": types, "by_locale": dict(by_loc), "neg": neg, "neg_by_kind": dict(neg_kind),
            "misses": misses, "fps": fps}


def summarize(ev: dict) -> list[dict]:
    """One row per type with n, recall, recall_any and the floor it must meet."""
    rows = []
    for t in PII_TYPES:
        s = ev["types"][t]
        if not s["n"]:
            continue
        rows.append({"type": t, "n": s["n"], "recall": s["hit"] / s["n"],
                     "recall_any": s["hit_any"] / s["n"], "floor": FLOORS.get(t)})
    return rows


def fp_rate(ev: dict) -> float:
    """Share of look-alike negative records with at least one detection (nan without negatives)."""
    return ev["neg"]["flagged"] / ev["neg"]["n"] if ev["neg"]["n"] else float("nan")


def format_report(ev: dict, locales: bool = True) -> str:
    rows = summarize(ev)
    head = f"{'type':<15} {'n':>5} {'recall':>7} {'any type':>9} {'floor':>6}  ok"
    lines = [head, "-" * len(head)]
    for r in rows:
        floor = f"{r['floor']:.2f}" if r["floor"] else "  -"
        ok = "" if r["floor"] is None else ("yes" if r["recall"] >= r["floor"] else "NO")
        lines.append(f"{r['type']:<15} {r['n']:>5} {r['recall']:>7.3f} {r['recall_any']:>9.3f} {floor:>6}  {ok}")
    neg = ev["neg"]
    lines.append("-" * len(head))
    rate = fp_rate(ev)
    lines.append(f"{'look-alikes':<15} {neg['n']:>5} flagged {neg['flagged']} "
                 f"(fp rate {rate:.4f}, max {MAX_FP_RATE:.2f})  {'yes' if rate <= MAX_FP_RATE else 'NO'}")
    if locales:
        lines.append("")
        lines.append("recall by locale (n in brackets)")
        locs = sorted({loc for _, loc in ev["by_locale"]})
        kinds = sorted({k for k, _ in ev["by_locale"]}, key=lambda k: (k.split(":")[0] not in PII_TYPES, k))
        lines.append(f"{'':<21}" + "".join(f"{loc:>14}" for loc in locs))
        for k in kinds:
            cells = []
            for loc in locs:
                n, h = ev["by_locale"].get((k, loc), (0, 0))
                cells.append(f"{h / n:>7.3f} ({n:>4})" if n else f"{'-':>14}")
            lines.append(f"{k:<21}" + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--generate", action="store_true", help="build the corpus with Faker instead of reading it")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--split", default="test", choices=("dev", "test", "all"))
    ap.add_argument("--show-misses", type=int, default=0, help="print this many misses and false positives")
    a = ap.parse_args(argv)
    if a.generate:
        sys.path.insert(0, str(ROOT / "tests" / "data"))
        import make_pii_corpus  # optional: needs faker (the test extra)

        records = make_pii_corpus.make(a.seed, a.split)
        src = f"generated with Faker (seed {a.seed}, split {a.split})"
    else:
        records = load_corpus(a.corpus)
        src = str(a.corpus)
    ev = evaluate(records)
    n_pos = sum(1 for r in records if r["spans"])
    print(f"corpus: {src}: {len(records)} records ({n_pos} with PII, {ev['neg']['n']} look-alike negatives)")
    print(format_report(ev))
    if a.show_misses:
        print("\nmisses:")
        for m in ev["misses"][: a.show_misses]:
            print("  ", m[0], m[1], repr(m[2]), "| found:", m[4])
        print("\nfalse positives:")
        for fp in ev["fps"][: a.show_misses]:
            print("  ", repr(fp[0][:100]), fp[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
