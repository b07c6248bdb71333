"""Model performance from delayed labels: rolling metrics against a reference,
and concept drift on the error stream.

A labelled prediction is a classification when prediction and label are
classes (strings, booleans, whole numbers) and a regression otherwise.
Classifiers get accuracy, precision, recall and F1 (river.metrics, the
positive class configurable), regressors MAE and RMSE, all over the last
``window`` labelled predictions. The first ``reference_labels`` labelled
predictions fix the reference level; a ``performance`` finding fires when the
rolling metric is worse than that by ``margin`` (absolute for classification
metrics, relative for errors) and, for classification metrics, by four
standard errors of the difference of two proportions; once per ``window``
labels. DDM (Gama et al. 2004) watches the 0/1 error stream of classifiers
for concept drift.

State is plain data: the last ``window`` labelled pairs (the rolling
metrics are counted from them again, exactly) and DDM's few running figures.
The metrics are river's, kept as counts over one window of pairs
(:mod:`stream.stats.rolling_metrics`).

Reference: J. Gama, P. Medas, G. Castillo and P. Rodrigues, "Learning with
drift detection", SBIA 2004.
"""

from __future__ import annotations

import math
from typing import Any

from stream.detectors.base import Finding, check_state_version
from stream.stats.rolling_metrics import RollingClassification, RollingRegression
from stream.stats.window_stats import window_start

HIGHER_IS_BETTER = {"accuracy": True, "precision": True, "recall": True, "f1": True, "mae": False, "rmse": False}
STATE_VERSION = 2


