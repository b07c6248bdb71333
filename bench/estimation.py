"""Performance estimated before labels (CBPE): error per window, lead over labels, false alarms.

A simulated binary classifier, 100 predictions a second, one model version
through :class:`~stream.monitoring.model_monitor.ModelMonitor` with the
default settings (60 s windows, performance window and chunk 500, margin
0.05). Every prediction gets its label ``--label-delay`` predictions later.

- The world: inputs ``x1, x2`` normal; the truth P(y = 1 | x) is a logistic
  function of ``2.5 x1 + 0.5 x2 - 1``. Under covariate shift (half-way
  through) ``x1`` gathers near the boundary and P(y | x) stays as it was.
- The model: a slightly wrong boundary (``2.2 x1 + 0.8 x2 - 1.2``) and
  overconfident (its confidence is the logistic of 1.5 x its score), so
  the estimate is only right once labels have calibrated it.

Reported: per closed window, the estimated accuracy against the realised one;
the predictions between the shift and the first ``cbpe`` alert, and the first
label-based one (``metric_drop`` or ``ddm``); and ``cbpe`` alerts on the same
world without a shift (false alarms).

    python -m bench.estimation [--events 200000] [--stationary 400000] [--json]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from stream.monitoring.model_monitor import ModelMonitor
from stream.settings import DetectionSettings

RATE = 100.0  # predictions per second of event time
START = 1_800_000_000.0
# x1 after the shift, N(0.9, 0.6) instead of N(1.5, 1): more inputs near the boundary, about 10 points of accuracy.
SHIFTED_X1 = (0.9, 0.6)


def world(rng: np.random.Generator, n: int, x1_mean: float, x1_sd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions, confidences and labels of ``n`` requests."""
    x1 = rng.normal(x1_mean, x1_sd, n)
    x2 = rng.normal(0.0, 1.0, n)
    truth = 1 / (1 + np.exp(-(2.5 * x1 + 0.5 * x2 - 1.0)))
    labels = (rng.random(n) < truth).astype(int)
    score = 2.2 * x1 + 0.8 * x2 - 1.2
    predictions = (score > 0).astype(int)
    confidence = 1 / (1 + np.exp(-1.5 * np.abs(score)))
    return predictions, confidence, labels


def run(events: int, shift_at: int | None, label_delay: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    predictions = np.empty(events, dtype=int)
    confidence = np.empty(events)
    labels = np.empty(events, dtype=int)
    cut = events if shift_at is None else shift_at
    predictions[:cut], confidence[:cut], labels[:cut] = world(rng, cut, 1.5, 1.0)
    if shift_at is not None:
        predictions[cut:], confidence[cut:], labels[cut:] = world(rng, events - cut, *SHIFTED_X1)
    stamps = START + np.arange(events) / RATE
    monitor = ModelMonitor("scorer", DetectionSettings(join_predictions="always"))
    fired: dict[str, list[int]] = {}
    estimates: dict[float, dict[str, Any]] = {}
    step = 100
    labelled = 0
    for i in range(0, events, step):
        batch = [
            {
                "model_version": "1",
                "timestamp": float(stamps[j]),
                "latency_ms": 10.0,
                "prediction": int(predictions[j]),
                "confidence": float(confidence[j]),
                "error": None,
            }
            for j in range(i, min(events, i + step))
        ]
        alerts = monitor.process(batch, arrived_at=float(stamps[i]))
        while labelled < i + step - label_delay:
            j = labelled
            alerts += monitor.process_label(
                "1", int(labels[j]), int(predictions[j]), float(stamps[j] + label_delay / RATE), float(confidence[j])
            )
            labelled += 1
        for alert in alerts:
            if alert["kind"] == "performance" and alert["status"] == "firing":
                fired.setdefault(alert["detector"], []).append(i + step)
        for window in monitor.versions["1"].estimated.closed_windows:
            estimates[window["start"]] = window
    per_window = []
    for start, window in sorted(estimates.items()):
        inside = (stamps >= start) & (stamps < start + 60.0)
        realised = float((predictions[inside] == labels[inside]).mean())
        per_window.append((start, window["accuracy"], realised, window["accuracy_band"]))
    errors = np.array([abs(e - r) for _, e, r, _ in per_window])
    after = {d: [at for at in ats if at >= cut] for d, ats in fired.items()}
    before = {d: sum(at < cut for at in ats) for d, ats in fired.items()}
    label_based = [after[d][0] for d in ("metric_drop", "ddm") if after.get(d)]
    return {
        "events": events,
        "windows": len(per_window),
        "per_window": [
            {"start": s - START, "estimated": e, "realised": round(r, 4), "band": b} for s, e, r, b in per_window
        ],
        "max_window_error": round(float(errors.max()), 4) if errors.size else None,
        "mean_window_error": round(float(errors.mean()), 4) if errors.size else None,
        "alerts_before_shift": before,
        "cbpe_after_shift": None if shift_at is None or not after.get("cbpe") else after["cbpe"][0] - shift_at,
        "labels_after_shift": None if shift_at is None or not label_based else min(label_based) - shift_at,
        "accuracy_before": round(float((predictions[:cut] == labels[:cut]).mean()), 4),
        "accuracy_after": None if shift_at is None else round(float((predictions[cut:] == labels[cut:]).mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="predictions in the shift run")
    parser.add_argument("--stationary", type=int, default=400_000, help="predictions in the run without a shift")
    parser.add_argument("--label-delay", type=int, default=2_000, help="predictions between one and its label")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    shifted = run(args.events, args.events // 2, args.label_delay, args.seed)
    steady = run(args.stationary, None, args.label_delay, args.seed + 1)
    result = {
        "shift": shifted,
        "stationary_events": steady["events"],
        "stationary_alerts": steady["alerts_before_shift"],
        "stationary_max_window_error": steady["max_window_error"],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"accuracy {shifted['accuracy_before']:.3f} before the shift, {shifted['accuracy_after']:.3f} after; "
        f"labels {args.label_delay} predictions late"
    )
    print(
        f"estimated vs realised accuracy over {shifted['windows']} windows of 6,000 predictions: "
        f"mean error {shifted['mean_window_error']}, max {shifted['max_window_error']}"
    )
    for w in shifted["per_window"]:
        estimated = f"estimated {w['estimated']:.3f} ± {w['band']:.3f}"
        print(f"  window at {w['start']:>6.0f} s: {estimated}, realised {w['realised']:.3f}")
    print(
        f"first alert after the shift: cbpe after {shifted['cbpe_after_shift']} predictions, "
        f"labels (metric_drop or ddm) after {shifted['labels_after_shift']}"
    )
    print(f"false alarms before the shift: {shifted['alerts_before_shift'] or 'none'}")
    print(
        f"stationary, {steady['events']:,} predictions: alerts {steady['alerts_before_shift'] or 'none'} "
        f"(max window error {steady['max_window_error']})"
    )


if __name__ == "__main__":
    main()
