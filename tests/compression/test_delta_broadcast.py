"""Delta broadcasts: chains rebuild the server's public model bit for bit, the public model tracks
the true one, bytes down are each client's chain or whole model, state survives checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedloom as fl
from fedloom.compression import Codec
from fedloom.compression.chain import (
    PayloadError,
    apply_links,
    chain_size,
    model_digest,
    pack_chain,
    unpack_chain,
)
from fedloom.engine import RoundRecord, ServerState
from fedloom.engine.delta import DeltaState, advance, chain_from, held_rounds, synced
from fedloom.engine.sampling import Ids
from fedloom.engine.tasks import Failure, Reply, Task, TrainTask
from fedloom.executors import InProcessExecutor
from fedloom.store import Checkpoint
from fedloom.store.checkpoint import decode_checkpoint, encode_checkpoint

D = 64 * 10 + 10
"""Entries of the softmax model on digits."""
LINK = 18 + 9 + D
"""One 8-bit uniform link: an 18-byte envelope, 9 bytes of codec params, one byte an entry."""


def chain_bytes(links: int) -> int:
    """A chain of ``links`` 8-bit links: 7 bytes of head, 4 of length per link."""
    return 7 + links * (4 + LINK)


CODECS: list[Codec] = [
    fl.compression.Uniform(8),
    fl.compression.Uniform(2),
    fl.compression.QSGD(4, 64, "l2"),
    fl.compression.Rotated(fl.compression.Uniform(4), 16),
    fl.compression.Cast("float16"),
    fl.compression.Cast("bfloat16"),
    fl.compression.Cast("float32"),
    fl.compression.TopK(None, 0.25, "float32"),
]


def run_chain(
    codec: Codec, models: Sequence[np.ndarray], window: int
) -> tuple[list[DeltaState], list[np.ndarray]]:
    """The server's states over ``models`` and the public model of each round as a client that
    received it would keep it."""
    states: list[DeltaState] = []
    kept: list[np.ndarray] = []
    state: DeltaState | None = None
    for r, x in enumerate(models):
        rng = np.random.default_rng([7, r, 2])
        state = advance(state, x, codec=codec, window=window, round_=r, rng=rng)
        states.append(state)
        kept.append(np.array(state.public, copy=True))
    return states, kept


@settings(max_examples=40, deadline=None)
@given(
    codec=st.sampled_from(CODECS),
    rounds=st.integers(2, 9),
    window=st.integers(1, 8),
    dims=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_a_chain_rebuilds_the_servers_public_model_bit_for_bit(
    codec: Codec, rounds: int, window: int, dims: int, seed: int, scale: float
) -> None:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, scale, (rounds, dims)).astype(np.float32)
    models = list(np.cumsum(steps, axis=0, dtype=np.float32))
    states, kept = run_chain(codec, models, window)
    last = states[-1]
    for held in range(rounds):  # the last: a client that holds this round's model already
        sent = chain_from(last, held, entries=10**6)  # large: never the whole model instead
        if rounds - 1 - held > window:
            assert sent is None, "a base outside the window gets the whole model"
            continue
        assert sent is not None
        chain, base = sent
        assert base == held
        assert len(chain) == chain_size(unpack_chain(chain))
        rebuilt = apply_links(kept[held], unpack_chain(chain), codec)
        assert rebuilt.dtype == np.float32
        assert rebuilt.tobytes() == last.public.tobytes()
        assert model_digest(rebuilt) == last.digest(last.round)


def test_the_public_model_tracks_the_true_one_with_its_error_fed_back() -> None:
    """With the error carried into the next link, ``|x_r - p_r|`` stays at one link's
    quantization error; summing independently quantized changes instead lets it random-walk."""
    codec = fl.compression.Uniform(2)
    rng = np.random.default_rng(0)
    models = list(np.cumsum(rng.normal(0, 0.01, (300, 500)), axis=0, dtype=np.float32))
    _, public = run_chain(codec, models, window=4)
    error = np.array([np.linalg.norm(x - p) for x, p in zip(models, public, strict=True)])
    # One 2-bit link errs by at most (max - min) / 3 an entry; the changes are ~N(0, 0.01).
    assert error[1:].max() < 0.01 * 8 / 3 * np.sqrt(500)
    assert error[250:].mean() < 1.25 * error[1:50].mean(), "the error must not grow"

    naive = np.array(models[0], copy=True)
    for r in range(1, 300):
        change = models[r] - models[r - 1]
        naive += codec.decode(codec.encode(change, np.random.default_rng([7, r, 2])), 500)
    assert np.linalg.norm(models[-1] - naive) > 3 * error[250:].mean()


def test_chains_refuse_damage() -> None:
    link = fl.compression.Uniform(8).encode(np.ones(4, np.float32), np.random.default_rng(0))
    chain = pack_chain([link, link])
    assert unpack_chain(chain) == [link, link]
    with pytest.raises(PayloadError, match=r"truncated|more than remain"):
        unpack_chain(chain[:-3])
    with pytest.raises(PayloadError, match="not a delta broadcast"):
        unpack_chain(b"XX" + chain[2:])
    with pytest.raises(PayloadError, match="after its 2 links"):
        unpack_chain(chain + b"\0")
    damaged = bytearray(chain)
    damaged[-6] ^= 0xFF
    with pytest.raises(PayloadError, match="checksum"):
        apply_links(
            np.zeros(4, np.float32), unpack_chain(bytes(damaged)), fl.compression.Uniform(8)
        )


def test_reports_count_only_when_their_digest_matches() -> None:
    codec = fl.compression.Uniform(8)
    models = [np.full(8, float(r), np.float32) for r in range(4)]
    states, kept = run_chain(codec, models, window=3)
    last = synced(states[-1], received=[1], failed=[])
    assert held_rounds(last, None) == {1: 3}
    reports = {
        1: (1, model_digest(kept[1])),  # what it says it holds, and it does
        2: (1, model_digest(kept[2])),  # diverged: another model under round 1's number
        3: (7, model_digest(kept[3])),  # a round the server never had
    }
    assert held_rounds(last, reports) == {1: 1}


@dataclass(frozen=True)
class Scripted:
    """A sampler that takes the cohort of each round from a script."""

    cohorts: Sequence[Sequence[int]]
    at: list[int]

    def check(self, population: int) -> None:
        return None

    def sample(self, population: int, rng: np.random.Generator) -> Ids:
        cohort = self.cohorts[self.at[0]]
        self.at[0] += 1
        return np.array(cohort, dtype=np.int64)


@dataclass
class Failing:
    """An executor in front of another whose ``client`` fails in round ``round``."""

    inner: InProcessExecutor
    client: int
    round: int

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        replies = self.inner.run(tasks)
        return [
            Failure("lost")
            if isinstance(t, TrainTask)
            and (t.client, t.broadcast.round) == (self.client, self.round)
            else r
            for t, r in zip(tasks, replies, strict=True)
        ]


@pytest.fixture(scope="module")
def data() -> fl.data.FederatedData:
    return fl.data.digits().split(fl.data.dirichlet(0.5), clients=8, seed=0)


def work() -> fl.LocalSGD:
    return fl.local_sgd(fl.SoftmaxRegression(64, 10), lr=0.1, batch_size=16)


def test_bytes_down_are_each_clients_chain_or_whole_model(data: fl.data.FederatedData) -> None:
    cohorts = [[0, 1, 5], [0, 3], [1, 6], [0, 1], [0, 3, 4, 5, 6]]
    algorithm = fl.fedavg(work()).with_broadcast(fl.compression.uniform(8), delta_window=4)
    executor = Failing(InProcessExecutor(algorithm.client, data.clients), client=6, round=2)
    plan = fl.engine.schedule(rounds=5, cohort=fl.fixed(1), federated_eval=False)
    plan = replace(plan, cohort=Scripted(cohorts, [0]))
    history = fl.engine.train(algorithm, executor, plan, population=range(8))
    whole = 4 * D
    expected = [
        3 * whole,  # first contact: everyone whole
        chain_bytes(1) + whole,  # 0 held round 0; 3 is new
        chain_bytes(2) + whole,  # 1 held round 0; 6 is new (and fails)
        chain_bytes(2) + chain_bytes(1),  # 0 held round 1, 1 round 2
        # 0 held round 3; 3 held round 1 (3 rounds ago); 4 never came; 5 held round 0, four
        # links behind, whose chain (2731 bytes) outweighs the float32 model (2600); 6 failed.
        chain_bytes(1) + chain_bytes(3) + whole + whole + whole,
    ]
    assert [r.metrics["bytes_down"] for r in history.records] == expected
    assert chain_bytes(4) > whole


def test_a_lossless_delta_broadcast_never_beats_float32_and_trains_the_same(
    data: fl.data.FederatedData,
) -> None:
    """A float32 link (an envelope plus the model's size) is larger than the model itself, so
    every client is sent the model whole, and the public model is the true one to float32
    rounding of ``p + (x - p)``."""
    plain = fl.simulate(fl.fedavg(work()), data, rounds=4, cohort=3, federated_eval=False)
    algorithm = fl.fedavg(work()).with_broadcast(fl.compression.float32(), delta_window=3)
    delta = fl.simulate(algorithm, data, rounds=4, cohort=3, federated_eval=False)
    for a, b in zip(plain.records, delta.records, strict=True):
        assert a.metrics["bytes_down"] == b.metrics["bytes_down"] == 3 * 4 * D
    np.testing.assert_allclose(delta.params, plain.params, atol=1e-6)


def test_a_resumed_run_matches_a_straight_one(data: fl.data.FederatedData) -> None:
    algorithm = fl.fedavg(work()).with_broadcast(fl.compression.uniform(4), delta_window=3)
    plan = fl.engine.schedule(rounds=6, cohort=4, seed=3, federated_eval=False)
    straight = fl.engine.train(
        algorithm, InProcessExecutor(algorithm.client, data.clients), plan, population=range(8)
    )
    saved: list[bytes] = []

    def save(record: RoundRecord, state: ServerState) -> None:
        saved.append(encode_checkpoint(Checkpoint(state)))

    fl.engine.train(
        algorithm, InProcessExecutor(algorithm.client, data.clients), replace(plan, rounds=3),
        population=range(8), on_round=save,
    )  # fmt: skip
    state = decode_checkpoint(saved[-1]).state
    assert state.broadcast is not None
    assert state.broadcast.round == 2
    assert len(state.broadcast.links) == 2
    assert len(state.broadcast.digests) == 3
    assert state.broadcast.synced, "clients of the last rounds are remembered"
    resumed = fl.engine.train(
        algorithm, InProcessExecutor(algorithm.client, data.clients), plan,
        population=range(8), state=state,
    )  # fmt: skip
    assert resumed.params.tobytes() == straight.params.tobytes()
    assert [r.metrics["bytes_down"] for r in resumed.records] == [
        r.metrics["bytes_down"] for r in straight.records[3:]
    ]


def test_eight_bit_delta_broadcasts_cut_bytes_down_and_still_train(
    data: fl.data.FederatedData,
) -> None:
    plain = fl.simulate(fl.fedavg(work()), data, rounds=8, cohort=8, federated_eval=False)
    algorithm = fl.fedavg(work()).with_broadcast(fl.compression.uniform(8), delta_window=2)
    delta = fl.simulate(algorithm, data, rounds=8, cohort=8, federated_eval=False)
    for r in delta.records[1:]:  # every client held last round's model: one link each
        assert r.metrics["bytes_down"] == 8 * chain_bytes(1)
    model = fl.SoftmaxRegression(64, 10)
    test = fl.data.digits().split(fl.data.iid(), clients=1, seed=1).clients[0]
    accuracy = [
        model.evaluate(h.params, test.x_train, test.y_train)["accuracy"] for h in (plain, delta)
    ]
    assert accuracy[1] > accuracy[0] - 0.02


def test_bad_delta_broadcasts_are_refused_at_build_time() -> None:
    codec = fl.compression.uniform(8)
    for window in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match=r"delta_window must be an integer >= 1"):
            fl.fedavg(work()).with_broadcast(codec, delta_window=window)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a codec"):
        fl.fedavg(work()).with_broadcast(None, delta_window=2)


def test_secure_aggregation_rounds_send_chains(data: fl.data.FederatedData) -> None:
    """Round 0 of SecAgg+ carries each client's chain in place of the model: the bytes down
    drop by exactly the difference, and the run trains from the same public models."""
    secure = fl.fedavg(work()).with_stages(
        fl.secure_sum(clip=100.0, dropout_rate=0.0, corrupt_fraction=0.0)
    )
    runs = [
        fl.simulate(a, data, rounds=3, cohort=8, federated_eval=False)
        for a in (
            secure.with_broadcast(fl.compression.float32(), delta_window=2),
            secure.with_broadcast(fl.compression.uniform(8), delta_window=2),
        )
    ]
    whole, chained = ([r.metrics["bytes_down"] for r in h.records] for h in runs)
    assert chained[0] == whole[0]  # first contact: the model whole, as float32
    assert [w - c for w, c in zip(whole[1:], chained[1:], strict=True)] == [
        8 * (4 * D - chain_bytes(1))
    ] * 2
    assert all(not r.rejected for h in runs for r in h.records)
    np.testing.assert_allclose(runs[1].params, runs[0].params, atol=0.02)


@dataclass
class Replaying:
    """An executor in front of another that plays each client's side of a delta broadcast:
    it keeps the model each client was last sent and checks every chain rebuilds the task's
    model from it, bit for bit."""

    inner: InProcessExecutor
    codec: Codec
    kept: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)
    chains: int = 0

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        for task in tasks:
            assert isinstance(task, TrainTask)
            b = task.broadcast
            if b.delta_from is not None:
                assert b.payload is not None
                round_, model = self.kept[task.client]
                assert round_ == b.delta_from
                rebuilt = apply_links(model, unpack_chain(b.payload), self.codec)
                assert rebuilt.tobytes() == np.asarray(b.params).tobytes()
                self.chains += 1
            else:
                assert b.payload is None
            self.kept[task.client] = (b.round, np.array(b.params, copy=True))
        return self.inner.run(tasks)


def test_buffered_aggregation_sends_chains_from_each_clients_version(
    data: fl.data.FederatedData,
) -> None:
    from fedloom.engine import Buffered, train_buffered

    plan = Buffered(concurrency=4, buffer_size=2, updates=12)
    codec = fl.compression.uniform(8)
    delta = fl.fedavg(work()).with_broadcast(codec, delta_window=4)
    replaying = Replaying(InProcessExecutor(delta.client, data.clients), codec.codec)
    history = train_buffered(
        delta, replaying, plan, population=range(8), clock=lambda client, broadcast: 1.0 + client
    )
    assert replaying.chains >= 5, "clients that come back within the window get chains"
    plain = fl.fedavg(work())
    reference = train_buffered(
        plain, InProcessExecutor(plain.client, data.clients), plan, population=range(8),
        clock=lambda client, broadcast: 1.0 + client,
    )  # fmt: skip
    np.testing.assert_allclose(history.params, reference.params, atol=0.05)


def test_a_failed_client_is_forgotten() -> None:
    models = [np.full(4, float(r), np.float32) for r in range(3)]
    states, _ = run_chain(fl.compression.Uniform(8), models, window=2)
    state = synced(states[-1], received=[1, 2], failed=[])
    assert synced(state, received=[1], failed=[2]).synced == {1: 2}


def test_secure_aggregation_rounds_send_a_plain_broadcast_codec_too(
    data: fl.data.FederatedData,
) -> None:
    """Without a delta window, SecAgg+'s round 0 sends the model as the broadcast codec encodes
    it (it was float32 whatever the codec): every client gets the same payload, and the cohort
    trains from its decoding, as in a plain round."""
    secure = fl.fedavg(work()).with_stages(
        fl.secure_sum(clip=100.0, dropout_rate=0.0, corrupt_fraction=0.0)
    )
    cast = secure.with_broadcast(fl.compression.float16())
    plain, halves = (
        fl.simulate(a, data, rounds=2, cohort=8, federated_eval=False) for a in (secure, cast)
    )
    payload = fl.compression.float16().codec.encode(
        np.zeros(D, np.float32), np.random.default_rng(0)
    )
    saved = [p.metrics["bytes_down"] - h.metrics["bytes_down"] for p, h in
             zip(plain.records, halves.records, strict=True)]  # fmt: skip
    assert saved == [8 * (4 * D - len(payload))] * 2
    assert all(not r.rejected and r.aborted is None for r in halves.records)
    np.testing.assert_allclose(halves.params, plain.params, atol=0.01)
    assert not np.array_equal(halves.params, plain.params)  # it did train from float16 models
