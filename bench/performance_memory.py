"""Memory of a labelled model version's rolling performance metrics: ``python -m bench.performance_memory``.

Feeds ``--rules`` performance rules (default 50, default settings: a window of
500 labels) ``--labels`` labelled predictions each (default 1,000, so every
window is full; nine in ten right) and prints the Python heap they hold per
rule, measured with tracemalloc.
"""

from __future__ import annotations

import argparse
import json
import random
import tracemalloc

from stream.detectors.performance import PerformanceRule


def measure(rules: int, labels: int) -> dict[str, float]:
    rng = random.Random(1)
    tracemalloc.start()
    try:
        kept = [PerformanceRule() for _ in range(rules)]
        for rule in kept:
            for t in range(labels):
                label = rng.randint(0, 1)
                rule.update(label, label if rng.random() < 0.9 else 1 - label, float(t))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"rules": rules, "labels": labels, "kb_per_rule": round(held / rules / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--labels", type=int, default=1_000)
    args = parser.parse_args()
    print(json.dumps(measure(args.rules, args.labels)))


if __name__ == "__main__":
    main()
