"""Settings, resolved once at start.

- :class:`Settings` (:mod:`.runtime`): the worker's runtime (connection,
  topics, web, checkpoints, security, files), from ``STREAM_MONITOR_*`` or flags;
- :class:`DetectionSettings` (:mod:`.detection`): windows, references,
  thresholds and alert timing, the one part the monitoring domain receives.
"""

from stream.settings.common import ConfigError, parse_broker_url
from stream.settings.detection import DetectionSettings
from stream.settings.runtime import Settings, Topics

__all__ = ["ConfigError", "DetectionSettings", "Settings", "Topics", "parse_broker_url"]
