"""Conformance checks for stages, reducers and executors, as scikit-learn's ``check_estimator``.

Anyone who writes a stage, a reducer or an executor can run these on it; every built-in one
passes them (``tests/test_conformance.py``). Each function raises :class:`ContractError` (an
``AssertionError``) naming the broken rule and returns nothing when all hold. They need no
test framework::

    from fedloom.testing import check_reducer
    check_reducer(MyReducer())

The rules are the contracts the engine relies on (DESIGN.md, "Parts"):

- a **reducer** maps ``[clients, dims]`` float32 updates and positive weights to one finite
  float32 vector, leaves its inputs alone, ignores the order of the clients, returns the common
  update when all clients agree, refuses malformed cohorts with ``ValueError``, and if it says
  it is ``linear`` it is (additive and homogeneous), as secure aggregation assumes;
- a **stage** is configured by a frozen dataclass, has a name and traits, makes its server state
  with ``init``, sends numbers through ``config``, and its client and server halves return
  float32 vectors of the input's shape with float measurements, deterministically for a given
  random generator, without touching their inputs (a secure-sum stage's server half is the
  secure aggregation protocol, which the engine runs itself: only its client half is checked);
- an **executor** answers every task, in order, as the in-process executor does: the same
  results for the same broadcasts, a :class:`~fedloom.engine.Failure` (not an exception) for an
  unknown client or a client whose code raises, a client listed twice trains twice in order,
  and the state it keeps between rounds is the one the in-process executor keeps; one that
  also streams (``run_each``) hands every task's reply over exactly once, at its position, with
  the same replies and state as by ``run``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from fedloom.algorithms import ClientProgram
from fedloom.client import LocalSGD
from fedloom.client.local_sgd import CONTROL
from fedloom.core.layout import Field, Layout
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.data import ClientData
from fedloom.engine.tasks import (
    EvaluateTask,
    Evaluation,
    Executor,
    Failure,
    Reply,
    StreamingExecutor,
    TrainTask,
)
from fedloom.executors.inprocess import InProcessExecutor
from fedloom.linear import SoftmaxRegression
from fedloom.reducers import Reducer
from fedloom.stages import Stage, StageTraits

__all__ = ["ContractError", "check_executor", "check_reducer", "check_stage"]


class ContractError(AssertionError):
    """A stage, reducer or executor breaks a rule of its contract; the message names it."""


def _require(ok: object, rule: str) -> None:
    if not ok:
        raise ContractError(rule)


def check_reducer(reducer: Reducer, *, dims: int = 7, clients: int = 9, seed: int = 0) -> None:
    """Check ``reducer`` against the reducer contract on random cohorts of ``clients``.

    Robust reducers that need more clients than a given number of attackers should be built for
    a cohort of this size (9 by default) before they are checked.
    """
    name = type(reducer).__name__
    rng = np.random.default_rng(seed)
    updates = rng.normal(size=(clients, dims)).astype(np.float32)
    weights = rng.uniform(1, 50, size=clients).round()
    kept_updates, kept_weights = updates.copy(), weights.copy()
    out = np.asarray(reducer(updates, weights))
    _require(out.shape == (dims,), f"{name} must return shape ({dims},), got {out.shape}")
    _require(out.dtype == np.float32, f"{name} must return float32, got {out.dtype}")
    _require(np.all(np.isfinite(out)), f"{name} returned non-finite values for finite updates")
    _require(
        np.array_equal(updates, kept_updates) and np.array_equal(weights, kept_weights),
        f"{name} modified the updates or weights it was given",
    )
    order = rng.permutation(clients)
    _close(reducer(updates[order], weights[order]), out, f"{name} depends on the clients' order")
    common = rng.normal(size=dims).astype(np.float32)
    agreed = reducer(np.tile(common, (clients, 1)), weights)
    _close(agreed, common, f"{name} must return the common update when every client agrees")
    for bad_updates, bad_weights, why in (
        (np.empty((0, dims), np.float32), np.empty(0), "an empty cohort"),
        (updates, weights[:-1], "weights of the wrong length"),
        (updates, -weights, "negative weights"),
    ):
        try:
            reducer(bad_updates, bad_weights)
        except ValueError:
            continue
        raise ContractError(f"{name} must refuse {why} with ValueError")
    if reducer.linear:
        other = rng.normal(size=(clients, dims)).astype(np.float32)
        _close(
            reducer(updates + other, weights),
            out + reducer(other, weights),
            f"{name} says it is linear, but reduce(a + b) != reduce(a) + reduce(b)",
        )
        _close(
            reducer(np.float32(3) * updates, weights),
            np.float32(3) * out,
            f"{name} says it is linear, but reduce(3a) != 3 reduce(a)",
        )


def check_stage(stage: Stage, *, layout: Layout | None = None, seed: int = 0) -> None:
    """Check ``stage`` against the stage contract on a random update of ``layout``'s size."""
    layout = layout or Layout((Field("w", (3, 4)), Field("b", (4,))))
    name = type(stage).__name__
    params = getattr(type(stage), "__dataclass_params__", None)
    _require(
        dataclasses.is_dataclass(stage) and params is not None and params.frozen,
        f"{name} must be configured by a frozen dataclass (printable, sendable to clients)",
    )
    _require(isinstance(stage.name, str) and stage.name, f"{name}.name must be a non-empty str")
    _require(isinstance(stage.traits, StageTraits), f"{name}.traits must be a StageTraits")
    state = stage.init(layout)
    config = stage.config(state)
    _require(isinstance(config, Mapping), f"{name}.config must return a mapping")
    _require(
        all(isinstance(k, str) and isinstance(v, float | int) for k, v in config.items()),
        f"{name}.config must map names to numbers, got {dict(config)!r}",
    )
    update = np.random.default_rng(seed).normal(size=layout.size).astype(np.float32)
    kept = update.copy()
    first, metrics = stage.client(update, config, np.random.default_rng(seed))
    _require(np.array_equal(update, kept), f"{name}.client modified the update it was given")
    _vector(first, layout.size, f"{name}.client")
    _metrics(metrics, f"{name}.client")
    again, _ = stage.client(update, config, np.random.default_rng(seed))
    _require(
        np.array_equal(first, again),
        f"{name}.client must be deterministic given its random generator",
    )
    if stage.traits.secure_sum:
        # Its server half is the secure aggregation protocol itself, which the engine runs in
        # rounds of its own (fedloom.engine.secure_rounds); tests/secagg checks that protocol.
        return
    aggregate = np.asarray(first).copy()
    out, _state, server_metrics = stage.server(aggregate, state, [metrics, metrics])
    _require(np.array_equal(aggregate, first), f"{name}.server modified the aggregate")
    _vector(out, layout.size, f"{name}.server")
    _metrics(server_metrics, f"{name}.server")


