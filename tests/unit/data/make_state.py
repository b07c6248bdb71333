"""Writes a busy model's state as the release checked out stores it (compressed JSON, as in the changelog).

Run from a checkout of that release: ``python tests/unit/data/make_state.py OUT``. Every detector of
the defaults is active: latency, errors, confidence, features (numeric and categorical), the learnt
reference with quality, drift and multivariate rules, clients, private data, resources and labels.
"""

import sys

import numpy as np

from stream.monitoring.model_monitor import ModelMonitor
from stream.monitoring.monitor_file import MonitorConfig
from stream.settings import DetectionSettings
from stream.worker.state_codec import encode_state


def busy_monitor() -> ModelMonitor:
    rng = np.random.default_rng(7)
    config = MonitorConfig()
    monitor = ModelMonitor("fraud-scorer", DetectionSettings(reference_events=500, reference_min_s=0), config)
    for batch in range(20):
        events = []
        for i in range(100):
            k = batch * 100 + i
            events.append(
                {
                    "model_version": "2.3.0",
                    "timestamp": 1_700_000_000.0 + k * 0.5,
                    "latency_ms": float(rng.gamma(4, 5)),
                    "error": "timeout" if k % 97 == 0 else None,
                    "prediction": int(rng.random() < 0.3),
                    "confidence": float(rng.beta(8, 2)),
                    "request_id": f"r{k}",
                    "client_id": f"c{k % 13}",
                    "output_text": "ok",
                    "resources": {"cpu_percent": 40.0, "memory_mb": 900.0 + k * 0.01, "memory_limit_mb": 4096.0},
                    "features": {
                        "amount": float(rng.lognormal(3, 1)),
                        "age": float(rng.normal(40, 9)),
                        "country": str(rng.choice(["DE", "FR", "IT"])),
                    },
                }
            )
        monitor.process(events)
        for i in range(0, 100, 10):
            monitor.process_label("2.3.0", int(rng.random() < 0.3), events[i]["prediction"], events[i]["timestamp"])
    monitor.seq = 5
    monitor.mark_applied("inference-events:0", 41)
    return monitor


if __name__ == "__main__":
    with open(sys.argv[1], "wb") as out:
        out.write(encode_state(busy_monitor().to_dict()))
