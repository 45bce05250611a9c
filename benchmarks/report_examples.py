"""The examples page at scale: it reads only the rows it shows.

Replicates the demo release's tables ``--factor`` times (fresh item and prefix ids) into a
temporary reports folder, then times :func:`depsim.pipeline.examples` (Parquet filters: only
the rows shown are read) against a baseline measured in the same run: the same function
with every table read whole and filtered in pandas. Prints the ratio and the page's size,
which stays bounded whatever the scale. Needs the demo run first (``depsim run params/demo.yaml``).

    python benchmarks/report_examples.py --factor 10
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from depsim import pipeline, show
from depsim.params import load_release
from depsim.records import read_table, table_path, write_table

ROOT = Path(__file__).resolve().parents[1]


def scaled(src: Path, dst: Path, release: str, factor: int) -> None:
    """Write the release's tables ``factor`` times over under ``dst`` (ids made unique)."""
    for name in ("rates", "findings", "clusters"):
        write_table(read_table(src, release, name), dst, release, name)
    for name, ids in (("grades", ["item_id"]), ("completions", ["item_id", "prefix_id"]), ("prefixes", ["prefix_id"])):
        df = read_table(src, release, name)
        parts = [df.assign(**{c: df[c] + (f"-{i}" if i else "") for c in ids}) for i in range(factor)]
        write_table(pd.concat(parts, ignore_index=True), dst, release, name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--reports", default=str(ROOT / "reports"))
    args = ap.parse_args()
    rel = load_release(ROOT / "params" / "demo.yaml")
    tmp = Path(tempfile.mkdtemp(prefix="depsim-bench-"))
    try:
        scaled(Path(args.reports), tmp, rel.release, args.factor)
        rows = {n: pq.ParquetFile(table_path(tmp, rel.release, n)).metadata.num_rows
                for n in ("grades", "completions", "prefixes")}
        filtered = pipeline._rows

        def whole(reports_dir, rel_, name, filters, columns=None):
            df = read_table(reports_dir, rel_.release, name)
            for col, op, val in filters:
                df = df[df[col].isin(val)] if op == "in" else df[df[col].eq(val).fillna(False).astype(bool)]
            return df if columns is None else df[columns]
        times = {}
        for label, reader in (("baseline", whole), ("filtered", filtered)):
            pipeline._rows = reader
            t0 = time.perf_counter()
            page = show.examples(pipeline.examples(rel, tmp)).data
            times[label] = time.perf_counter() - t0
        pipeline._rows = filtered
        print(f"tables: {rows['grades']:,} grades, {rows['completions']:,} completions, {rows['prefixes']:,} prefixes")
        print(f"baseline (tables read whole, filtered in pandas): {times['baseline']:.2f} s")
        print(f"examples page (Parquet filters):                  {times['filtered']:.2f} s  = "
              f"{times['filtered'] / times['baseline']:.2f} x baseline")
        shown = page.count('class="depsim-example"')
        print(f"page: {len(page):,} characters, {shown:,} transcripts")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
