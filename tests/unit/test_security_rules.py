"""Security and resource detectors: who bursts, probes or repeats; leaks found before the limit."""

from __future__ import annotations

import numpy as np
import orjson

from stream.contracts.alert_messages import build_alert
from stream.detectors.client_abuse import ClientAbuseRule
from stream.detectors.resources import ResourceRule
from stream.detectors.security import PrivateDataRule


def client_events(client, start, n, spacing, confidence=0.9, x=None):
    return [
        {
            "timestamp": start + i * spacing,
            "client_id": client,
            "confidence": confidence,
            "features": {"x": float(i if x is None else x)},
        }
        for i in range(n)
    ]


def test_a_burst_message_says_where_to_look_once():
    rule = ClientAbuseRule(window_s=60, min_burst=50)
    for w in range(5):
        rule.update(client_events("bursty", w * 60, 20, 3.0))
    [found] = rule.update(client_events("bursty", 300, 400, 0.1))
    message = build_alert(found, "m", "1")["message"]
    assert message.endswith(
        "(burst limit 100). Look at what it sends: a retry loop, a batch job or a scraper; "
        "rate-limit it if it is none of those."
    )


def test_a_burst_against_the_clients_own_baseline_names_the_client():
    rule = ClientAbuseRule(window_s=60, min_burst=50)
    quiet = []
    for w in range(5):
        quiet += client_events("steady", w * 60, 30, 2.0) + client_events("bursty", w * 60, 20, 3.0)
    assert rule.update(sorted(quiet, key=lambda e: e["timestamp"])) == []
    found = rule.update(client_events("bursty", 300, 400, 0.1) + client_events("steady", 300, 30, 2.0))
    assert [(f.kind, f.evidence["client_id"], f.evidence["reason"]) for f in found] == [("security", "bursty", "burst")]
    assert "bursty" in found[0].message and found[0].baseline["requests_per_window"] == 20


def test_a_busy_client_at_its_usual_rate_is_not_a_burst():
    rule = ClientAbuseRule(window_s=60, min_burst=50)
    events = []
    for w in range(10):
        events += client_events("big", w * 60, 500, 0.1)
    assert rule.update(events) == []


def test_probing_and_near_duplicates():
    rule = ClientAbuseRule(window_s=60, min_probe=20, min_duplicates=20)
    normal = client_events("normal", 0, 400, 0.1, confidence=0.9)
    probe = client_events("prober", 0, 60, 0.5, confidence=0.2)
    repeat = client_events("repeater", 0, 60, 0.5, x=3.14159)
    found = rule.update(sorted(normal + probe + repeat, key=lambda e: e["timestamp"]))
    assert {(f.evidence["client_id"], f.evidence["reason"]) for f in found} == {
        ("prober", "probing"),
        ("repeater", "duplicates"),
    }
    # Each alert reads as a sentence, then where to look, once.
    for f in found:
        message = build_alert(f, "m", "1")["message"]
        assert message.endswith(f.where_to_look) and message.count("Look at") == 1
        assert ".." not in message


def test_client_state_is_bounded():
    rule = ClientAbuseRule(window_s=60, max_clients=10, idle_s=100)
    rule.update([{"timestamp": float(i), "client_id": f"c{i}"} for i in range(25)])
    assert len(rule.clients) == 10 and rule.untracked_events == 15
    rule.update([{"timestamp": 1000.0, "client_id": "late"}])  # the idle ones make room
    assert "late" in rule.clients and len(rule.clients) == 1


def skewed_population(rng, rates, start):
    """One 60 s window of callers with the given mean rates: Poisson counts, random inputs, time order."""
    counts = rng.poisson(rates)
    ids = np.repeat(np.arange(rates.size), counts)
    stamps = np.sort(start + rng.uniform(0, 60, ids.size))
    rng.shuffle(ids)
    return [
        {"timestamp": float(t), "client_id": f"user-{i}", "features": {"x": float(x)}}
        for t, i, x in zip(stamps, ids, rng.lognormal(3, 1, ids.size), strict=True)
    ]


