"""Realistic traffic for the detection benchmark: one model's events, stationary or with one injected change.

Features are shaped like a payment model's inputs, not like a textbook's
Gaussian: categorical (uniform, skewed), heavy-tailed, small integers, a
constant, missing values, a slowly wandering (autocorrelated) mean, a daily
cycle, a correlated pair, and a request rate that swings through the day.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

RATE = 100.0  # mean events per second
DAY_S = 86_400.0
COUNTRIES = ["DE", "FR", "ES", "IT", "NL", "XX"]  # XX appears only when injected
MERCHANTS = [f"m{i:03d}" for i in range(100)]
DEVICES = [f"d{i:02d}" for i in range(50)]
_ZIPF = 1.0 / np.arange(1, 51) ** 1.1
DEVICE_P = _ZIPF / _ZIPF.sum()

# name -> (description, effect); the change starts at event CHANGE_AT.
CHANGES = {
    "device share x2": "the most common device's share doubles",
    "new country at 2%": "a country never seen before makes 2 % of traffic",
    "amount scale x1.5": "amounts are 1.5 times larger (lognormal scale)",
    "correlation broken": "two features with r = 0.8 start moving independently, each unchanged alone",
    "slow drift over an hour": "score's mean moves by one standard deviation, linearly, over an hour",
    "latency x3": "every request takes three times as long",
}


def events(n: int, seed: int, change: str | None = None, change_at: int = 0) -> Iterator[list[dict[str, Any]]]:
    """Batches of 100 events of model ``real``; ``change`` (a key of CHANGES) starts at event ``change_at``."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, DAY_S)
    t = 1_700_000_000.0
    wander = 0.0
    for start in range(0, n, 100):
        m = min(100, n - start)
        idx = np.arange(start, start + m)
        after = idx >= change_at if change else np.zeros(m, bool)
        # Request rate through the day: 50 to 150 per second.
        rate = RATE * (1 + 0.5 * np.sin(2 * np.pi * (t + phase) / DAY_S))
        gaps = rng.exponential(1 / rate, m)
        stamps = t + np.cumsum(gaps)
        t = float(stamps[-1])
        daily = np.sin(2 * np.pi * (stamps + phase) / DAY_S)
        # A mean that wanders over seconds to minutes (AR(1) per event, rho 0.999, sd 0.1): below the drift floors.
        walk = np.empty(m)
        for i in range(m):
            wander = 0.999 * wander + rng.normal(0, 0.1 * (1 - 0.999**2) ** 0.5)
            walk[i] = wander
        country = rng.choice(5, m, p=[0.4, 0.25, 0.15, 0.12, 0.08])
        device = rng.choice(50, m, p=DEVICE_P)
        amount = rng.lognormal(3.0, 1.2, m)
        score = rng.normal(0, 1, m)
        pair = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], m)
        latency = 12.0 * np.exp(rng.normal(0, 0.3, m))
        if change == "device share x2":
            device = np.where(after & (rng.uniform(size=m) < DEVICE_P[0]), 0, device)
        elif change == "new country at 2%":
            country = np.where(after & (rng.uniform(size=m) < 0.02), 5, country)
        elif change == "amount scale x1.5":
            amount = np.where(after, amount * 1.5, amount)
        elif change == "correlation broken":
            pair[:, 1] = np.where(after, rng.normal(0, 1, m), pair[:, 1])
        elif change == "slow drift over an hour":
            score = score + np.clip((idx - change_at) / (3600 * RATE), 0, 1) * after
        elif change == "latency x3":
            latency = np.where(after, latency * 3, latency)
        missing = rng.uniform(size=m) < 0.02
        batch = []
        for i in range(m):
            features: dict[str, Any] = {
                "country": COUNTRIES[country[i]],
                "merchant": MERCHANTS[rng.integers(100)],
                "device": DEVICES[device[i]],
                "amount": round(float(amount[i]), 2),
                "items": int(rng.integers(1, 5)),
                "channel": "web",
                "hour_load": float(daily[i] * 0.5 + rng.normal()),
                "session_mean": float(walk[i] + rng.normal()),
                "pair_a": float(pair[i, 0]),
                "pair_b": float(pair[i, 1]),
            }
            if not missing[i]:
                features["score"] = float(score[i])
            batch.append(
                {
                    "event_id": f"e{start + i}",
                    "timestamp": float(stamps[i]),
                    "model": "real",
                    "model_version": "1",
                    "latency_ms": float(latency[i]),
                    "prediction": int(rng.uniform() < 0.1),
                    "confidence": float(rng.beta(8, 2)),
                    "error": "timeout" if rng.uniform() < 0.005 else None,
                    "features": features,
                }
            )
        yield batch
