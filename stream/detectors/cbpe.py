"""Performance estimated before labels arrive: confidence-based performance estimation (CBPE).

A classifier's calibrated confidence is the probability that its prediction
is right, so the mean calibrated confidence of a set of predictions is their
expected accuracy, with no label. For a binary classifier the same
probabilities give expected confusion counts, hence expected precision,
recall and F1. The calibration (:class:`~stream.stats.calibration.ConfidenceCalibration`)
takes the model at its word until labels arrive and is corrected online as
they do; the estimate holds under covariate shift (inputs move, P(label |
input) does not), which is what moves most production models, and fails
under concept drift, which the label-based
:class:`~stream.detectors.performance.PerformanceRule` catches once labels come.

Predictions are counted per confidence bin in blocks of ``check_every``; the
estimate covers the last ``chunk`` predictions and is checked each block.
The first ``reference_chunks`` chunks are the reference: their estimate, and
the spread of their chunk estimates. A ``performance`` finding fires when the
estimate is worse than the reference by more than ``margin`` and by more than
three times that spread; once per ``chunk`` predictions. Closed tumbling
windows keep their own estimate too, shown beside the realised metric.

Reference: NannyML, "Confidence-based Performance Estimation (CBPE)",
https://nannyml.readthedocs.io (2022); calibration after Zadrozny and Elkan
(ICML 2001).
"""

from __future__ import annotations

import itertools
import math
import operator
from collections import deque
from typing import Any

import numpy as np

from stream.detectors.base import Finding, check_state_version, tumbling_window
from stream.stats.calibration import ConfidenceCalibration
from stream.stats.columns import BatchColumns
from stream.stats.window_stats import window_start

STATE_VERSION = 1
# Closed windows whose estimate is kept for the summary.
KEPT_WINDOWS = 10


# Predictions of only these types are all classes (see is_class): no need to ask each.
_CLASS_TYPES = frozenset({int, str, bool})


def is_class(prediction: Any) -> bool:
    """Whether ``prediction`` is a class (string, boolean, whole number), not a score or a vector.

    >>> is_class(1), is_class("spam"), is_class(True), is_class(0.37), is_class([0.2, 0.8]), is_class(None)
    (True, True, True, False, False, False)
    """
    if isinstance(prediction, bool | str):
        return True
    if isinstance(prediction, int):
        return True
    return isinstance(prediction, float) and prediction.is_integer()


def estimate(counts: np.ndarray, right: np.ndarray, binary: bool) -> dict[str, float]:
    """Expected metrics of predictions counted per bin (row 0: predicted negative, row 1: positive).

    ``right`` is P(right) per bin. The accuracy band is the 95 % sampling
    interval of the realised accuracy around the estimate.

    >>> counts = np.array([[0, 100], [0, 100]])     # 200 predictions, all at the top bin
    >>> estimate(counts, np.array([0.5, 0.9]), binary=True)["accuracy"]
    0.9
    """
    if counts.sum() == 0:
        return {}
    return {k: round(float(v), 6) for k, v in metrics(counts, right, binary).items()}


