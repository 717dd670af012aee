"""A site's own policy against the run's terms, over real gRPC on 127.0.0.1: the Welcome carries
the terms, a site that refuses them says why in a Refusal and stops before any task, and the
server keeps the refusal and stops waiting for that site."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from fedloom.core.layout import Field, Layout, Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.tasks import Evaluation, Failure, TrainTask
from fedloom.policy import RunTerms, SitePolicy
from fedloom.transport import (
    GrpcExecutor,
    PolicyRefused,
    ProtocolError,
    ServiceConfig,
    Site,
    SiteRefusal,
    TrainingConfig,
)
from fedloom.transport.proto.v1 import fedloom_pb2 as pb
from fedloom.transport.terms import refusal, terms_from_pb, terms_to_pb

LAYOUT = Layout((Field("w", (4,)),))
PLANNED_AT_8 = RunTerms("fedavg", "softmax", secure_aggregation=False, epsilon=8.0, delta=1e-5)


class Ones:
    def __init__(self) -> None:
        self.prepared = 0

    def train(self, broadcast: Broadcast) -> ClientResult:
        return ClientResult(np.ones(4, np.float32), 1)

    def evaluate(self, params: Vector) -> Evaluation:
        return Evaluation(0)


def _config(terms: RunTerms | None, sites: tuple[str, ...]) -> ServiceConfig:
    return ServiceConfig(
        run="r", layout=LAYOUT, training=TrainingConfig("fedavg", {"lr": 0.1}),
        sites=sites, verifier=None, heartbeat=60.0, terms=terms,
    )  # fmt: skip


def _site(port: int, name: str, policy: SitePolicy | None, program: Ones) -> Site:
    def prepare(_: TrainingConfig) -> Ones:
        program.prepared += 1
        return program

    return Site(
        target=f"127.0.0.1:{port}", name=name, layout=LAYOUT, prepare=prepare,  # type: ignore[arg-type]
        credentials=None, policy=policy,
    )  # fmt: skip


def test_a_site_limited_to_epsilon_4_refuses_a_run_planned_at_8() -> None:
    program = Ones()
    with GrpcExecutor(
        _config(PLANNED_AT_8, ("strict", "easy")), address="127.0.0.1:0", credentials=None
    ) as executor:
        strict = _site(executor.port, "strict", SitePolicy("strict", max_epsilon=4.0), program)
        with pytest.raises(PolicyRefused) as refused:
            strict.run()
        reason = "the run plans ε = 8, above the site's limit ε = 4"
        assert refused.value.reason == reason
        assert "strict refused the run under its own policy" in str(refused.value)
        assert program.prepared == 0
        assert strict.tasks_done == 0
        assert executor.refusals() == [SiteRefusal("strict", None, reason)]
        assert executor.refusals() == []  # each refusal is handed over once
        assert executor.refused() == frozenset({"strict"})

        # The other site's limit is above 8: it joins and trains; the strict one stays out.
        easy = _site(executor.port, "easy", SitePolicy("easy", max_epsilon=10.0), Ones())
        threading.Thread(target=easy.run, daemon=True).start()
        assert executor.wait_for_sites(2, timeout=30)  # one remains to wait for, not two
        params = np.zeros(4, np.float32)
        taken, absent = executor.run([TrainTask(c, Broadcast(0, params, seed=c)) for c in (1, 0)])
        assert isinstance(taken, ClientResult)
        assert isinstance(absent, Failure)
        assert absent.reason == "site strict is not connected"


def test_a_site_requiring_secure_aggregation_refuses_a_plain_run() -> None:
    terms = RunTerms("fedavg", "softmax")
    with GrpcExecutor(
        _config(terms, ("careful",)), address="127.0.0.1:0", credentials=None
    ) as executor:
        site = _site(
            executor.port, "careful", SitePolicy("careful", secure_aggregation=True), Ones()
        )
        with pytest.raises(PolicyRefused, match="requires secure aggregation; the run has none"):
            site.run()
        (found,) = executor.refusals()
        assert found.site == "careful"


def test_a_server_that_states_no_terms_is_refused_by_a_site_with_a_policy() -> None:
    with GrpcExecutor(_config(None, ("s",)), address="127.0.0.1:0", credentials=None) as executor:
        site = _site(executor.port, "s", SitePolicy("s"), Ones())
        with pytest.raises(PolicyRefused, match="did not state the run's terms"):
            site.run()


def test_terms_survive_the_wire_and_malformed_ones_are_refused() -> None:
    unbounded = RunTerms("fedprox", "mlp:64", True, math.inf, 1e-6, ("CN=board",))
    for terms in (PLANNED_AT_8, unbounded, RunTerms("fedavg", "softmax")):
        message = pb.Welcome.FromString(pb.Welcome(terms=terms_to_pb(terms)).SerializeToString())
        assert terms_from_pb(message.terms) == terms
    no_dp = pb.Welcome(terms=terms_to_pb(RunTerms("fedavg", "softmax")))
    assert not no_dp.terms.HasField("epsilon")  # "no DP" is absent, not 0
    assert refusal(SitePolicy("s", dp=True), no_dp) == (
        "the site requires differential privacy; the run plans none"
    )
    assert refusal(SitePolicy("s", max_epsilon=4.0), no_dp) is None
    # ε = ∞ (DP without a bound) is above every limit.
    assert "ε = inf" in str(refusal(SitePolicy("s", max_epsilon=4.0), pb.Welcome(
        terms=terms_to_pb(unbounded))))  # fmt: skip
    for bad in (pb.RunTerms(model="softmax"), pb.RunTerms(algorithm="a", model="m", epsilon=-1)):
        with pytest.raises(ProtocolError, match="run terms"):
            terms_from_pb(bad)


def test_a_secure_only_site_fails_plain_training_tasks_whatever_the_terms_said() -> None:
    claimed = RunTerms("fedavg", "softmax", secure_aggregation=True)  # but tasks come plain
    with GrpcExecutor(
        _config(claimed, ("careful",)), address="127.0.0.1:0", credentials=None
    ) as executor:
        site = _site(
            executor.port, "careful", SitePolicy("careful", secure_aggregation=True), Ones()
        )
        threading.Thread(target=site.run, daemon=True).start()
        assert executor.wait_for_sites(1, timeout=30)
        (reply,) = executor.run([TrainTask(0, Broadcast(0, np.zeros(4, np.float32), seed=0))])
        assert isinstance(reply, Failure)
        assert reply.reason == (
            "site careful: this site's policy requires secure aggregation; it answers only "
            "secure training tasks, not a plain one"
        )
        assert site.tasks_done == 0
        assert executor.refusals() == []
