"""Every built-in stage, reducer and executor passes fedloom.testing, and the kit catches
implementations that break the contract."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pytest

import fedloom as fl
from fedloom import robust
from fedloom.algorithms import ClientProgram
from fedloom.data import ClientData
from fedloom.engine.tasks import Executor, Failure, Reply, Task
from fedloom.executors import InProcessExecutor, make_executor
from fedloom.executors.vectorized import VectorizedExecutor
from fedloom.reducers import WeightedMean
from fedloom.stages import ClipByNorm
from fedloom.testing import ContractError, check_executor, check_reducer, check_stage

REDUCERS = {
    "weighted_mean": fl.reducers.weighted_mean(),
    "mean": fl.reducers.mean(),
    "median": robust.median(attackers=2),
    "trimmed_mean": robust.trimmed_mean(attackers=2),
    "krum": robust.krum(attackers=2),
    "multi_krum": robust.multi_krum(attackers=2),
    "bulyan": robust.bulyan(attackers=1),
    "geometric_median": robust.geometric_median(),
    # Clipping reducers shrink an over-large update on purpose: checked with a bound above the
    # random cohort's norms, where the common update must come back whole.
    "centered_clipping": robust.centered_clipping(radius=100.0, attackers=2),
    "norm_bounded_mean": robust.norm_bounded_mean(bound=100.0),
}
STAGES = {"clip": fl.clip_by_norm(0.5), "secure_sum": fl.secure_sum(clip=1.0)}


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_built_in_reducers_pass(name: str) -> None:
    check_reducer(REDUCERS[name])


@pytest.mark.parametrize("name", sorted(STAGES))
def test_built_in_stages_pass(name: str) -> None:
    check_stage(STAGES[name])


@pytest.mark.parametrize("name", ["inprocess", "vectorized", "process", "ray"])
def test_built_in_executors_pass(name: str) -> None:
    check_executor(lambda program, clients: make_executor(name, program, clients))


def test_the_vectorized_executor_passes_on_its_batched_path() -> None:
    work = replace(
        fl.torch.local_sgd(fl.torch.mlp(4, [5], 3), lr=0.1, epochs=2, batch_size=4),
        control_variates=True,
    )
    made: list[VectorizedExecutor] = []

    def make(program: ClientProgram, clients: Sequence[ClientData]) -> Executor:
        made.append(VectorizedExecutor(program, clients))
        return made[-1]

    check_executor(make, program=ClientProgram(work))
    assert made[0].vectorized
    assert made[0].batched_tasks > 0


@dataclass(frozen=True)
class MedianClaimingLinear:
    linear: bool = True

    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float32]:
        if updates.shape[0] == 0 or weights.shape != (updates.shape[0],) or np.any(weights <= 0):
            raise ValueError("bad cohort")
        return np.median(updates, axis=0).astype(np.float32)


@dataclass(frozen=True)
class FirstClient(WeightedMean):
    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float32]:
        super().__call__(updates, weights)
        return updates[0].copy()


@dataclass(frozen=True)
class Trusting(WeightedMean):
    def __call__(
        self, updates: npt.NDArray[np.float32], weights: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float32]:
        total = np.abs(weights) @ updates.astype(np.float64) if len(weights) else updates.sum(0)
        return (total / max(np.abs(weights).sum(), 1.0)).astype(np.float32)


@pytest.mark.parametrize(
    ("reducer", "rule"),
    [
        (MedianClaimingLinear(), "says it is linear"),
        (FirstClient(), "order"),
        (Trusting(), "must refuse"),
    ],
)
def test_broken_reducers_fail_with_the_rule_they_break(reducer: object, rule: str) -> None:
    with pytest.raises(ContractError, match=rule):
        check_reducer(reducer)  # type: ignore[arg-type]


@dataclass(frozen=True)
class InPlaceClip(ClipByNorm):
    def client(self, update, config, rng):  # type: ignore[no-untyped-def]
        update *= np.float32(0.5)
        return update, {}


@dataclass(frozen=True)
class Unseeded(ClipByNorm):
    def client(self, update, config, rng):  # type: ignore[no-untyped-def]
        noise = np.random.default_rng().normal(size=update.shape).astype(np.float32)
        return update + noise, {}


class NotADataclass:
    name = "plain"
    traits = ClipByNorm(1.0).traits


@pytest.mark.parametrize(
    ("stage", "rule"),
    [
        (InPlaceClip(1.0), "modified the update"),
        (Unseeded(1.0), "deterministic"),
        (NotADataclass(), "frozen dataclass"),
    ],
)
def test_broken_stages_fail_with_the_rule_they_break(stage: object, rule: str) -> None:
    with pytest.raises(ContractError, match=rule):
        check_stage(stage)  # type: ignore[arg-type]


class Reversed:
    def __init__(self, program: ClientProgram, clients: Sequence[ClientData]) -> None:
        self.inner = InProcessExecutor(program, clients)

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        return self.inner.run(tasks[::-1])[::-1]


class Raising:
    def __init__(self, program: ClientProgram, clients: Sequence[ClientData]) -> None:
        self.inner = InProcessExecutor(program, clients, catch=False)

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        return self.inner.run(tasks)


class Dropping:
    def __init__(self, program: ClientProgram, clients: Sequence[ClientData]) -> None:
        self.inner = InProcessExecutor(program, clients)

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        replies = self.inner.run(tasks)
        return [r for r in replies if not isinstance(r, Failure)]


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (Reversed, "update differs"),  # client 1's two trainings run in the wrong order
        (Raising, "7|label|index|class"),  # the broken client's exception escapes
        (Dropping, "must answer every task"),
    ],
)
def test_broken_executors_fail(
    make: Callable[[ClientProgram, Sequence[ClientData]], Executor], error: str
) -> None:
    with pytest.raises((ContractError, ValueError), match=error):
        check_executor(make)
