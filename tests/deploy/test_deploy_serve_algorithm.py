"""``fl.serve(algorithm, ...)``: an algorithm value from Python, served to three real site
processes over mutual TLS, trains as ``fl.simulate`` trains it; what sites cannot be told is
refused before the server listens."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from deploy_helpers import (
    experiment_text,
    federation,
    finish,
    free_port,
    start_site,
    stop,
    write_site_data,
)

import fedloom as fl
from fedloom import privacy
from fedloom.compression import Compress
from fedloom.core.layout import Layout, Vector
from fedloom.deploy import ServerOptions, describe
from fedloom.deploy.training import site_algorithm
from fedloom.experiment import Experiment, build
from fedloom.pki import Federation, Verifier
from fedloom.stages import StageTraits
from fedloom.store import RunStore
from fedloom.transport import ServerCredentials

SITES = ["site-a", "site-b", "site-c"]


def _work() -> fl.LocalSGD:
    return fl.local_sgd(fl.SoftmaxRegression(features=64, classes=10), lr=0.3, epochs=1,
                        batch_size=16)  # fmt: skip


def test_served_algorithm_with_central_dp_equals_its_simulation(tmp_path: Path) -> None:
    # Central DP with a seeded noise (for the test: a real run leaves the seed unset), so the
    # deployed run and the simulation must agree exactly, clipped updates and noise alike.
    dp = privacy.central_gaussian(
        clip=0.2, noise_multiplier=0.7, sampling=privacy.fixed_sampling(population=3, count=2),
        seed=11,
    )  # fmt: skip
    algorithm = fl.fedavg(_work()).with_privacy(dp)
    experiment = Experiment.from_toml(experiment_text(rounds=3, cohort=2))
    data = build(experiment).data
    paths = write_site_data(experiment, tmp_path / "data")
    fed = federation(tmp_path / "fed", SITES)
    port = free_port()
    sites = [start_site(tmp_path, port, fed, s, d) for s, d in zip(SITES, paths, strict=True)]
    options = _options(fed, port)
    try:
        with RunStore.open(tmp_path / "runs.db") as store:
            outcome = fl.serve(  # type: ignore[operator]
                algorithm, store, options, rounds=3, cohort=2, seed=5,
                test=(data.test_x, data.test_y), name="python-dp",
            )  # fmt: skip
            rounds = store.rounds(outcome.run_id)
            info = store.run(outcome.run_id)
        assert all(finish(s) == 0 for s in sites)
    finally:
        stop(*sites)
    simulated = fl.simulate(algorithm, data, rounds=3, cohort=2, seed=5)
    assert info.status == "completed"
    assert info.name == "python-dp"
    np.testing.assert_allclose(outcome.history.params, simulated.params, atol=1e-6)
    for deployed, local in zip(rounds, simulated.records, strict=True):
        assert deployed.cohort == local.cohort
        assert deployed.accepted == local.accepted
        assert deployed.metrics["dp.epsilon"] == local.metrics["dp.epsilon"]
        assert np.isclose(deployed.metrics["test_accuracy"], local.metrics["test_accuracy"])
    assert rounds[-1].metrics["dp.epsilon"] > 0


@dataclass(frozen=True)
class Halve:
    """A stage of the user's own: no run-file kind builds it."""

    name: str = "halve"

    @property
    def traits(self) -> StageTraits:
        return StageTraits()

    def init(self, layout: Layout) -> None:
        return None

    def config(self, state: object) -> dict[str, float]:
        return {}

    def client(self, update: Vector, state: object, config: object, rng: object) -> Vector:
        return update / 2


