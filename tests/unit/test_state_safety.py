"""A model state read from the changelog is plain, versioned data: a hostile or old state is
refused, never executed, and the model starts afresh with one data_quality alert."""

import asyncio
import base64
import gzip
import json
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
import orjson
import pytest

from stream.contracts.schemas import validate
from stream.monitoring.model_monitor import STATE_VERSION, ModelMonitor, StateError
from stream.settings import DetectionSettings, Settings
from stream.worker.app import MonitorApp
from stream.worker.state_codec import decode_state, encode_state
from tests.unit.data.make_state_answers import answers


class _Exploit:
    """Unpickling this runs a shell command that leaves a file behind."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _hostile_state(tmp_path) -> tuple[dict, str]:
    marker = str(tmp_path / "pwned")
    payload = base64.b64encode(pickle.dumps(_Exploit(marker))).decode()
    # The shape the previous release wrote (no state_version; river objects pickled), with a payload in it.
    version = ModelMonitor("m", DetectionSettings()).version("1").to_dict()
    version["performance"] = {"pickle": payload}
    version["signal_rules"] = {"error_rate": {"adwin": {"detector": payload}}}
    return {"seq": 1, "expects_labels": False, "labels": {}, "versions": {"1": version}}, marker


def test_a_hostile_pickle_in_a_state_is_refused_not_run(tmp_path):
    state, marker = _hostile_state(tmp_path)
    with pytest.raises(StateError, match="version"):
        ModelMonitor.from_dict("m", DetectionSettings(), state)
    # Even stamped with the current version, the payload is only ever read as data.
    state["state_version"] = STATE_VERSION
    with pytest.raises(StateError):
        ModelMonitor.from_dict("m", DetectionSettings(), state)
    assert not os.path.exists(marker)


def _plain_leaves(value, path="state"):
    """Every leaf of a state, checked to be plain data: JSON types, bytes, or a numeric numpy array."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str | int), f"{path}: key {key!r}"
            yield from _plain_leaves(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _plain_leaves(item, f"{path}.{i}")
    else:
        assert (
            value is None
            or type(value) in (str, int, float, bool, bytes)
            or (type(value) is np.ndarray and value.dtype.kind in "biuf")
        ), f"{path}: {type(value).__name__}"
        yield value


def test_every_part_of_a_busy_state_is_plain_data():
    monitor = ModelMonitor("m", DetectionSettings(reference_events=100, reference_min_s=0))
    events = [
        {
            "model_version": "1",
            "timestamp": 1000.0 + i * 0.1,
            "latency_ms": 10.0 + i % 7,
            "error": None,
            "confidence": 0.9,
            "prediction": 1,
            "features": {"x": float(i % 11), "c": "abc"[i % 3]},
        }
        for i in range(3000)
    ]
    for i in range(0, len(events), 100):
        monitor.process(events[i : i + 100])
    monitor.process_label("1", 1, 1, 2000.0)
    leaves = list(_plain_leaves(monitor.to_dict()))
    assert any(isinstance(leaf, np.ndarray) for leaf in leaves)
    stored = decode_state(encode_state(monitor.to_dict()))
    assert all(type(a) is type(b) for a, b in zip(_plain_leaves(stored), leaves, strict=True))
    again = ModelMonitor.from_dict("m", DetectionSettings(reference_events=100, reference_min_s=0), stored)
    assert again.to_dict()["versions"]["1"]["events"] == 3000


def test_the_worker_starts_a_model_afresh_with_one_alert_when_its_state_cannot_be_read(tmp_path):
    state, marker = _hostile_state(tmp_path)

    async def load():
        mon = MonitorApp(Settings(data_dir=str(tmp_path)))
        stored = encode_state(state)
        mon.model_state.data[b"m"] = stored
        monitor = mon.monitor_for("m")
        damaged = zlib.compress(b"{not json", 1)
        mon.model_state.data[b"d"] = damaged
        return monitor, mon.monitor_for("d")

    monitor, damaged = asyncio.run(load())
    assert not os.path.exists(marker)
    assert monitor.versions == {} and monitor.offsets == {}
    [alert] = monitor.take_notices()
    validate("alert", alert)
    assert (alert["kind"], alert["detector"], alert["model"]) == ("data_quality", "state_unreadable", "m")
    assert "version" in alert["message"] and monitor.take_notices() == []
    assert [a["detector"] for a in damaged.take_notices()] == ["state_unreadable"]


def _without_new_keys(current, stored):
    """``current`` without the keys ``stored`` (an older layout) did not have yet (versions, new memory)."""
    if isinstance(current, dict) and isinstance(stored, dict):
        return {k: _without_new_keys(v, stored[k]) for k, v in current.items() if k in stored}
    if isinstance(current, list) and isinstance(stored, list) and len(current) == len(stored):
        return [_without_new_keys(c, s) for c, s in zip(current, stored, strict=True)]
    return current


def _as_json(state):
    """A state as it reads back from JSON: arrays as lists, a join entry's JSON text as what it says."""
    text = orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=orjson.Fragment)
    return json.loads(text)


