"""Robust reducers inside algorithms, the engine and run files."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

import fedloom as fl
from fedloom import robust
from fedloom.core.layout import Layout, Vector
from fedloom.engine.rounds import init_state
from fedloom.experiment import Experiment, ExperimentError
from fedloom.stages import StageState, StageTraits
from fedloom.store import Checkpoint, decode_checkpoint, encode_checkpoint


@dataclass(frozen=True)
class SumOnly:
    """A real stage whose server half is only valid on a sum (as secure aggregation's is)."""

    name: str = "sum_only"

    @property
    def traits(self) -> StageTraits:
        return StageTraits(needs_linear_reducer=True)

    def init(self, layout: Layout) -> StageState:
        return None

    def config(self, state: StageState) -> Mapping[str, float]:
        return {}

    def client(
        self, update: Vector, config: Mapping[str, float], rng: np.random.Generator
    ) -> tuple[Vector, dict[str, float]]:
        return update, {}

    def server(
        self, aggregate: Vector, state: StageState, client_metrics: Sequence[Mapping[str, float]]
    ) -> tuple[Vector, StageState, dict[str, float]]:
        return aggregate, state, {}


def work() -> fl.LocalSGD:
    return fl.local_sgd(fl.SoftmaxRegression(features=64, classes=10), lr=0.1, epochs=1)


@pytest.mark.parametrize("name", ["median", "krum", "bulyan", "geometric_median"])
def test_robust_reducers_are_refused_behind_a_stage_that_needs_a_sum(name: str) -> None:
    reducer = robust.reducer(name, attackers=1)
    with pytest.raises(ValueError, match="stage 'sum_only' can only be decoded from a"):
        fl.fedavg(work()).with_stages(SumOnly()).with_reducer(reducer)
    with pytest.raises(ValueError, match="is not linear"):
        fl.fedavg(work()).with_reducer(reducer).with_stages(SumOnly())
    fl.fedavg(work()).with_stages(SumOnly())  # the plain mean is fine


def test_centered_clipping_keeps_its_state_in_the_server_state_and_checkpoint() -> None:
    data = fl.data.digits().split(fl.data.iid(), clients=6, seed=0)
    algorithm = fl.fedavg(work()).with_reducer(robust.centered_clipping(radius=0.5))
    seen = []
    fl.simulate(algorithm, data, rounds=3, cohort=6, federated_eval=False,
                on_round=lambda record, state: seen.append(state))  # fmt: skip
    assert init_state(algorithm, algorithm.work.model.init(0)).reducer is not None
    for before, after in itertools.pairwise(seen):
        # The state is the round's aggregate: with server lr 1, params move by exactly it.
        assert after.reducer is not None
        np.testing.assert_allclose(after.params - before.params, after.reducer, atol=1e-6)
    restored = decode_checkpoint(encode_checkpoint(Checkpoint(seen[-1]))).state
    assert restored.reducer is not None
    np.testing.assert_array_equal(restored.reducer, seen[-1].reducer)


def test_resuming_a_centered_clipping_run_is_bit_identical() -> None:
    data = fl.data.digits().split(fl.data.iid(), clients=6, seed=0)
    algorithm = fl.fedavg(work()).with_reducer(robust.centered_clipping(radius=0.5))
    full = fl.simulate(algorithm, data, rounds=4, cohort=4, federated_eval=False)
    states = []
    fl.simulate(algorithm, data, rounds=2, cohort=4, federated_eval=False,
                on_round=lambda r, s: states.append(s))  # fmt: skip
    checkpoint = decode_checkpoint(encode_checkpoint(Checkpoint(states[-1])))
    from fedloom.engine import schedule, train
    from fedloom.executors import make_executor

    executor = make_executor("inprocess", algorithm.client, data.clients)
    resumed = train(algorithm, executor, schedule(rounds=4, cohort=4, federated_eval=False),
                    population=range(6), state=checkpoint.state)  # fmt: skip
    np.testing.assert_array_equal(resumed.params, full.params)


RUN = """
name = "robust"
[data]
dataset = "digits"
clients = 12
[model]
kind = "softmax"
[train]
lr = 0.1
[algorithm]
name = "fedavg"
{algorithm}
[run]
rounds = 1
cohort = 12
{run}
"""


def experiment(algorithm: str, run: str = "min_cohort = 7") -> Experiment:
    return Experiment.from_toml(RUN.format(algorithm=algorithm, run=run), source="r.toml")


def test_a_run_file_picks_a_robust_reducer_and_round_trips() -> None:
    exp = experiment('reducer = "multi_krum"\nattackers = 2\nreducer_options = { select = 4 }')
    assert exp.algorithm.reducer == "multi_krum"
    assert Experiment.from_toml(exp.to_toml()) == exp
    from fedloom.experiment import build

    built = build(exp)
    assert built.algorithm.reducer == robust.Krum(attackers=2, select=4)


@pytest.mark.parametrize(
    ("algorithm", "run", "message"),
    [
        ('reducer = "krun"\nattackers = 1', "", r"algorithm.reducer': must be one of .*krum"),
        ('reducer = "krum"', "", r"algorithm.attackers': required by reducer \"krum\""),
        ('reducer = "median"\nattackers = -1', "", r"algorithm.attackers': must be an integer"),
        ('reducer = "norm_bounded_mean"\nattackers = 1\nreducer_options = { bound = 1.0 }', "",
         r"algorithm.attackers': reducer \"norm_bounded_mean\" takes no attackers"),
        ("attackers = 1", "", r"algorithm.attackers': applies only with a reducer"),
        ('reducer = "krum"\nattackers = 1\nreducer_options = { sellect = 2 }', "",
         r"reducer_options.sellect': unknown key"),
        ('reducer = "krum"\nattackers = 2', "min_cohort = 1",
         r"r.toml:\d+: key 'run.min_cohort': reducer krum with attackers=2 needs at least 7"),
        ('reducer = "bulyan"\nattackers = 3', "min_cohort = 12",
         r"bulyan with attackers=3 needs at least 15 updates"),
    ],
)  # fmt: skip
def test_run_file_mistakes_are_named_before_any_data_is_loaded(
    algorithm: str, run: str, message: str
) -> None:
    with pytest.raises(ExperimentError, match=message):
        experiment(algorithm, run)
