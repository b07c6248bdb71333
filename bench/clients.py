"""Clients at scale: false alarms on a heavy-tailed population, a newcomer's burst, rotation, and memory.

One model version's ``client_abuse`` rule, defaults throughout, 60 s windows:

1. **Stationary.** 10,000 clients whose request rates follow a Pareto law
   (shape 1.2: a few callers send a large share, most send one or two
   requests a window), Poisson counts per window, for ``--windows`` windows.
   Every finding is a false alarm.
2. **Newcomer.** In one window a client never seen before sends 100x the
   usual requests per client; reported: whether and when it was flagged.
3. **Rotation.** In one window a caller sends requests under 10,000 fresh
   ids, two each; reported: whether the swarm was flagged.
4. **One million callers.** 1,000,000 distinct client ids, one request each,
   over 10 windows; reported: the rule's state (JSON bytes) and the memory it
   holds (tracemalloc, after the last window).

Client traffic is generated here (no public trace of callers exists to
replay); the shape is stated above.

    python -m bench.clients [--windows 60] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from typing import Any

import numpy as np
import orjson
import psutil

from stream.detectors.client_abuse import ClientAbuseRule

WINDOW_S = 60.0


def population_window(rng: np.random.Generator, rates: np.ndarray, start: float) -> list[dict[str, Any]]:
    """One window of the stationary population: Poisson requests per client, in time order."""
    counts = rng.poisson(rates)
    ids = np.repeat(np.arange(rates.size), counts)
    stamps = start + rng.uniform(0, WINDOW_S, ids.size)
    order = np.argsort(stamps)
    inputs = rng.lognormal(3.0, 1.0, (ids.size, 2))
    return [
        {"timestamp": float(t), "client_id": f"user-{i}", "confidence": 0.9, "features": {"x": x, "y": y}}
        for t, i, (x, y) in zip(stamps[order], ids[order], inputs[order].tolist(), strict=True)
    ]


def run_population(windows: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    rates = 1.0 + rng.pareto(1.2, 10_000)
    rule = ClientAbuseRule(WINDOW_S)
    false_alarms: list[str] = []
    events = 0
    started = time.perf_counter()
    newcomer_window, rotation_window = windows - 6, windows - 3
    newcomer: dict[str, Any] = {}
    rotation: dict[str, Any] = {}
    for w in range(windows):
        batch = population_window(rng, rates, w * WINDOW_S)
        if w == newcomer_window:
            usual = rule.population.usual_requests_per_client
            n = round(100 * usual)
            newcomer = {"usual_requests_per_client": round(usual, 2), "requests": n}
            stamps = np.sort(rng.uniform(w * WINDOW_S, (w + 1) * WINDOW_S, n))
            batch = sorted(
                batch
                + [
                    {"timestamp": float(t), "client_id": "newcomer", "features": {"x": float(x)}}
                    for t, x in zip(stamps, rng.lognormal(3.0, 1.0, n), strict=True)
                ],
                key=lambda e: e["timestamp"],
            )
        if w == rotation_window:
            rotation = {"fresh_ids": 10_000, "requests": 20_000}
            stamps = np.sort(rng.uniform(w * WINDOW_S, (w + 1) * WINDOW_S, 20_000))
            batch = sorted(
                batch
                + [
                    {"timestamp": float(t), "client_id": f"rot-{k // 2}", "features": {"x": float(t)}}
                    for k, t in enumerate(stamps)
                ],
                key=lambda e: e["timestamp"],
            )
        for chunk in range(0, len(batch), 500):
            for finding in rule.update(batch[chunk : chunk + 500]):
                who = finding.evidence.get("client_id")
                if w == newcomer_window and who == "newcomer" and finding.evidence["reason"] == "burst":
                    seen = [e for e in batch if e["client_id"] == "newcomer" and e["timestamp"] <= finding.event_time]
                    newcomer.update(flagged=True, after_requests=len(seen), at_s_into_window=finding.event_time % 60)
                elif w == rotation_window and finding.evidence["reason"] == "rotation":
                    rotation.update(
                        flagged=True, distinct=finding.evidence["distinct_clients"], limit=finding.threshold
                    )
                else:
                    false_alarms.append(f"window {w}: {finding.signal} {who or ''}")
        events += len(batch)
    return {
        "population_clients": int(rates.size),
        "population_windows": windows,
        "population_events": events,
        "population_false_alarms": len(false_alarms),
        "false_alarm_examples": false_alarms[:5],
        "newcomer": {"flagged": False, **newcomer},
        "rotation": {"flagged": False, **rotation},
        "tracked_clients": len(rule.clients),
        "population_s": round(time.perf_counter() - started, 1),
    }


def run_million() -> dict[str, Any]:
    n = 1_000_000
    # The ids and one batch exist before the measurement starts, and the batch is refilled in place:
    # what grows is the rule.
    ids = [f"caller-{i:07d}" for i in range(n)]
    batch = [{"timestamp": 0.0, "client_id": "", "features": {"x": 1.0}} for _ in range(10_000)]
    process = psutil.Process()
    rss_before = process.memory_info().rss
    tracemalloc.start()
    rule = ClientAbuseRule(WINDOW_S)
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    for chunk in range(0, n, len(batch)):
        for k, event in enumerate(batch):
            event["timestamp"], event["client_id"] = ((chunk + k) / n) * 10 * WINDOW_S, ids[chunk + k]
        rule.update(batch)
    elapsed = time.perf_counter() - started
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # tracemalloc sees Python's allocations only; the sketches live in C++, so the process's growth is told too.
    rss_growth = process.memory_info().rss - rss_before
    state = orjson.dumps(rule.to_dict())
    return {
        "distinct_clients": n,
        "state_bytes": len(state),
        "held_bytes": held,
        "rss_growth_bytes": rss_growth,
        "tracked_clients": len(rule.clients),
        "untracked_events": rule.untracked_events,
        "million_events_per_s": round(n / elapsed),
        "frequent_items_epsilon": round(rule.population.epsilon, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=60, help="windows of the stationary population (>= 10)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = {**run_population(max(args.windows, 10), args.seed), "million": run_million()}
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"stationary: {result['population_false_alarms']} findings in {result['population_windows']} windows, "
        f"{result['population_events']:,} requests from {result['population_clients']:,} Pareto-rate clients "
        f"({result['population_s']} s)"
    )
    for example in result["false_alarm_examples"]:
        print(f"  false alarm: {example}")
    print(f"newcomer at 100x the usual rate: {result['newcomer']}")
    print(f"rotation: {result['rotation']}")
    m = result["million"]
    print(
        f"1,000,000 distinct clients: state {m['state_bytes'] / 1e6:.2f} MB as JSON, {m['held_bytes'] / 1e6:.2f} MB "
        f"held by Python objects (tracemalloc), process grew {m['rss_growth_bytes'] / 1e6:.1f} MB "
        "(with the sketches' C++ memory), "
        f"{m['tracked_clients']} tracked, {m['million_events_per_s']:,} requests/s, "
        f"per-client counts within {m['frequent_items_epsilon']:.2%} of a window's requests"
    )


if __name__ == "__main__":
    main()
