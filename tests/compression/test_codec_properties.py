"""Properties of every codec: unbiased quantizers, exact casts, error feedback loses nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fedloom as fl
from fedloom.compression import QSGD, Cast, Codec, RandomK, Rotated, Sign, TopK, Uniform
from fedloom.compression._bits import pack, pack_base, packed_size, unpack, unpack_base
from fedloom.compression.stage import RESIDUAL

vectors = hnp.arrays(
    np.float32, st.integers(1, 40), elements=st.floats(-10, 10, width=32, allow_subnormal=False)
)


def mean_of_decodes(codec: Codec, x: np.ndarray, draws: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    total = np.zeros(x.shape[0], dtype=np.float64)
    for _ in range(draws):
        total += codec.decode(codec.encode(x, rng), x.shape[0])
    return total / draws


@settings(max_examples=12, deadline=None)
@given(vectors, st.integers(1, 8), st.integers(0, 2**32))
# The maximum lands a hair above the top level in float32; a cast to uint8 would wrap it to 0.
@example(np.array([-3.0, 0.0], dtype=np.float32), 8, 2997473)
# An all-negative vector: its range must not be widened to include 0 (found by CI).
@example(np.array([-7.0, -6.0], dtype=np.float32), 1, 0)
def test_uniform_quantization_is_unbiased(x: np.ndarray, bits: int, seed: int) -> None:
    draws = 600
    mean = mean_of_decodes(Uniform(bits), x, draws, seed)
    step = (float(x.max()) - float(x.min())) / (2**bits - 1)
    # Each decode is within one step and has variance ≤ step²/4: six standard errors of the mean.
    tolerance = 6 * step / (2 * np.sqrt(draws)) + 1e-5 * (1 + np.abs(x))
    assert np.all(np.abs(mean - x) <= tolerance)


@settings(max_examples=12, deadline=None)
@given(
    vectors,
    st.integers(1, 20),
    st.integers(1, 16),
    st.sampled_from(["l2", "max"]),
    st.integers(0, 2**32),
)
def test_qsgd_is_unbiased(x: np.ndarray, levels: int, bucket: int, norm: str, seed: int) -> None:
    draws = 600
    mean = mean_of_decodes(QSGD(levels, bucket, norm), x, draws, seed)
    # A decode lies within one level (bucket norm / s) of the entry.
    norm = float(np.linalg.norm(x.astype(np.float64)))
    tolerance = 6 * (norm / levels) / (2 * np.sqrt(draws)) + 1e-5 * (1 + np.abs(x))
    assert np.all(np.abs(mean - x) <= tolerance)


@settings(max_examples=8, deadline=None)
@given(vectors, st.sampled_from([2, 4, 8]), st.integers(0, 2**32))
def test_rotated_quantization_is_unbiased(x: np.ndarray, block: int, seed: int) -> None:
    draws = 600
    mean = mean_of_decodes(Rotated(Uniform(2), block), x, draws, seed)
    # Rotated entries are bounded by ‖x‖ per block, so a step is at most 2‖x‖/3.
    norm = float(np.linalg.norm(x.astype(np.float64)))
    tolerance = 6 * (2 * norm / 3) / (2 * np.sqrt(draws)) + 1e-4 * (1 + norm)
    assert np.all(np.abs(mean - x) <= tolerance)


@settings(max_examples=8, deadline=None)
@given(vectors, st.floats(0.2, 1.0), st.integers(0, 2**32))
def test_scaled_random_k_is_unbiased(x: np.ndarray, fraction: float, seed: int) -> None:
    draws = 800
    codec = RandomK(fraction=fraction)
    mean = mean_of_decodes(codec, x, draws, seed)
    n = x.shape[0]
    size = -(-n // codec.count(n))  # the largest stratum
    # Each decode is x·m with probability 1/m and 0 otherwise, m its stratum's size.
    sd = np.abs(x) * np.sqrt(size - 1)
    assert np.all(np.abs(mean - x) <= 6 * sd / np.sqrt(draws) + 1e-5 * (1 + np.abs(x)))


@settings(deadline=None)
@given(
    hnp.arrays(
        np.float16,
        st.integers(0, 60),
        elements=st.floats(width=16, allow_nan=False, allow_infinity=False),
    )
)
def test_float16_is_exact_on_float16_values(values: np.ndarray) -> None:
    x = values.astype(np.float32)
    codec = Cast("float16")
    np.testing.assert_array_equal(codec.decode(codec.encode(x, np.random.default_rng(0))), x)


@settings(deadline=None)
@given(
    hnp.arrays(np.float32, st.integers(0, 60), elements=st.floats(-(2.0**100), 2.0**100, width=32))
)
def test_bfloat16_is_exact_on_bfloat16_values_and_matches_torch(values: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    codec = Cast("bfloat16")
    representable = (values.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(codec.decode(codec.encode(representable, rng)), representable)
    # Any other value rounds to nearest, ties to even, as PyTorch's bfloat16 does.
    expected = torch.from_numpy(values.copy()).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(codec.decode(codec.encode(values, rng)), expected)


@settings(deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.integers(0, 60),
        elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
    )
)
def test_float32_is_lossless(values: np.ndarray) -> None:
    codec = Cast("float32")
    np.testing.assert_array_equal(
        codec.decode(codec.encode(values, np.random.default_rng(0))), values
    )


def test_uniform_on_its_grid_is_exact_and_the_payload_size_is_hand_counted() -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0, 3.0, 0.0, 1.0], dtype=np.float32)
    codec = Uniform(2)  # levels 0, 1, 2, 3: every entry is on the grid
    payload = codec.encode(x, np.random.default_rng(0))
    np.testing.assert_array_equal(codec.decode(payload), x)
    # 7 codes of 2 bits = 2 bytes; params: bits (1) + min, max (4 + 4); envelope 14 + 4.
    assert len(payload) == 2 + 9 + 18


def test_qsgd_decodes_to_multiples_of_the_norm_over_levels() -> None:
    x = np.array([3.0, -4.0], dtype=np.float32)  # norm 5
    codec = QSGD(levels=2, bucket=2)
    seen = {tuple(codec.decode(codec.encode(x, np.random.default_rng(s)))) for s in range(200)}
    # |3|/5·2 = 1.2 → level 1 or 2 (2.5 or 5); |−4|/5·2 = 1.6 → −2.5 or −5.
    assert seen == {(2.5, -2.5), (2.5, -5.0), (5.0, -2.5), (5.0, -5.0)}
    # levels=2: 5 signed codes, three base-5 digits a byte (1 byte for 2 codes); one float32
    # norm; params 5; envelope 18.
    assert len(codec.encode(x, np.random.default_rng(0))) == 18 + 5 + 4 + 1


@settings(deadline=None)
@given(vectors, st.integers(1, 40))
def test_top_k_keeps_the_k_largest_magnitudes_exactly(x: np.ndarray, k: int) -> None:
    k = min(k, x.shape[0])
    decoded = TopK(k=k).decode(TopK(k=k).encode(x, np.random.default_rng(0)), x.shape[0])
    kept = np.flatnonzero(decoded)
    assert np.count_nonzero(decoded) <= k
    np.testing.assert_array_equal(decoded[kept], x[kept])
    dropped = np.setdiff1d(np.arange(x.shape[0]), kept)
    if dropped.size and kept.size:
        assert np.abs(x[dropped]).max() <= np.abs(x[kept]).min()


@settings(max_examples=30, deadline=None)
@given(
    st.lists(vectors.filter(lambda v: v.shape[0] == 12), min_size=1, max_size=5)
    | st.lists(
        hnp.arrays(np.float32, 12, elements=st.floats(-10, 10, width=32)), min_size=1, max_size=5
    ),
    st.sampled_from(["top_k", "uniform", "bfloat16", "random_k", "sign"]),
)
def test_error_feedback_residual_plus_transmitted_is_the_input(
    updates: list[np.ndarray], kind: str
) -> None:
    stage = {
        "top_k": fl.compression.top_k(k=3),
        "uniform": fl.compression.uniform(1, error_feedback=True),
        "bfloat16": fl.compression.bfloat16(error_feedback=True),
        "random_k": fl.compression.random_k(k=4, unbiased=False, error_feedback=True),
        "sign": fl.compression.sign(bucket=5),
    }[kind]
    rng = np.random.default_rng(0)
    memory: dict[str, np.ndarray] = {}
    sent_total = np.zeros(12, dtype=np.float64)
    for update in updates:
        before = memory.get(RESIDUAL, np.zeros(12, dtype=np.float32))
        payload, memory, _ = stage.encode(update, {}, rng, memory)  # type: ignore[assignment]
        sent = stage.decode(payload, 12)
        # This round: what was sent plus what is kept is this update plus what was kept.
        np.testing.assert_allclose(sent + memory[RESIDUAL], update + before, rtol=1e-6, atol=1e-5)
        sent_total += sent
    # Over all rounds, nothing is lost: it is sent or still kept.
    np.testing.assert_allclose(
        sent_total + memory[RESIDUAL],
        np.sum(updates, axis=0, dtype=np.float64),
        rtol=1e-5,
        atol=1e-4,
    )


@settings(deadline=None)
@given(st.integers(1, 8), st.integers(0, 300), st.integers(0, 2**32))
def test_bit_packing_round_trips_at_b_bits_a_code(bits: int, count: int, seed: int) -> None:
    codes = np.random.default_rng(seed).integers(0, 2**bits, count).astype(np.uint8)
    packed = pack(codes, bits)
    assert len(packed) == packed_size(count, bits) <= (count * bits + 7) // 8 + 3
    np.testing.assert_array_equal(unpack(packed, count, bits), codes)


@settings(deadline=None)
@given(st.integers(2, 16), st.integers(0, 300), st.integers(0, 2**32))
def test_base_packing_round_trips(levels: int, count: int, seed: int) -> None:
    codes = np.random.default_rng(seed).integers(0, levels, count).astype(np.uint8)
    np.testing.assert_array_equal(unpack_base(pack_base(codes, levels), count, levels), codes)


def test_ternary_codes_take_five_a_byte() -> None:
    assert len(pack_base(np.full(1000, 2, dtype=np.uint8), 3)) == 200


@settings(deadline=None)
@given(st.lists(vectors, min_size=2, max_size=4), st.integers(1, 8), st.floats(0.5, 20))
def test_a_shared_bound_puts_every_client_on_one_grid(
    updates: list[np.ndarray], bits: int, bound: float
) -> None:
    codec = Uniform(bits, bound)
    assert codec.traits.summable
    step = np.float64(np.float32(bound)) * 2 / (2**bits - 1)
    rng = np.random.default_rng(0)
    for update in updates:
        decoded = codec.decode(codec.encode(update, rng)).astype(np.float64)
        # Every client's decoding is -bound + step·q for integer codes q, so a sum of codes
        # decodes to the sum of the decodings.
        codes = (decoded + np.float32(bound)) / step
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
        assert np.all(np.abs(decoded) <= bound * (1 + 1e-6))


@settings(deadline=None)
@given(vectors)
def test_scaled_sign_is_contractive_by_the_l1_norm(x: np.ndarray) -> None:
    # One bucket: C(x) = mean|x|·sign(x), so ‖C(x) − x‖² = ‖x‖² − ‖x‖₁²/d exactly
    # (Karimireddy et al. 2019, the scaled sign's contraction).
    codec = Sign(bucket=64)
    decoded = codec.decode(codec.encode(x, np.random.default_rng(0))).astype(np.float64)
    x64 = x.astype(np.float64)
    error = np.sum((decoded - x64) ** 2)
    expected = np.sum(x64**2) - np.sum(np.abs(x64)) ** 2 / x.shape[0]
    assert error == pytest.approx(expected, rel=1e-4, abs=1e-4)
