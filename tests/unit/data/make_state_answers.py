"""Writes a busy model's state, as the release checked out stores it, with what that release answers next.

Run from a checkout of that release: ``python tests/unit/data/make_state_answers.py OUT``. The answers
(the alerts raised by a continuation with a latency spike and a shifted feature, and the model's summary)
let a later release show that it reads the state into the same monitoring, not only into the same data.
"""

import gzip
import json
import sys

import numpy as np

from tests.unit.data.make_state import busy_monitor


def continuation() -> list[dict]:
    rng = np.random.default_rng(8)
    return [
        {
            "model_version": "2.3.0",
            "timestamp": 1_700_001_000.0 + k * 0.5,
            "latency_ms": float(rng.gamma(4, 5)) * (4.0 if k >= 300 else 1.0),
            "error": None,
            "prediction": int(rng.random() < 0.3),
            "confidence": float(rng.beta(8, 2)),
            "features": {
                "amount": float(rng.lognormal(3, 1)) * (3.0 if k >= 150 else 1.0),
                "age": float(rng.normal(40, 9)),
                "country": str(rng.choice(["DE", "FR", "IT"])),
            },
        }
        for k in range(900)
    ]


def answers(monitor) -> dict:
    alerts = []
    events = continuation()
    for i in range(0, len(events), 100):
        alerts += monitor.process(events[i : i + 100])
    return {
        "alerts": sorted([a["signal"], a["detector"], a["status"], a["value"]] for a in alerts),
        "summary": monitor.summary(),
    }


if __name__ == "__main__":
    monitor = busy_monitor()
    state = monitor.to_dict()
    with gzip.open(sys.argv[1], "wt") as out:
        json.dump({"state": state, "answers": answers(monitor)}, out)
