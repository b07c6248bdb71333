"""``stream-monitor tensorboard``: closed windows of every model as TensorBoard scalars.

For teams that already watch training runs in TensorBoard. It polls a
worker's ``/api/status`` (which gathers every worker's models) and writes one
run per model version (``LOGDIR/MODEL/VERSION``), one step per closed window
(the step is the window's start, Unix seconds). Needs the ``tensorboard``
extra (tensorboardX).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Tag in TensorBoard -> key of a window point in /api/status.
TAGS = {
    "latency/p50_ms": "p50",
    "latency/p95_ms": "p95",
    "latency/p99_ms": "p99",
    "health/error_rate": "error_rate",
    "health/throughput_per_s": "throughput_per_s",
    "health/events": "count",
    "drift/psi_max": "psi_max",
}


@dataclass(frozen=True)
class Scalar:
    """One value to write: run (model/version), tag, value, step and wall time."""

    run: str
    tag: str
    value: float
    step: int
    walltime: float


def new_scalars(status: dict[str, Any], written: dict[str, int]) -> Iterator[Scalar]:
    """Scalars of the windows closed since the last call; ``written`` keeps the last step per run.

    The newest window of each version is still filling, so it waits.

    >>> point = lambda start, n: {"start": start, "count": n, "p50": 20.0, "p95": None, "p99": None,
    ...     "error_rate": 0.0, "throughput_per_s": n / 60, "psi_max": None}
    >>> status = {"models": [{"model": "m", "versions": [{"model_version": "1",
    ...     "series": [point(0.0, 60), point(60.0, 120), point(120.0, 5)]}]}]}
    >>> written = {}
    >>> [(s.tag, s.step, s.value) for s in new_scalars(status, written) if s.tag == "health/events"]
    [('health/events', 0, 60.0), ('health/events', 60, 120.0)]
    >>> list(new_scalars(status, written))
    []
    """
    for model in status.get("models", []):
        for version in model.get("versions", []):
            run = f"{model['model']}/{version['model_version']}"
            closed = version.get("series", [])[:-1]
            for point in closed:
                step = int(point["start"])
                if step <= written.get(run, -1):
                    continue
                for tag, key in TAGS.items():
                    value = point.get(key)
                    if value is not None:
                        yield Scalar(run, tag, float(value), step, point["start"] + point.get("size_s", 60.0))
                written[run] = step


def read_scalars(logdir: str | Path) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """``(run, tag) -> [(step, value)]`` from every event file under ``logdir`` (TFRecord framing, Event protos)."""
    from tensorboardX.proto.event_pb2 import Event

    root = Path(logdir)
    out: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for path in sorted(root.rglob("events.out.tfevents.*")):
        run = path.parent.relative_to(root).as_posix()
        data = path.read_bytes()
        at = 0
        while at + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                out.setdefault((run, value.tag), []).append((event.step, value.simple_value))
    return out


class TensorBoardExport:
    """Writes :class:`Scalar` values into one event file per run under ``logdir``.

    It starts from the last step each run already holds there, so a restarted
    export does not write the same windows again.
    """

    def __init__(self, logdir: str) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError(
                "TensorBoard export needs tensorboardX: pip install 'stream-monitor[tensorboard]'"
            ) from None
        self._writer_class = SummaryWriter
        self.logdir = logdir
        self.writers: dict[str, Any] = {}
        self.written: dict[str, int] = {}
        for (run, _), points in read_scalars(logdir).items():
            self.written[run] = max(self.written.get(run, -1), *(step for step, _ in points))

    def write(self, status: dict[str, Any]) -> int:
        """Write the windows closed since the last call; returns how many scalars were written."""
        n = 0
        for scalar in new_scalars(status, self.written):
            writer = self.writers.get(scalar.run)
            if writer is None:
                writer = self.writers[scalar.run] = self._writer_class(f"{self.logdir}/{scalar.run}")
            writer.add_scalar(scalar.tag, scalar.value, global_step=scalar.step, walltime=scalar.walltime)
            n += 1
        for writer in self.writers.values():
            writer.flush()
        return n

    def close(self) -> None:
        """Flush and close every event file."""
        for writer in self.writers.values():
            writer.close()
