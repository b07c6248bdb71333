"""Pure detectors: no Kafka, no Faust; values in, findings out; picklable state."""

from stream.detectors.base import Finding
from stream.detectors.zscore import ZScoreRule

__all__ = ["Finding", "ZScoreRule"]
