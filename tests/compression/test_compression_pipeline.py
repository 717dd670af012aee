"""Codec stages in training: exact bytes, per-client decoding, refusals, executors agree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pytest

import fedloom as fl
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine import rounds
from fedloom.engine.payloads import download_bytes, encode_broadcast
from fedloom.engine.tasks import Reply, Task, TrainTask
from fedloom.executors import InProcessExecutor
from fedloom.stages import StageTraits

N_PARAMS = 64 * 10 + 10


@pytest.fixture(scope="module")
def data() -> fl.data.FederatedData:
    return fl.data.digits().split(fl.data.dirichlet(0.5), clients=8, seed=0)


def work() -> fl.LocalSGD:
    return fl.local_sgd(fl.SoftmaxRegression(64, 10), lr=0.1, batch_size=16)


def test_bytes_on_the_wire_are_the_payload_sizes(data: fl.data.FederatedData) -> None:
    plain = fl.simulate(fl.fedavg(work()), data, rounds=2, cohort=5, federated_eval=False)
    algorithm = (
        fl.fedavg(work())
        .with_stages(fl.compression.uniform(2))
        .with_broadcast(fl.compression.float16())
    )
    history = fl.simulate(algorithm, data, rounds=2, cohort=5, federated_eval=False)
    for before, after in zip(plain.records, history.records, strict=True):
        assert before.metrics["bytes_up"] == before.metrics["bytes_down"] == 5 * 4 * N_PARAMS
        # Up: 650 codes of 2 bits = 163 bytes, params 9 (bits, min, max), envelope 18.
        assert after.metrics["bytes_up"] == 5 * (163 + 9 + 18)
        # Down: 650 float16 values, envelope 18.
        assert after.metrics["bytes_down"] == 5 * (2 * N_PARAMS + 18)
        assert after.metrics["uniform.bytes_mean"] == 163 + 9 + 18


@dataclass
class Corrupting:
    """An executor in front of another that flips one byte of ``client``'s payload, as a bad
    link would."""

    inner: InProcessExecutor
    client: int

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        replies = self.inner.run(tasks)
        out: list[Reply] = []
        for task, reply in zip(tasks, replies, strict=True):
            if task.client == self.client and isinstance(reply, ClientResult):
                assert reply.payload is not None
                damaged = bytearray(reply.payload)
                damaged[len(damaged) // 2] ^= 0xFF
                reply = replace(reply, payload=bytes(damaged))
            out.append(reply)
        return out


def test_a_corrupted_payload_is_refused_naming_the_client(data: fl.data.FederatedData) -> None:
    algorithm = fl.fedavg(work()).with_stages(fl.compression.qsgd(levels=4))
    executor = Corrupting(InProcessExecutor(algorithm.client, data.clients), client=3)
    history = fl.engine.train(
        algorithm, executor, fl.engine.schedule(rounds=1, cohort=8), population=range(8)
    )
    record = history.records[0]
    assert [r.client for r in record.rejected] == [3]
    reason = record.rejected[0].reason
    assert "client 3's payload refused by stage 'qsgd'" in reason
    assert "checksum mismatch" in reason
    assert 3 not in record.accepted
    assert len(record.accepted) == 7


def test_a_raw_update_where_a_payload_is_expected_is_refused(data: fl.data.FederatedData) -> None:
    plain = fl.fedavg(work())
    algorithm = plain.with_stages(fl.compression.top_k(k=10))
    executor = InProcessExecutor(plain.client, data.clients)  # clients that do not encode
    history = fl.engine.train(
        algorithm, executor, fl.engine.schedule(rounds=1, cohort=2), population=range(8)
    )
    record = history.records[0]
    assert record.aborted is not None
    assert all("expects an encoded payload" in r.reason for r in record.rejected)


def test_k_larger_than_the_model_is_refused_at_start_and_on_a_client(
    data: fl.data.FederatedData,
) -> None:
    algorithm = fl.fedavg(work()).with_stages(fl.compression.top_k(k=N_PARAMS + 1))
    with pytest.raises(ValueError, match=r"stage 'top_k': k=651 is larger than the vector"):
        fl.simulate(algorithm, data, rounds=1, cohort=2)
    # A client reached anyway (its server skipped the check) fails, and the round names it.
    state = rounds.init_state(fl.fedavg(work()), work().model.init(0))
    state = replace(state, stages=(None,))
    executor = InProcessExecutor(algorithm.client, data.clients)
    _, record = rounds.run_round(
        algorithm,
        state,
        executor,
        population=range(8),
        sampler=fl.fixed(2),
        seed=0,
    )
    assert len(record.rejected) == 2
    for rejection in record.rejected:
        assert "k=651 is larger than the vector (650 entries)" in rejection.reason


def test_error_feedback_keeps_the_residual_in_the_clients_state(
    data: fl.data.FederatedData,
) -> None:
    algorithm = fl.fedavg(work()).with_stages(fl.compression.top_k(fraction=0.02))
    executor = InProcessExecutor(algorithm.client, data.clients)
    history = fl.engine.train(
        algorithm, executor, fl.engine.schedule(rounds=3, cohort=8), population=range(8)
    )
    for client in range(8):
        residual = executor.states[client]["stages.top_k.residual"]
        assert residual.shape == (N_PARAMS,)
        assert np.count_nonzero(residual) > N_PARAMS // 2  # most of each update waits
    assert history.records[-1].metrics["top_k.residual_norm_mean"] > 0


@dataclass(frozen=True)
class SecureSumStandIn:
    """The traits of secure aggregation's stage (SecAgg+, built in its own branch)."""

    name: str = "secagg"

    @property
    def traits(self) -> StageTraits:
        return StageTraits(needs_linear_reducer=True, secure_sum=True)

    def init(self, layout: fl.Layout) -> None:
        return None

    def config(self, state: None) -> dict[str, float]:
        return {}

    def client(
        self, update: np.ndarray, config: object, rng: np.random.Generator
    ) -> tuple[np.ndarray, dict[str, float]]:
        return update, {}

    def server(
        self, aggregate: np.ndarray, state: None, client_metrics: object
    ) -> tuple[np.ndarray, None, dict[str, float]]:
        return aggregate, state, {}


