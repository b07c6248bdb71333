"""A traffic simulator: several models, realistic noise, scripted incidents.

Incidents are placed at fractions of the run so a short demo and a long soak
see the same story: a latency spike on the fraud scorer, an error burst on
the LLM endpoint, a feature shift on the recommender, a card number leaking
through the LLM's answers, one client replaying the same fraud-scorer input
(an extraction attempt), and the recommender's memory running up to its
limit.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream.contracts import SCHEMA_VERSION

# The region each request comes from: the demo's segments.
REGIONS = ("eu", "us", "apac")
REGION_SHARES = (0.5, 0.3, 0.2)


@dataclass(frozen=True, slots=True)
class Incident:
    """A scripted fault: which model, what goes wrong, and when (fractions of the run)."""

    name: str
    model: str
    signal: str
    start: float
    end: float
    description: str

    def active(self, progress: float) -> bool:
        """Whether the incident is under way at ``progress`` (0..1) of the run."""
        return self.start <= progress < self.end


DEFAULT_INCIDENTS = (
    Incident(
        "latency_spike",
        "fraud-scorer",
        "latency_ms",
        0.35,
        0.55,
        "fraud-scorer answers 8x slower (a saturated downstream feature store)",
    ),
    Incident(
        "error_burst",
        "support-llm",
        "error_rate",
        0.50,
        0.65,
        "30% of support-llm requests time out upstream",
    ),
    Incident(
        "feature_shift",
        "recommender",
        "features.user_age",
        0.60,
        1.01,
        "recommender traffic shifts to users about 15 years older",
    ),
    Incident(
        "pii_leak",
        "support-llm",
        "output_text",
        0.20,
        0.40,
        "support-llm answers quote a customer's payment card number",
    ),
    Incident(
        "replayed_inputs",
        "fraud-scorer",
        "client.duplicates",
        0.15,
        0.30,
        "client-99 sends the same transaction again and again with tiny changes",
    ),
    Incident(
        "memory_pressure",
        "recommender",
        "resources.memory_mb",
        0.70,
        1.01,
        "recommender's memory climbs to 95% of its 4 GB limit",
    ),
)

MEMORY_LIMIT_MB = 4096.0
LEAKED_CARD = "4111 1111 1111 1111"


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """How one simulated model normally behaves."""

    name: str
    version: str
    latency_median_ms: float
    latency_sigma: float
    error_rate: float
    share: float


MODELS = (
    ModelProfile("fraud-scorer", "2.3.0", 12.0, 0.25, 0.002, 0.5),
    ModelProfile("recommender", "7", 35.0, 0.3, 0.001, 0.35),
    ModelProfile("support-llm", "2026-10-01", 800.0, 0.3, 0.005, 0.15),
)


class TrafficSimulator:
    """Generates inference events for the simulated models.

    >>> sim = TrafficSimulator(seed=1)
    >>> ev = sim.event(MODELS[0], progress=0.4, now=100.0)
    >>> ev["model"], ev["latency_ms"] > 40   # inside the latency spike
    ('fraud-scorer', True)
    """

    def __init__(
        self,
        models: tuple[ModelProfile, ...] = MODELS,
        incidents: tuple[Incident, ...] = DEFAULT_INCIDENTS,
        seed: int | None = None,
    ) -> None:
        self.models = models
        self.incidents = incidents
        self.rng = random.Random(seed)
        self._weights = [m.share for m in models]

    def _active(self, model: str, progress: float) -> set[str]:
        return {i.name for i in self.incidents if i.model == model and i.active(progress)}

    def pick_model(self) -> ModelProfile:
        """A model, chosen by its share of the traffic."""
        return self.rng.choices(self.models, self._weights)[0]

    def event(self, profile: ModelProfile, progress: float, now: float) -> dict[str, Any]:
        """One event of ``profile`` at ``progress`` of the run, stamped ``now``."""
        rng = self.rng
        active = self._active(profile.name, progress)
        latency = profile.latency_median_ms * math.exp(rng.gauss(0.0, profile.latency_sigma))
        if "latency_spike" in active:
            latency *= 8.0
        error_rate = 0.3 if "error_burst" in active else profile.error_rate
        error = "upstream_timeout" if rng.random() < error_rate else None
        event: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "event_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "timestamp": now,
            "model": profile.name,
            "model_version": profile.version,
            "latency_ms": round(latency, 3),
            "client_id": f"client-{rng.randrange(20):02d}",
            "request_id": f"req-{rng.getrandbits(48):012x}",
            "segment": rng.choices(REGIONS, REGION_SHARES)[0],
            "resources": self._resources(profile, progress, "memory_pressure" in active),
        }
        if error:
            event["error"] = error
        if profile.name == "fraud-scorer":
            replay = "replayed_inputs" in active and rng.random() < 0.3
            amount = 129.99 + rng.random() * 1e-4 if replay else math.exp(rng.gauss(3.5, 1.0))
            risk = 0.42 if replay else rng.random()
            if replay:
                event["client_id"] = "client-99"
            score = 1.0 / (1.0 + math.exp(-(risk * 6 - 5 + amount / 500)))
            event["prediction"] = None if error else int(score > 0.5)
            event["confidence"] = round(max(score, 1 - score), 4)
            event["features"] = {
                "amount": round(amount, 2),
                "country": "DE" if replay else rng.choice(("DE", "FR", "US", "GB", "NL")),
                "card_present": not replay and rng.random() < 0.6,
                "merchant_risk": None if rng.random() < 0.02 else round(risk, 4),
            }
        elif profile.name == "recommender":
            age = rng.gauss(34.0, 9.0) + (15.0 if "feature_shift" in active else 0.0)
            event["prediction"] = None if error else round(rng.betavariate(2, 5), 4)
            event["features"] = {
                "user_age": round(max(age, 16.0), 1),
                "session_len": rng.randrange(1, 60),
                "items_viewed": rng.randrange(0, 40),
            }
        else:
            tokens_in = rng.randrange(20, 600)
            event["prediction"] = None
            event["tokens_in"] = tokens_in
            event["tokens_out"] = 0 if error else rng.randrange(30, 400)
            event["input_text"] = rng.choice(("Where is my order?", "How do I reset my password?", "Cancel my plan"))
            leak = "pii_leak" in active and rng.random() < 0.2
            event["output_text"] = (
                f"I found the order paid with card {LEAKED_CARD}; it ships tomorrow."
                if leak
                else "Thanks for reaching out! Your request is being handled."
            )
        return event

    def _resources(self, profile: ModelProfile, progress: float, pressure: bool) -> dict[str, float]:
        share = 0.55 + 0.02 * math.sin(progress * 20)
        if pressure:
            share = 0.95
        return {
            "cpu_percent": round(min(100.0, max(0.0, self.rng.gauss(40.0, 8.0))), 1),
            "memory_mb": round(MEMORY_LIMIT_MB * share + self.rng.gauss(0.0, 10.0), 1),
            "memory_limit_mb": MEMORY_LIMIT_MB,
        }


@dataclass(slots=True)
class SimulationReport:
    """What a simulation run sent."""

    events: int = 0
    malformed: int = 0
    started_at: float = 0.0
    duration_s: float = 0.0


async def simulate(
    send: Callable[[dict[str, Any]], Any],
    *,
    duration_s: float,
    rate: float,
    simulator: TrafficSimulator | None = None,
    send_malformed: Callable[[bytes, bytes], Any] | None = None,
    on_tick: Callable[[float, SimulationReport], None] | None = None,
    stop: asyncio.Event | None = None,
) -> SimulationReport:
    """Produce ``rate`` events per second for ``duration_s`` seconds through ``send``.

    ``send_malformed`` (optional) receives three bad records half-way through,
    to show dead-lettering. ``on_tick`` gets the progress about ten times a second.
    """
    sim = simulator or TrafficSimulator()
    report = SimulationReport(started_at=time.time())
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tick = 0.1
    malformed_sent = False
    while True:
        elapsed = loop.time() - t0
        if elapsed >= duration_s or (stop is not None and stop.is_set()):
            break
        progress = elapsed / duration_s
        due = int(elapsed * rate) - report.events
        now = time.time()
        for _ in range(max(due, 0)):
            result = send(sim.event(sim.pick_model(), progress, now))
            if asyncio.iscoroutine(result):
                await result
            report.events += 1
        if send_malformed is not None and not malformed_sent and progress >= 0.5:
            malformed_sent = True
            for key, value in malformed_records():
                result = send_malformed(key, value)
                if asyncio.iscoroutine(result):
                    await result
                report.malformed += 1
        if on_tick is not None:
            on_tick(progress, report)
        await asyncio.sleep(tick)
    report.duration_s = loop.time() - t0
    return report


def malformed_records() -> list[tuple[bytes, bytes]]:
    """Three records a careless producer might send: each must be dead-lettered."""
    return [
        (b"fraud-scorer", b"{this is not json"),
        (b"fraud-scorer", b'{"schema_version": 1, "event_id": "x", "model": "fraud-scorer"}'),
        (b"recommender", b'{"schema_version": 99, "events": []}'),
    ]
