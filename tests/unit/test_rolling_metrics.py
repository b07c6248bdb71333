"""The rolling metrics give river's figures, pair after pair, on streams of several label types."""

import math

import numpy as np
import pytest
from river import metrics, utils

from stream.stats.rolling_metrics import RollingClassification, RollingRegression


@pytest.mark.parametrize(
    ("classes", "pos_label"),
    [([0, 1], 1), ([True, False], True), (["cat", "dog", "bird"], "dog"), ([0, 1, 2], 7)],
)
def test_classification_metrics_equal_rivers_after_every_pair(classes, pos_label):
    # river's binary metrics are fed "is it the positive class" (river 0.26's Precision(pos_val="dog")
    # looks its counts up under "dog" after storing them under True, and always gives 0.0).
    rng = np.random.default_rng(4)
    ours = RollingClassification(window=50, pos_label=pos_label)
    accuracy = metrics.Accuracy()
    binary = {"precision": metrics.Precision(), "recall": metrics.Recall(), "f1": metrics.F1()}
    rolled = utils.Rolling(metrics.base.Metrics, window_size=50, metrics=[accuracy])
    rolled_binary = utils.Rolling(metrics.base.Metrics, window_size=50, metrics=list(binary.values()))
    for i in range(1500):
        # Quality that drifts: right most of the time, then barely.
        label = classes[int(rng.integers(len(classes)))]
        right = rng.random() < (0.9 if i < 700 else 0.4)
        prediction = label if right else classes[int(rng.integers(len(classes)))]
        ours.update(label, prediction)
        rolled.update(label, prediction)
        rolled_binary.update(label == pos_label, prediction == pos_label)
        expected = {"accuracy": accuracy.get()} | {name: m.get() for name, m in binary.items()}
        assert ours.values() == expected, i


def test_regression_metrics_equal_rivers_after_every_pair():
    rng = np.random.default_rng(5)
    ours = RollingRegression(window=40)
    mae, rmse = metrics.MAE(), metrics.RMSE()
    rolling = utils.Rolling(metrics.base.Metrics, window_size=40, metrics=[mae, rmse])
    for i in range(3000):
        label = float(rng.lognormal(3, 1))
        prediction = label + float(rng.standard_t(2)) * (1 if i < 1500 else 30)
        ours.update(label, prediction)
        rolling.update(label, prediction)
        got = ours.values()
        assert math.isclose(got["mae"], mae.get(), rel_tol=1e-9, abs_tol=1e-9), i
        assert math.isclose(got["rmse"], rmse.get(), rel_tol=1e-9, abs_tol=1e-9), i


def test_a_window_counted_again_from_its_pairs_gives_the_same_figures():
    rng = np.random.default_rng(6)
    running = RollingClassification(window=30, pos_label=1)
    for _ in range(200):
        running.update(int(rng.integers(2)), int(rng.integers(2)))
    restored = RollingClassification(window=30, pos_label=1)
    restored.extend(list(running.pairs))
    assert restored.values() == running.values() and list(restored.pairs) == list(running.pairs)
    regression = RollingRegression(window=30)
    regression.extend((float(x), float(x) + 1.5) for x in range(100))
    assert len(regression.pairs) == 30 and regression.values() == {"mae": 1.5, "rmse": 1.5}


def test_nothing_seen_gives_zeros_as_river_does():
    assert RollingClassification(10).values() == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert RollingRegression(10).values() == {"mae": 0.0, "rmse": 0.0}


def test_a_model_with_named_classes_reports_the_precision_and_recall_of_its_positive_class():
    from stream.detectors.performance import PerformanceRule

    rule = PerformanceRule(window=100, reference_labels=100, pos_label="fraud")
    for i in range(100):
        label = "fraud" if i % 4 == 0 else "ok"
        prediction = label if i % 10 else ("ok" if label == "fraud" else "fraud")
        rule.update(label, prediction, float(i))
    # Every tenth prediction wrong: 25 frauds, 5 of them missed; 5 legitimate ones flagged as fraud.
    assert rule.values()["recall"] == 20 / 25 and rule.values()["precision"] == 20 / 25
