"""The producer SDK for inference services: ``from stream.sdk import MonitorClient``.

Installed alone (``pip install stream-monitor``) it needs aiokafka, orjson,
psutil and cryptography only: no Faust, river, numpy or matplotlib.
"""

from stream.sdk.client import MonitorClient, SyncMonitorClient

__all__ = ["MonitorClient", "SyncMonitorClient"]
