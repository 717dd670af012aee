"""Local record-level DP-SGD on each client, through Opacus.

DP-SGD (Abadi et al., *Deep Learning with Differential Privacy*, CCS 2016): every local step
samples each of the client's examples independently with probability ``q = batch_size / n``
(Poisson sampling, Opacus' ``DPDataLoader``), clips each example's gradient to L2 norm
``max_grad_norm`` and adds Gaussian noise with standard deviation
``noise_multiplier · max_grad_norm`` to their sum (Opacus' ``GradSampleModule`` and
``DPOptimizer``; Yousefpour et al., *Opacus: User-Friendly Differential Privacy Library in
PyTorch*, 2021).

This protects each **record** of a client against everyone who sees that client's updates (the
server included); it says nothing about a client's participation as a whole (that is user-level
DP, :mod:`fedloom.privacy.central`). Each client's own (ε, δ) is accounted with dp-accounting,
not Opacus' accountant: its steps so far (kept in the client's state across rounds) composed as
``PoissonSampledDpEvent(q, GaussianDpEvent(z))``, reported as ``local_dp.epsilon`` and
``local_dp.delta`` in the client's metrics (the round's metrics show their example-weighted mean;
the per-client values are in each client's result).

Opacus trains one module at a time, so the vectorized executor runs this client work one client
at a time (its fallback), and the pool and Ray executors run it as they run any client work.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedloom.client.work import Array
from fedloom.core import validate
from fedloom.core.messages import Broadcast, ClientResult, ClientState
from fedloom.torch.model import TorchModel
from fedloom.torch.vectors import module_to_vector, vector_to_module

STEPS = "local_dp_steps"
"""The client's DP-SGD steps over all its rounds so far, in its state (a length-1 vector)."""


@dataclass(frozen=True)
class DPSGDWork:
    """Client work: ``epochs`` of DP-SGD with Opacus on the client's own examples.

    ``batch_size`` is the expected batch (Poisson sampling with ``q = batch_size / n``);
    ``delta`` is the δ each client's ε is reported at (default ``1 / n^1.1`` of that client's
    ``n`` examples); ``accountant`` is ``"rdp"`` or ``"pld"``.
    """

    model: TorchModel
    lr: float
    noise_multiplier: float
    max_grad_norm: float
    batch_size: int = 32
    epochs: int = 1
    delta: float | None = None
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        if not isinstance(self.model, TorchModel):
            raise ValueError(f"model must be a fedloom.torch.TorchModel, got {self.model!r}")
        validate.positive("lr", self.lr)
        if not isinstance(self.noise_multiplier, int | float) or self.noise_multiplier <= 0:
            raise ValueError(
                f"noise_multiplier must be a finite number > 0 for DP-SGD, got "
                f"{self.noise_multiplier!r} (0 adds no noise: use fedloom.torch.local_sgd)"
            )
        validate.positive("noise_multiplier", self.noise_multiplier)
        validate.positive("max_grad_norm", self.max_grad_norm)
        validate.positive_int("batch_size", self.batch_size)
        validate.positive_int("epochs", self.epochs)
        if self.delta is not None:
            validate.in_range("delta", self.delta, 0.0, 1.0, low_open=True, high_open=True)
        validate.one_of("accountant", self.accountant, ("rdp", "pld"))
        try:
            import opacus  # noqa: F401
        except ImportError:
            from fedloom.core.errors import MissingExtra

            raise MissingExtra("local DP-SGD", "dpsgd") from None

    def train(
        self, broadcast: Broadcast, x: Array, y: Array, state: ClientState
    ) -> tuple[ClientResult, ClientState]:
        from opacus import GradSampleModule
        from opacus.data_loader import DPDataLoader
        from opacus.optimizers import DPOptimizer

        from fedloom.privacy import epsilon, sampled_gaussian
        from fedloom.privacy.sampling import PoissonSampling

        n = len(x)
        rate = min(1.0, self.batch_size / n)
        generator = torch.Generator().manual_seed(broadcast.seed)
        with torch.random.fork_rng():
            torch.manual_seed(broadcast.seed)
            module = self.model.make_model()
        vector_to_module(broadcast.params, module)
        x_t, y_t = self.model._batch(x, y)
        dataset = torch.utils.data.TensorDataset(x_t, y_t)
        loader = DPDataLoader(dataset, sample_rate=rate, generator=generator)
        private = GradSampleModule(module)
        optimizer = DPOptimizer(
            torch.optim.SGD(private.parameters(), lr=self.lr),
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            expected_batch_size=max(1, round(rate * n)),
            generator=generator,
        )
        private.train()
        steps, loss_sum, seen = 0, 0.0, 0
        for _ in range(self.epochs):
            for xb, yb in loader:
                optimizer.zero_grad()
                if len(xb) == 0:
                    # An empty Poisson batch still takes a (pure-noise) step, as DP-SGD must.
                    optimizer.step()
                    steps += 1
                    continue
                loss = self.model._loss(private(xb), yb)
                with warnings.catch_warnings():
                    # Opacus' hooks on a first layer whose input needs no gradient: harmless.
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                steps += 1
                loss_sum += float(loss.detach()) * len(xb)
                seen += len(xb)
        private.zero_grad(set_to_none=True)
        new = module_to_vector(private._module)
        total = int(np.asarray(state.get(STEPS, np.zeros(1)))[0]) + steps
        delta = self.delta if self.delta is not None else float(n**-1.1)
        spent = epsilon(
            sampled_gaussian(PoissonSampling(n, rate), self.noise_multiplier),
            total,
            delta=delta,
            accountant=self.accountant,
        )
        metrics: dict[str, Any] = {
            "train_loss": loss_sum / seen if seen else float("nan"),
            "local_steps": float(steps),
            "local_dp.epsilon": spent,
            "local_dp.delta": delta,
        }
        update = (new - broadcast.params).astype(np.float32)
        new_state = {**state, STEPS: np.array([total], dtype=np.float32)}
        return ClientResult(update, n, metrics=metrics), new_state


def dp_sgd(
    make_model: Any,
    *,
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float,
    batch_size: int = 32,
    epochs: int = 1,
    delta: float | None = None,
    loss: str = "cross_entropy",
    accountant: str = "rdp",
) -> DPSGDWork:
    """Client work that trains ``make_model()`` with Opacus DP-SGD; see :class:`DPSGDWork`."""
    return DPSGDWork(
        TorchModel(make_model, loss=loss),
        lr=lr,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        batch_size=batch_size,
        epochs=epochs,
        delta=delta,
        accountant=accountant,
    )
