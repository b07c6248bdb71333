"""Joining delayed labels to their predictions by ``request_id``.

The join state is a mapping from ``model\\x1frequest_id`` to a small entry;
the worker passes its Faust table (changelog-backed, so a restart keeps
pending predictions) through :class:`JsonEntries`, tests pass a dict. Entries
carry the wall-clock time they were written and expire after ``ttl_s``. They
are short JSON arrays, a tag first: the join holds one per prediction for
hours, and a dict per entry had cost twice the memory.

A model's new entries go first to its own state (``ModelMonitor.join_changes``),
and reach the shared store only once a checkpoint has saved that state (see
:mod:`stream.worker.checkpoint`). Written straight to the store, an entry
reached its changelog before the state that counted it: after a crash the
state came back from its checkpoint, the records since were applied again,
and each found the entry it had itself written (a joined prediction counted
as a duplicate, its join lost).

The entries a checkpoint saved for one model travel in one changelog record,
a *batch* (:func:`join_batch`), and the store holds them one by one, with
the batch's key and its newest entry's time beside them
(:func:`expand_join_record`). One record per prediction had made the
changelog the worker's bottleneck: a worker taking partitions over read
100,000 of them at about 70 a second. Expired entries are deleted from the
store alone; a batch is deleted from the changelog once its newest entry is
past the TTL, and entries past it are skipped when the changelog is read
back.

- a prediction waiting for its label: ``["P", prediction, version, event time, wall]``,
  then confidence and segment when the prediction had them (they calibrate the estimated
  performance, and count a segment's accuracy);
- a label that came before its prediction: ``["L", label, label time, wall]``;
- a pair already joined, kept to recognise a second label: ``["D", wall]``.

Entries written before (objects: ``{"p": ..., "v": ..., "t": ..., "w": ...}``,
``{"l": ..., "lt": ..., "w": ...}``, ``{"done": 1, "w": ...}``) are still read.
"""

from __future__ import annotations

import math
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

SEPARATOR = "\x1f"


# Model names start with a letter or digit (the event schema), so a batch's key never is an entry's.
BATCH_PREFIX = b"\x00"


def join_key(model: str, request_id: str) -> bytes:
    """Table key of one request of one model."""
    return f"{model}{SEPARATOR}{request_id}".encode()


def is_batch_key(key: bytes) -> bool:
    """Whether ``key`` names a batch of entries (see :func:`join_batch`) rather than one entry."""
    return key[:1] == BATCH_PREFIX


def key_model(key: bytes) -> str:
    """The model an entry's or a batch's key belongs to."""
    return key.removeprefix(BATCH_PREFIX).decode(errors="replace").split(SEPARATOR, 1)[0]


def join_batch(model: str, seq: int, entries: dict[str, bytes]) -> tuple[bytes, bytes]:
    """The changelog record (key, value) of the entries one checkpoint saved for ``model`` (its ``seq``).

    The value is the entries by request id, as a JSON object, compressed;
    :func:`expand_join_record` gives what the store holds of it.

    >>> key, value = join_batch("m", 7, {"r1": b'["P",1,"1",10.0,20.0]', "r2": b'["D",30.0]'})
    >>> key
    b'\\x00m\\x1f7'
    >>> expand_join_record(key, value)
    [(b'm\\x1fr1', b'["P",1,"1",10.0,20.0]'), (b'm\\x1fr2', b'["D",30.0]'), (b'\\x00m\\x1f7', b'30.0')]

    Read back later, an entry past the TTL is left out (the batch's time stays):

    >>> expand_join_record(key, value, cutoff=25.0)
    [(b'm\\x1fr2', b'["D",30.0]'), (b'\\x00m\\x1f7', b'30.0')]
    """
    text = b",".join(orjson.dumps(request_id) + b":" + entry for request_id, entry in entries.items())
    return BATCH_PREFIX + f"{model}{SEPARATOR}{seq}".encode(), zlib.compress(b"{" + text + b"}", 1)


