"""Span-level recall/precision of depsim.deid.find_pii on the labelled PII corpus.

Usage:  python benchmarks/pii_recall.py [path/to/pii_corpus.jsonl]

A gold span is *recalled* if some detected span of the same type overlaps it; a
detected span is *correct* (precision) if it overlaps a gold span of the same
type.  Detections in distractor text (no gold span) therefore count against
precision.  "structured" is the micro-average over email, phone, credit_card,
ssn, ip, api_key and url_secret.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from depsim.deid import PII_TYPES, STRUCTURED_TYPES, find_pii  # noqa: E402

DEFAULT_CORPUS = ROOT / "tests" / "data" / "pii_corpus.jsonl"


def load_corpus(path: Path | str = DEFAULT_CORPUS) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _overlap(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 < b1 and b0 < a1


def evaluate(records: list[dict]) -> dict[str, dict[str, float]]:
    """Return per-type stats: spans, detected, hit (gold recalled), correct (pred ok)."""
    stats = {t: {"spans": 0, "detected": 0, "hit": 0, "correct": 0} for t in PII_TYPES}
    for rec in records:
        gold = [(s["start"], s["end"], s["type"]) for s in rec["spans"]]
        pred = find_pii(rec["text"])
        for g0, g1, gt in gold:
            stats[gt]["spans"] += 1
            if any(pt == gt and _overlap(g0, g1, p0, p1) for p0, p1, pt in pred):
                stats[gt]["hit"] += 1
        for p0, p1, pt in pred:
            stats[pt]["detected"] += 1
            if any(pt == gt and _overlap(g0, g1, p0, p1) for g0, g1, gt in gold):
                stats[pt]["correct"] += 1
    return stats


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def summarize(stats: dict[str, dict[str, float]]) -> list[dict]:
    rows = []

    def row(name: str, types) -> dict:
        s = {k: sum(stats[t][k] for t in types) for k in ("spans", "detected", "hit", "correct")}
        return {
            "type": name, **s,
            "recall": _ratio(s["hit"], s["spans"]),
            "precision": _ratio(s["correct"], s["detected"]),
        }

    for t in PII_TYPES:
        rows.append(row(t, [t]))
    rows.append(row("structured", STRUCTURED_TYPES))
    rows.append(row("all", PII_TYPES))
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'type':<15} {'spans':>6} {'detected':>9} {'recall':>7} {'precision':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["type"] == "structured":
            lines.append("-" * len(head))
        lines.append(
            f"{r['type']:<15} {r['spans']:>6} {r['detected']:>9} "
            f"{r['recall']:>7.3f} {r['precision']:>9.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT_CORPUS
    records = load_corpus(path)
    rows = summarize(evaluate(records))
    n_neg = sum(1 for r in records if not r["spans"])
    print(f"corpus: {path} ({len(records)} records, {n_neg} distractor-only)")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
