"""``[privacy]`` in run files: round trip, refusals at the right key, ε in the run store."""

from __future__ import annotations

import logging
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting import rdp

from fedloom.experiment import Experiment, ExperimentError, build
from fedloom.privacy import PoissonSampling
from fedloom.reducers import Sum
from fedloom.reporting import RunSeries, markdown_summary
from fedloom.runner import run_experiment
from fedloom.store import RunStore

logging.getLogger("absl").setLevel(logging.ERROR)

BASE = """\
name = "dp"

[data]
dataset = "digits"
clients = 40

[model]
kind = "softmax"

[train]
lr = 0.1

[algorithm]
name = "fedavg"

[run]
rounds = 3
poisson = 0.25
federated_eval = false

[privacy]
mechanism = "gaussian"
clip = 1.0
noise_multiplier = 1.0
"""


def _eps(rounds: int, delta: float) -> float:
    event = dp_accounting.PoissonSampledDpEvent(0.25, dp_accounting.GaussianDpEvent(1.0))
    return float(rdp.RdpAccountant().compose(event, rounds).get_epsilon(delta))


def test_a_privacy_table_round_trips_and_builds_dp_fedavg() -> None:
    text = BASE + (
        "target_quantile = 0.5\nclip_learning_rate = 0.2\ncount_stddev = 2.0\n"
        "max_epsilon = 50.0\ndelta = 1e-3\nstop_early = true\n"
    )
    experiment = Experiment.from_toml(text)
    assert Experiment.from_toml(experiment.to_toml()) == experiment
    built = build(experiment)
    stage = built.algorithm.stages[0]
    assert isinstance(built.algorithm.reducer, Sum)
    assert stage.sampling == PoissonSampling(population=40, rate=0.25)  # type: ignore[attr-defined]
    assert stage.adaptive.count_stddev == 2.0  # type: ignore[attr-defined]
    assert built.schedule.budget is not None
    assert built.schedule.budget.stop_early


def test_pld_refuses_adaptive_clipping_before_training() -> None:
    text = BASE + (
        "target_quantile = 0.5\nclip_learning_rate = 0.2\ncount_stddev = 2.0\n"
        'max_epsilon = 50.0\ndelta = 1e-3\naccountant = "pld"\n'
    )
    with pytest.raises(ExperimentError, match="use accountant 'rdp'"):
        Experiment.from_toml(text)


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        ("", "noise_multiplier", "a noise multiplier of 0 adds no noise"),
        ("delta = 1e-3\n", "max_epsilon", "needs both max_epsilon and delta"),
        ("max_epsilon = 1.0\ndelta = 1.5\n", "delta", "must be"),
        ("max_epsilon = -1.0\ndelta = 1e-5\n", "max_epsilon", "must be"),
        ("target_quantile = 0.5\n", "clip_learning_rate", "adaptive clipping needs all"),
        (
            "target_quantile = 0.5\nclip_learning_rate = 0.2\ncount_stddev = 0.3\n",
            "count_stddev",
            "2·count_stddev must exceed noise_multiplier",
        ),
        ('accountant = "moments"\n', "accountant", "rdp"),
    ],
)
def test_bad_privacy_settings_name_their_key(extra: str, key: str, message: str) -> None:
    text = BASE + extra
    if key == "noise_multiplier":
        text = text.replace("noise_multiplier = 1.0", "noise_multiplier = 0.0")
    with pytest.raises(ExperimentError, match=message) as caught:
        Experiment.from_toml(text, source="dp.toml")
    assert f"'privacy.{key}'" in str(caught.value)


def test_a_plan_beyond_the_budget_is_refused_when_the_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "dp.toml"
    path.write_text(BASE + "max_epsilon = 2.5\ndelta = 1e-3\n")
    from fedloom.experiment import validate_file

    with pytest.raises(ExperimentError, match=r"plan of 3 rounds would spend epsilon=") as caught:
        validate_file(path)
    assert "dp.toml:" in str(caught.value)
    assert "'privacy.max_epsilon'" in str(caught.value)


def test_the_store_holds_the_epsilon_of_every_round(tmp_path: Path) -> None:
    experiment = Experiment.from_toml(BASE + "max_epsilon = 100.0\ndelta = 1e-3\n")
    with RunStore.open(tmp_path / "fedloom.db") as store:
        outcome = run_experiment(experiment, store)
        rounds = store.rounds(outcome.run_id)
        summary = markdown_summary([RunSeries(store.run(outcome.run_id), rounds)])
    assert [r.metrics["dp.epsilon"] for r in rounds] == pytest.approx(
        [_eps(k, 1e-3) for k in (1, 2, 3)], rel=1e-9
    )
    assert {r.metrics["dp.delta"] for r in rounds} == {1e-3}
    assert f"privacy spent: ε = {_eps(3, 1e-3):.4g} at δ = 0.001" in summary


