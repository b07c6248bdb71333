"""Time named functions inside the engine's own loop: ``python -m bench.timed_calls module:Qualified.name ...``.

Runs :mod:`bench.engine`'s events (``--runs`` passes over fresh monitors)
with a timer around every call of each named function, and prints, as one
JSON object, ``total_s`` (all passes) and for each name its seconds and
calls summed over them. The timers cost about a microsecond a call, so a
function that calls another timed one is charged for that timer too.

Why: an array operation timed alone, in a loop over the same arrays, has
more than once been several times faster or slower than the same call in
the worker's loop, where the events and every rule's state compete for the
caches. A change of the hot path is judged on these figures, alternated
with the code before it (run from each checkout:
``cd OLD && python -m bench.timed_calls ...``).

Example: ``python -m bench.timed_calls
stream.detectors.reference_drift:ReferenceDriftRule.scores
stream.stats.sketch:SketchTable.ks_distance``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import time
from collections.abc import Callable
from typing import Any

from bench.engine import as_in_the_worker, envelopes, run
from bench.workload import ENVELOPE


def resolve(target: str) -> tuple[Any, str]:
    """The object holding the function ``module:Qualified.name`` names, and the function's name on it."""
    module_name, _, qualified = target.partition(":")
    if not qualified:
        raise SystemExit(f"{target!r}: expected module:Qualified.name, e.g. stream.stats.sketch:SketchTable.cdf")
    *path, name = qualified.split(".")
    try:
        owner: Any = importlib.import_module(module_name)
        for part in path:
            owner = getattr(owner, part)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"{target!r}: {exc}") from None
    if not callable(getattr(owner, name, None)):
        raise SystemExit(f"{target!r}: no function {name!r} there")
    return owner, name


def timed(function: Callable[..., Any], totals: list[float]) -> Callable[..., Any]:
    """``function`` adding its seconds to ``totals[0]`` and its calls to ``totals[1]``."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[0] += time.perf_counter() - started
            totals[1] += 1

    return call


def measure(targets: list[str], events: int, batch: int, runs: int) -> dict[str, Any]:
    totals: dict[str, list[float]] = {}
    for target in targets:
        owner, name = resolve(target)
        totals[target] = [0.0, 0]
        setattr(owner, name, timed(getattr(owner, name), totals[target]))
    batches = envelopes(events, batch)
    total_s = sum(run(batches)[0] for _ in range(runs))
    return {
        "total_s": round(total_s, 3),
        **{target: {"seconds": round(s, 3), "calls": int(n)} for target, (s, n) in totals.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", metavar="module:Qualified.name")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=ENVELOPE, help="events per call")
    parser.add_argument("--runs", type=int, default=2, help="passes over the events, each with fresh monitors")
    args = parser.parse_args()
    as_in_the_worker()
    print(json.dumps(measure(args.targets, args.events, args.batch, args.runs)))


if __name__ == "__main__":
    main()
