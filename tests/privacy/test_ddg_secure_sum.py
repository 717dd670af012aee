"""The distributed discrete Gaussian in front of SecAgg+: the secure sum carries the clients'
ring integers unchanged, so the decoded sum is bit for bit the plain sum's, the survivors' sum
when clients vanish, and the engine only ever receives masked vectors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

import fedloom as fl
from fedloom import privacy
from fedloom.core.layout import Layout, Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.data import FederatedData
from fedloom.engine.rounds import ServerState, client_seed, init_state, run_round
from fedloom.engine.sampling import FixedCount
from fedloom.engine.secure_rounds import SecureTaskKind
from fedloom.engine.tasks import Failure, Reply, Task
from fedloom.executors import InProcessExecutor
from fedloom.secagg.messages import (
    KeyAdvertisement,
    MaskedInput,
    MaskingRequest,
    SecureReply,
    SecureTask,
    SharedKeys,
    UnmaskShares,
)
from fedloom.stages import StageState, StageTraits

BITS = 16


def ddg(min_clients: int = 6, bits: int = BITS) -> privacy.DistributedGaussian:
    return privacy.distributed_gaussian(
        clip=0.5, noise_multiplier=1.0, sampling=privacy.fixed_sampling(population=40, count=10),
        min_clients=min_clients, bits=bits,
    )  # fmt: skip


def plain_and_secure(work: fl.LocalSGD) -> tuple[fl.Algorithm, fl.Algorithm]:
    plain = fl.fedavg(work).with_privacy(ddg())
    return plain, plain.with_stages(fl.secure_sum(clip=1.0, bits=BITS))


class Watching:
    """The engine's view of the clients: every reply it receives is kept; the clients in
    ``vanish`` stop answering when asked for their masked input."""

    def __init__(self, inner: InProcessExecutor, vanish: Sequence[int] = ()):
        self.inner, self.vanish = inner, set(vanish)
        self.received: list[SecureReply | Failure | Reply] = []

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        replies = self.inner.run(tasks)
        self.received.extend(replies)
        return replies

    def run_secure(self, tasks: Sequence[SecureTaskKind]) -> list[SecureReply | Failure]:
        masking = [
            isinstance(t, SecureTask) and isinstance(t.request, MaskingRequest) for t in tasks
        ]
        live = [
            t for t, m in zip(tasks, masking, strict=True) if not (m and t.client in self.vanish)
        ]
        answers = dict(zip([t.client for t in live], self.inner.run_secure(live), strict=True))
        replies = [answers.get(t.client, Failure("connection lost")) for t in tasks]
        self.received.extend(replies)
        return replies


def ring_integers(
    algorithm: fl.Algorithm, data: FederatedData, state: ServerState, clients: Sequence[int]
) -> dict[int, np.ndarray]:
    """Each client's DDG output for round 0, computed in the open from its own seed."""
    out = {}
    for c in clients:
        d = data.clients[c]
        result, _ = algorithm.client.run(
            Broadcast(0, state.params, client_seed(0, 0, c)), d.x_train, d.y_train, {}
        )
        out[c] = np.asarray(result.update).astype(np.int64)
    return out


def one_round(
    algorithm: fl.Algorithm, data: FederatedData, work: fl.LocalSGD, vanish: Sequence[int] = ()
) -> tuple[ServerState, ServerState, fl.RoundRecord, Watching]:
    executor = Watching(InProcessExecutor(algorithm.client, data.clients), vanish)
    state = init_state(algorithm, work.model.init(0))
    after, record = run_round(
        algorithm, state, executor, population=range(40), sampler=FixedCount(10), seed=0,
        min_cohort=6,
    )  # fmt: skip
    return state, after, record, executor