class DriftDetectionMethod:
    """DDM on a 0/1 error stream: the error rate against its best level so far.

    With ``p`` the error rate since the last reset and ``s = sqrt(p (1 - p) / n)``,
    a warning is ``p + s > p_min + warning_level * s_min`` and a drift
    ``p + s > p_min + drift_level * s_min`` (after ``warm_start`` values);
    a drift resets the statistics. The defaults are river's.

    >>> ddm = DriftDetectionMethod()
    >>> [ddm.update(i % 10 == 0) for i in range(1000)].count("drift")
    0
    >>> [ddm.update(i % 2 == 0) for i in range(200)].count("drift")
    1
    """

    def __init__(self, warm_start: int = 30, warning_level: float = 2.0, drift_level: float = 3.0) -> None:
        self.warm_start, self.warning_level, self.drift_level = warm_start, warning_level, drift_level
        self.reset()

    def reset(self) -> None:
        """Forget the statistics (after a drift)."""
        self.n = 0
        self.errors = 0
        self.p_min = math.inf
        self.s_min = math.inf
        self.warning = False

    def update(self, wrong: bool) -> str | None:
        """Add one outcome; return ``warning``, ``drift`` or None."""
        self.n += 1
        self.errors += bool(wrong)
        if self.n < self.warm_start:
            return None
        p = self.errors / self.n
        s = math.sqrt(p * (1 - p) / self.n)
        if p + s <= self.p_min + self.s_min:
            self.p_min, self.s_min = p, s
        if p + s > self.p_min + self.drift_level * self.s_min:
            self.reset()
            return "drift"
        self.warning = p + s > self.p_min + self.warning_level * self.s_min
        return "warning" if self.warning else None

    def to_dict(self) -> dict[str, Any]:
        """Plain state (infinities as None)."""
        finite = math.isfinite(self.p_min)
        return {
            "n": self.n,
            "errors": self.errors,
            "p_min": self.p_min if finite else None,
            "s_min": self.s_min if finite else None,
            "warning": self.warning,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        self.n, self.errors, self.warning = int(state["n"]), int(state["errors"]), bool(state["warning"])
        self.p_min = math.inf if state["p_min"] is None else float(state["p_min"])
        self.s_min = math.inf if state["s_min"] is None else float(state["s_min"])


def task_of(prediction: Any, label: Any) -> str:
    """``classification`` or ``regression``, from the values themselves.

    >>> task_of(1, 0), task_of("cat", "dog"), task_of(0.37, 0.5)
    ('classification', 'classification', 'regression')
    """
    for value in (prediction, label):
        if isinstance(value, float) and not value.is_integer():
            return "regression"
    return "classification"


class PerformanceRule:
    """Rolling metrics of one model version, its reference level, and DDM.

    >>> perf = PerformanceRule(window=100, reference_labels=100, margin=0.1)
    >>> found = [perf.update(1, 1, float(t)) for t in range(200)]   # all right
    >>> found = [f for t in range(200) for f in perf.update(1, 0, 200.0 + t)]  # all wrong
    >>> sorted({f.detector for f in found}) >= ["ddm", "metric_drop"]
    True
    """

    def __init__(
        self,
        *,
        window: int = 500,
        reference_labels: int = 500,
        margin: float = 0.05,
        metric: str | None = None,
        pos_label: Any = 1,
        window_s: float = 60.0,
    ) -> None:
        self.window = window
        self.reference_labels = reference_labels
        self.margin = margin
        self.metric = metric
        self.pos_label = pos_label
        self.window_s = window_s
        self.task: str | None = None
        # All the metrics, rolled together over the last ``window`` labelled pairs.
        self.rolling: RollingClassification | RollingRegression | None = None
        self.reference: dict[str, float] | None = None
        self.labelled = 0
        self.since_fired = 0
        self.ddm = DriftDetectionMethod()
        self.warning_since: float | None = None

    def _start(self, task: str) -> None:
        self.task = task
        if task == "classification":
            self.rolling = RollingClassification(self.window, self.pos_label)
            self.metric = self.metric or "accuracy"
        else:
            self.rolling = RollingRegression(self.window)
            self.metric = self.metric or "mae"

    @property
    def pairs(self) -> list[tuple[Any, Any]]:
        """The last ``window`` labelled pairs, oldest first."""
        return self.rolling.pairs if self.rolling is not None else []

    def values(self) -> dict[str, float]:
        """The rolling metrics now."""
        return self.rolling.values() if self.rolling is not None else {}

    def update(self, label: Any, prediction: Any, event_time: float) -> list[Finding]:
        """Add one labelled prediction (label time ``event_time``); return findings."""
        if self.task is None:
            self._start(task_of(prediction, label))
        if self.task == "regression":
            if not isinstance(label, int | float) or not isinstance(prediction, int | float):
                return []
            label, prediction = float(label), float(prediction)
        assert self.rolling is not None
        self.rolling.update(label, prediction)
        self.labelled += 1
        self.since_fired += 1
        findings: list[Finding] = []
        if self.task == "classification":
            state = self.ddm.update(label != prediction)
            # DDM warns before it detects: the warning marks the likely onset.
            if state == "warning" and self.warning_since is None:
                self.warning_since = event_time
            elif state is None:
                self.warning_since = None
            if state == "drift" and self.labelled > self.reference_labels:
                findings.append(self._finding("error_rate", "ddm", event_time, self._error_rate(), None))
                self.warning_since = None
        if self.reference is None:
            if self.labelled >= self.reference_labels:
                self.reference = self.values()
            return findings
        if self.labelled - self.reference_labels < self.window or self.since_fired < self.window:
            return findings
        assert self.metric is not None
        now = self.values()[self.metric]
        ref = self.reference[self.metric]
        if HIGHER_IS_BETTER[self.metric]:
            # Both the reference and the rolling window are samples of ``window`` labels, compared at every
            # label: a drop within four standard errors of their difference is noise (with three, a
            # stationary stream of a few hundred thousand labels raised false alarms).
            threshold = ref - max(self.margin, 4 * self._sampling_error(ref))
            worse = now < threshold
        else:
            threshold = ref * (1 + self.margin) if ref > 0 else self.margin
            worse = now > threshold
        if worse:
            findings.append(self._finding(self.metric, "metric_drop", event_time, now, threshold))
        return findings

    def _sampling_error(self, level: float) -> float:
        """The standard error of the difference of two proportions over ``window`` labels each.

        (The reference is the rolling metrics once ``reference_labels`` have come: ``window`` labels too.)

        >>> round(PerformanceRule(window=500)._sampling_error(0.87), 4)
        0.0213
        """
        level = min(max(level, 0.0), 1.0)
        return math.sqrt(level * (1 - level) * 2 / self.window)

    def _error_rate(self) -> float:
        return 1.0 - self.values().get("accuracy", math.nan)

    def _finding(self, signal: str, detector: str, event_time: float, value: float, threshold: float | None) -> Finding:
        self.since_fired = 0
        ref = self.reference or {}
        current = self.values()
        if detector == "ddm":
            message = (
                f"concept drift: DDM saw the error rate of labelled predictions rise to {value:.1%} "
                f"(reference accuracy {ref.get('accuracy', math.nan):.1%} "
                f"over the first {self.reference_labels} labels)."
            )
            baseline = {"accuracy": ref.get("accuracy"), "labels": self.reference_labels}
        else:
            message = (
                f"{signal} over the last {self.window} labelled predictions is {value:.4g}, "
                f"worse than the reference {ref[signal]:.4g} by more than the margin "
                f"(threshold {threshold:.4g})."
            )
            baseline = {**ref, "labels": self.reference_labels}
        start = window_start(event_time, self.window_s)
        far = detector == "metric_drop" and abs(value - ref.get(signal, value)) >= 2 * self.margin
        severity = "critical" if far else "warning"
        return Finding(
            signal=f"performance.{signal}",
            detector=detector,
            kind="performance",
            severity=severity,
            value=round(value, 6),
            threshold=None if threshold is None else round(threshold, 6),
            baseline=baseline,
            message=message,
            event_time=event_time,
            window={"type": "sliding", "start": start, "end": start + self.window_s, "size_s": self.window_s},
            evidence={
                "metrics": {k: round(v, 6) for k, v in current.items()},
                "labelled": self.labelled,
                "window_labels": self.window,
                "task": self.task,
                "change_started_at": self.warning_since,
            },
            change_point=detector == "ddm",
        )

    def summary(self) -> dict[str, Any]:
        """Readable state: task, labelled count, rolling metrics and the reference."""
        return {
            "task": self.task,
            "labelled": self.labelled,
            "metrics": self.values(),
            "reference": self.reference,
            "watched_metric": self.metric,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain, versioned state."""
        return {
            "state_version": STATE_VERSION,
            "params": {
                "window": self.window,
                "reference_labels": self.reference_labels,
                "margin": self.margin,
                "metric": self.metric,
                "pos_label": self.pos_label,
                "window_s": self.window_s,
            },
            "task": self.task,
            "reference": self.reference,
            "labelled": self.labelled,
            "since_fired": self.since_fired,
            "ddm": self.ddm.to_dict(),
            "warning_since": self.warning_since,
            "pairs": [list(p) for p in self.pairs],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PerformanceRule:
        """Rebuild from :meth:`to_dict` output, with the parameters it was saved with."""
        check_state_version(state, STATE_VERSION, "performance")
        out = cls(**state["params"])
        out.load_state(state)
        return out

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what was learnt (task, reference, recent labels, DDM) under this rule's own parameters.

        The parameters are the monitor file's as it is now, so a changed window, margin or
        metric applies to a running model at once, as it does for every other detector.

        >>> old = PerformanceRule(window=100, reference_labels=100, margin=0.1)
        >>> _ = [old.update(1, 1, float(t)) for t in range(150)]
        >>> new = PerformanceRule(window=50, reference_labels=100, margin=0.2)
        >>> new.load_state(old.to_dict())
        >>> new.margin, len(new.pairs), new.labelled, new.reference == old.reference
        (0.2, 50, 150, True)
        """
        check_state_version(state, STATE_VERSION, "performance")
        if state["task"] is not None:
            self._start(state["task"])
        if self.rolling is not None:
            self.rolling.extend(state["pairs"][-self.window :])
        self.reference = state["reference"]
        self.labelled, self.since_fired = int(state["labelled"]), int(state["since_fired"])
        self.ddm.load_state(state["ddm"])
        self.warning_since = state["warning_since"]