def test_per_client_codecs_are_refused_before_secure_aggregation() -> None:
    base = fl.fedavg(work())
    for codec in (fl.compression.top_k(k=10), fl.compression.qsgd(), fl.compression.uniform(4)):
        with pytest.raises(ValueError, match=rf"stage '{codec.name}' cannot run before the secure"):
            base.with_stages(codec, SecureSumStandIn())  # type: ignore[arg-type]
    # Clipping is summable, and so is quantization on a grid every client shares.
    base.with_stages(
        fl.clip_by_norm(1.0),
        fl.compression.uniform(8, bound=1.0),
        SecureSumStandIn(),  # type: ignore[arg-type]
    )


def test_a_broadcast_codec_with_error_feedback_is_refused() -> None:
    with pytest.raises(ValueError, match="error_feedback=True, which applies to client updates"):
        fl.fedavg(work()).with_broadcast(fl.compression.top_k(k=5))


def test_clients_start_from_the_decoded_broadcast(data: fl.data.FederatedData) -> None:
    seen: list[np.ndarray] = []

    def fn(params: np.ndarray, x: object, y: object, seed: int) -> tuple[np.ndarray, dict]:
        seen.append(params.copy())
        return params, {}

    model = fl.SoftmaxRegression(64, 10)
    algorithm = fl.fedavg(fl.custom(model, fn)).with_broadcast(fl.compression.uniform(1))
    start = np.linspace(-1, 1, N_PARAMS, dtype=np.float32)
    fl.simulate(algorithm, data, rounds=1, cohort=2, params=start, federated_eval=False)
    assert len(seen) == 2
    for params in seen:  # one bit an entry: every value is the minimum or the maximum
        assert set(np.unique(params).tolist()) <= {-1.0, 1.0}
        assert not np.array_equal(params, start)


def test_broadcast_payload_reaches_the_client(data: fl.data.FederatedData) -> None:
    codec = fl.compression.bfloat16()
    algorithm = fl.fedavg(work()).with_broadcast(codec)
    params = np.linspace(-1, 1, N_PARAMS, dtype=np.float32)
    sent, payload = encode_broadcast(algorithm, params, 0, 0)
    assert payload is not None
    assert len(payload) == 2 * N_PARAMS + 18
    np.testing.assert_array_equal(sent, codec.decode(payload, N_PARAMS))
    task = TrainTask(0, Broadcast(0, sent, 0, payload=payload))
    assert download_bytes(task.broadcast) == len(payload)


def test_buffered_aggregation_decodes_payloads_and_the_broadcast(
    data: fl.data.FederatedData,
) -> None:
    from fedloom.engine import Buffered, train_buffered

    algorithm = (
        fl.fedavg(work())
        .with_stages(fl.compression.float32())
        .with_broadcast(fl.compression.float32())
    )
    plain = fl.fedavg(work())
    plan = Buffered(concurrency=4, buffer_size=2, updates=3)
    runs = [
        train_buffered(
            a, InProcessExecutor(a.client, data.clients), plan, population=range(8),
            clock=lambda client, broadcast: 1.0 + client,
        )
        for a in (algorithm, plain)
    ]  # fmt: skip
    # float32 payloads are lossless: the same steps as with raw updates, every update accepted.
    np.testing.assert_array_equal(runs[0].params, runs[1].params)
    assert all(not r.rejected for r in runs[0].records)


@pytest.mark.parametrize(
    "stage",
    [
        fl.compression.float16(),
        fl.compression.bfloat16(error_feedback=True),
        fl.compression.uniform(3, rotate=True),
        fl.compression.uniform(8, bound=2.0),
        fl.compression.qsgd(levels=1, norm="max"),
        fl.compression.sign(),
        fl.compression.top_k(fraction=0.1, values="float16"),
        fl.compression.random_k(k=7),
    ],
    ids=lambda s: s.name,
)
def test_codec_stages_keep_the_stage_contract(stage: fl.compression.Compress) -> None:
    # What fedloom's stage contract asks: the update is left alone, the client half is
    # deterministic given its generator, the server half passes the aggregate through.
    layout = work().model.layout
    stage.init(layout)
    update = np.random.default_rng(0).normal(size=layout.size).astype(np.float32)
    kept = update.copy()
    first, metrics = stage.client(update, {}, np.random.default_rng(1))
    np.testing.assert_array_equal(update, kept)
    again, _ = stage.client(update, {}, np.random.default_rng(1))
    np.testing.assert_array_equal(first, again)
    assert first.shape == (layout.size,)
    assert first.dtype == np.float32
    aggregate = first.copy()
    out, _, server_metrics = stage.server(aggregate, None, [metrics, metrics])
    np.testing.assert_array_equal(out, first)
    assert server_metrics["bytes_mean"] == metrics["bytes"]
