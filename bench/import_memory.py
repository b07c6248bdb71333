"""What a worker holds before its first record: ``python -m bench.import_memory``.

Imports the worker's app module (everything a worker loads before it reads a
record) in fresh interpreters, several times, and prints the median resident
memory, its anonymous part (what no other process can share), the import's
wall time, and whether the heavy optional modules came with it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from rich.console import Console
from rich.table import Table

PROBE = """
import json, re, sys, time
t0 = time.perf_counter()
import {module}
seconds = time.perf_counter() - t0
rollup = open("/proc/self/smaps_rollup").read()
kb = lambda key: int(re.search(key + r":\\s+(\\d+)", rollup).group(1))
heavy = [name for name in {heavy!r} if name in sys.modules]
print(json.dumps([kb("Rss") / 1024, kb("Anonymous") / 1024, seconds, len(sys.modules), heavy]))
"""


# Large imports a worker needs only for settings it may not have.
HEAVY = ("scipy.stats", "scipy.signal", "river.drift", "river.datasets", "opendp")


def probe(module: str) -> tuple[float, float, float, int, list[str]]:
    """One fresh interpreter's figures after importing ``module``."""
    code = PROBE.format(module=module, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    rss, anon, seconds, modules, heavy = json.loads(out.strip().splitlines()[-1])
    return rss, anon, seconds, modules, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default="stream.worker.app", help="the module to import")
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters; the median is reported")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the figures")
    args = parser.parse_args()
    runs = [probe(args.module) for _ in range(args.runs)]
    figures = {
        "module": args.module,
        "runs": args.runs,
        "rss_mb": round(statistics.median(r[0] for r in runs), 1),
        "anonymous_mb": round(statistics.median(r[1] for r in runs), 1),
        "import_s": round(statistics.median(r[2] for r in runs), 3),
        "modules": runs[0][3],
        "heavy_modules": runs[0][4],
    }
    if args.json:
        print(json.dumps(figures))
        return
    table = Table(title=f"import {args.module}, median of {args.runs} fresh interpreters")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    Console().print(table)


if __name__ == "__main__":
    main()
