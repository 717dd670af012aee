"""Damaged payloads are refused, never decoded into wrong numbers; bad arguments are named."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.compression import (
    QSGD,
    Cast,
    Codec,
    PayloadError,
    RandomK,
    Rotated,
    Sign,
    TopK,
    Uniform,
)
from fedloom.compression.wire import seal

CODECS: list[Codec] = [
    Cast("float32"),
    Cast("float16"),
    Cast("bfloat16"),
    Uniform(3),
    QSGD(5, 8),
    Rotated(Uniform(2), 8),
    TopK(k=5),
    RandomK(fraction=0.5),
    Sign(4),
    Uniform(2, bound=1.0),
]
X = np.linspace(-2, 3, 21, dtype=np.float32)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.kind)
def test_every_truncation_is_refused(codec: Codec) -> None:
    payload = codec.encode(X, np.random.default_rng(0))
    for length in range(len(payload)):
        with pytest.raises(PayloadError):
            codec.decode(payload[:length], X.shape[0])


@settings(deadline=None, max_examples=60)
@given(st.sampled_from(CODECS), st.data())
def test_any_flipped_bit_is_refused(codec: Codec, data: st.DataObject) -> None:
    payload = bytearray(codec.encode(X, np.random.default_rng(0)))
    position = data.draw(st.integers(0, len(payload) - 1))
    payload[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(PayloadError):
        codec.decode(bytes(payload), X.shape[0])


def test_a_payload_whose_length_does_not_match_its_header_is_refused() -> None:
    # A well-sealed (checksum-valid) payload announcing 21 entries with a body for 20.
    body = np.zeros(20, dtype="<f2").tobytes()
    with pytest.raises(PayloadError, match="implies 42"):
        Cast("float16").decode(seal("float16", 21, b"", body))


def test_a_bit_width_outside_1_to_8_in_a_header_is_refused() -> None:
    payload = seal("uniform", 8, struct.pack("<Bff", 9, 0.0, 1.0), bytes(9))
    with pytest.raises(PayloadError, match="bit width 9"):
        Uniform(8).decode(payload)


def test_top_k_positions_beyond_the_vector_are_refused() -> None:
    body = np.array([1, 30], dtype="<u2").tobytes() + np.ones(2, dtype="<f4").tobytes()
    with pytest.raises(PayloadError, match="positions"):
        TopK(k=2).decode(seal("top_k", 21, struct.pack("<QB", 2, 0), body))


def test_another_codecs_payload_and_another_length_are_refused() -> None:
    payload = Uniform(4).encode(X, np.random.default_rng(0))
    with pytest.raises(PayloadError, match="written by codec 'uniform', expected 'qsgd'"):
        QSGD().decode(payload)
    with pytest.raises(PayloadError, match="holds 21 entries, expected 22"):
        Uniform(4).decode(payload, 22)


@pytest.mark.parametrize("bits", [0, 9, -1, 2.5, True])
def test_bit_width_outside_the_range_is_named(bits: object) -> None:
    with pytest.raises(ValueError, match=r"bits must be an integer from 1 to 8, got"):
        Uniform(bits)  # type: ignore[arg-type]


def test_k_larger_than_the_vector_is_named() -> None:
    with pytest.raises(ValueError, match=r"k=30 is larger than the vector \(21 entries\)"):
        TopK(k=30).encode(X, np.random.default_rng(0))
    with pytest.raises(ValueError, match="exactly one of k"):
        TopK(k=3, fraction=0.1)


def test_float16_refuses_values_it_cannot_hold() -> None:
    with pytest.raises(ValueError, match="float16 holds magnitudes up to 65504"):
        Cast("float16").encode(np.array([1e6], dtype=np.float32), np.random.default_rng(0))
