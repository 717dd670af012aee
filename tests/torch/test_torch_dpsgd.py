"""Local DP-SGD through Opacus: per-example clipping, noise scale, each client's own ε."""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("opacus")

import dp_accounting
from dp_accounting import rdp

import fedloom as fl
from fedloom.core.messages import Broadcast
from fedloom.executors.vectorized import VectorizedExecutor
from fedloom.torch.dpsgd import STEPS, dp_sgd

logging.getLogger("absl").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def data() -> fl.data.FederatedData:
    return fl.data.digits().split(fl.data.quantity_skew(exponent=1.0), clients=4, seed=0)


def _broadcast(work: object, seed: int = 0) -> Broadcast:
    params = work.model.init(0)  # type: ignore[attr-defined]
    params.flags.writeable = False
    return Broadcast(round=0, params=params, seed=seed)


def test_each_client_reports_its_own_epsilon_from_dp_accounting(
    data: fl.data.FederatedData,
) -> None:
    work = dp_sgd(
        fl.torch.mlp(64, [16], 10), lr=0.1, noise_multiplier=1.1, max_grad_norm=1.0,
        batch_size=16, delta=1e-4,
    )  # fmt: skip
    epsilons = []
    for client in data.clients[:2]:
        n = len(client.x_train)
        state: dict[str, np.ndarray] = {}
        total = 0
        for seed in (1, 2):  # two rounds: the steps accumulate in the client's state
            result, state = work.train(
                _broadcast(work, seed), client.x_train, client.y_train, state
            )
            total += int(result.metrics["local_steps"])
        assert int(state[STEPS][0]) == total
        event = dp_accounting.PoissonSampledDpEvent(16 / n, dp_accounting.GaussianDpEvent(1.1))
        expected = rdp.RdpAccountant().compose(event, total).get_epsilon(1e-4)
        assert result.metrics["local_dp.epsilon"] == pytest.approx(expected, rel=1e-9)
        assert result.metrics["local_dp.delta"] == 1e-4
        epsilons.append(result.metrics["local_dp.epsilon"])
    # Clients of different sizes sample at different rates and spend different ε.
    assert epsilons[0] != pytest.approx(epsilons[1])


def test_per_example_clipping_bounds_every_step(data: fl.data.FederatedData) -> None:
    client = data.clients[0]
    n, lr, bound = len(client.x_train), 0.5, 1e-3
    work = dp_sgd(
        fl.torch.mlp(64, [16], 10), lr=lr, noise_multiplier=1e-9, max_grad_norm=bound,
        batch_size=n, epochs=3,
    )  # fmt: skip
    result, _ = work.train(_broadcast(work), client.x_train, client.y_train, {})
    # q = 1: every step averages n clipped gradients, each of norm <= bound, over n.
    steps = result.metrics["local_steps"]
    assert steps == 3
    assert 0 < np.linalg.norm(result.update.astype(np.float64)) <= lr * steps * bound * (1 + 1e-4)


def test_noise_has_std_z_times_clip_over_the_expected_batch(data: fl.data.FederatedData) -> None:
    client = data.clients[0]
    n, z, bound = len(client.x_train), 2.0, 1e-2
    work = dp_sgd(
        fl.torch.mlp(64, [64], 10), lr=1.0, noise_multiplier=z, max_grad_norm=bound,
        batch_size=n,
    )  # fmt: skip
    result, _ = work.train(_broadcast(work), client.x_train, client.y_train, {})
    # One step: update = −lr · (Σ clipped + N(0, (z·C)²)) / n; the signal is at most C/n in norm.
    configured = z * bound / n
    assert np.std(result.update.astype(np.float64)) == pytest.approx(configured, rel=0.06)


def test_the_vectorized_executor_falls_back_or_refuses(data: fl.data.FederatedData) -> None:
    work = dp_sgd(fl.torch.mlp(64, [8], 10), lr=0.1, noise_multiplier=1.0, max_grad_norm=1.0)
    program = fl.fedavg(work).client
    executor = VectorizedExecutor(program, data.clients)
    assert executor.vectorized is False
    assert "DPSGDWork" in (executor.fallback_reason or "")
    with pytest.raises(ValueError, match="cannot vectorize this client program"):
        VectorizedExecutor(program, data.clients, strict=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier must be a finite number > 0 for DP-SGD"),
        ({"max_grad_norm": 0.0}, "max_grad_norm must be a finite number > 0"),
        ({"delta": 1.0}, "delta must be in"),
    ],
)
def test_bad_dp_sgd_settings_are_refused(kwargs: dict[str, float], match: str) -> None:
    options = {"lr": 0.1, "noise_multiplier": 1.0, "max_grad_norm": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        dp_sgd(fl.torch.mlp(64, [8], 10), **options)