def check_executor(
    make: Callable[[ClientProgram, Sequence[ClientData]], Executor],
    *,
    program: ClientProgram | None = None,
    seed: int = 0,
) -> None:
    """Check the executor ``make(program, clients)`` builds against the in-process executor on
    a small population, with a client whose code raises and a client that does not exist.

    ``program`` must train a model of 4 features and 3 classes and keep SCAFFOLD's control
    variate (``control_variates=True``); by default, local SGD on softmax regression. Pass
    another to reach an executor's special paths (a PyTorch MLP for the vectorized one).
    """
    default, clients = _population(seed)
    program = program or default
    tasks: list[TrainTask | EvaluateTask] = [
        TrainTask(c.client_id, _broadcast(program, c.client_id, seed)) for c in clients
    ]
    tasks.insert(2, TrainTask(1, _broadcast(program, 1, seed + 1)))  # client 1 trains twice
    tasks.append(TrainTask(len(clients) + 5, _broadcast(program, 0, seed)))  # unknown client
    tasks.append(EvaluateTask(0, program.work.model.init(seed)))
    reference = InProcessExecutor(program, clients)
    expected = reference.run(tasks)
    executor = make(program, clients)
    _same_run(executor, tasks, expected, reference, streamed=False)
    if isinstance(executor, StreamingExecutor):
        _same_run(make(program, clients), tasks, expected, reference, streamed=True)


