"""Model quality over the last N labelled predictions, kept as counts and sums.

A model's state holds its last ``window`` (label, prediction) pairs, and a
restored state rebuilds its metrics from them. river's rolling metrics took
each pair through a Python call per metric, so reading back a labelled model
spent most of its time there (500 pairs, four metrics); here a pair adds to
and later subtracts from a handful of counts, and a window is counted in one
pass.

The figures are river's (``river.metrics`` rolled with ``utils.Rolling``):
the same definitions and the same 0.0 when a ratio is undefined.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


class RollingPairs:
    """The last ``window`` (label, prediction) pairs; a subclass counts each in (+1) and out (-1) in ``_count``."""

    def __init__(self, window: int) -> None:
        self.window = window
        # Two queues rather than one of tuples: a tuple per pair cost more memory than both queues.
        self.labels: deque[Any] = deque()
        self.predictions: deque[Any] = deque()

    @property
    def pairs(self) -> list[tuple[Any, Any]]:
        """The pairs held, oldest first."""
        return list(zip(self.labels, self.predictions, strict=True))

    def __len__(self) -> int:
        return len(self.labels)

    def update(self, label: Any, prediction: Any) -> None:
        """Add one labelled prediction; the oldest leaves once ``window`` are held."""
        if len(self.labels) == self.window:
            self._count(self.labels.popleft(), self.predictions.popleft(), -1)
        self.labels.append(label)
        self.predictions.append(prediction)
        self._count(label, prediction, 1)

    def extend(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        """Add pairs in order (a restored window)."""
        for label, prediction in pairs:
            self.update(label, prediction)

    def _count(self, label: Any, prediction: Any, sign: int) -> None:
        raise NotImplementedError


class RollingClassification(RollingPairs):
    """Accuracy, and precision, recall and F1 for the class ``pos_label``, over the last ``window`` pairs.

    Parameters:
        window: labelled predictions kept; the oldest leaves as a new one comes.
        pos_label: the positive class of precision, recall and F1.

    >>> m = RollingClassification(window=4, pos_label=1)
    >>> m.extend([(1, 1), (0, 1), (1, 0), (0, 0)])
    >>> m.values()
    {'accuracy': 0.5, 'precision': 0.5, 'recall': 0.5, 'f1': 0.5}
    >>> m.update(1, 1)  # (1, 1) replaces the oldest, also (1, 1): nothing changes
    >>> m.update(1, 1)  # replaces (0, 1), a false positive
    >>> m.values()["precision"], len(m.pairs)
    (1.0, 4)
    """

    def __init__(self, window: int, pos_label: Any = True) -> None:
        super().__init__(window)
        self.pos_label = pos_label
        self.correct = 0
        self.true_positives = 0
        self.predicted_positive = 0
        self.actual_positive = 0

    def _count(self, label: Any, prediction: Any, sign: int) -> None:
        positive_label, positive_prediction = label == self.pos_label, prediction == self.pos_label
        self.correct += sign * (label == prediction)
        self.true_positives += sign * (positive_label and positive_prediction)
        self.actual_positive += sign * positive_label
        self.predicted_positive += sign * positive_prediction

    def values(self) -> dict[str, float]:
        """The four metrics now (0.0 where a ratio is undefined, as river gives)."""
        precision = _ratio(self.true_positives, self.predicted_positive)
        recall = _ratio(self.true_positives, self.actual_positive)
        return {
            "accuracy": _ratio(self.correct, len(self)),
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
        }


class RollingRegression(RollingPairs):
    """Mean absolute error and root mean squared error over the last ``window`` pairs.

    The sums are counted again from the pairs every ``window`` updates, so
    rounding from adding and subtracting never builds up.

    >>> m = RollingRegression(window=2)
    >>> m.extend([(1.0, 2.0), (3.0, 1.0), (0.0, 0.0)])
    >>> m.values()
    {'mae': 1.0, 'rmse': 1.4142135623730951}
    """

    def __init__(self, window: int) -> None:
        super().__init__(window)
        self.absolute = 0.0
        self.squared = 0.0
        self.since_recount = 0

    def _count(self, label: float, prediction: float, sign: int) -> None:
        error = label - prediction
        self.absolute += sign * abs(error)
        self.squared += sign * error * error
        if sign > 0:
            self.since_recount += 1
            if self.since_recount >= self.window:
                self._recount()

    def _recount(self) -> None:
        errors = [label - prediction for label, prediction in zip(self.labels, self.predictions, strict=True)]
        self.absolute = math.fsum(abs(e) for e in errors)
        self.squared = math.fsum(e * e for e in errors)
        self.since_recount = 0

    def values(self) -> dict[str, float]:
        """Both errors now (0.0 before any pair, as river gives)."""
        n = len(self)
        return {"mae": _ratio(self.absolute, n), "rmse": math.sqrt(max(_ratio(self.squared, n), 0.0))}
