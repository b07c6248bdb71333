"""The bytes a model's state is stored as: MessagePack with numeric arrays as raw little-endian data.

A state's bulk is numbers: sketch bucket counts, detector buffers. Stored as
JSON they came back as one Python object per number, tens of thousands per
model, each read turned back into an array at once; at 1,000 models every
state is read and written again every few seconds. Here each numpy array in
a state travels as one MessagePack extension (a dtype code, a shape and the
raw values) and is read back as an array, in one copy.

The MessagePack is compressed with Zstandard (level 3): zlib's fastest
level, used before, was slower both ways and stored more bytes (the
figures in docs/perf/history.md). States written with zlib are
still read; releases before this one cannot read these.

It is plain data both ways: the only extension read is that array, of
integers, floats or booleans; anything else in a stored state is refused,
and nothing in it is ever run (no pickle).

States stored as compressed JSON (before this format) are still read:
stored bytes start with ``MAGIC`` in this format and never do in that one.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import msgpack
import numpy as np
import orjson
import zstandard

from stream.monitoring.model_monitor import StateError

MAGIC = b"SMS\x02"
# States written with zlib instead of Zstandard, before.
ZLIB_MAGIC = b"SMS\x01"
ZSTD_LEVEL = 3
# A stored state never unpacks to more than this: a frame that says otherwise is damaged, or hostile.
MAX_PACKED_BYTES = 64 << 20
ARRAY = 1  # the MessagePack extension code of a numpy array
# Dtype codes: integers are stored in the narrowest width that holds them and read back as int64.
INTEGERS = {b"b": np.dtype("<i1"), b"h": np.dtype("<i2"), b"i": np.dtype("<i4"), b"q": np.dtype("<i8")}
INTEGER_RANGES = [(code, dtype, int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)) for code, dtype in INTEGERS.items()]
FLOAT, BOOL = b"d", b"?"
STORED = {**INTEGERS, FLOAT: np.dtype("<f8"), BOOL: np.dtype("|b1")}
READ_AS = {**dict.fromkeys(INTEGERS, np.dtype(np.int64)), FLOAT: np.dtype(np.float64), BOOL: np.dtype(np.bool_)}
MAX_DIMENSIONS = 2
# An array's header after its dtype code: its number of dimensions, then each of them.
SHAPES = {ndim: struct.Struct(f"<B{ndim}I") for ndim in range(MAX_DIMENSIONS + 1)}


def encode_state(state: dict[str, Any]) -> bytes:
    """A model's state as the bytes stored in its table entry and changelog.

    >>> state = decode_state(encode_state({"seq": 3, "counts": np.array([0, 2, 300])}))
    >>> state["seq"], state["counts"], state["counts"].dtype
    (3, array([  0,   2, 300]), dtype('int64'))
    """
    # A compressor per call: one costs microseconds, and is not to be shared between threads.
    return MAGIC + zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(pack_state(state))


def decode_state(blob: bytes) -> dict[str, Any]:
    """The state :func:`encode_state` stored, or one stored with zlib, or as compressed JSON, before.

    Raises :class:`StateError` for bytes that are none of these.

    >>> decode_state(ZLIB_MAGIC + zlib.compress(pack_state({"seq": 3}))), decode_state(zlib.compress(b'{"seq":3}'))
    ({'seq': 3}, {'seq': 3})
    >>> decode_state(MAGIC + b"damaged")
    Traceback (most recent call last):
    ...
    stream.monitoring.model_monitor.StateError: stored state cannot be decoded (ZstdError: ...)
    """
    try:
        if blob.startswith(MAGIC):
            return unpack_state(_unpacked_size_checked(blob[len(MAGIC) :]))
        if blob.startswith(ZLIB_MAGIC):
            return unpack_state(zlib.decompress(blob[len(ZLIB_MAGIC) :]))
        state = orjson.loads(zlib.decompress(blob))
    except (zlib.error, zstandard.ZstdError) as exc:
        raise StateError(f"stored state cannot be decoded ({type(exc).__name__}: {exc})") from exc
    except orjson.JSONDecodeError as exc:
        raise StateError(f"stored state cannot be decoded (not JSON: {exc})") from exc
    if not isinstance(state, dict):
        raise StateError(f"stored state is a {type(state).__name__}, not a mapping")
    return state


def _unpacked_size_checked(frame: bytes) -> bytes:
    """A Zstandard frame decompressed, refused when it would pass ``MAX_PACKED_BYTES``.

    The library takes a frame's stated size over ``max_output_size``, so the stated size is checked first.
    """
    size = zstandard.get_frame_parameters(frame).content_size
    if size != zstandard.CONTENTSIZE_UNKNOWN and size > MAX_PACKED_BYTES:
        raise zstandard.ZstdError(f"the frame unpacks to {size} bytes, past the bound of {MAX_PACKED_BYTES}")
    return zstandard.ZstdDecompressor().decompress(frame, max_output_size=MAX_PACKED_BYTES)


def pack_state(state: dict[str, Any]) -> bytes:
    """A state as MessagePack, uncompressed (a snapshot kept in memory for a moment)."""
    return msgpack.packb(state, default=_plain)


def unpack_state(data: bytes) -> dict[str, Any]:
    """The state :func:`pack_state` wrote; raises :class:`StateError` for anything else."""
    try:
        state = msgpack.unpackb(data, ext_hook=_array, strict_map_key=False)
    except StateError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise StateError(f"stored state cannot be decoded ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise StateError(f"stored state is a {type(state).__name__}, not a mapping")
    return state


def _plain(value: Any) -> Any:
    """What MessagePack cannot write itself: numpy arrays and scalars."""
    if isinstance(value, np.ndarray):
        return msgpack.ExtType(ARRAY, _array_bytes(value))
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    raise TypeError(f"a model state holds plain data only, not {type(value).__name__}")


def _array_bytes(values: np.ndarray) -> bytes:
    if values.ndim > MAX_DIMENSIONS:
        raise TypeError(f"a state's arrays have at most {MAX_DIMENSIONS} dimensions, not {values.ndim}")
    kind = values.dtype.kind
    if kind in "iu":
        low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
        fits = next(((code, dtype) for code, dtype, lo, hi in INTEGER_RANGES if lo <= low and high <= hi), None)
        if fits is None:
            raise TypeError(f"integers beyond 64 bits in a state array ({low}..{high})")
        code, dtype = fits
    elif kind in "fb":
        code = FLOAT if kind == "f" else BOOL
        dtype = STORED[code]
    else:
        raise TypeError(f"a state's arrays hold numbers, not {values.dtype}")
    header = code + SHAPES[values.ndim].pack(values.ndim, *values.shape)
    return header + values.astype(dtype, copy=False).tobytes()


def _array(code: int, data: bytes) -> np.ndarray:
    """An array from its extension; refuses every other extension and any malformed one."""
    if code != ARRAY:
        raise StateError(f"stored state holds extension type {code}, which this release never writes")
    kind = data[:1]
    if kind not in READ_AS:
        raise StateError(f"stored state holds an array of unknown type {kind!r}")
    ndim = data[1] if len(data) > 1 else MAX_DIMENSIONS + 1
    start = 1 + SHAPES.get(ndim, SHAPES[0]).size
    if ndim > MAX_DIMENSIONS or len(data) < start:
        raise StateError("stored state holds a malformed array")
    shape = SHAPES[ndim].unpack_from(data, 1)[1:]
    dtype = STORED[kind]
    if len(data) - start != dtype.itemsize * math.prod(shape):
        raise StateError(f"stored state holds an array of shape {shape} with {len(data) - start} bytes")
    values = np.frombuffer(data, dtype=dtype, offset=start)
    return (values if ndim == 1 else values.reshape(shape)).astype(READ_AS[kind])
