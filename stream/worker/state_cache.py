"""The live model states of a worker, over the table that stores them.

A model's state is decoded from the table once and then kept live: the
cached object is trusted while the table still holds the very bytes it was
loaded from or last saved as, or while it holds changes not yet saved
(``unsaved``: the table takes a saved state only once the broker has it).
After a rebalance or a restart the table wins. The least recently used
states are evicted beyond ``max_models``, except those with unsaved
changes: evicting or reloading one would lose its records' effects.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping

from stream.contracts.alert_messages import unreadable_state_alert
from stream.monitoring.model_monitor import ModelMonitor, StateError
from stream.monitoring.monitor_file import MonitorConfig
from stream.monitoring.profiles import ProfileSource
from stream.settings import DetectionSettings
from stream.worker.state_codec import decode_state, pack_state, unpack_state

log = logging.getLogger(__name__)


class ModelStates:
    """Live :class:`ModelMonitor` objects, least recently used first, each with the stored bytes it matches.

    ``table`` maps a model name (bytes) to its encoded state, as Faust's
    table does; at most ``max_models`` are kept live, besides the models
    ``unsaved`` says have changes not yet saved.

    >>> from stream.worker.state_codec import encode_state
    >>> table = {}
    >>> states = ModelStates(table, DetectionSettings(), max_models=1)
    >>> a = states.get("a")
    >>> states.get("a") is a
    True
    >>> table[b"a"] = encode_state(a.to_dict())  # another worker's checkpoint, read from the changelog
    >>> states.get("a") is a
    False
    """

    def __init__(
        self,
        table: Mapping[bytes, bytes],
        detection: DetectionSettings,
        max_models: int,
        monitors: MonitorConfig | None = None,
        profiles: ProfileSource | None = None,
        unsaved: Callable[[str], bool] = lambda model: False,
        loaded: Callable[[ModelMonitor], None] = lambda monitor: None,
    ) -> None:
        self.table = table
        self.detection = detection
        self.max_models = max_models
        self.monitors = monitors or MonitorConfig()
        self.profiles = profiles
        self.unsaved = unsaved
        # Called with each state read from the table (the label join settles its entries).
        self.loaded = loaded
        self.live: OrderedDict[str, tuple[ModelMonitor, bytes | None]] = OrderedDict()

    def get(self, model: str) -> ModelMonitor:
        """The model's live state, rebuilt from the table when the cached one is stale.

        A stored state that cannot be read (another format version, damage)
        starts the model afresh with one ``state_unreadable`` notice: its
        records are never dead-lettered for ever.
        """
        stored = self.table.get(model.encode())
        cached = self.live.get(model)
        if cached is not None and (cached[1] is stored or self.unsaved(model)):
            self.live.move_to_end(model)
            return cached[0]
        if stored is None:
            monitor = self._new(model)
        else:
            try:
                monitor = self._load(model, decode_state(stored))
                self.loaded(monitor)
            except StateError as exc:
                log.warning("state of model %s cannot be read (%s): monitoring it afresh", model, exc)
                monitor = self._new(model)
                monitor.notices.append(unreadable_state_alert(model, stored, str(exc)))
        self.put(model, monitor, stored)
        return monitor

    def put(self, model: str, monitor: ModelMonitor, stored: bytes | None) -> None:
        """Keep ``monitor`` as the live state of ``model``, matching the ``stored`` bytes; evict beyond the cap."""
        self.live[model] = (monitor, stored)
        self.live.move_to_end(model)
        excess = len(self.live) - self.max_models
        if excess > 0:
            # The model just put is about to be changed: evicted now, its changes would land
            # on an object no checkpoint saves (when more models than the cap have unsaved changes).
            for name in [m for m in self.live if m != model and not self.unsaved(m)][:excess]:
                del self.live[name]

    def cached(self, model: str) -> ModelMonitor:
        """The live state of a model known to be cached (one with held records: those are never evicted)."""
        return self.live[model][0]

    def rebuild(self, model: str) -> ModelMonitor:
        """Forget the live state of ``model`` and load it again from the table (its last checkpoint)."""
        self.live.pop(model, None)
        return self.get(model)

    def restore(self, model: str, snapshot: bytes) -> ModelMonitor:
        """A state from :func:`snapshot` bytes (kept in memory by the recovery, never read from a topic)."""
        return self._load(model, unpack_state(snapshot))

    def _new(self, model: str) -> ModelMonitor:
        return ModelMonitor(model, self.detection, self.monitors, self.profiles)

    def _load(self, model: str, state: dict) -> ModelMonitor:
        return ModelMonitor.from_dict(model, self.detection, state, self.monitors, self.profiles)

    def clear(self) -> None:
        """Forget every live state (partitions revoked: the table is the truth)."""
        self.live.clear()

    def __contains__(self, model: object) -> bool:
        return model in self.live

    def names(self) -> list[str]:
        """The models with a live state, least recently used first."""
        return list(self.live)


def snapshot(monitor: ModelMonitor) -> bytes:
    """The state of ``monitor`` as bytes, to go back to should the next step raise."""
    return pack_state(monitor.to_dict())
