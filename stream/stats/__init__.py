"""Online statistics: small, mergeable, serialisable state objects."""

from stream.stats.features import CategoricalStats, FeatureSet, NumericStats
from stream.stats.moments import RunningMoments
from stream.stats.sketch import QuantileSketch
from stream.stats.window_stats import WindowStats, window_start
from stream.stats.windows import EventTimeWindows

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
