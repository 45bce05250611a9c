"""Compare two releases' tables (reports/<release>/data/*.parquet): same tables, columns,
rows and values. Prints one line per table and exits 1 on any difference.

    python scripts/compare_tables.py OLD_DATA_DIR NEW_DATA_DIR
"""
import sys
from pathlib import Path

import pandas as pd

old, new = Path(sys.argv[1]), Path(sys.argv[2])
names = sorted({p.name for p in old.glob("*.parquet")} | {p.name for p in new.glob("*.parquet")})
bad = 0
for name in names:
    a, b = old / name, new / name
    if not (a.exists() and b.exists()):
        print(f"{name}: only in {'old' if a.exists() else 'new'}")
        bad += 1
        continue
    x, y = pd.read_parquet(a), pd.read_parquet(b)
    try:
        pd.testing.assert_frame_equal(x, y, check_exact=True)
        print(f"{name}: equal ({len(x)} rows, {x.shape[1]} columns)")
    except AssertionError as e:
        bad += 1
        print(f"{name}: DIFFERENT: {str(e).splitlines()[0:3]}")
sys.exit(1 if bad else 0)