def expand_join_record(
    key: bytes, value: bytes | None, cutoff: float = -math.inf
) -> list[tuple[bytes, bytes | None]] | None:
    """What the store holds of one changelog record: its entries and the batch's newest time; None: the record as is.

    A batch gives its entries under their own keys, less those whose time is
    before ``cutoff``, and ``(batch key, newest entry's time)``: the expiry
    deletes the batch from the changelog once that is past. A deleted batch,
    and an entry written on its own by an earlier worker, are kept as they
    are; such an entry past ``cutoff`` is left out.

    >>> expand_join_record(b"m\\x1fr1", b'["P",1,"1",10.0,20.0]', cutoff=25.0)
    []
    >>> expand_join_record(b"\\x00m\\x1f7", None) is None
    True
    """
    if value is None:
        return None
    if not is_batch_key(key):
        return None if not _past(_compact(orjson.loads(value)), cutoff) else []
    model = key_model(key)
    out: list[tuple[bytes, bytes | None]] = []
    newest = -math.inf
    for request_id, entry in orjson.loads(zlib.decompress(value)).items():
        wall = entry[_WALL_AT[entry[0]]]
        newest = max(newest, wall)
        if wall >= cutoff:
            out.append((join_key(model, request_id), encode_entry(entry)))
    out.append((key, repr(newest).encode()))
    return out


def batch_expired(value: bytes, cutoff: float) -> bool:
    """Whether the batch whose newest time the store holds as ``value`` is past the TTL."""
    return float(value) < cutoff


def encode_entry(entry: list[Any]) -> bytes:
    """An entry as the JSON text the table and its changelog hold."""
    # A copy: orjson's output object keeps a 4 KB buffer whatever its length.
    return bytes(memoryview(orjson.dumps(entry)))


class JsonEntries(MutableMapping):
    """Join entries held as their JSON text, over a mapping of bytes: the form the changelog carries.

    An entry as a Python list (a list, floats, strings) cost about twice its
    JSON text in memory, and the join holds one per prediction for hours.
    Entries read from a changelog written before are JSON too.

    >>> raw = {}
    >>> entries = JsonEntries(raw)
    >>> entries[b"m\\x1fr1"] = ["P", 1, "1", 10.0, 20.0]
    >>> raw[b"m\\x1fr1"], entries[b"m\\x1fr1"]
    (b'["P",1,"1",10.0,20.0]', ['P', 1, '1', 10.0, 20.0])
    """

    def __init__(self, raw: MutableMapping[bytes, bytes]) -> None:
        self.raw = raw

    def __getitem__(self, key: bytes) -> Any:
        return orjson.loads(self.raw[key])

    def get(self, key: bytes, default: Any = None) -> Any:
        # Most lookups miss (a new prediction): no KeyError raised and caught per event.
        value = self.raw.get(key)
        return default if value is None else orjson.loads(value)

    def __setitem__(self, key: bytes, entry: Any) -> None:
        self.raw[key] = encode_entry(entry)

    def __delitem__(self, key: bytes) -> None:
        del self.raw[key]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


@dataclass(slots=True)
class Joined:
    """A label matched with its prediction."""

    model_version: str
    prediction: Any
    label: Any
    prediction_time: float
    label_time: float
    confidence: float | None = None
    segment: str | None = None