def test_the_secure_sum_decodes_bit_for_bit_the_plain_sum(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    plain, secure = plain_and_secure(softmax_work)
    assert [s.name for s in secure.stages] == ["ddg", "secure_sum"]
    _, a, plain_record, _ = one_round(plain, digits_40, softmax_work)
    _, b, secure_record, _ = one_round(secure, digits_40, softmax_work)
    assert secure_record.aborted is None
    assert secure_record.accepted == tuple(sorted(plain_record.accepted))
    np.testing.assert_array_equal(b.params, a.params)
    for key in ("ddg.noise_std", "ddg.modulus_use"):
        assert secure_record.metrics[key] == plain_record.metrics[key]
    # it really went through SecAgg+, in the DDG's ring
    assert secure_record.metrics["secagg.survivors"] == 10
    assert "secagg.total_weight" not in plain_record.metrics


def test_with_dropouts_the_sum_is_the_survivors_and_the_engine_sees_only_masks(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    _, secure = plain_and_secure(softmax_work)
    cohort = sorted(FixedCount(10).sample(40, np.random.default_rng([0, 0, 0])).tolist())
    vanish = cohort[:3]
    state, after, record, executor = one_round(secure, digits_40, softmax_work, vanish)
    assert record.aborted is None
    survivors = cohort[3:]
    assert list(record.accepted) == survivors
    assert record.metrics["secagg.dropped.mask"] == 3
    integers = ring_integers(secure, digits_40, state, cohort)
    stage = secure.stages[0]
    assert isinstance(stage, privacy.DistributedGaussian)
    total = np.mod(sum(integers[c] for c in survivors), stage.modulus)
    mean, _, _ = stage.server(total.astype(np.float32), None, [{}] * len(survivors))
    np.testing.assert_array_equal(after.params, state.params + mean)
    assert mean.any()

    # What the engine received: keys, encrypted shares, masked vectors and unmasking shares;
    # never a ClientResult, and no masked vector that reveals its client's integers.
    kinds = {type(r) for r in executor.received if not isinstance(r, Failure)}
    assert kinds == {KeyAdvertisement, SharedKeys, MaskedInput, UnmaskShares}
    masked = [r for r in executor.received if isinstance(r, MaskedInput)]
    assert sorted(m.client for m in masked) == survivors
    for m in masked:
        # a uniform mask agrees with the input on ~ d / 2^16 = 0.01 of the 650 entries
        assert np.count_nonzero(m.vector[:-1].astype(np.int64) == integers[m.client]) <= 3


def test_the_plain_sum_shows_the_engine_each_clients_integers(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    """The threat the secure sum removes: without it the engine holds every client's shares."""
    plain, _ = plain_and_secure(softmax_work)
    state, _, record, executor = one_round(plain, digits_40, softmax_work)
    integers = ring_integers(plain, digits_40, state, record.accepted)
    results = [r for r in executor.received if isinstance(r, ClientResult)]
    assert len(results) == 10
    for c, r in zip(record.accepted, results, strict=True):
        np.testing.assert_array_equal(np.asarray(r.update).astype(np.int64), integers[c])


def test_fewer_survivors_than_min_clients_abort_before_unmasking(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    _, secure = plain_and_secure(softmax_work)
    cohort = sorted(FixedCount(10).sample(40, np.random.default_rng([0, 0, 0])).tolist())
    # 5 survivors are enough for SecAgg+'s threshold (5 of 10) but carry too little noise
    state, after, record, executor = one_round(secure, digits_40, softmax_work, cohort[:5])
    assert record.aborted == (
        "secure aggregation aborted: 5 masked inputs, fewer than min_cohort=6"
    )
    assert not any(isinstance(r, UnmaskShares) for r in executor.received)
    np.testing.assert_array_equal(after.params, state.params)


def test_two_rounds_account_and_match_the_plain_run(
    digits_40: FederatedData, softmax_work: fl.LocalSGD
) -> None:
    plain, secure = plain_and_secure(softmax_work)
    run = {
        "rounds": 2, "cohort": 10, "min_cohort": 6, "seed": 1, "federated_eval": False,
        "budget": privacy.budget(max_epsilon=1e3, delta=1e-3),
    }  # fmt: skip
    a = fl.simulate(plain, digits_40, **run)  # type: ignore[arg-type]
    b = fl.simulate(secure, digits_40, **run)  # type: ignore[arg-type]
    np.testing.assert_array_equal(b.params, a.params)
    assert b.metric("dp.epsilon") == a.metric("dp.epsilon")
    assert b.metric("dp.epsilon")[0] > 0
    assert b.metric("secagg.survivors") == [10.0, 10.0]


@dataclass(frozen=True)
class Modular:
    """A ring stage without DP's needs_sum: only the ring checks stand in its way."""

    name: str = "modular"

    @property
    def traits(self) -> StageTraits:
        return StageTraits(sum_compatible=True, ring_bits=BITS)

    def init(self, layout: Layout) -> StageState:
        return None

    def config(self, state: StageState) -> Mapping[str, float]:
        return {}

    def client(
        self, update: Vector, config: Mapping[str, float], rng: np.random.Generator
    ) -> tuple[Vector, dict[str, float]]:
        return np.mod(np.rint(update), 2**BITS).astype(np.float32), {}

    def server(
        self, aggregate: Vector, state: StageState, client_metrics: Sequence[Mapping[str, float]]
    ) -> tuple[Vector, StageState, dict[str, float]]:
        return aggregate, state, {}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda w: fl.fedavg(w).with_privacy(ddg()).with_stages(fl.secure_sum(clip=1.0)),
            "stage 'ddg' outputs integers mod 2\\^16, but the secure sum 'secure_sum' adds "
            "modulo 2\\^32; give 'secure_sum' bits=16",
        ),
        (
            lambda w: (
                fl.fedavg(w)
                .with_stages(fl.clip_by_norm(1.0), fl.secure_sum(clip=1.0, bits=BITS))
                .with_privacy(ddg())
            ),
            "stage 'clip' comes between them",
        ),
        (
            lambda w: fl.fedavg(w).with_stages(Modular(), fl.secure_sum(clip=1.0, bits=BITS)),
            "the reducer WeightedMean would weight them",
        ),
        (
            lambda w: (
                fl.fedavg(w)
                .with_privacy(ddg())
                .with_stages(fl.secure_sum(clip=1.0, bits=BITS))
                .with_reducer(fl.reducers.mean())
            ),
            "stage 'ddg' adds noise calibrated to the plain sum",
        ),
    ],
)
def test_mismatched_pipelines_are_refused_naming_the_stages(
    softmax_work: fl.LocalSGD, build: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build(softmax_work)  # type: ignore[operator]
