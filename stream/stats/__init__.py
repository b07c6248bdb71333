"""Online statistics: small, mergeable, serialisable state objects."""

from stream.stats.features import CategoricalStats, FeatureSet, NumericStats
from stream.stats.moments import RunningMoments
from stream.stats.sketch import QuantileSketch
from stream.stats.windows import EventTimeWindows, WindowStats, window_start

__all__ = [
    "CategoricalStats",
    "EventTimeWindows",
    "FeatureSet",
    "NumericStats",
    "QuantileSketch",
    "RunningMoments",
    "WindowStats",
    "window_start",
]
