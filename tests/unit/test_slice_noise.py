"""Noisy segment counts: the noise has the stated scale, the budget holds, and nothing unprotected leaves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.privacy.noise import SliceNoise, private_segments
from stream.settings import ConfigError, Settings


def test_the_noise_has_the_stated_scale_and_costs_the_stated_epsilon():
    noise = SliceNoise(epsilon_per_window=0.5, budget_per_day=1e9)
    assert noise.scale == 4.0 and noise.cost == pytest.approx(0.5)
    draws = np.array([noise.release("s", float(w), events=1_000, errors=0)["events"] for w in range(20_000)])
    # Discrete Laplace of scale b: mean 0, variance 2 e^(-1/b) / (1 - e^(-1/b))^2.
    q = math.exp(-1 / noise.scale)
    assert abs(draws.mean() - 1_000) < 0.2
    assert draws.var() == pytest.approx(2 * q / (1 - q) ** 2, rel=0.05)


def test_a_segment_is_suppressed_once_its_day_s_budget_is_spent_and_released_again_the_next_day():
    noise = SliceNoise(epsilon_per_window=1.0, budget_per_day=3.0)
    assert all(noise.release("eu", w * 60.0, events=100, errors=1) is not None for w in range(3))
    assert noise.release("eu", 180.0, events=100, errors=1) is None
    assert noise.release("us", 180.0, events=100, errors=1) is not None  # each segment has its own budget
    assert noise.release("eu", 86_400.0, events=100, errors=1) is not None


def test_with_noise_only_noisy_counts_leave_and_small_slices_stay_suppressed():
    segments = {
        "eu": {
            "events": 5_000,
            "window": {
                "start": 0.0,
                "end": 60.0,
                "count": 400,
                "error_rate": 0.05,
                "latency_ms": {"p95": 30.0},
                "confidence": {"mean": 0.9},
            },
            "usual": {"latency_ms": 20.0},
            "accuracy": {"estimated": 0.9, "realised": 0.8, "labelled": 100},
            "firing": ["latency_ms"],
        },
        "tiny": {"suppressed": True, "reason": "fewer than 20 events in the window"},
    }
    assert private_segments(segments, "m/1", None) is segments
    out = private_segments(segments, "m/1", SliceNoise(1.0, 10.0))
    assert out["tiny"] == segments["tiny"]
    assert set(out["eu"]) == {"noisy", "window", "firing"}
    assert set(out["eu"]["window"]) == {"start", "end", "count", "error_rate"}
    assert abs(out["eu"]["window"]["count"] - 400) < 50 and out["eu"]["firing"] == ["latency_ms"]


def test_noise_without_a_budget_is_one_line_naming_the_budget():
    with pytest.raises(ConfigError, match=r"^slice_noise_budget: "):
        Settings(slice_noise_epsilon=1.0).validate()
