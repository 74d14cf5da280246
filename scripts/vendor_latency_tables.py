"""Copy the latency lookup tables into src/pipeline/benchmarks (provenance in its README).

Run once by a maintainer; the outputs are committed. Usage:
    python scripts/vendor_latency_tables.py ../shared/data/latency src/pipeline/benchmarks

- proxylessnas/pixel1_mobile_lut.yaml is copied byte for byte (10 KB).
- nb201-help/nb201_latency_ms.csv.gz (3 MB) is trimmed: values rounded to 6 significant
  digits (the source holds float32 timings, about 7 significant digits, far finer than
  the timing noise); rows, columns and the arch strings are kept. Its MIT LICENSE is
  copied beside it.
"""

import gzip
import shutil
import sys
from pathlib import Path

import pandas as pd


def main(source: str, out: str) -> None:
    source_dir, out_dir = Path(source), Path(out)
    shutil.copyfile(source_dir / "proxylessnas" / "pixel1_mobile_lut.yaml", out_dir / "pixel1_mobile_lut.yaml")
    table = pd.read_csv(source_dir / "nb201-help" / "nb201_latency_ms.csv.gz")
    if list(table["nb201_index"]) != list(range(len(table))):
        raise SystemExit("nb201_latency_ms.csv.gz: rows are not in benchmark index order")
    text = table.to_csv(index=False, float_format="%.6g", lineterminator="\n")
    # mtime=0: the same input gives the same bytes.
    (out_dir / "nb201_latency_ms.csv.gz").write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))
    shutil.copyfile(source_dir / "nb201-help" / "LICENSE", out_dir / "nb201_latency_ms.LICENSE")


if __name__ == "__main__":
    main(*sys.argv[1:])
