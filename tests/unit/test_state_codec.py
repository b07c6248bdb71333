"""The bytes a model state is stored as: arrays come back whole and exact, states stored as JSON
before still read the same, and nothing but plain data is ever read."""

import struct
import zlib

import msgpack
import numpy as np
import orjson
import pytest
import zstandard

from stream.monitoring.label_join import encode_entry
from stream.monitoring.model_monitor import ModelMonitor, StateError
from stream.settings import DetectionSettings
from stream.worker.state_codec import (
    ARRAY,
    MAGIC,
    ZLIB_MAGIC,
    decode_state,
    encode_state,
    pack_state,
    unpack_state,
)

DETECTION = DetectionSettings(reference_events=200, reference_min_s=0)


def _busy_monitor() -> ModelMonitor:
    """A model past its reference, with sketches, detector buffers and a pending label join entry."""
    rng = np.random.default_rng(11)
    monitor = ModelMonitor("m", DETECTION)
    monitor.expects_labels = True
    for start in range(0, 3000, 150):
        monitor.process(
            [
                {
                    "model_version": "1",
                    "timestamp": 1_000.0 + i * 0.2,
                    "request_id": f"r{i}",
                    "latency_ms": float(rng.lognormal(3.0, 0.4)),
                    "error": None if i % 50 else "timeout",
                    "prediction": i % 3,
                    "confidence": float(rng.uniform(0.5, 1.0)),
                    "features": {"x": float(rng.standard_t(3)), "n": int(rng.poisson(4)), "c": "abcd"[i % 4]},
                }
                for i in range(start, start + 150)
            ]
        )
    # Entries of the label join not yet checkpointed (the worker's joiner adds them).
    monitor.join_changes = {
        "r1": encode_entry(["P", 1, "1", 1_000.2, 9e9]),
        "r2": encode_entry(["P", 0, "1", 1_000.4, 9e9]),
    }
    return monitor


def test_a_busy_state_read_back_is_the_same_monitor_as_from_the_json_it_was_stored_as_before():
    monitor = _busy_monitor()
    state = monitor.to_dict()
    # What the previous format stored: the same state as compressed JSON (arrays as lists).
    as_json = orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=orjson.Fragment)
    from_json = ModelMonitor.from_dict("m", DETECTION, decode_state(zlib.compress(as_json)))
    from_bytes = ModelMonitor.from_dict("m", DETECTION, decode_state(encode_state(state)))
    assert pack_state(from_bytes.to_dict()) == pack_state(from_json.to_dict()) == pack_state(state)
    assert from_bytes.join_changes == monitor.join_changes
    # And both go on alike.
    spike = [{"model_version": "1", "timestamp": 1_700.0 + i, "latency_ms": 5_000.0, "error": None} for i in range(30)]
    assert [a["signal"] for a in from_bytes.process(spike)] == [a["signal"] for a in from_json.process(spike)] != []


@pytest.mark.parametrize(
    "values",
    [
        np.array([0, 1, 255, 256, -129, 70_000, -(2**40), 2**62], dtype=np.int64),
        np.array([3, 4, 5], dtype=np.uint8),
        np.array([0.1, -0.0, np.nan, np.inf, -np.inf, 1e-300]),
        np.arange(12, dtype=np.float64).reshape(3, 4),
        np.array([True, False, True]),
        np.zeros(0, dtype=np.int64),
        np.zeros((0, 2)),
    ],
)
def test_arrays_come_back_with_their_values_shape_and_a_writable_copy(values):
    back = decode_state(encode_state({"a": values}))["a"]
    assert back.shape == values.shape
    assert back.dtype == (np.int64 if values.dtype.kind in "iu" else values.dtype)
    np.testing.assert_array_equal(back, values)
    assert back.flags.writeable and back.flags.owndata


def test_small_counts_are_stored_narrow():
    counts = np.ones(10_000, dtype=np.int64)
    assert len(pack_state({"a": counts})) < 10_100
    assert len(pack_state({"a": counts * 2**40})) > 80_000


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros((2, 2, 2)), "dimensions"),
        (np.array(["a"]), "hold numbers"),
        (np.array([object()], dtype=object), "hold numbers"),
        (object(), "plain data only"),
        ({1, 2}, "plain data only"),
    ],
)
def test_only_plain_data_is_written(value, message):
    with pytest.raises(TypeError, match=message):
        encode_state({"a": value})


def _stored(payload: bytes) -> bytes:
    return MAGIC + zstandard.ZstdCompressor().compress(payload)


def _stored_with_zlib(payload: bytes) -> bytes:
    return ZLIB_MAGIC + zlib.compress(payload)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (msgpack.packb({"a": msgpack.ExtType(7, b"q")}), "extension type 7"),
        (msgpack.packb({"a": msgpack.ExtType(ARRAY, b"O\x01" + struct.pack("<I", 1) + b"x" * 8)}), "unknown type"),
        (msgpack.packb({"a": msgpack.ExtType(ARRAY, b"q\x01" + struct.pack("<I", 3) + b"\x00" * 8)}), "shape"),
        (
            msgpack.packb({"a": msgpack.ExtType(ARRAY, b"q\x03" + struct.pack("<3I", 1, 1, 1) + b"\x00" * 8)}),
            "malformed",
        ),
        (msgpack.packb({"a": msgpack.ExtType(ARRAY, b"q")}), "malformed"),
        (msgpack.packb([1, 2]), "not a mapping"),
        (msgpack.packb({"a": 1})[:-1], "cannot be decoded"),
        (b"\xc1", "cannot be decoded"),
    ],
)
def test_anything_but_a_state_of_plain_data_is_refused(payload, message):
    for stored in (_stored, _stored_with_zlib):
        with pytest.raises(StateError, match=message):
            decode_state(stored(payload))


def test_a_state_stored_with_zlib_before_reads_the_same_and_the_new_bytes_are_fewer():
    state = _busy_monitor().to_dict()
    before = _stored_with_zlib(pack_state(state))
    assert pack_state(decode_state(before)) == pack_state(decode_state(encode_state(state))) == pack_state(state)
    assert len(encode_state(state)) < len(before)


def test_a_frame_that_unpacks_past_the_bound_is_refused_before_it_is_unpacked():
    # A few kilobytes that would take 80 MB, saying so in the frame or not: a state is never near that.
    for says_its_size in (True, False):
        compressor = zstandard.ZstdCompressor(write_content_size=says_its_size)
        bomb = MAGIC + compressor.compress(b"\x00" * (80 << 20))
        assert len(bomb) < 10_000
        with pytest.raises(StateError, match="ZstdError"):
            decode_state(bomb)


def test_damaged_bytes_in_every_format_are_refused():
    for blob in (
        MAGIC + b"not zstd",
        ZLIB_MAGIC + b"not zlib",
        zlib.compress(b"{not json"),
        zlib.compress(b"[1]"),
        b"\x00\x01",
    ):
        with pytest.raises(StateError):
            decode_state(blob)
    with pytest.raises(StateError):
        unpack_state(b"\x93\x01")  # an array of three with one element