def merged(*batches):
    return sorted((e for b in batches for e in b), key=lambda e: e["timestamp"])


def feed(rule, events, chunk=250):
    return [f for i in range(0, len(events), chunk) for f in rule.update(events[i : i + chunk])]


def test_a_new_client_at_100x_the_usual_per_client_rate_is_flagged_in_its_first_window():
    rng = np.random.default_rng(3)
    rates = 1.0 + rng.pareto(1.2, 2_000)  # heavy-tailed: a few callers send much of the traffic
    rule = ClientAbuseRule(window_s=60)
    quiet = [f for w in range(6) for f in feed(rule, skewed_population(rng, rates, w * 60.0))]
    assert quiet == []
    usual = rule.population.usual_requests_per_client
    attacker = client_events("newcomer", 360.0, round(100 * usual), 59.0 / round(100 * usual), x=None)
    found = feed(rule, merged(skewed_population(rng, rates, 360.0), attacker))
    assert [(f.evidence["client_id"], f.evidence["judged_against"]) for f in found] == [
        ("newcomer", "model_per_client_norm")
    ]
    [burst] = found
    usual = rule.population.usual_requests_per_client  # now with the window before the burst in it
    assert burst.window["start"] == 360.0 and burst.baseline["requests_per_client"] == round(usual, 2)
    assert burst.value > burst.threshold >= 20 * usual


def test_heavy_regulars_beyond_the_tracked_clients_are_not_taken_for_newcomers():
    # 30 callers at 50x the rest, room to track 5: the others lose their history over and over.
    rng = np.random.default_rng(5)
    rates = np.concatenate([np.full(30, 100.0), np.full(1_000, 2.0)])
    rule = ClientAbuseRule(window_s=60, max_clients=5)
    found = [f for w in range(12) for f in feed(rule, skewed_population(rng, rates, w * 60.0))]
    assert found == [] and len(rule.clients) == 5 and rule.untracked_events > 0


def test_a_swarm_of_rotated_ids_is_flagged_once_and_a_steady_population_is_not():
    rng = np.random.default_rng(11)
    rates = 1.0 + rng.pareto(1.2, 1_000)
    rule = ClientAbuseRule(window_s=60)
    assert [f for w in range(8) for f in feed(rule, skewed_population(rng, rates, w * 60.0))] == []
    swarm = [
        {"timestamp": 480.0 + k * 0.01, "client_id": f"rotating-{k // 2}", "features": {"x": float(k)}}
        for k in range(4_000)
    ]
    found = feed(rule, merged(skewed_population(rng, rates, 480.0), swarm))
    assert [f.signal for f in found] == ["client.rotation"]
    usual = rule.population.usual_distinct
    assert found[0].value > 2 * usual and found[0].baseline["distinct_clients"] == round(usual, 1)


def test_a_million_callers_cost_a_bounded_state_that_survives_a_restart():
    rule = ClientAbuseRule(window_s=60, max_clients=50)
    n = 200_000
    for chunk in range(0, n, 20_000):
        rule.update([{"timestamp": i * 600.0 / n, "client_id": f"c{i}"} for i in range(chunk, chunk + 20_000)])
    state = orjson.dumps(rule.to_dict())
    assert len(state) < 100_000 and len(rule.clients) == 50
    restored = ClientAbuseRule(window_s=60, max_clients=50)
    restored.load_state(orjson.loads(state))
    assert restored.population.windows == rule.population.windows == 9
    assert restored.population.distinct_clients() == rule.population.distinct_clients()
    # The restored rule judges a newcomer as the original would.
    burst = client_events("newcomer", 590.0, 300, 0.01)
    assert [f.evidence["client_id"] for f in restored.update(burst)] == ["newcomer"]
    assert [f.evidence["client_id"] for f in rule.update(burst)] == ["newcomer"]


def test_a_client_state_saved_before_population_sketches_still_loads():
    old = ClientAbuseRule(window_s=60)
    old.update(client_events("a", 0.0, 10, 1.0))
    state = old.to_dict()
    for key in ("population", "population_window", "population_fired"):
        del state[key]
    state["state_version"] = 1
    rule = ClientAbuseRule(window_s=60)
    rule.load_state(orjson.loads(orjson.dumps(state)))
    assert rule.clients["a"]["count"] == 10 and rule.population.windows == 0


