"""The Ray executor against a real local Ray instance (two CPUs, started once for the module).

It must give exactly the in-process executor's results (parameters bit for bit, metrics, kept
client states), and a misbehaving client must cost only its own task: a raising client is
rejected with its traceback, an actor that dies fails the task it ran and is replaced.

The client functions live in ``client_fns``; actors import it through the PYTHONPATH the
fixture gives Ray's workers.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import client_fns as fns  # noqa: E402
from client_fns import assert_same_replies, scaffold_tasks, softmax_sgd  # noqa: E402

import fedloom as fl  # noqa: E402
from fedloom.client.work import TrainFunction  # noqa: E402
from fedloom.core.messages import Broadcast, ClientResult  # noqa: E402
from fedloom.data import FederatedData  # noqa: E402
from fedloom.engine.tasks import EvaluateTask, Failure, Reply, Task, TrainTask  # noqa: E402
from fedloom.executors import InProcessExecutor  # noqa: E402
from fedloom.executors.ray_executor import RayExecutor  # noqa: E402

ROUNDS = 3
COHORT = 6
MARKED = fns.marked_clients()
GOOD = [c.client_id for c in MARKED.clients if c.client_id != fns.BAD_CLIENT]
RAY_MEMORY_MONITOR = "RAY_memory_monitor_refresh_ms"


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """Ray on two CPUs for the whole module; its memory monitor is off, so that other programs
    using this machine's memory cannot get the tests' actors killed."""
    if ray.is_initialized():
        ray.shutdown()
    path = os.pathsep.join(
        p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")) if p
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(RAY_MEMORY_MONITOR, "0")
        ray.init(
            address="local",
            num_cpus=2,
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=200 * 1024 * 1024,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def digits() -> FederatedData:
    return fl.data.digits().split(fl.data.dirichlet(0.5), clients=12, seed=0)


def torch_mlp() -> fl.Algorithm:
    from fedloom.torch import local_sgd, mlp

    return fl.fedavg(local_sgd(mlp(64, [16], 10), lr=0.1, epochs=1, batch_size=16))


RECIPES: dict[str, Callable[[], fl.Algorithm]] = {
    "fedavg": lambda: fl.fedavg(softmax_sgd()),
    "scaffold": lambda: fl.scaffold(softmax_sgd()),
    "fedavg-torch-mlp": torch_mlp,
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_simulation_matches_in_process_bit_for_bit(recipe: str, digits: FederatedData) -> None:
    if recipe.endswith("torch-mlp"):
        pytest.importorskip("torch")
    algorithm = RECIPES[recipe]()
    reference = InProcessExecutor(algorithm.client, digits.clients)
    expected = fl.simulate(algorithm, digits, rounds=ROUNDS, cohort=COHORT, executor=reference)
    with RayExecutor(algorithm.client, digits.clients, actors=2) as executor:
        got = fl.simulate(algorithm, digits, rounds=ROUNDS, cohort=COHORT, executor=executor)
    np.testing.assert_array_equal(got.params, expected.params)
    assert [r.cohort for r in got.records] == [r.cohort for r in expected.records]
    assert [r.accepted for r in got.records] == [r.accepted for r in expected.records]
    assert [r.metrics for r in got.records] == [r.metrics for r in expected.records]
    assert got.records[-1].accepted, "the comparison needs clients that trained"
    assert executor.states.keys() == reference.states.keys()
    for client, state in reference.states.items():
        assert executor.states[client].keys() == state.keys()
        for name, vector in state.items():
            np.testing.assert_array_equal(executor.states[client][name], vector)
    if recipe == "scaffold":
        assert reference.states, "SCAFFOLD clients keep a control variate between rounds"


@pytest.fixture
def scaffold_executor(digits: FederatedData) -> Iterator[RayExecutor]:
    with RayExecutor(fl.scaffold(softmax_sgd()).client, digits.clients, actors=2) as executor:
        yield executor


def test_a_client_listed_twice_trains_from_its_own_new_state(
    digits: FederatedData, scaffold_executor: RayExecutor
) -> None:
    tasks = scaffold_tasks([1, 2, 1, 5, 1])
    reference = InProcessExecutor(fl.scaffold(softmax_sgd()).client, digits.clients)
    scaffold_executor.states.clear()
    expected, got = reference.run(tasks), scaffold_executor.run(tasks)
    assert_same_replies(expected, got)
    assert isinstance(got[0], ClientResult)
    assert isinstance(got[4], ClientResult)
    assert not np.array_equal(got[0].extras["control"], got[4].extras["control"])
    np.testing.assert_array_equal(
        scaffold_executor.states[1]["control"], reference.states[1]["control"]
    )
    assert got[0].update.flags.writeable, "replies are the driver's own arrays"


def test_unknown_clients_and_evaluations_answer_as_in_process(
    digits: FederatedData, scaffold_executor: RayExecutor
) -> None:
    params = fl.SoftmaxRegression(64, 10).init(1)
    tasks: list[Task] = [
        EvaluateTask(0, params),
        *scaffold_tasks([99]),
        EvaluateTask(11, params),
        EvaluateTask(-1, params),
    ]
    reference = InProcessExecutor(fl.scaffold(softmax_sgd()).client, digits.clients)
    got = scaffold_executor.run(tasks)
    assert got == reference.run(tasks)
    assert got[1] == Failure("unknown client 99")
    assert scaffold_executor.run([]) == []


def test_a_round_puts_its_vectors_in_the_object_store_once(
    scaffold_executor: RayExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    put: list[Any] = []
    real_put = ray.put

    def recording(value: Any, **kwargs: Any) -> Any:
        put.append(value)
        return real_put(value, **kwargs)

    monkeypatch.setattr(ray, "put", recording)
    scaffold_executor.states.clear()
    tasks = scaffold_tasks(list(range(12)))
    scaffold_executor.run(tasks)
    [shipped] = put
    buffers: list[pickle.PickleBuffer] = []
    pickle.dumps(shipped, protocol=5, buffer_callback=buffers.append)
    # The parameters and the server control variate, once each, for all twelve clients.
    assert len(buffers) == 2
    assert isinstance(tasks[0], TrainTask)
    assert sum(len(b.raw()) for b in buffers) == 2 * tasks[0].broadcast.params.nbytes


def marked_program(fn: TrainFunction) -> fl.algorithms.ClientProgram:
    return fl.fedavg(fl.custom(fns.model(), fn)).client


def round_tasks(round_: int, clients: list[int]) -> list[Task]:
    params = fns.model().init(round_)
    params.flags.writeable = False
    return [TrainTask(c, Broadcast(round_, params, 100 * round_ + c)) for c in clients]


def assert_good_replies_match(got: list[Reply], tasks: list[Task]) -> None:
    """Every reply of a well-behaved client equals the in-process one exactly."""
    expected = InProcessExecutor(marked_program(fns.one_step), MARKED.clients).run(tasks)
    for task, want, have in zip(tasks, expected, got, strict=True):
        if task.client == fns.BAD_CLIENT:
            continue
        assert isinstance(want, ClientResult)
        assert isinstance(have, ClientResult), have
        np.testing.assert_array_equal(have.update, want.update)
        assert have.metrics == want.metrics == {"client": float(task.client)}


def test_a_raising_client_is_rejected_with_its_traceback() -> None:
    algorithm = fl.fedavg(fl.custom(fns.model(), fns.raises_for_bad_client))
    with RayExecutor(algorithm.client, MARKED.clients, actors=2) as executor:
        history = fl.simulate(algorithm, MARKED, rounds=2, cohort=len(MARKED), executor=executor)
    for record in history.records:
        assert record.accepted == tuple(GOOD)
        [rejection] = record.rejected
        assert rejection.client == fns.BAD_CLIENT
        assert rejection.reason.startswith(
            f"client failed: ValueError: client {fns.BAD_CLIENT} refuses to train\n"
        )
        assert "Traceback (most recent call last)" in rejection.reason
        assert "raises_for_bad_client" in rejection.reason


@pytest.mark.parametrize("first", [True, False], ids=["bad-first", "bad-among-others"])
def test_a_dead_actor_fails_the_task_that_killed_it_and_is_replaced(first: bool) -> None:
    program = marked_program(fns.exits_for_bad_client)
    order = [fns.BAD_CLIENT, *GOOD] if first else [*GOOD[:3], fns.BAD_CLIENT, *GOOD[3:]]
    with RayExecutor(program, MARKED.clients, actors=2) as executor:
        tasks = round_tasks(0, order)
        got = executor.run(tasks)
        [dead] = [r for t, r in zip(tasks, got, strict=True) if t.client == fns.BAD_CLIENT]
        assert isinstance(dead, Failure)
        assert dead.reason.startswith(
            f"ray actor {executor.assignment[fns.BAD_CLIENT]} died while running this task "
            "(ActorDiedError: "
        )
        assert_good_replies_match(got, tasks)

        next_round = round_tasks(1, GOOD)
        assert_good_replies_match(executor.run(next_round), next_round)
        # The replacement holds the bad client too, and dies for it in turn.
        again = executor.run(round_tasks(2, [fns.BAD_CLIENT]))
        assert isinstance(again[0], Failure)
        assert "died while running this task" in again[0].reason


def test_an_actor_lost_once_costs_no_task() -> None:
    program = marked_program(fns.exits_once_for_bad_client)
    seed = int.from_bytes(os.urandom(6), "little")
    tasks: list[Task] = [
        TrainTask(c, Broadcast(0, fns.model().init(0), seed)) for c in [*GOOD[:2], fns.BAD_CLIENT]
    ]
    try:
        with RayExecutor(program, MARKED.clients, actors=2) as executor:
            got = executor.run(tasks)
        assert fns.once_marker(seed).exists(), "the actor was lost once"
    finally:
        fns.once_marker(seed).unlink(missing_ok=True)
    expected = InProcessExecutor(marked_program(fns.one_step), MARKED.clients).run(tasks)
    assert_same_replies(expected, got)


def test_close_kills_the_actors_but_not_a_ray_it_did_not_start() -> None:
    executor = RayExecutor(marked_program(fns.one_step), MARKED.clients, actors=2)
    actors = list(executor._resources.actors)
    assert ray.get([a.ready.remote() for a in actors])
    executor.close()
    assert executor.closed
    for actor in actors:
        assert _dies_within(actor, seconds=30)
    assert ray.is_initialized()
    with pytest.raises(RuntimeError, match="closed"):
        executor.run([])
    executor.close()  # a second close does nothing


def _dies_within(actor: object, *, seconds: float) -> bool:
    """Whether ``actor`` stops answering within ``seconds``: ``ray.kill`` is asynchronous, so a
    call sent just after it may still be served."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ready.remote(), timeout=5)  # type: ignore[attr-defined]
        except ray.exceptions.RayActorError:
            return True
        except ray.exceptions.GetTimeoutError:
            continue
        time.sleep(0.2)
    return False


def test_secure_aggregation_matches_in_process_bit_for_bit(digits: FederatedData) -> None:
    """Training on the actors, the SecAgg+ client sessions in the driver: the exact sums, so
    the in-process executor's parameters bit for bit."""
    algorithm = fl.fedavg(softmax_sgd()).with_stages(fl.secure_sum(clip=50.0))
    run = {"rounds": 2, "cohort": COHORT, "seed": 0, "federated_eval": False}
    with RayExecutor(algorithm.client, digits.clients, actors=2) as executor:
        got = fl.simulate(algorithm, digits, executor=executor, **run)
    expected = fl.simulate(algorithm, digits, executor="inprocess", **run)
    assert all(r.aborted is None for r in got.records)
    assert [r.accepted for r in got.records] == [r.cohort for r in got.records]
    np.testing.assert_array_equal(got.params, expected.params)
