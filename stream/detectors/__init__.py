"""Pure detectors: no Kafka, no Faust; values in, findings out; state as plain data."""

from stream.detectors.base import Finding, SignalDetector
from stream.detectors.zscore import ZScoreRule

__all__ = ["Finding", "SignalDetector", "ZScoreRule"]
