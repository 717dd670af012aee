"""Client functions and helpers shared by the process-pool and Ray tests, at module level so
spawned workers and Ray actors import them.

Each client's feature column 0 holds its own id (see :func:`marked_clients`), which is how a
function recognises the client it is meant to misbehave for.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

import fedloom as fl
from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.data import ClientData, FederatedData
from fedloom.engine.tasks import Reply, Task, TrainTask

BAD_CLIENT = 3
FEATURES = 4
CLASSES = 2


def marked_clients(count: int = 6, examples: int = 20) -> FederatedData:
    """``count`` small clients whose every row starts with the client's id."""
    rng = np.random.default_rng(0)
    clients = []
    for client in range(count):
        x = rng.normal(size=(examples, FEATURES)).astype(np.float32)
        x[:, 0] = client
        y = rng.integers(0, CLASSES, size=examples)
        clients.append(ClientData(client, x[:15], y[:15], x[15:], y[15:]))
    return FederatedData("marked", tuple(clients), x[:0], y[:0], CLASSES)


def model() -> fl.SoftmaxRegression:
    return fl.SoftmaxRegression(features=FEATURES, classes=CLASSES)


def client_of(x: np.ndarray) -> int:
    return int(x[0, 0])


def one_step(
    params: Vector, x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[Vector, Mapping[str, float]]:
    """A deterministic gradient step on a random half of the data."""
    rows = np.random.default_rng(seed).permutation(len(x))[: len(x) // 2]
    _, grad = model().loss_and_grad(params, x[rows], y[rows])
    return (params - np.float32(0.5) * grad).astype(np.float32), {"client": float(client_of(x))}


def raises_for_bad_client(
    params: Vector, x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[Vector, Mapping[str, float]]:
    if client_of(x) == BAD_CLIENT:
        raise ValueError(f"client {BAD_CLIENT} refuses to train")
    return one_step(params, x, y, seed)


def hangs_for_bad_client(
    params: Vector, x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[Vector, Mapping[str, float]]:
    if client_of(x) == BAD_CLIENT:
        time.sleep(120)
    return one_step(params, x, y, seed)


def exits_for_bad_client(
    params: Vector, x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[Vector, Mapping[str, float]]:
    if client_of(x) == BAD_CLIENT:
        os._exit(3)
    return one_step(params, x, y, seed)


def killed_for_bad_client(
    params: Vector, x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[Vector, Mapping[str, float]]:
    if client_of(x) == BAD_CLIENT:
        os.kill(os.getpid(), signal.SIGKILL)
    return one_step(params, x, y, seed)


def once_marker(seed: int) -> Path:
    return Path(tempfile.gettempdir()) / f"fedloom-ray-test-exited-{seed}"


def exits_once_for_bad_client(
    params: Vector, x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[Vector, Mapping[str, float]]:
    """Kills its process the first time the bad client trains with ``seed``, never again: a loss
    that does not recur, as when memory runs short because of some other program."""
    if client_of(x) == BAD_CLIENT and not once_marker(seed).exists():
        once_marker(seed).touch()
        os._exit(1)
    return one_step(params, x, y, seed)


def softmax_sgd() -> fl.LocalSGD:
    """The local training the pool and Ray equivalence tests share."""
    return fl.local_sgd(fl.SoftmaxRegression(64, 10), lr=0.1, epochs=2, batch_size=16)


def scaffold_tasks(clients: list[int]) -> list[Task]:
    """Round-0 SCAFFOLD training tasks for ``clients`` (repeats allowed), one shared broadcast."""
    algorithm = fl.scaffold(softmax_sgd())
    params = algorithm.work.model.init(0)
    params.flags.writeable = False
    extras = algorithm.correction.init(params) if algorithm.correction else {}
    broadcast = Broadcast(0, params, 7, extras)
    return [TrainTask(c, broadcast) for c in clients]


def assert_same_replies(expected: Sequence[Reply], got: Sequence[Reply]) -> None:
    """Replies equal to the last bit: types, updates, extras, counts and metrics."""
    assert [type(r) for r in got] == [type(r) for r in expected]
    for want, have in zip(expected, got, strict=True):
        if isinstance(want, ClientResult):
            assert isinstance(have, ClientResult)
            np.testing.assert_array_equal(have.update, want.update)
            assert have.extras.keys() == want.extras.keys()
            for name in want.extras:
                np.testing.assert_array_equal(have.extras[name], want.extras[name])
            assert (have.num_examples, have.metrics) == (want.num_examples, want.metrics)
        else:
            assert have == want
