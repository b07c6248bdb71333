"""Alert ids depend on the input, not on how records were batched: a replay after a crash
(at-least-once delivery, other batch boundaries) publishes the same ids, so consumers drop the copies."""

import itertools

from bench.realistic import events
from stream.monitoring.model_monitor import ModelMonitor
from stream.settings import DetectionSettings


def _stream() -> list[dict]:
    # Realistic traffic with changes that several detectors see, one after another.
    parts = [
        list(itertools.chain.from_iterable(events(8_000, seed=3))),
        list(itertools.chain.from_iterable(events(8_000, seed=4, change="latency x3", change_at=0))),
        list(itertools.chain.from_iterable(events(8_000, seed=5, change="new country at 2%", change_at=0))),
        list(itertools.chain.from_iterable(events(8_000, seed=6, change="amount scale x1.5", change_at=0))),
        list(itertools.chain.from_iterable(events(8_000, seed=7))),
    ]
    out, t = [], 1_700_000_000.0
    for part in parts:
        t0 = part[0]["timestamp"]
        for e in part:
            out.append({**e, "timestamp": t + (e["timestamp"] - t0)})
        t = out[-1]["timestamp"] + 0.01
    for e in out[16_000:24_000]:
        e["features"]["items"] += 100  # a jump: level_shift
    return out


def _alerts(stream: list[dict], batch: int) -> dict[str, tuple[str, str, str]]:
    monitor = ModelMonitor("real", DetectionSettings(reference_events=1000, reference_min_s=0))
    out = {}
    for i in range(0, len(stream), batch):
        for a in monitor.process(stream[i : i + batch]):
            out[a["alert_id"]] = (a["detector"], a["signal"], a["status"])
    return out


def test_the_same_records_in_any_batch_size_give_the_same_alert_ids():
    stream = _stream()
    runs = {batch: _alerts(stream, batch) for batch in (17, 100, 1000)}
    detectors = {d for d, _, _ in runs[100].values()}
    # The stream must exercise many detectors, or the comparison proves little.
    assert {"zscore", "unseen_category", "level_shift", "cusum"} <= detectors, detectors
    assert "resolved" in {s for _, _, s in runs[100].values()}
    for batch, found in runs.items():
        assert found == runs[100], batch
