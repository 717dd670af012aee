"""A RayExecutor that starts Ray shuts it down when the last executor sharing it closes, and
bad arguments are refused before any Ray starts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

ray = pytest.importorskip("ray")

import fedloom as fl  # noqa: E402
from fedloom.core.messages import Broadcast, ClientResult  # noqa: E402
from fedloom.data import ClientData, FederatedData  # noqa: E402
from fedloom.engine.tasks import TrainTask  # noqa: E402
from fedloom.executors.ray_executor import RayExecutor  # noqa: E402

MODEL = fl.SoftmaxRegression(64, 10)
RAY_MEMORY_MONITOR = "RAY_memory_monitor_refresh_ms"


@pytest.fixture(scope="module")
def digits() -> FederatedData:
    return fl.data.digits().split(fl.data.iid(), clients=4, seed=0)


@pytest.fixture
def no_ray() -> Iterator[None]:
    """No Ray before the test, none left after it, and no memory monitor killing actors
    because of other programs on this machine."""
    if ray.is_initialized():
        ray.shutdown()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(RAY_MEMORY_MONITOR, "0")
        yield
        if ray.is_initialized():
            ray.shutdown()


def program() -> fl.algorithms.ClientProgram:
    return fl.fedavg(fl.local_sgd(MODEL, lr=0.1, epochs=1, batch_size=16)).client


@pytest.mark.usefixtures("no_ray")
def test_the_last_executor_to_close_shuts_down_the_ray_it_started(
    digits: FederatedData,
) -> None:
    first = RayExecutor(program(), digits.clients, actors=1)
    assert ray.is_initialized()
    assert ray.cluster_resources()["CPU"] >= 1
    with RayExecutor(program(), digits.clients[:2], actors=1) as second:
        first.close()
        assert ray.is_initialized(), "the second executor still uses this Ray"
        [reply] = second.run([TrainTask(1, Broadcast(0, MODEL.init(0), 5))])
        assert isinstance(reply, ClientResult)
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"actors": 0}, "actors must be a positive integer or None, got 0"),
        ({"actors": 1.5}, "actors must be a positive integer or None, got 1.5"),
        ({"num_cpus_per_actor": 0}, "num_cpus_per_actor must be a positive number, got 0"),
        ({"address": 6379}, "address must be None"),
    ],
)
def test_bad_arguments_are_refused_before_ray_starts(
    kwargs: dict[str, object], message: str, digits: FederatedData
) -> None:
    started = ray.is_initialized()
    with pytest.raises(ValueError, match=message):
        RayExecutor(program(), digits.clients, **kwargs)  # type: ignore[arg-type]
    assert ray.is_initialized() == started


def test_client_ids_must_be_unique(digits: FederatedData) -> None:
    clients: list[ClientData] = [digits.clients[0], digits.clients[0]]
    with pytest.raises(ValueError, match="client ids must be unique"):
        RayExecutor(program(), clients)
