"""How often a classifier is right at each level of its confidence: histogram-binning calibration.

Confidences fall in ``bins`` equal-width bins over [0, 1]. Each bin counts the
predictions seen, their summed confidence, and the labelled ones that were
right. A bin's calibrated value, P(right | confidence in the bin), is

    (right + prior_labels x mean confidence) / (labelled + prior_labels)

so it is the model's own confidence until labels outweigh it: a model is
taken at its word before any label arrives, and corrected as labels come.
Once a bin holds ``memory`` labels its label counts are halved, so the
calibration follows a model whose confidence drifts, while it stays the
same under covariate shift, which moves predictions between bins without
changing what a bin means (the premise of confidence-based performance
estimation).

Reference: B. Zadrozny and C. Elkan, "Obtaining calibrated probability
estimates from decision trees and naive Bayesian classifiers", ICML 2001.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ConfidenceCalibration:
    """P(the prediction is right | its confidence), per confidence bin, learnt from labelled predictions.

    >>> cal = ConfidenceCalibration(bins=10, prior_labels=10)
    >>> cal.observe(np.full(100, 0.95))
    >>> round(float(cal.right_probability()[9]), 3)      # no label yet: the model's own 0.95
    0.95
    >>> for i in range(1000):
    ...     cal.learn(0.95, right=i % 10 < 7)              # but it is right 70 % of the time
    >>> round(float(cal.right_probability()[9]), 2)
    0.7
    """

    __slots__ = ("bins", "confidence_sum", "labelled", "memory", "prior_labels", "right", "seen")

    def __init__(self, bins: int = 20, prior_labels: float = 10.0, memory: int = 5000) -> None:
        self.bins = bins
        self.prior_labels = prior_labels
        self.memory = memory
        self.seen = np.zeros(bins)
        self.confidence_sum = np.zeros(bins)
        self.labelled = np.zeros(bins)
        self.right = np.zeros(bins)

    def bin_of(self, confidences: np.ndarray) -> np.ndarray:
        """The bin index of each confidence (1.0 falls in the last bin)."""
        return np.minimum((np.asarray(confidences, dtype=np.float64) * self.bins).astype(np.int64), self.bins - 1)

    def observe(self, confidences: np.ndarray) -> None:
        """Count predictions' confidences (labelled or not): the model's own word per bin."""
        confidences = np.asarray(confidences, dtype=np.float64)
        index = self.bin_of(confidences)
        self.seen += np.bincount(index, minlength=self.bins)
        self.confidence_sum += np.bincount(index, weights=confidences, minlength=self.bins)

    def learn(self, confidence: float, right: bool) -> None:
        """Add one labelled prediction."""
        b = int(self.bin_of(np.array([confidence]))[0])
        self.labelled[b] += 1
        self.right[b] += bool(right)
        if self.labelled[b] >= self.memory:
            self.labelled[b] /= 2
            self.right[b] /= 2

    def right_probability(self) -> np.ndarray:
        """P(right) per bin."""
        centres = (np.arange(self.bins) + 0.5) / self.bins
        own = np.divide(self.confidence_sum, self.seen, out=centres.copy(), where=self.seen > 0)
        return (self.right + self.prior_labels * own) / (self.labelled + self.prior_labels)

    def labels(self) -> int:
        """Labelled predictions the calibration holds now."""
        return int(self.labelled.sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "seen": self.seen.tolist(),
            "confidence_sum": self.confidence_sum.tolist(),
            "labelled": self.labelled.tolist(),
            "right": self.right.tolist(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved (a different number of bins starts afresh)."""
        arrays = [np.asarray(state[k], dtype=np.float64) for k in ("seen", "confidence_sum", "labelled", "right")]
        if all(a.shape == (self.bins,) for a in arrays):
            self.seen, self.confidence_sum, self.labelled, self.right = arrays
