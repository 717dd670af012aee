"""What the server sees of one client is uniform noise; the primitives and the fixed-point
encoding behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare
from secagg_driver import make_setup

from fedloom.secagg import primitives
from fedloom.secagg.client import ClientSession
from fedloom.secagg.messages import MaskedInput, pack_ring, unpack_ring
from fedloom.secagg.quantize import decode, encode, scale_for, to_signed
from fedloom.secagg.server import ServerSession


def masked_vectors(inputs: dict[int, np.ndarray], bits: int) -> dict[int, MaskedInput]:
    setup = make_setup(len(inputs), len(next(iter(inputs.values()))) - 1, bits=bits, first=0)
    clients = {c: ClientSession(c, setup, inputs[c]) for c in setup.cohort}
    server = ServerSession(setup)
    rosters = server.roster({c: s.advertise() for c, s in clients.items()})
    requests = server.forward({c: clients[c].share_keys(r) for c, r in rosters.items()})
    return {c: clients[c].mask(r) for c, r in requests.items()}


def uniform_pvalue(vector: np.ndarray, bits: int) -> float:
    counts = np.bincount(vector.astype(np.int64), minlength=1 << bits)
    return float(chisquare(counts).pvalue)


def test_a_masked_vector_is_indistinguishable_from_uniform() -> None:
    """A chi-square test over the 256 values of Z_2^8 on 100,000 entries: a constant input
    (all zeros) fails it hopelessly; once masked it passes (at 1e-6), and so does its sum with
    the next entry (no structure between neighbouring entries)."""
    bits, dims = 8, 100_000
    inputs = {c: np.zeros(dims + 1, dtype=np.uint32) for c in range(5)}
    inputs[0][: dims // 2] = 7
    assert uniform_pvalue(inputs[0], bits) < 1e-100
    for reply in masked_vectors(inputs, bits).values():
        assert uniform_pvalue(reply.vector, bits) > 1e-6
        pairs = (reply.vector[:-1] + reply.vector[1:]) & np.uint32(0xFF)
        assert uniform_pvalue(pairs, bits) > 1e-6


def test_the_prg_is_aes256_ctr() -> None:
    """AES-256 of the zero block under the zero key (FIPS-197 style known answer)."""
    words = primitives.expand(bytes(32), 4, 32)
    assert words.astype("<u4").tobytes().hex() == "dc95c078a2408989ad48a21492842087"
    assert np.array_equal(primitives.expand(bytes(32), 4, 8), words & 0xFF)
    assert not np.array_equal(primitives.expand(b"\x01" + bytes(31), 4, 32), words)


def test_the_mask_stream_adds_and_subtracts_the_prg_in_place_modulo_2_32() -> None:
    """The reused-buffer stream gives expand's words (the known answer above first), and adds
    and subtracts them into a total with uint32 wraparound, the ring Z_2^32's arithmetic."""
    stream = primitives.MaskStream(4)
    first = stream.keystream(bytes(32))
    assert first.astype("<u4").tobytes().hex() == "dc95c078a2408989ad48a21492842087"
    seeds = [bytes([i]) * 32 for i in range(1, 4)]
    words = [primitives.expand(seed, 4, 32).astype(np.int64) for seed in seeds]
    total = np.array([0, 1, 2**32 - 1, 12345], dtype=np.uint32)
    expected = total.astype(np.int64) + words[0] - words[1] + words[2]
    stream.add(total, seeds[0])
    stream.subtract(total, seeds[1])
    stream.add(total, seeds[2])
    assert total.dtype == np.uint32
    assert np.array_equal(total.astype(np.int64), expected % 2**32)
    stream.subtract(total, seeds[2])
    stream.add(total, seeds[1])
    stream.subtract(total, seeds[0])
    assert total.tolist() == [0, 1, 2**32 - 1, 12345]
    with pytest.raises(ValueError, match="32 bytes"):
        stream.keystream(bytes(16))


def test_the_session_id_covers_every_key_in_any_order() -> None:
    keys = [(1, b"a" * 32, b"b" * 32), (2, b"c" * 32, b"d" * 32)]
    sid = primitives.session_id(b"h", keys)
    assert sid == primitives.session_id(b"h", reversed(keys))
    assert sid != primitives.session_id(b"h", [keys[0], (2, b"c" * 32, b"e" * 32)])
    assert sid != primitives.session_id(b"g", keys)


def test_sealed_shares_bind_their_associated_data() -> None:
    key = primitives.random_seed()
    sealed = primitives.encrypt(key, b"share", b"session|1|2")
    assert primitives.decrypt(key, sealed, b"session|1|2") == b"share"
    assert primitives.decrypt(key, sealed, b"session|2|1") is None
    assert primitives.decrypt(key, sealed[:10], b"session|1|2") is None


def test_encoded_weighted_updates_sum_and_decode_to_the_weighted_sum() -> None:
    rng = np.random.default_rng(0)
    clients, dims, bits, clip, max_weight = 50, 300, 32, 1.0, 100
    scale = scale_for(clients=clients, clip=clip, max_weight=max_weight, bits=bits)
    updates = rng.normal(0, 0.05, (clients, dims)).astype(np.float32)
    updates[0] *= 100  # clipped to norm 1
    weights = rng.integers(1, max_weight + 1, clients)
    total = np.zeros(dims + 1, dtype=np.uint32)
    for u, w in zip(updates, weights, strict=True):
        total += encode(u, int(w), clip=clip, scale=scale, bits=bits, rng=rng)
    weighted, weight = decode(total, scale=scale, bits=bits)
    clipped = updates.astype(np.float64).copy()
    clipped[0] *= clip / np.linalg.norm(clipped[0])
    assert weight == weights.sum()
    expected = weights @ clipped
    assert np.max(np.abs(weighted - expected)) <= clients / scale


def test_the_extreme_sum_does_not_overflow_the_ring() -> None:
    clients, bits, clip, max_weight = 20, 16, 2.0, 3
    scale = scale_for(clients=clients, clip=clip, max_weight=max_weight, bits=bits)
    rng = np.random.default_rng(1)
    one_hot = np.zeros(4, dtype=np.float32)
    one_hot[0] = -clip
    total = np.zeros(5, dtype=np.uint32)
    for _ in range(clients):
        total += encode(one_hot, max_weight, clip=clip, scale=scale, bits=bits, rng=rng)
    total &= np.uint32((1 << bits) - 1)
    assert to_signed(total, bits)[0] < 0
    weighted, _ = decode(total, scale=scale, bits=bits)
    assert weighted[0] == pytest.approx(-clip * max_weight * clients, abs=clients / scale)


def test_a_ring_too_small_for_the_cohort_is_refused() -> None:
    with pytest.raises(ValueError, match="overflow a 2\\^8 ring"):
        scale_for(clients=100, clip=1.0, max_weight=2, bits=8)


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(8, 32), size=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_packed_ring_vectors_round_trip_at_their_bit_width(bits: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vector = rng.integers(0, 1 << bits, size, dtype=np.uint64).astype(np.uint32)
    data = pack_ring(vector, bits)
    assert len(data) == -(-size * bits // 8)
    np.testing.assert_array_equal(unpack_ring(data, bits, size), vector)
    with pytest.raises(ValueError, match="take"):
        unpack_ring(data + b"\x00", bits, size)
