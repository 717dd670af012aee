"""How vectors cross between the pool's parent and workers, checked within one process: shared
arrays are laid out once, read back bit for bit, and what does not fit its slot is still
delivered (as a pickled value) rather than lost."""

from __future__ import annotations

from collections.abc import Iterator
from multiprocessing.shared_memory import SharedMemory

import numpy as np
import pytest

import fedloom as fl
from fedloom.data import ClientData
from fedloom.executors._pool_memory import (
    ArrayRef,
    Packer,
    SlotWriter,
    buffer,
    copied,
    create_block,
    read_only,
    release_block,
)
from fedloom.executors._pool_messages import PackedResult, TaskSpec
from fedloom.executors._pool_worker import run_task
from fedloom.executors.inprocess import InProcessExecutor


@pytest.fixture
def block() -> Iterator[SharedMemory]:
    shared = create_block(1 << 16)
    yield shared
    release_block(shared, unlink=True)


def test_an_array_added_twice_is_laid_out_once(block: SharedMemory) -> None:
    params = np.arange(10, dtype=np.float32)
    other = np.array([[1, 2], [3, 4]], dtype=np.int64)
    packer = Packer()
    first, again, second = packer.add(params), packer.add(params), packer.add(other)
    assert first == again != second
    assert packer.size == 2 * 64
    assert packer.add([1.0, 2.0]) == [1.0, 2.0]  # not an array: travels as itself
    packer.write(buffer(block))
    shared = read_only(buffer(block), second)
    np.testing.assert_array_equal(shared, other)
    assert shared.dtype == other.dtype
    assert not shared.flags.writeable
    del shared


def test_a_slot_too_small_hands_the_array_back_and_says_how_much_it_needed(
    block: SharedMemory,
) -> None:
    slot = SlotWriter(buffer(block), offset=128, capacity=64)
    small = np.full(3, np.nan, dtype=np.float32)
    large = np.ones(100, dtype=np.float64)
    ref = slot.put(small)
    assert isinstance(ref, ArrayRef)
    assert ref.offset == 128
    assert slot.put(large) is large
    assert slot.needed == 64 + 832  # each array rounded up to 64 bytes
    np.testing.assert_array_equal(copied(buffer(block), ref), small)  # NaN bits included


@pytest.mark.parametrize("capacity", [0, 1 << 15], ids=["pickled", "shared"])
def test_a_worker_task_matches_in_process_whichever_way_its_result_travels(
    block: SharedMemory, capacity: int
) -> None:
    rng = np.random.default_rng(0)
    client = ClientData(0, rng.normal(size=(40, 8)), rng.integers(0, 3, 40), np.zeros((0, 8)),
                        np.zeros(0))  # fmt: skip
    algorithm = fl.scaffold(fl.local_sgd(fl.SoftmaxRegression(8, 3), lr=0.1, batch_size=8))
    params = algorithm.work.model.init(0)
    control = np.linspace(-1, 1, len(params), dtype=np.float32)
    packer = Packer()
    spec = TaskSpec(
        0, 0, packer.add(params), 1 << 15, capacity, train=True, seed=5,
        extras=packer.add_mapping({"control": control}),
    )  # fmt: skip
    packer.write(buffer(block))
    done = run_task(InProcessExecutor(algorithm.client, [client], catch=False), spec,
                    buffer(block), buffer(block))  # fmt: skip

    reference = InProcessExecutor(algorithm.client, [client])
    [expected] = reference.run(
        [fl.engine.TrainTask(0, fl.Broadcast(0, params, 5, {"control": control}))]
    )
    assert isinstance(expected, fl.ClientResult)
    assert isinstance(done.reply, PackedResult)
    assert isinstance(done.reply.update, ArrayRef) == bool(capacity)
    assert done.needed == 3 * 64 * -(-params.nbytes // 64)  # update, Δc and the new state
    np.testing.assert_array_equal(copied(buffer(block), done.reply.update), expected.update)
    np.testing.assert_array_equal(
        copied(buffer(block), done.reply.extras["control"]), expected.extras["control"]
    )
    assert done.state is not None
    np.testing.assert_array_equal(
        copied(buffer(block), done.state["control"]), reference.states[0]["control"]
    )