def test_private_data_alert_never_holds_the_value():
    rule = PrivateDataRule(window_s=60)
    found = rule.update([{"timestamp": 1.0, "output_text": "your IBAN is DE89370400440532013000, ok?"}])
    assert found[0].severity == "critical" and found[0].evidence["kinds"] == {"iban": 1}
    assert "DE89370400440532013000" not in repr(found[0])


def memory_events(start_s, end_s, mb, limit=2048.0, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {"timestamp": float(t), "resources": {"memory_mb": mb(t) + rng.normal(0, noise), "memory_limit_mb": limit}}
        for t in range(start_s, end_s)
    ]


def test_a_slow_leak_is_caught_well_before_the_limit():
    rule = ResourceRule(window_s=60)
    leak = memory_events(0, 3600, lambda t: 800 + t * 0.2, noise=5.0)  # +12 MB/min, 1.7 h to the limit
    for i in range(0, len(leak), 50):
        found = rule.update(leak[i : i + 50])
        if found:
            break
    [finding] = found
    assert finding.detector == "memory_leak" and finding.kind == "resource"
    used = leak[i + 49]["resources"]["memory_mb"]
    # Found when the line reaches the limit within the hour: still far below the 90 % threshold alert.
    assert used < 0.7 * 2048 and 30 <= finding.evidence["minutes_to_limit"] <= 60


def test_steady_noisy_memory_gives_nothing_and_the_limit_does():
    rule = ResourceRule(window_s=60)
    assert rule.update(memory_events(0, 3600, lambda t: 900 + 50 * np.sin(t / 300), noise=10.0)) == []
    found = rule.update(memory_events(3600, 3700, lambda t: 1900.0))
    assert found[0].detector == "memory_limit" and found[0].severity == "critical"


def test_every_private_data_kind_has_words_for_the_alert_message():
    from stream.detectors.security import _KIND_WORDS
    from stream.privacy.pii import KINDS

    assert set(_KIND_WORDS) == set(KINDS)


def test_a_model_whose_users_resend_the_same_inputs_can_say_so_in_the_monitor_file():
    from stream.monitoring.model_monitor import ModelMonitor
    from stream.monitoring.monitor_file import MonitorConfig
    from stream.settings import DetectionSettings

    config = MonitorConfig({"models": {"faq-bot": {"clients": {"repeats_normal": True}}}})
    repeats = [
        {**e, "model_version": "1", "latency_ms": 5.0}
        for e in client_events("kiosk", 1_000.0, 60, 0.5, x=2.0) + client_events("kiosk-2", 1_000.0, 60, 0.5, x=2.0)
    ]
    repeats.sort(key=lambda e: e["timestamp"])

    def duplicates(model):
        alerts = ModelMonitor(model, DetectionSettings(), config).process(repeats)
        return [a for a in alerts if a["signal"] == "client.duplicates"]

    assert duplicates("faq-bot") == []
    [alert] = duplicates("fraud-scorer")[:1]
    assert "repeats_normal = true" in alert["message"] and "normal" in alert["message"]


def test_a_client_finding_about_fewer_requests_than_a_slice_may_show_is_not_published():
    # Thresholds lowered below the slice floor: the rule still fires nothing about 10 requests.
    rule = ClientAbuseRule(window_s=60, min_probe=5, min_duplicates=5, min_slice_events=20)
    assert rule.update(client_events("normal", 0.0, 200, 0.1, confidence=0.9)) == []
    assert rule.update(client_events("few", 0.0, 10, 1.0, confidence=0.1, x=1.0)) == []
    found = rule.update(client_events("few", 10.0, 20, 1.0, confidence=0.1, x=1.0))
    assert {f.evidence["reason"] for f in found} == {"probing", "duplicates"}
    assert all(f.evidence["requests"] >= 20 for f in found)
