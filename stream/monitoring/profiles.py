"""Reference profiles: window statistics frozen as the baseline drift and data
quality are judged against.

A profile is built from training or validation data (``stream-monitor profile
build``) or, for a model nobody profiled, from its first N events. It is
stored as a JSON file::

    {
      "format": "stream-monitor-profile",
      "format_version": 1,
      "model": "fraud-scorer",
      "model_version": "2.3.0",          # or null: any version
      "source": "file:train.jsonl",       # or "first_events"
      "created_at": 1795392000.0,         # Unix epoch seconds
      "events": 50000,
      "stats": { ... WindowStats.to_dict() ... }
    }

``format_version`` changes whenever ``stats`` changes incompatibly; a file of
another version is refused with a message that says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stream.stats import WindowStats

PROFILE_FORMAT = "stream-monitor-profile"
PROFILE_VERSION = 1


class ProfileError(ValueError):
    """A profile file is unreadable, of another format or version, or empty."""


@dataclass(slots=True)
class ReferenceProfile:
    """Frozen baseline statistics of one model (optionally one version)."""

    model: str
    model_version: str | None
    source: str
    created_at: float
    stats: WindowStats

    @property
    def events(self) -> int:
        """How many events the profile summarises."""
        return self.stats.count

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON form."""
        return {
            "format": PROFILE_FORMAT,
            "format_version": PROFILE_VERSION,
            "model": self.model,
            "model_version": self.model_version,
            "source": self.source,
            "created_at": self.created_at,
            "events": self.events,
            "stats": self.stats.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "profile") -> ReferenceProfile:
        """Read the documented JSON form; raise :class:`ProfileError` naming the problem."""
        if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
            raise ProfileError(f"{origin}: not a stream-monitor profile (format must be {PROFILE_FORMAT!r})")
        if data.get("format_version") != PROFILE_VERSION:
            raise ProfileError(
                f"{origin}: format_version {data.get('format_version')!r} is not supported "
                f"(this version reads {PROFILE_VERSION}); rebuild it with `stream-monitor profile build`"
            )
        try:
            return cls(
                model=data["model"],
                model_version=data.get("model_version"),
                source=data["source"],
                created_at=data["created_at"],
                stats=WindowStats.from_dict(data["stats"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{origin}: malformed profile ({type(exc).__name__}: {exc})") from None

    def save(self, path: Path) -> None:
        """Write the profile as JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            orjson.dumps(
                self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
            )
        )

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        """Read a profile file."""
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ProfileError(f"{path}: cannot read profile ({exc})") from None
        return cls.from_dict(data, str(path))


def profile_path(directory: Path, model: str, model_version: str | None = None) -> Path:
    """Where the profile of a model (and optionally a version) is stored.

    >>> profile_path(Path("profiles"), "fraud-scorer", "2.3.0").name
    'fraud-scorer@2.3.0.profile.json'
    """
    safe = model.replace("/", "_")
    name = f"{safe}@{model_version}" if model_version else safe
    return directory / f"{name}.profile.json"


# Where the monitoring domain gets a version's reference profile: (model, version) -> profile or None.
ProfileSource = Callable[[str, str], "ReferenceProfile | None"]


class ProfileStore:
    """Reference profiles in a folder: the version's profile, else the model's, else None.

    A worker asks on every state cache miss and restore, so each file is
    read and parsed once, and again only when it changes on disk.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> store = ProfileStore(folder)
    >>> store("m", "1") is None
    True
    >>> event = {"model": "m", "timestamp": 1.0, "latency_ms": 5.0, "error": None, "features": {"x": 1.0}}
    >>> build_profile([event], "m").save(profile_path(folder, "m"))
    >>> store("m", "1").events, store("m", "1") is store("m", "2")
    (1, True)
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._loaded: dict[Path, tuple[float, ReferenceProfile]] = {}

    def __call__(self, model: str, model_version: str) -> ReferenceProfile | None:
        if self.directory is None:
            return None
        for candidate in (profile_path(self.directory, model, model_version), profile_path(self.directory, model)):
            try:
                modified = candidate.stat().st_mtime
            except OSError:
                continue
            loaded = self._loaded.get(candidate)
            if loaded is None or loaded[0] != modified:
                loaded = self._loaded[candidate] = (modified, ReferenceProfile.load(candidate))
            return loaded[1]
        return None


def build_profile(
    events: Iterable[dict[str, Any]],
    model: str,
    model_version: str | None = None,
    source: str = "events",
    batch_size: int = 5000,
) -> ReferenceProfile:
    """Summarise ``events`` of ``model`` (and version, if given) into a profile."""
    stats = WindowStats(0.0, 0.0)
    batch: list[dict[str, Any]] = []
    for event in events:
        if event.get("model") != model:
            continue
        if model_version is not None and event.get("model_version") != model_version:
            continue
        batch.append(event)
        if len(batch) >= batch_size:
            stats.update(batch)
            batch = []
    stats.update(batch)
    if stats.count == 0:
        raise ProfileError(f"no events of model {model!r}" + (f" version {model_version!r}" if model_version else ""))
    if stats.first_event_time is not None and stats.last_event_time is not None:
        stats.start, stats.end = stats.first_event_time, stats.last_event_time
    return ReferenceProfile(model, model_version, source, time.time(), stats)
