"""A misbehaving client costs only its own task: the rest of the cohort answers exactly as in
process, a hung or dead worker is replaced, and the next round runs on the replacement.

The client functions live in ``client_fns`` because spawned workers must import them;
pytest puts this directory on ``sys.path`` and spawned workers inherit it.
"""

from __future__ import annotations

import os
import signal
from multiprocessing.connection import wait

import client_fns as fns
import numpy as np
import pytest

import fedloom as fl
from fedloom.client.work import TrainFunction
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.tasks import Failure, Reply, Task, TrainTask
from fedloom.executors import InProcessExecutor
from fedloom.executors.pool import PoolExecutor

DATA = fns.marked_clients()
GOOD = [c.client_id for c in DATA.clients if c.client_id != fns.BAD_CLIENT]


def program(fn: TrainFunction) -> fl.algorithms.ClientProgram:
    return fl.fedavg(fl.custom(fns.model(), fn)).client


def round_tasks(round_: int, clients: list[int]) -> list[Task]:
    params = fns.model().init(round_)
    params.flags.writeable = False
    return [TrainTask(c, Broadcast(round_, params, 100 * round_ + c)) for c in clients]


def assert_good_replies_match(got: list[Reply], tasks: list[Task]) -> None:
    """Every reply of a well-behaved client equals the in-process one exactly."""
    expected = InProcessExecutor(program(fns.one_step), DATA.clients).run(tasks)
    for task, want, have in zip(tasks, expected, got, strict=True):
        if task.client == fns.BAD_CLIENT:
            continue
        assert isinstance(want, ClientResult)
        assert isinstance(have, ClientResult), have
        np.testing.assert_array_equal(have.update, want.update)
        assert have.metrics == want.metrics == {"client": float(task.client)}


def bad_worker(pool: PoolExecutor) -> int:
    return pool.assignment[fns.BAD_CLIENT]


def test_a_raising_client_is_rejected_with_its_traceback() -> None:
    with PoolExecutor(program(fns.raises_for_bad_client), DATA.clients, workers=2) as pool:
        pids = pool.worker_pids
        history = fl.simulate(
            fl.fedavg(fl.custom(fns.model(), fns.raises_for_bad_client)),
            DATA,
            rounds=2,
            cohort=len(DATA),
            executor=pool,
        )
        assert pool.worker_pids == pids, "an exception must not cost the worker its life"
    for record in history.records:
        assert record.accepted == tuple(GOOD)
        [rejection] = record.rejected
        assert rejection.client == fns.BAD_CLIENT
        assert rejection.reason.startswith(
            f"client failed: ValueError: client {fns.BAD_CLIENT} refuses to train\n"
        )
        assert "Traceback (most recent call last)" in rejection.reason
        assert "raises_for_bad_client" in rejection.reason


@pytest.mark.parametrize(
    ("fn", "reason"),
    [
        (fns.hangs_for_bad_client, "timed out after 1s"),
        (fns.exits_for_bad_client, "worker process died, exit code 3"),
        (fns.killed_for_bad_client, "worker process died, killed by SIGKILL (exit code -9)"),
    ],
    ids=["hang", "os._exit", "sigkill"],
)
def test_a_lost_worker_fails_one_task_and_is_replaced(fn: TrainFunction, reason: str) -> None:
    with PoolExecutor(program(fn), DATA.clients, workers=2, task_timeout=1.0) as pool:
        pids = pool.worker_pids
        # The bad client runs first on its worker, so clients queued behind it must be resent.
        tasks = round_tasks(0, [fns.BAD_CLIENT, *GOOD])
        got = pool.run(tasks)
        assert got[0] == Failure(reason)
        assert_good_replies_match(got, tasks)
        replaced = bad_worker(pool)
        assert pool.worker_pids[replaced] != pids[replaced]
        assert pool.worker_pids[1 - replaced] == pids[1 - replaced]

        next_round = round_tasks(1, GOOD)
        assert_good_replies_match(pool.run(next_round), next_round)


def test_a_worker_killed_between_rounds_is_replaced_without_failing_anyone() -> None:
    with PoolExecutor(program(fns.one_step), DATA.clients, workers=2) as pool:
        first = round_tasks(0, GOOD)
        assert_good_replies_match(pool.run(first), first)
        victim = pool.worker_pids[0]
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        assert wait([pool._resources.workers[0].process.sentinel], timeout=10)
        every = round_tasks(1, [c.client_id for c in DATA.clients])
        got = pool.run(every)
        assert all(isinstance(r, ClientResult) for r in got), got
        assert pool.worker_pids[0] != victim
