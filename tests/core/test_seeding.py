"""Counter-based seeds and minibatch orders: every epoch a permutation, clients independent."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.core.seeding import client_seeds, minibatches, mix

SIZES = st.lists(st.integers(1, 70), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(
    sizes=SIZES,
    batch_size=st.integers(1, 20),
    epochs=st.integers(1, 3),
    seed=st.integers(0, 2**62),
)
def test_every_epoch_visits_each_example_once(
    sizes: list[int], batch_size: int, epochs: int, seed: int
) -> None:
    per_epoch = [-(-n // batch_size) for n in sizes]
    steps = [epochs * p for p in per_epoch]
    plans = minibatches(sizes, batch_size, steps, [seed + i for i in range(len(sizes))])
    for n, p, plan in zip(sizes, per_epoch, plans, strict=True):
        assert len(plan) == epochs * p
        assert all(1 <= len(b) <= batch_size for b in plan)
        for e in range(epochs):
            epoch = np.concatenate(plan[e * p : (e + 1) * p])
            assert sorted(epoch.tolist()) == list(range(n))
            # Only an epoch's last batch may be short.
            assert all(len(b) == batch_size for b in plan[e * p : (e + 1) * p - 1])


@settings(max_examples=40, deadline=None)
@given(sizes=SIZES, steps=st.integers(1, 9), seed=st.integers(0, 2**40))
def test_a_clients_batches_do_not_depend_on_the_rest_of_the_cohort(
    sizes: list[int], steps: int, seed: int
) -> None:
    seeds = [seed * 7 + i for i in range(len(sizes))]
    together = minibatches(sizes, 4, [steps] * len(sizes), seeds)
    for i, n in enumerate(sizes):
        (alone,) = minibatches([n], 4, [steps], [seeds[i]])
        assert len(alone) == steps
        for a, b in zip(alone, together[i], strict=True):
            np.testing.assert_array_equal(a, b)


def test_stops_mid_epoch_and_reshuffles_between_epochs() -> None:
    (plan,) = minibatches([10], 3, [6], [5])
    assert [len(b) for b in plan] == [3, 3, 3, 1, 3, 3]
    first, second = np.concatenate(plan[:4]), np.concatenate(plan[4:])
    assert sorted(first.tolist()) == list(range(10))
    assert not np.array_equal(first[:6], second)


def test_orders_look_uniform() -> None:
    """Over many seeds, each position of a 4-example shuffle holds each example ~1/4 of the time."""
    firsts = np.array([minibatches([4], 4, [1], [s])[0][0] for s in range(4000)])
    frequencies = np.stack([(firsts == k).mean(axis=0) for k in range(4)])
    np.testing.assert_allclose(frequencies, 0.25, atol=0.03)


def test_seeds_differ_per_client_round_and_run_and_are_63_bit() -> None:
    seeds = client_seeds(0, 0, np.arange(1000))
    assert len(set(seeds.tolist())) == 1000
    assert seeds.min() >= 0
    assert client_seeds(0, 1, [3])[0] != client_seeds(0, 0, [3])[0]
    assert client_seeds(1, 0, [3])[0] != client_seeds(0, 0, [3])[0]
    assert client_seeds(0, 0, [3])[0] == seeds[3]


def test_mix_depends_on_key_order_and_refuses_negative_keys() -> None:
    assert mix(1, 2)[0] != mix(2, 1)[0]
    with pytest.raises(ValueError, match="non-negative integers"):
        mix(-1)
    with pytest.raises(ValueError, match="at least one example"):
        minibatches([0], 2, [1], [0])
