"""Heterogeneous devices: the virtual clock, deadlines, partial work, over-selection, traces."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import fedloom as fl
from fedloom.data import FederatedData
from fedloom.data.population import LazyClients
from fedloom.executors import InProcessExecutor
from fedloom.executors.devices import DeviceExecutor, DeviceProfile, Fleet, LogNormal, fleet_clock

SIZE_BYTES = 650 * 4  # SoftmaxRegression(64, 10) as float32


@pytest.fixture(scope="module")
def data() -> FederatedData:
    return fl.data.digits().split(fl.data.iid(), clients=8, seed=0)


def work() -> fl.LocalSGD:
    return fl.local_sgd(fl.SoftmaxRegression(64, 10), lr=0.1, epochs=1, batch_size=32)


def devices(
    algorithm: fl.Algorithm, data: FederatedData, fleet: Fleet, **options: object
) -> DeviceExecutor:
    inner = InProcessExecutor(algorithm.client, data.clients)
    return DeviceExecutor(
        inner,
        fleet,
        program=algorithm.client,
        clients=data.clients,
        **options,  # type: ignore[arg-type]
    )


def run(algorithm: fl.Algorithm, data: FederatedData, executor: DeviceExecutor, rounds: int = 1,
        cohort: int = 8) -> fl.History:  # fmt: skip
    return fl.simulate(
        algorithm, data, rounds=rounds, cohort=cohort, executor=executor, federated_eval=False
    )


def test_duration_is_transfer_plus_compute(data: FederatedData) -> None:
    profile = DeviceProfile(speed=2.0, downlink=1000.0, uplink=500.0)
    fleet = Fleet({c.client_id: profile for c in data.clients}, seconds_per_example=0.01)
    algorithm = fl.fedavg(work())
    executor = devices(algorithm, data, fleet)
    history = run(algorithm, data, executor)
    n = data.clients[0].num_train
    steps = math.ceil(n / 32)
    # 2600 B down at 1000 B/s + steps * 32 examples * 0.01 s / speed 2 + 2600 B up at 500 B/s
    expected = SIZE_BYTES / 1000 + steps * 32 * 0.01 / 2 + SIZE_BYTES / 500
    broadcast = fl.Broadcast(0, np.zeros(650, np.float32), 0)
    assert executor.duration(0, broadcast, steps) == pytest.approx(expected)
    sizes = {c.client_id: c.num_train for c in data.clients}
    longest = max(
        SIZE_BYTES / 1000 + math.ceil(sizes[c] / 32) * 0.16 + SIZE_BYTES / 500 for c in sizes
    )
    record = history.records[0]
    assert record.metrics["sim_round_seconds"] == pytest.approx(longest)
    assert record.metrics["sim_clock"] == pytest.approx(longest)


def test_transfers_take_the_bytes_that_travel(data: FederatedData) -> None:
    """With an 8-bit update codec and a float16 broadcast, the clock times the payloads, not
    float32 vectors: 650 one-byte codes plus the envelope up, 650 two-byte halves plus the
    envelope down."""
    profile = DeviceProfile(speed=2.0, downlink=1000.0, uplink=500.0)
    fleet = Fleet({c.client_id: profile for c in data.clients}, seconds_per_example=0.01)
    algorithm = (
        fl.fedavg(work())
        .with_stages(fl.compression.uniform(8))
        .with_broadcast(fl.compression.float16())
    )
    executor = devices(algorithm, data, fleet)
    history = run(algorithm, data, executor)
    params = np.zeros(650, np.float32)
    down = fl.compression.float16().codec.encode(params, np.random.default_rng(0))
    up = fl.compression.uniform(8).codec.encode(params, np.random.default_rng(0))
    assert 650 * 2 < len(down) < 650 * 2 + 64
    assert 650 < len(up) < 650 + 64
    steps = math.ceil(data.clients[0].num_train / 32)
    broadcast = fl.Broadcast(0, params, 0, payload=down)
    expected = len(down) / 1000 + steps * 32 * 0.01 / 2 + len(up) / 500
    assert executor.duration(0, broadcast, steps) == pytest.approx(expected)
    # ... and the round's clock is the slowest client's, with those sizes.
    longest = max(
        len(down) / 1000 + math.ceil(c.num_train / 32) * 0.16 + len(up) / 500 for c in data.clients
    )
    assert history.records[0].metrics["sim_round_seconds"] == pytest.approx(longest)
    # The FedBuff clock uses the same sizes.
    clock = fleet_clock(fleet, work(), data.clients, update_bytes=len(up))
    assert clock(0, broadcast) == pytest.approx(expected)


def test_deadline_drops_stragglers_and_the_clock_waits_for_it(data: FederatedData) -> None:
    slow = {0, 3, 5}
    fleet = Fleet(
        {c.client_id: DeviceProfile(speed=0.1 if c.client_id in slow else 1.0)
         for c in data.clients},
        seconds_per_example=0.01,
    )  # fmt: skip
    # A fast client's step costs 32 * 0.01 = 0.32 s; a slow one's ten times that.
    deadline = max(math.ceil(c.num_train / 32) for c in data.clients) * 0.32 + 0.05
    algorithm = fl.fedavg(work())
    history = run(algorithm, data, devices(algorithm, data, fleet, deadline=deadline), rounds=2)
    for record in history.records:
        assert {r.client for r in record.rejected} == slow
        assert all("straggler" in r.reason for r in record.rejected)
        assert record.metrics["sim_round_seconds"] == deadline
    assert history.records[1].metrics["sim_clock"] == pytest.approx(2 * deadline)


def test_partial_work_keeps_what_fits_before_the_deadline(data: FederatedData) -> None:
    fleet = Fleet(
        {c.client_id: DeviceProfile(speed=0.25 if c.client_id == 2 else 1.0)
         for c in data.clients},
        seconds_per_example=0.01,
    )  # fmt: skip
    full = {c.client_id: math.ceil(c.num_train / 32) for c in data.clients}
    deadline = max(full.values()) * 0.32 + 0.05  # every fast client fits all its steps
    algorithm = fl.fednova(work())
    executor = devices(algorithm, data, fleet, deadline=deadline, partial_work=True)
    inner = executor.inner
    assert isinstance(inner, InProcessExecutor)
    seen: dict[int, float] = {}

    class Spy:
        states = inner.states

        def run(self, tasks):  # type: ignore[no-untyped-def]
            replies = inner.run(tasks)
            for task, reply in zip(tasks, replies, strict=True):
                seen[task.client] = reply.metrics["local_steps"]
            return replies

    executor.inner = Spy()  # type: ignore[assignment]
    history = run(algorithm, data, executor)
    assert history.records[0].rejected == ()
    # Client 2 (speed 0.25) takes 1.28 s a step, so only floor(deadline / 1.28) steps fit.
    assert seen[2] == math.floor(deadline / 1.28)
    assert 1 <= seen[2] < full[2]
    assert all(seen[c] == full[c] for c in full if c != 2)


def test_over_selection_keeps_the_first_finishers(data: FederatedData) -> None:
    speeds = [1.0, 5.0, 0.5, 3.0, 2.0, 0.2, 4.0, 1.5]
    fleet = Fleet(
        {i: DeviceProfile(speed=s) for i, s in enumerate(speeds)}, seconds_per_example=0.01
    )
    algorithm = fl.fedavg(work())
    history = run(algorithm, data, devices(algorithm, data, fleet, keep=5))
    record = history.records[0]
    assert set(record.accepted) == {1, 3, 4, 6, 7}  # the five fastest (equal data sizes)
    assert all("over-selected" in r.reason for r in record.rejected)


def test_availability_and_dropout_are_random_but_seeded(data: FederatedData) -> None:
    fleet = Fleet.sample(8, seed=0, availability=0.5, dropout=0.2)
    algorithm = fl.fedavg(work())

    def rejected(seed: int) -> list[tuple[int, ...]]:
        history = run(algorithm, data, devices(algorithm, data, fleet, seed=seed), rounds=6)
        return [tuple(r.client for r in record.rejected) for record in history.records]

    first = rejected(1)
    assert first == rejected(1)
    assert first != rejected(2)
    reasons = [r.reason for record in run(
        algorithm, data, devices(algorithm, data, fleet, seed=1), rounds=6
    ).records for r in record.rejected]  # fmt: skip
    unavailable = sum("unavailable" in r for r in reasons)
    dropped = sum("dropped out" in r for r in reasons)
    # 48 draws: about 24 unavailable, and about 0.2 * 24 = 5 of the rest dropping out.
    assert 14 <= unavailable <= 34
    assert 1 <= dropped <= 12


def test_sampled_fleets_follow_their_distributions() -> None:
    fleet = Fleet.sample(4000, seed=3, speed=LogNormal(2.0, 0.5), uplink=1e5)
    speeds = np.array([fleet.profile(c).speed for c in range(4000)])
    assert np.median(speeds) == pytest.approx(2.0, rel=0.05)
    assert np.std(np.log(speeds)) == pytest.approx(0.5, rel=0.05)
    assert fleet.profile(7).uplink == 1e5
    assert fleet.profile(7).downlink == math.inf


def test_trace_files_load_and_bad_ones_are_named(tmp_path: Path) -> None:
    good = tmp_path / "trace.csv"
    good.write_text(
        "client,speed,downlink,uplink,availability,dropout\n0,1.5,1e6,inf,0.9,0.1\n1,0.5,2e5,1e5,1,0\n"
    )
    fleet = Fleet.from_csv(good)
    assert fleet.profile(0) == DeviceProfile(1.5, 1e6, math.inf, 0.9, 0.1)
    assert fleet.profile(1).uplink == 1e5

    missing = tmp_path / "missing.csv"
    missing.write_text("client,speed\n0,1\n")
    with pytest.raises(ValueError, match=r"missing columns \['downlink', 'uplink'"):
        Fleet.from_csv(missing)

    negative = tmp_path / "negative.csv"
    negative.write_text(
        "client,speed,downlink,uplink,availability,dropout\n0,1,1,1,1,0\n1,-2,1,1,1,0\n"
    )
    with pytest.raises(ValueError, match=r"negative.csv:3: speed must be a finite number > 0"):
        Fleet.from_csv(negative)


def test_configuration_errors(data: FederatedData) -> None:
    algorithm = fl.fedavg(work())
    fleet = Fleet({0: DeviceProfile()})
    with pytest.raises(ValueError, match=r"no device profile for clients \[1, 2"):
        devices(algorithm, data, fleet)
    full = Fleet.sample(8, seed=0)
    with pytest.raises(ValueError, match="partial_work needs a deadline"):
        devices(algorithm, data, full, partial_work=True)
    with pytest.raises(ValueError, match="deadline must be a finite number > 0"):
        devices(algorithm, data, full, deadline=0.0)


def test_step_limits_reach_the_vectorized_executor(data: FederatedData) -> None:
    from fedloom.executors.vectorized import VectorizedExecutor

    train = fl.torch.local_sgd(fl.torch.mlp(64, [16], 10), lr=0.1, epochs=2, batch_size=32)
    algorithm = fl.fednova(train)
    fleet = Fleet.sample(8, seed=1, speed=LogNormal(1.0, 1.0), seconds_per_example=0.01)
    options = {"program": algorithm.client, "clients": data.clients, "deadline": 2.0,
               "partial_work": True}  # fmt: skip

    def history(inner: InProcessExecutor | VectorizedExecutor) -> fl.History:
        executor = DeviceExecutor(inner, fleet, **options)  # type: ignore[arg-type]
        return run(algorithm, data, executor, rounds=2)

    vectorized = VectorizedExecutor(algorithm.client, data.clients)
    got = history(vectorized)
    expected = history(InProcessExecutor(algorithm.client, data.clients))
    assert vectorized.batched_tasks > 0
    steps = expected.metric("local_steps")
    sizes = np.array([c.num_train for c in data.clients], dtype=float)
    uncut = float(sizes @ (2 * np.ceil(sizes / 32)) / sizes.sum())
    assert all(r.rejected == () for r in expected.records)
    assert max(steps) < uncut  # the deadline cut some clients' work short
    np.testing.assert_allclose(got.metric("local_steps"), steps)
    np.testing.assert_allclose(got.params, expected.params, rtol=1e-4, atol=1e-5)


def test_a_population_made_on_demand_is_only_made_for_sampled_clients() -> None:
    population = 20_000
    data = fl.data.synthetic(1.0, 1.0, clients=population, seed=0, lazy=True, eval_devices=10)
    assert isinstance(data.clients, LazyClients)
    algorithm = fl.fedavg(fl.local_sgd(fl.SoftmaxRegression(60, 10), lr=0.01, batch_size=10))
    fleet = Fleet.sample(population, seed=0, speed=LogNormal(1.0, 0.5))
    inner = InProcessExecutor(algorithm.client, data.clients)
    executor = DeviceExecutor(
        inner, fleet, program=algorithm.client, clients=data.clients, deadline=1e9
    )
    history = fl.simulate(
        algorithm, data, rounds=2, cohort=20, executor=executor, federated_eval=False
    )
    assert all(len(r.accepted) == 20 for r in history.records)
    made = len(data.clients._cache)
    assert 20 <= made <= 40 + 10, f"{made} clients were generated for two rounds of 20"
    clock = fleet_clock(fleet, algorithm.work, data.clients)  # type: ignore[arg-type]
    broadcast = fl.Broadcast(0, np.zeros(610, np.float32), 0)
    assert clock(12_345, broadcast) > 0
    assert len(data.clients._cache) == made + 1
