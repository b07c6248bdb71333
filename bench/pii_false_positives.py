"""How often the private-data finders fire on ordinary text (false positives).

Ordinary text here: the licence texts Debian ships (/usr/share/common-licenses)
and every docstring of the Python standard library. Neither should hold real
personal data, though the standard library's docstrings do hold example e-mail
and IP addresses: each hit is printed with its excerpt to be judged.

    python -m bench.pii_false_positives [--show 40]
"""

from __future__ import annotations

import argparse
import ast
import sysconfig
import time
from collections import Counter
from pathlib import Path

from stream.privacy.pii import find_pii


def corpus() -> list[tuple[str, str]]:
    texts = [(str(p), p.read_text(errors="replace")) for p in sorted(Path("/usr/share/common-licenses").glob("*"))]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except SyntaxError:
            continue
        nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef))]
        docs = [ast.get_docstring(n) for n in nodes]
        texts.append((str(path), "\n\n".join(d for d in docs if d)))
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", type=int, default=30, help="hits to print with their excerpt")
    args = parser.parse_args()
    texts = corpus()
    size = sum(len(t.encode()) for _, t in texts)
    started = time.perf_counter()
    hits = [(name, hit) for name, text in texts for hit in find_pii(text)]
    elapsed = time.perf_counter() - started
    by_kind = Counter(hit.kind for _, hit in hits)
    print(f"scanned {len(texts)} texts, {size / 1e6:.2f} MB, in {elapsed:.1f} s ({size / 1e6 / elapsed:.1f} MB/s)")
    print(f"hits: {len(hits)} ({len(hits) / (size / 1e6):.1f} per MB)")
    for kind, n in by_kind.most_common():
        print(f"  {kind:16s} {n:5d}  ({n / (size / 1e6):.2f} per MB)")
    for name, hit in hits[: args.show]:
        print(f"  {hit.kind:14s} {Path(name).name:28s} {hit.excerpt!r}")


if __name__ == "__main__":
    main()