DISTRIBUTED = BASE.replace("poisson = 0.25", "cohort = 10\nmin_cohort = 8").replace(
    'mechanism = "gaussian"', 'mechanism = "distributed"\nmin_clients = 8\nbits = 18'
)


def test_a_distributed_table_round_trips_and_runs(tmp_path: Path) -> None:
    experiment = Experiment.from_toml(DISTRIBUTED + "max_epsilon = 1000.0\ndelta = 1e-3\n")
    assert Experiment.from_toml(experiment.to_toml()) == experiment
    with RunStore.open(tmp_path / "fedloom.db") as store:
        outcome = run_experiment(experiment, store)
    stage = build(experiment).algorithm.stages[0]
    assert stage.modulus == 2**18  # type: ignore[attr-defined]
    rho = stage.rho(650)  # type: ignore[attr-defined]
    accountant = rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    expected = accountant.compose(dp_accounting.ZCDpEvent(rho), 3).get_epsilon(1e-3)
    assert outcome.history.metric("dp.epsilon")[-1] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (DISTRIBUTED.replace("min_cohort = 8", "min_cohort = 2"), "run.min_cohort", "at least"),
        (DISTRIBUTED.replace("min_clients = 8\n", ""), "privacy.min_clients", "required"),
        (BASE + "bits = 16\n", "privacy.bits", 'only to mechanism "distributed"'),
        (DISTRIBUTED.replace("bits = 18", "bits = 30"), "privacy.bits", "must be at most 24"),
    ],
)
def test_bad_distributed_settings_name_their_key(text: str, key: str, message: str) -> None:
    with pytest.raises(ExperimentError, match=message) as caught:
        Experiment.from_toml(text)
    assert f"'{key}'" in str(caught.value)


LOCAL = (
    BASE.replace('kind = "softmax"', 'kind = "mlp"\nhidden = [16]')
    .replace("poisson = 0.25", "cohort = 4")
    .replace('mechanism = "gaussian"', 'mechanism = "local"')
    .replace("lr = 0.1", "lr = 0.1\nbatch_size = 16")
)


def test_local_dp_sgd_from_a_run_file_reports_each_clients_epsilon(tmp_path: Path) -> None:
    pytest.importorskip("opacus")
    experiment = Experiment.from_toml(LOCAL.replace("rounds = 3", "rounds = 1") + "delta = 1e-4\n")
    assert Experiment.from_toml(experiment.to_toml()) == experiment
    built = build(experiment)
    assert type(built.algorithm.work).__name__ == "DPSGDWork"
    assert built.algorithm.stages == ()
    with RunStore.open(tmp_path / "fedloom.db") as store:
        outcome = run_experiment(experiment, store)
    record = outcome.history.records[0]
    assert record.metrics["local_dp.delta"] == 1e-4
    assert record.metrics["local_dp.epsilon"] > 0
    assert "dp.epsilon" not in record.metrics  # no user-level claim


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (LOCAL + "max_epsilon = 5.0\ndelta = 1e-5\n", "privacy.max_epsilon", "no run budget"),
        (
            LOCAL.replace('name = "fedavg"', 'name = "fedprox"\nmu = 0.1'),
            "algorithm.name",
            "fedavg",
        ),
        (LOCAL.replace('kind = "mlp"\nhidden = [16]', 'kind = "softmax"'), "model.kind", "PyTorch"),
        (LOCAL.replace("lr = 0.1", "lr = 0.1\nmomentum = 0.9"), "train.momentum", "plain SGD"),
    ],
)
def test_bad_local_settings_name_their_key(text: str, key: str, message: str) -> None:
    with pytest.raises(ExperimentError, match=message) as caught:
        Experiment.from_toml(text)
    assert f"'{key}'" in str(caught.value)


def test_privacy_needs_a_checkpoint_every_round() -> None:
    text = BASE.replace("federated_eval = false", "federated_eval = false\ncheckpoint_every = 2")
    with pytest.raises(ExperimentError, match="must be 1 with differential privacy") as caught:
        Experiment.from_toml(text)
    assert "'run.checkpoint_every'" in str(caught.value)