def _same_run(
    executor: Executor,
    tasks: Sequence[TrainTask | EvaluateTask],
    expected: Sequence[Reply],
    reference: InProcessExecutor,
    *,
    streamed: bool,
) -> None:
    """``executor`` answers ``tasks`` as the reference did, by ``run`` or by ``run_each``, and
    is left keeping the reference's client state."""
    name = type(executor).__name__
    try:
        if streamed:
            assert isinstance(executor, StreamingExecutor)
            name += ".run_each"
            handed: dict[int, Reply] = {}

            def consume(position: int, reply: Reply) -> None:
                _require(
                    0 <= position < len(tasks) and position not in handed,
                    f"{name} handed over position {position} twice or out of range",
                )
                handed[position] = reply

            executor.run_each(tasks, consume)
            _require(
                sorted(handed) == list(range(len(tasks))),
                f"{name} must hand over every task once: {len(tasks)} tasks, positions "
                f"{sorted(handed)}",
            )
            replies = [handed[i] for i in range(len(tasks))]
        else:
            replies = executor.run(tasks)
    finally:
        close = getattr(executor, "close", None)
        if callable(close):
            close()
    _require(
        len(replies) == len(tasks),
        f"{name} must answer every task: {len(tasks)} tasks, {len(replies)} replies",
    )
    for position, (want, got) in enumerate(zip(expected, replies, strict=True)):
        where = f"{name}: reply {position} (task {tasks[position]!r:.60})"
        _same_reply(want, got, where)
    states = getattr(executor, "states", None)
    if states is not None:
        _require(
            sorted(states) == sorted(reference.states),
            f"{name} keeps state for clients {sorted(states)}, expected {sorted(reference.states)}",
        )
        for client, kept in reference.states.items():
            for key, vector in kept.items():
                _close(states[client].get(key, np.nan), vector, f"{name}: client {client}'s {key}")


def _same_reply(want: Reply, got: Reply, where: str) -> None:
    _require(
        type(got) is type(want),
        f"{where} should be a {type(want).__name__}, got {type(got).__name__}: {got!r:.200}",
    )
    if isinstance(want, Failure):
        return
    if isinstance(want, Evaluation):
        assert isinstance(got, Evaluation)
        _require(got.num_examples == want.num_examples, f"{where}: wrong num_examples")
        for key, value in want.metrics.items():
            _require(np.isclose(got.metrics.get(key, np.nan), value), f"{where}: metric {key}")
        return
    assert isinstance(want, ClientResult) and isinstance(got, ClientResult)
    _require(got.num_examples == want.num_examples, f"{where}: wrong num_examples")
    _close(got.update, want.update, f"{where}: the update differs from the in-process one")
    _require(set(got.extras) == set(want.extras), f"{where}: extras {sorted(got.extras)}")


def _population(seed: int) -> tuple[ClientProgram, list[ClientData]]:
    rng = np.random.default_rng(seed)
    clients = []
    for k in range(5):
        n = 6 + 3 * k
        x = rng.normal(size=(n, 4)).astype(np.float32)
        y = rng.integers(0, 3, n)
        clients.append(ClientData(k, x, y, x[:2], y[:2]))
    # SCAFFOLD's client work keeps a control variate between rounds, so a client that trains
    # twice must train in order, from the state its first task left.
    work = LocalSGD(
        SoftmaxRegression(features=4, classes=3),
        lr=0.1,
        epochs=2,
        batch_size=4,
        control_variates=True,
    )
    # Client 3 holds a label outside the 3 classes: its training raises, and must fail alone.
    broken = clients[3]
    labels = broken.y_train.copy()
    labels[0] = 7
    clients[3] = ClientData(3, broken.x_train, labels, broken.x_test, broken.y_test)
    return ClientProgram(work), clients


def _broadcast(program: ClientProgram, client: int, seed: int) -> Broadcast:
    params = program.work.model.init(seed)
    control = np.random.default_rng([seed, client]).normal(size=params.size).astype(np.float32)
    return Broadcast(0, params, seed * 1000 + client, extras={CONTROL: control * 0.1})


def _close(got: npt.ArrayLike, want: npt.ArrayLike, rule: str) -> None:
    a, b = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    _require(a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5), rule)


def _vector(value: object, size: int, where: str) -> None:
    array = np.asarray(value)
    _require(array.shape == (size,), f"{where} must return a vector of shape ({size},)")
    _require(array.dtype == np.float32, f"{where} must return float32, got {array.dtype}")


def _metrics(metrics: object, where: str) -> None:
    _require(
        isinstance(metrics, Mapping)
        and all(isinstance(k, str) and isinstance(v, float | int) for k, v in metrics.items()),
        f"{where} must report its measurements as a mapping of names to numbers",
    )
