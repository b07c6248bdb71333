"""stream-monitor: real-time monitoring of AI models in production."""

__version__ = "0.1.0"
