"""Online statistics: small, mergeable, serialisable state objects."""

from stream.stats.moments import RunningMoments
from stream.stats.windows import LatencyWindow, TumblingWindows, window_start

__all__ = ["LatencyWindow", "RunningMoments", "TumblingWindows", "window_start"]