def _in_current_layout(stored):
    """``stored`` (state version 2) as the current version writes it: sketch buckets dense, from their first index."""
    if isinstance(stored, list):
        return [_in_current_layout(v) for v in stored]
    if not isinstance(stored, dict):
        return stored
    out = {k: _in_current_layout(v) for k, v in stored.items()}
    if out.get("state_version") == 2 and "versions" in out:
        out["state_version"] = STATE_VERSION
    if {"relative_accuracy", "zeros", "positive", "negative"} <= out.keys():
        for sign in ("positive", "negative"):
            buckets = {int(k): c for k, c in stored[sign].items()}
            first = min(buckets, default=0)
            counts = [buckets.get(i, 0) for i in range(first, max(buckets, default=-1) + 1)]
            out[sign] = {"first": first, "counts": counts}
    return out


def _rounded(value):
    """Floats to 12 significant digits: quantiles read in one vectorised pass may differ in the last bit."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def test_a_version_2_state_gives_the_answers_of_the_release_that_wrote_it():
    # Written by tests/unit/data/make_state_answers.py at commit 4500c91 (state version 2: sparse
    # sketch buckets), with the alerts and summary that release gave for the same continuation.
    with gzip.open(Path(__file__).parent / "data" / "model-state-answers-4500c91.json.gz", "rt") as saved:
        fixture = json.load(saved)
    assert fixture["state"]["state_version"] == 2
    monitor = ModelMonitor.from_dict(
        "fraud-scorer", DetectionSettings(reference_events=500, reference_min_s=0), fixture["state"]
    )
    got = answers(monitor)
    assert got["alerts"] == fixture["answers"]["alerts"]
    estimates = []
    for summary in (got["summary"], fixture["answers"]["summary"]):
        summary.pop("traffic")  # the wall clock
        # Estimated performance: the calibration now takes in confidences up to each window's end, not
        # the batch's, so the estimates no longer depend on the batching; they moved in the fourth digit.
        estimates.append(summary["versions"]["2.3.0"]["estimated_performance"].pop("windows"))
    assert _rounded(got["summary"]) == _rounded(fixture["answers"]["summary"])
    now, then = estimates
    assert [w.keys() for w in now] == [w.keys() for w in then] and len(now) == 10
    for new, old in zip(now, then, strict=True):
        assert new == pytest.approx(old, abs=2e-4)


def test_a_state_written_by_the_previous_release_is_read_whole_and_monitoring_goes_on():
    # Written by tests/unit/data/make_state.py at commit f664217, before every detector state carried a version.
    blob = (Path(__file__).parent / "data" / "model-state-f664217.json.z").read_bytes()
    stored = decode_state(blob)
    detection = DetectionSettings(reference_events=500, reference_min_s=0)
    monitor = ModelMonitor.from_dict("fraud-scorer", detection, stored)
    # Nothing was dropped or changed on the way in: saved again, it is the same state.
    current = _in_current_layout(stored)
    assert _without_new_keys(_as_json(monitor.to_dict()), current) == current
    assert monitor.already_applied("inference-events:0", 41) and monitor.seq == 5
    version = monitor.versions["2.3.0"]
    assert version.reference is not None and version.multivariate is not None
    before = version.events
    spike = [
        {"model_version": "2.3.0", "timestamp": 1_700_001_000.0 + i, "latency_ms": 900.0, "error": None}
        for i in range(20)
    ]
    alerts = monitor.process(spike)
    assert version.events == before + 20
    assert any(a["signal"] == "latency_ms" and a["status"] == "firing" for a in alerts)