class LabelJoiner:
    """Matches labels and predictions in either order; counts what never matches.

    ``changes`` (a model's unsaved entries by request id, as their JSON text,
    when given) is read before the store and receives every new entry;
    without it entries go straight to the store.

    >>> j = LabelJoiner({})
    >>> j.on_prediction("m", "1", "r1", prediction=1, event_time=10.0)
    ('stored', None)
    >>> outcome, joined = j.on_label("m", "r1", label=0, label_time=50.0)
    >>> outcome, joined.label, joined.prediction
    ('joined', 0, 1)
    >>> j.on_label("m", "r1", label=0, label_time=51.0)
    ('duplicate_label', None)
    >>> unsaved = {}
    >>> j.on_prediction("m", "1", "r2", prediction=1, event_time=12.0, changes=unsaved)
    ('stored', None)
    >>> list(unsaved), join_key("m", "r2") in j.store
    (['r2'], False)
    """

    def __init__(self, store: MutableMapping[bytes, Any], ttl_s: float = 6 * 3600.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.counts: Counter[str] = Counter()

    def on_prediction(
        self,
        model: str,
        version: str,
        request_id: str,
        prediction: Any,
        event_time: float,
        confidence: float | None = None,
        segment: str | None = None,
        changes: dict[str, bytes] | None = None,
    ) -> tuple[str, Joined | None]:
        """Remember a prediction; return the outcome and the join if its label came first."""
        entry = self._entry(model, request_id, changes)
        now = time.time()
        if entry is not None and entry[0] == "L":
            _, label, label_time, _ = entry
            self._put(model, request_id, ["D", now], changes)
            joined = Joined(version, prediction, label, event_time, label_time, confidence, segment)
            return self._count("joined_label_first"), joined
        if entry is not None:
            return self._count("duplicate_prediction"), None
        waiting: list[Any] = ["P", prediction, version, event_time, now]
        if confidence is not None or segment is not None:
            waiting.append(confidence)
        if segment is not None:
            waiting.append(segment)
        self._put(model, request_id, waiting, changes)
        return "stored", None

    def on_label(
        self, model: str, request_id: str, label: Any, label_time: float, changes: dict[str, bytes] | None = None
    ) -> tuple[str, Joined | None]:
        """Match a label; return the outcome and the join, if any."""
        entry = self._entry(model, request_id, changes)
        now = time.time()
        if entry is None:
            self._put(model, request_id, ["L", label, label_time, now], changes)
            return self._count("label_before_prediction"), None
        if entry[0] == "P":
            _, prediction, version, event_time, _, confidence, segment = [*entry, None, None][:7]
            self._put(model, request_id, ["D", now], changes)
            joined = Joined(version, prediction, label, event_time, label_time, confidence, segment)
            return self._count("joined"), joined
        return self._count("duplicate_label"), None

    def _entry(self, model: str, request_id: str, changes: dict[str, bytes] | None) -> list[Any] | None:
        unsaved = None if changes is None else changes.get(request_id)
        if unsaved is not None:
            return orjson.loads(unsaved)
        return _compact(self.store.get(join_key(model, request_id)))

    def _put(self, model: str, request_id: str, entry: list[Any], changes: dict[str, bytes] | None) -> None:
        if changes is None:
            self.store[join_key(model, request_id)] = entry
        else:
            # As the table will hold it: the same bytes go there at the checkpoint.
            changes[request_id] = encode_entry(entry)

    def _count(self, outcome: str) -> str:
        self.counts[outcome] += 1
        return outcome

    def expired(
        self, now: float | None = None, entries: Iterable[tuple[bytes, Any]] | None = None
    ) -> list[tuple[bytes, str, str]]:
        """Entries past the TTL among ``entries`` (default: all), as (key, model, outcome); the caller deletes them.

        ``entries`` are (key, entry) pairs as a scan of the store found them.
        A caller on an event loop passes them a slice at a time: a join of
        millions of entries checked in one go holds the loop for seconds. The
        scan may predate a change (a label joined meanwhile), so an entry past
        the TTL is read again from the store; one no longer there is skipped.

        >>> store = {}
        >>> j = LabelJoiner(store, ttl_s=60)
        >>> _ = j.on_prediction("m", "1", "old", prediction=1, event_time=0.0)
        >>> store[join_key("m", "old")][4] = 0.0  # written long ago
        >>> _ = j.on_prediction("m", "1", "new", prediction=1, event_time=0.0)
        >>> scanned = list(store.items()) + [(b"m\\x1fgone", ["L", 1, 0.0, 0.0])]
        >>> [(k, outcome) for k, _, outcome in j.expired(entries=scanned)]
        [(b'm\\x1fold', 'prediction_never_labelled')]
        >>> _ = j.on_label("m", "old", label=1, label_time=5.0)  # joined after the scan
        >>> j.expired(entries=scanned)
        []
        """
        now = time.time() if now is None else now
        cutoff = now - self.ttl_s
        out = []
        for key, scanned in list(self.store.items()) if entries is None else entries:
            if not _past(_compact(scanned), cutoff):
                continue
            entry = _compact(self.store.get(key))
            if not _past(entry, cutoff):
                continue
            out.append((key, key_model(key), EXPIRED_OUTCOMES[entry[0]]))
        return out


def _past(entry: list[Any] | None, cutoff: float) -> bool:
    return entry is not None and entry[_WALL_AT[entry[0]]] < cutoff


EXPIRED_OUTCOMES = {"P": "prediction_never_labelled", "L": "label_never_matched", "D": "joined_expired"}
_WALL_AT = {"P": 4, "L": 3, "D": 1}


def _compact(entry: list[Any] | dict[str, Any] | None) -> list[Any] | None:
    """The entry as an array; an object written by an earlier worker is converted (without a time: never expires)."""
    if entry is None or isinstance(entry, list):
        return entry
    wall = entry.get("w", math.inf)
    if "p" in entry:
        return ["P", entry["p"], entry["v"], entry["t"], wall, entry.get("c"), entry.get("s")]
    if "l" in entry:
        return ["L", entry["l"], entry["lt"], wall]
    return ["D", wall]


class ModelLabels:
    """A model's side of the join: its predictions kept for their labels, labels matched, outcomes counted.

    New entries go to the model's state (``monitor.join_changes``) until a
    checkpoint has saved it and writes them to the store.

    ``mode`` is the ``join_predictions`` setting: ``never`` ignores labels,
    ``always`` keeps every prediction with a ``request_id``, ``auto`` starts
    once the model's first label arrives. Expired entries are counted in the
    model's state with its next record (:meth:`count_expired`).

    >>> from stream.settings import DetectionSettings
    >>> from stream.monitoring.model_monitor import ModelMonitor
    >>> labels = ModelLabels(LabelJoiner({}), mode="always")
    >>> monitor = ModelMonitor("m", DetectionSettings(join_predictions="always"))
    >>> event = {"model_version": "1", "request_id": "r1", "prediction": 1, "timestamp": 10.0}
    >>> labels.on_events(monitor, [event])
    []
    >>> _ = labels.on_labels(monitor, [{"request_id": "r1", "label": 1, "timestamp": 20.0}])
    >>> _ = labels.on_labels(monitor, [{"request_id": "r1", "label": 1, "timestamp": 21.0}])
    >>> monitor.labels
    {'joined': 1, 'duplicate_label': 1}
    """

    def __init__(self, joiner: LabelJoiner, mode: str) -> None:
        self.joiner = joiner
        self.mode = mode
        self.expired: dict[str, Counter[str]] = {}

    def on_events(self, monitor: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Keep predictions with a ``request_id`` for their labels; join labels that came first."""
        self._apply_expired(monitor)
        if self.mode == "never" or not monitor.expects_labels:
            return []
        alerts: list[dict[str, Any]] = []
        for event in events:
            request_id = event.get("request_id")
            if request_id is None:
                continue
            confidence = event.get("confidence")
            outcome, joined = self.joiner.on_prediction(
                monitor.model,
                event["model_version"],
                request_id,
                event.get("prediction"),
                event["timestamp"],
                confidence if isinstance(confidence, int | float) else None,
                event.get("segment") if isinstance(event.get("segment"), str) else None,
                monitor.join_changes,
            )
            if outcome != "stored":
                monitor.count_labels(outcome)
            if joined is not None:
                alerts += _apply(monitor, joined)
        return alerts

    def on_labels(self, monitor: Any, labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Match label events with their predictions; return performance alerts."""
        self._apply_expired(monitor)
        alerts: list[dict[str, Any]] = []
        for label in labels:
            if self.mode == "never":
                monitor.count_labels("ignored")
                continue
            monitor.expects_labels = True
            outcome, joined = self.joiner.on_label(
                monitor.model, label["request_id"], label["label"], label["timestamp"], monitor.join_changes
            )
            monitor.count_labels(outcome)
            if joined is not None:
                alerts += _apply(monitor, joined)
        return alerts

    def settle_loaded(self, monitor: Any) -> None:
        """Drop from a state just loaded the join entries the store already holds, and those past the TTL.

        A state is saved with its new entries before they are written to the
        store; once they are, they stay in that saved copy. Kept, they would
        be written again at every load, and one the expiry has since removed
        would come back.

        >>> from stream.settings import DetectionSettings
        >>> from stream.monitoring.model_monitor import ModelMonitor
        >>> labels = ModelLabels(LabelJoiner({join_key("m", "stored"): ["P", 1, "1", 5.0, 9e9]}), mode="always")
        >>> monitor = ModelMonitor("m", DetectionSettings())
        >>> monitor.join_changes = {"stored": b'["P",1,"1",5.0,9e9]', "lost": b'["P",0,"1",6.0,9e9]',
        ...                         "expired": b'["P",0,"1",7.0,0.0]'}
        >>> labels.settle_loaded(monitor)
        >>> list(monitor.join_changes)
        ['lost']
        """
        if not monitor.join_changes:
            return
        cutoff = time.time() - self.joiner.ttl_s
        store = self.joiner.store
        for request_id, text in list(monitor.join_changes.items()):
            entry = orjson.loads(text)
            if entry[_WALL_AT[entry[0]]] < cutoff or store.get(join_key(monitor.model, request_id)) == entry:
                del monitor.join_changes[request_id]

    def count_expired(self, model: str, outcome: str) -> None:
        """An entry of ``model`` expired; its state counts it with the model's next record."""
        self.expired.setdefault(model, Counter())[outcome] += 1

    def _apply_expired(self, monitor: Any) -> None:
        for outcome, n in self.expired.pop(monitor.model, Counter()).items():
            monitor.count_labels(outcome, n)


def _apply(monitor: Any, joined: Joined) -> list[dict[str, Any]]:
    """Give a joined label to its model version, with the prediction's confidence and segment."""
    return monitor.process_label(
        joined.model_version, joined.label, joined.prediction, joined.label_time, joined.confidence, joined.segment
    )
