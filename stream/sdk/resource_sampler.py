"""The SDK's opt-in resource sampler: the serving process's CPU and memory, and the GPU when there is one.

Memory comes from psutil (resident set size) and its limit from the cgroup
(containers) or else the machine's memory. The GPU is read through NVML
(``pip install 'stream-monitor[gpu]'``) when the library and a device are
there; when not, GPU fields are simply left out and nothing is logged as an
error. Samples are taken at most every ``interval_s`` and attached to the
events recorded in between.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def memory_limit_mb() -> float:
    """The memory this process may use: its cgroup's limit, else the machine's memory."""
    total = psutil.virtual_memory().total
    for path in CGROUP_LIMITS:
        try:
            raw = path.read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and 0 < int(raw) < total:
            return int(raw) / 1e6
    return total / 1e6


class ResourceSampler:
    """``sample()`` returns the ``resources`` object of an event, refreshed every ``interval_s``.

    >>> s = ResourceSampler(interval_s=60)
    >>> r = s.sample()
    >>> r["memory_mb"] > 0 and r["memory_limit_mb"] >= r["memory_mb"], s.sample() is r
    (True, True)
    """

    def __init__(self, interval_s: float = 5.0, gpu: bool = True) -> None:
        self.interval_s = interval_s
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # the first reading is meaningless; start the clock
        self.limit_mb = memory_limit_mb()
        self._last: dict[str, Any] | None = None
        self._taken = 0.0
        self._gpu = _Gpu() if gpu else None

    def sample(self) -> dict[str, Any]:
        """The latest sample, taken again when older than ``interval_s``."""
        now = time.monotonic()
        if self._last is not None and now - self._taken < self.interval_s:
            return self._last
        sample: dict[str, Any] = {
            "cpu_percent": self.process.cpu_percent(None),
            "memory_mb": round(self.process.memory_info().rss / 1e6, 2),
            "memory_limit_mb": round(self.limit_mb, 2),
        }
        if self._gpu is not None:
            sample.update(self._gpu.read())
        self._last, self._taken = sample, now
        return sample


class _Gpu:
    """NVML's first device, or nothing when NVML or a GPU is missing."""

    def __init__(self) -> None:
        self.handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.nvml = pynvml
        except Exception as exc:  # no library, no driver or no device: all mean "no GPU"
            log.debug("no GPU readings: %s", exc)

    def read(self) -> dict[str, Any]:
        if self.handle is None:
            return {}
        try:
            util = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
            memory = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
        except Exception as exc:
            log.debug("GPU reading failed: %s", exc)
            return {}
        return {"gpu_utilization": float(util.gpu), "gpu_memory_mb": round(memory.used / 1e6, 2)}
