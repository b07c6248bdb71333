"""The simulator: valid events, incidents where the script puts them."""

import statistics

from stream.contracts.schemas import validate
from stream.tools.simulator import DEFAULT_INCIDENTS, MODELS, TrafficSimulator, malformed_records

FRAUD, RECOMMENDER, LLM = MODELS


def test_every_generated_event_is_schema_valid():
    sim = TrafficSimulator(seed=3)
    for i in range(3000):
        validate("inference-event", sim.event(sim.pick_model(), progress=i / 3000, now=1000.0 + i))


def test_latency_spike_only_inside_its_window():
    sim = TrafficSimulator(seed=4)
    before = statistics.median(sim.event(FRAUD, 0.1, 0)["latency_ms"] for _ in range(500))
    during = statistics.median(sim.event(FRAUD, 0.45, 0)["latency_ms"] for _ in range(500))
    other = statistics.median(sim.event(RECOMMENDER, 0.45, 0)["latency_ms"] for _ in range(500))
    assert during > 5 * before
    assert 25 < other < 50


def test_error_burst_and_feature_shift():
    sim = TrafficSimulator(seed=5)
    errors_during = sum(bool(sim.event(LLM, 0.55, 0).get("error")) for _ in range(1000))
    errors_before = sum(bool(sim.event(LLM, 0.1, 0).get("error")) for _ in range(1000))
    assert errors_during > 200 > 20 > errors_before
    age_before = statistics.mean(sim.event(RECOMMENDER, 0.1, 0)["features"]["user_age"] for _ in range(500))
    age_after = statistics.mean(sim.event(RECOMMENDER, 0.9, 0)["features"]["user_age"] for _ in range(500))
    assert age_after - age_before > 10


def test_same_seed_same_traffic():
    a, b = TrafficSimulator(seed=9), TrafficSimulator(seed=9)
    assert [a.event(a.pick_model(), 0.5, 1.0) for _ in range(50)] == [
        b.event(b.pick_model(), 0.5, 1.0) for _ in range(50)
    ]


def test_incidents_are_scripted_on_known_models():
    names = {m.name for m in MODELS}
    assert {i.model for i in DEFAULT_INCIDENTS} <= names
    assert {i.name for i in DEFAULT_INCIDENTS} == {
        "latency_spike",
        "error_burst",
        "feature_shift",
        "pii_leak",
        "replayed_inputs",
        "memory_pressure",
    }
    assert len(malformed_records()) == 3


def test_incident_signals_are_signals_the_worker_watches():
    from stream.monitoring.monitor_file import FIXED_SIGNALS

    # Security and resource rules watch these without configuration.
    built_in = {"output_text", "client.duplicates", "client.burst", "client.probing", "resources.memory_mb"}
    for incident in DEFAULT_INCIDENTS:
        signal = incident.signal
        assert signal in FIXED_SIGNALS or signal in built_in or signal.startswith("features."), incident