def metrics(counts: np.ndarray, right: np.ndarray, binary: bool) -> dict[str, np.ndarray]:
    """:func:`estimate` for counts of shape (..., 2, bins) at once, unrounded (NaN where undefined).

    >>> counts = np.array([[[0, 100], [0, 100]], [[0, 100], [100, 0]]])
    >>> metrics(counts, np.array([0.5, 0.9]), binary=False)["accuracy"].round(3).tolist()
    [0.9, 0.7]
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        n = counts.sum(axis=(-2, -1))
        per_bin = counts.sum(axis=-2)
        out = {"accuracy": per_bin @ right / n, "accuracy_band": 1.96 * np.sqrt(per_bin @ (right * (1 - right))) / n}
        if binary:
            tp, fp = counts[..., 1, :] @ right, counts[..., 1, :] @ (1 - right)
            fn = counts[..., 0, :] @ (1 - right)
            out["precision"] = tp / (tp + fp)
            out["recall"] = tp / (tp + fn)
            out["f1"] = 2 * tp / (2 * tp + fp + fn)
    return out


class ConfidenceBasedPerformance:
    """Expected accuracy (precision, recall and F1 for two classes) from calibrated confidences.

    Parameters: ``chunk`` predictions per estimate, checked every
    ``check_every``; ``reference_chunks`` chunks of reference; ``margin``, the
    drop that matters (absolute); ``metric`` watched (accuracy by default);
    ``pos_label``, the positive class; ``bins`` of confidence.

    >>> rule = ConfidenceBasedPerformance(chunk=200, check_every=50, reference_chunks=5, margin=0.05)
    >>> ev = lambda i, c: {"timestamp": float(i), "prediction": i % 2, "confidence": c}
    >>> rule.update([ev(i, 0.92 + 0.04 * (i % 3 == 0)) for i in range(1000)])   # the reference
    []
    >>> rule.update([ev(1000 + i, 0.93) for i in range(1000)])                  # as usual: quiet
    []
    >>> found = rule.update([ev(2000 + i, 0.70) for i in range(400)])           # far less sure
    >>> found[0].signal, found[0].detector, found[0].value < found[0].threshold
    ('performance.accuracy', 'cbpe', True)
    """

    name = "cbpe"

    def __init__(
        self,
        *,
        chunk: int = 500,
        check_every: int = 100,
        reference_chunks: int = 10,
        margin: float = 0.05,
        metric: str | None = None,
        pos_label: Any = 1,
        bins: int = 20,
        window_s: float = 60.0,
    ) -> None:
        if chunk % check_every:
            raise ValueError(f"chunk ({chunk}) must be a multiple of check_every ({check_every})")
        self.chunk = chunk
        self.check_every = check_every
        self.reference_chunks = reference_chunks
        self.margin = margin
        self.metric = metric or "accuracy"
        self.pos_label = pos_label
        self.window_s = window_s
        self.calibration = ConfidenceCalibration(bins)
        # Classes seen in predictions, up to three: two make the model binary.
        self.classes: list[Any] = []
        self.block = np.zeros((2, bins), dtype=np.int64)
        self.block_events = 0
        self.blocks: deque[np.ndarray] = deque(maxlen=chunk // check_every)
        # Per-chunk counts of the reference, filled from the version's first predictions.
        self.reference: list[np.ndarray] = []
        self.reference_filling = np.zeros((2, bins), dtype=np.int64)
        self.reference_blocks = 0
        self.since_fired = chunk
        self.window_start: float | None = None
        self.window_counts = np.zeros((2, bins), dtype=np.int64)
        self.closed_windows: deque[dict[str, Any]] = deque(maxlen=KEPT_WINDOWS)

    @property
    def binary(self) -> bool:
        """Two classes seen so far (precision, recall and F1 are estimated only then)."""
        return len(self.classes) == 2

    def update(self, events: list[dict[str, Any]], columns: BatchColumns | None = None) -> list[Finding]:
        """Count the class predictions of ``events`` that have a confidence; return findings."""
        if columns is None:
            columns = BatchColumns(events)
        predictions = columns.values("prediction")
        confidences = columns.field("confidence")
        # NaN: a confidence missing or not a number (a boolean is none).
        taken = ~np.isnan(confidences)
        if not _CLASS_TYPES.issuperset(map(type, predictions)):
            taken &= np.fromiter(map(is_class, predictions), bool, len(predictions))
        stamps = columns.field("timestamp")
        if not taken.all():
            at = np.flatnonzero(taken)
            predictions = [predictions[i] for i in at.tolist()]
            confidences, stamps = confidences[at], stamps[at]
        if not predictions:
            return []
        if len(self.classes) < 3:
            for prediction in set(predictions) - set(self.classes):
                if len(self.classes) < 3:
                    self.classes.append(prediction)
        n = len(predictions)
        positive = np.fromiter(map(operator.eq, predictions, itertools.repeat(self.pos_label)), np.int64, n)
        bins = self.calibration.bin_of(confidences)
        # One index per (predicted positive, bin): counting is a bincount, not a loop.
        cells = positive * self.calibration.bins + bins
        starts = np.floor(stamps / self.window_s) * self.window_s
        findings: list[Finding] = []
        i = 0
        # Runs of events in one window and one block, counted at once.
        while i < n:
            if self.window_start is None or starts[i] > self.window_start:
                self._close_window(float(starts[i]))
            end = min(n, i + self.check_every - self.block_events)
            later = np.flatnonzero(starts[i:end] > self.window_start)
            if later.size:
                end = i + int(later[0])
            # The calibration takes in confidences up to each window's and block's end, not the batch's:
            # the estimates closed there are then the same however the events were batched.
            self.calibration.observe(confidences[i:end])
            counted = np.bincount(cells[i:end], minlength=self.block.size).reshape(self.block.shape)
            self.window_counts += counted
            self.block += counted
            self.block_events += end - i
            self.since_fired += end - i
            if self.block_events == self.check_every:
                findings += self._close_block(float(stamps[end - 1]))
            i = end
        return findings

    def learn(self, label: Any, prediction: Any, confidence: float | None) -> None:
        """Calibrate with one labelled prediction (its confidence as it was published)."""
        if isinstance(confidence, int | float) and is_class(prediction):
            self.calibration.learn(float(confidence), label == prediction)

    def _close_window(self, start: float) -> None:
        if self.window_start is not None and self.window_counts.sum():
            self.closed_windows.append(
                {
                    "start": self.window_start,
                    "predictions": int(self.window_counts.sum()),
                    **estimate(self.window_counts, self.calibration.right_probability(), self.binary),
                }
            )
        self.window_start = start
        self.window_counts = np.zeros_like(self.window_counts)

    def _close_block(self, ts: float) -> list[Finding]:
        block, self.block, self.block_events = self.block, np.zeros_like(self.block), 0
        self.blocks.append(block)
        if len(self.reference) < self.reference_chunks:
            self.reference_filling += block
            self.reference_blocks += 1
            if self.reference_blocks * self.check_every == self.chunk:
                self.reference.append(self.reference_filling)
                self.reference_filling = np.zeros_like(block)
                self.reference_blocks = 0
            return []
        if len(self.blocks) < self.blocks.maxlen or self.since_fired < self.chunk:  # type: ignore[operator]
            return []
        right = self.calibration.right_probability()
        now = estimate(sum(self.blocks), right, self.binary)
        level = self._reference_level(right)
        value = now.get(self.metric)
        if value is None or level is None or math.isnan(value) or value >= level - self.margin:
            # The threshold is never above level - margin: the chunks' spread need not be read.
            return []
        spread = self._reference_spread(right)
        threshold = level - max(self.margin, 3 * spread)
        if value >= threshold:
            return []
        self.since_fired = 0
        return [self._finding(now, value, threshold, level, spread, ts)]

    def _reference_level(self, right: np.ndarray) -> float | None:
        """The reference's estimate of the metric under today's calibration (None where undefined)."""
        whole = metrics(sum(self.reference), right, self.binary).get(self.metric)
        return None if whole is None or math.isnan(whole) else float(whole)

    def _reference_spread(self, right: np.ndarray) -> float:
        """The spread of the reference's chunk estimates of the metric under today's calibration."""
        return float(np.nanstd(metrics(np.stack(self.reference), right, self.binary)[self.metric]))

    def _finding(
        self, now: dict[str, float], value: float, threshold: float, level: float, spread: float, ts: float
    ) -> Finding:
        labels = self.calibration.labels()
        calibrated = f"calibrated on {labels} labels" if labels else "taking its confidence at its word (no label yet)"
        message = (
            f"estimated {self.metric} of the last {self.chunk} predictions is {value:.3f}, below the reference "
            f"{level:.3f} by more than the margin (threshold {threshold:.3f}); estimated from the model's "
            f"confidence, {calibrated}, before labels could show it."
        )
        return Finding(
            signal=f"performance.{self.metric}",
            detector=self.name,
            kind="performance",
            severity="critical" if level - value >= 2 * max(self.margin, 3 * spread) else "warning",
            value=round(value, 6),
            threshold=round(threshold, 6),
            baseline={
                self.metric: round(level, 6),
                "chunk_spread": round(spread, 6),
                "reference_predictions": self.reference_chunks * self.chunk,
                "estimated_from": "confidence",
            },
            message=message,
            where_to_look=(
                "The model is less sure of its answers than it was: look for the inputs that drifted "
                "(the drift alerts of the same model) and confirm with labels when they come."
            ),
            event_time=ts,
            window=tumbling_window(window_start(ts, self.window_s), self.window_s),
            evidence={
                "estimated": now,
                "calibration_labels": labels,
                # What labels show so far (the version monitor fills it in: it holds the label-based rule).
                "realised": None,
                "predictions": self.chunk,
            },
        )

    def summary(self) -> dict[str, Any]:
        """The estimate over the last chunk, the reference, and the last closed windows' estimates."""
        right = self.calibration.right_probability()
        level = self._reference_level(right) if len(self.reference) == self.reference_chunks else None
        return {
            "watched_metric": self.metric,
            "estimated": estimate(sum(self.blocks), right, self.binary) if self.blocks else {},
            "reference": level,
            "reference_progress": f"{len(self.reference)}/{self.reference_chunks} chunks",
            "calibration_labels": self.calibration.labels(),
            "windows": list(self.closed_windows),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain, versioned state."""
        return {
            "state_version": STATE_VERSION,
            "calibration": self.calibration.to_dict(),
            "classes": list(self.classes),
            "block": self.block.tolist(),
            "block_events": self.block_events,
            "blocks": [b.tolist() for b in self.blocks],
            "reference": [c.tolist() for c in self.reference],
            "reference_filling": self.reference_filling.tolist(),
            "reference_blocks": self.reference_blocks,
            "since_fired": self.since_fired,
            "window_start": self.window_start,
            "window_counts": self.window_counts.tolist(),
            "closed_windows": list(self.closed_windows),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved, under this rule's own parameters."""
        check_state_version(state, STATE_VERSION, "cbpe")
        shape = self.block.shape

        def counts(value: Any) -> np.ndarray:
            array = np.asarray(value, dtype=np.int64)
            if array.shape != shape:
                raise ValueError(f"cbpe counts of shape {array.shape}, expected {shape}")
            return array

        self.calibration.load_state(state["calibration"])
        self.classes = list(state["classes"])
        self.block, self.block_events = counts(state["block"]), int(state["block_events"])
        self.blocks = deque((counts(b) for b in state["blocks"]), maxlen=self.chunk // self.check_every)
        self.reference = [counts(c) for c in state["reference"]][: self.reference_chunks]
        self.reference_filling = counts(state["reference_filling"])
        self.reference_blocks = int(state["reference_blocks"])
        self.since_fired = int(state["since_fired"])
        self.window_start = state["window_start"]
        self.window_counts = counts(state["window_counts"])
        self.closed_windows = deque(state["closed_windows"], maxlen=KEPT_WINDOWS)