def test_what_sites_cannot_be_told_is_refused() -> None:
    custom = fl.custom(_work().model, lambda params, x, y, seed: (params, {}))
    with pytest.raises(ValueError, match=r"sites build fedloom\.local_sgd from values"):
        describe(fl.fedavg(custom))
    halved = fl.fedavg(_work()).with_stages(Halve())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"stage 'halve' \(Halve\) cannot be described"):
        describe(halved)
    own = fl.fedavg(_work()).with_broadcast(fl.compression.compress(Halving()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="the broadcast codec cannot be described"):
        describe(own)


@dataclass(frozen=True)
class Halving:
    """A codec of the user's own (only its identity matters here)."""

    kind: str = "halving"


CODECS = [
    fl.compression.float16(),
    fl.compression.bfloat16(name="b16"),
    fl.compression.uniform(4, rotate=True, block=32, error_feedback=True),
    fl.compression.uniform(2, bound=0.25),
    fl.compression.qsgd(levels=4, norm="max"),
    fl.compression.sign(bucket=128),
    fl.compression.top_k(fraction=0.1),
    fl.compression.random_k(k=10, unbiased=False),
]


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_every_codec_stage_and_broadcast_is_described_and_rebuilt(codec: Compress) -> None:
    """What a site builds from the description is the algorithm's own stage and broadcast
    (``describe`` refuses otherwise; the assertions say what travelled)."""
    algorithm = (
        fl.fedavg(_work())
        .with_stages(fl.clip_by_norm(3.0), codec)
        .with_broadcast(replace(codec, error_feedback=False), delta_window=4)
    )
    config = describe(algorithm)
    clip, stage = config.stages
    assert (clip.kind, dict(clip.options)) == ("clip", {"bound": 3.0})
    assert stage.options["name"] == codec.name
    assert stage.options["error_feedback"] == codec.error_feedback
    options = dict(config.algorithm_options)
    assert options["broadcast"] == stage.kind
    assert options["broadcast.delta_window"] == 4
    assert "broadcast.name" not in options
    rebuilt = site_algorithm(config, _work().model)
    assert rebuilt.client.stages == algorithm.stages
    assert rebuilt.broadcast == algorithm.broadcast


def test_secure_sum_is_described() -> None:
    secure = fl.secure_sum(clip=1.0, bits=24, dropout_rate=0.2)
    config = describe(fl.fedavg(_work()).with_stages(secure))
    assert [(s.kind, dict(s.options)) for s in config.stages] == [
        ("secure_sum", {"clip": 1.0, "bits": 24, "max_weight": 1000, "dropout_rate": 0.2,
                        "corrupt_fraction": 0.1}),
    ]  # fmt: skip


def test_served_algorithm_with_a_codec_and_a_delta_broadcast_equals_its_simulation(
    tmp_path: Path,
) -> None:
    algorithm = (
        fl.fedavg(_work())
        .with_stages(fl.compression.qsgd(levels=8))
        .with_broadcast(fl.compression.uniform(8), delta_window=4)
    )
    experiment = Experiment.from_toml(experiment_text(rounds=3, cohort=3))
    data = build(experiment).data
    paths = write_site_data(experiment, tmp_path / "data")
    fed = federation(tmp_path / "fed", SITES)
    port = free_port()
    sites = [start_site(tmp_path, port, fed, s, d) for s, d in zip(SITES, paths, strict=True)]
    try:
        with RunStore.open(tmp_path / "runs.db") as store:
            outcome = fl.serve(  # type: ignore[operator]
                algorithm, store, _options(fed, port), rounds=3, cohort=3, seed=5,
                test=(data.test_x, data.test_y), name="python-codecs",
            )  # fmt: skip
            rounds = store.rounds(outcome.run_id)
        assert all(finish(s) == 0 for s in sites)
    finally:
        stop(*sites)
    simulated = fl.simulate(algorithm, data, rounds=3, cohort=3, seed=5)
    np.testing.assert_allclose(outcome.history.params, simulated.params, atol=1e-5)
    down = [r.metrics["bytes_down"] for r in rounds]
    assert down == [r.metrics["bytes_down"] for r in simulated.records]
    assert down[1] < down[0]  # after the first round, every site gets a one-link chain
    assert [r.metrics["bytes_up"] for r in rounds] == [
        r.metrics["bytes_up"] for r in simulated.records
    ]


def _options(fed: Federation, port: int) -> ServerOptions:
    return ServerOptions(
        address=f"127.0.0.1:{port}", sites=tuple(SITES), verifier=Verifier(fed.root),
        credentials=ServerCredentials(
            certificate=fed.cert("server").read_bytes(), key=fed.key("server").read_bytes(),
            ca=fed.ca_cert.read_bytes(),
        ),
    )  # fmt: skip


def test_description_rebuilds_the_same_client_program() -> None:
    algorithm = fl.fedprox(_work(), mu=0.05).with_stages(fl.clip_by_norm(2.0))
    config = describe(algorithm)
    assert config.algorithm == "fedprox"
    assert dict(config.algorithm_options) == {"mu": 0.05}
    assert [(s.kind, dict(s.options)) for s in config.stages] == [("clip", {"bound": 2.0})]
    assert dict(config.train) == {"lr": 0.3, "epochs": 1, "batch_size": 16, "optimizer": "sgd",
                                  "momentum": 0.0, "weight_decay": 0.0}  # fmt: skip
    # A work a recipe would not make (FedProx's term under plain FedAvg): sites would differ.
    odd = fl.fedavg(replace(_work(), prox_mu=0.1))
    with pytest.raises(ValueError, match="sites would build a different client program"):
        describe(odd)


def test_malloc_arenas_is_a_count_from_one_or_none() -> None:
    options = ServerOptions(address="127.0.0.1:0", sites=tuple(SITES), credentials=None)
    assert options.malloc_arenas == 1
    assert replace(options, malloc_arenas=None).malloc_arenas is None
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=rf"malloc_arenas must be an integer >= 1, got {bad}"):
            replace(options, malloc_arenas=bad)
