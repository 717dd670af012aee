"""The pool cleans up after itself (no shared memory segments, no child processes) however it
ends, and refuses bad arguments and unusable programs with errors that say what to do."""

from __future__ import annotations

import gc
import multiprocessing
import sys
import types
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

import client_fns as fns
import numpy as np
import pytest

import fedloom as fl
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.tasks import EvaluateTask, Failure, TrainTask
from fedloom.executors import pool as pool_module
from fedloom.executors._pool_memory import create_block
from fedloom.executors._workers import partition
from fedloom.executors.pool import PoolExecutor

DATA = fns.marked_clients()
SHM = Path("/dev/shm")
needs_dev_shm = pytest.mark.skipif(not SHM.is_dir(), reason="POSIX shared memory in /dev/shm")


def program() -> fl.algorithms.ClientProgram:
    return fl.fedavg(fl.custom(fns.model(), fns.hangs_for_bad_client)).client


def segments() -> set[str]:
    return {p.name for p in SHM.iterdir()}


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of every shared block pools create during the test (other tests running in
    parallel may create their own, so the listing is compared on these names)."""
    names: list[str] = []

    def recording(nbytes: int) -> SharedMemory:
        block = create_block(nbytes)
        names.append(block.name.lstrip("/"))
        return block

    monkeypatch.setattr(pool_module, "create_block", recording)
    return names


def two_rounds(pool: PoolExecutor) -> None:
    """A round with a timed-out client (one worker is killed and replaced), then one whose
    oversized vectors make the pool replace its input block with a larger one."""
    params = fns.model().init(0)
    tasks = [TrainTask(c.client_id, Broadcast(0, params, c.client_id)) for c in DATA.clients]
    replies = pool.run([*tasks, EvaluateTask(0, params)])
    assert replies[fns.BAD_CLIENT] == Failure("timed out after 0.5s")
    assert sum(isinstance(r, ClientResult) for r in replies) == len(DATA) - 1
    oversized = [EvaluateTask(c.client_id, np.zeros(4096, np.float32)) for c in DATA.clients]
    assert all(isinstance(r, Failure) for r in pool.run(oversized))


@needs_dev_shm
def test_closing_leaves_no_shared_memory_and_no_children(created: list[str]) -> None:
    with PoolExecutor(program(), DATA.clients, workers=2, task_timeout=0.5) as pool:
        two_rounds(pool)
        assert len(created) == 3, "inputs, results, then a larger inputs block"
        assert created[0] not in segments(), "a replaced block is unlinked at once"
        assert set(created[1:]) <= segments()
    assert segments().isdisjoint(created)
    assert multiprocessing.active_children() == []
    assert pool.closed
    with pytest.raises(RuntimeError, match="closed"):
        pool.run([])
    pool.close()  # a second close does nothing


@needs_dev_shm
def test_garbage_collection_releases_an_unclosed_pool(created: list[str]) -> None:
    pool = PoolExecutor(program(), DATA.clients, workers=2, task_timeout=0.5)
    two_rounds(pool)
    del pool
    gc.collect()
    assert len(created) == 3
    assert segments().isdisjoint(created)
    assert multiprocessing.active_children() == []


def test_workers_split_clients_by_size_and_never_outnumber_them() -> None:
    with PoolExecutor(program(), DATA.clients[:3], workers=8) as pool:
        assert pool.workers == 3
        assert sorted(pool.assignment.values()) == [0, 1, 2]
    sizes = [fl.data.ClientData(i, np.zeros((n, 1)), np.zeros(n), np.zeros((0, 1)), np.zeros(0))
             for i, n in enumerate([50, 40, 30, 20, 10, 10])]  # fmt: skip
    # Largest first, each to the lighter worker: {50, 20, 10} and {40, 30, 10}.
    assert partition(sizes, 2) == {0: 0, 1: 1, 2: 1, 3: 0, 4: 0, 5: 1}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": 0}, "workers must be a positive integer or None, got 0"),
        ({"workers": 1.5}, "workers must be a positive integer"),
        ({"task_timeout": 0}, "task_timeout must be a positive number of seconds or None"),
        ({"start_method": "teleport"}, "start_method must be one of"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PoolExecutor(program(), DATA.clients, **options)  # type: ignore[arg-type]
    assert multiprocessing.active_children() == []


def test_a_lambda_client_function_is_refused_with_advice() -> None:
    work = fl.custom(fns.model(), lambda params, x, y, seed: (params, {}))
    with pytest.raises(ValueError, match=r"must be picklable.*module level"):
        PoolExecutor(fl.fedavg(work).client, DATA.clients, workers=1)


def test_a_function_workers_cannot_import_closes_the_pool_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = types.ModuleType("only_in_the_parent")
    exec("def train(params, x, y, seed):\n    return params, {}\n", module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    work = fl.custom(fns.model(), module.train)
    pool = PoolExecutor(fl.fedavg(work).client, DATA.clients, workers=1)
    params = fns.model().init(0)
    with pytest.raises(RuntimeError, match=r"(?s)could not start.*only_in_the_parent"):
        pool.run([TrainTask(0, Broadcast(0, params, 0))])
    assert pool.closed
    assert multiprocessing.active_children() == []
