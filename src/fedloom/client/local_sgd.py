"""Local training on a client: minibatch SGD (or Adam) for E epochs or K steps, on flat vectors.

One loop serves FedAvg and its corrections, each a term added to the minibatch gradient g:

* FedProx (Li et al., *Federated Optimization in Heterogeneous Networks*, MLSys 2020) minimizes
  ``F_k(w) + μ/2 ‖w − w_t‖²``; its gradient adds ``μ (w − w_t)``.
* SCAFFOLD (Karimireddy et al., *SCAFFOLD: Stochastic Controlled Averaging for Federated
  Learning*, ICML 2020) steps along ``g − c_i + c`` and, with option II, sets the new client
  control variate to ``c_i⁺ = c_i − c + (x − y) / (K η)``; the client sends ``Δc = c_i⁺ − c_i``.
* FedNova (Wang et al., *Tackling the Objective Inconsistency Problem in Heterogeneous Federated
  Optimization*, NeurIPS 2020) sends the normalized update ``Δ_i / ‖a_i‖₁`` with ``‖a_i‖₁``
  beside it, where ``a_i`` is the SGD aggregation vector of its τ_i local steps.

The model itself is any :class:`~fedloom.core.model.Model`; the loop never sees a framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedloom.client.work import Array
from fedloom.core import validate
from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast, ClientResult, ClientState
from fedloom.core.model import Model
from fedloom.optimizers import SGD, Adaptive, Momentum, Optimizer

CONTROL = "control"
"""Name of SCAFFOLD's control variate: server ``c`` in the broadcast, ``Δc`` in the result."""
FEDNOVA_NORM = "fednova_norm"
"""Name of FedNova's ``‖a_i‖₁`` in a client result (a length-1 vector)."""


@dataclass(frozen=True)
class LocalSGD:
    """Minibatch local training, configured once and sent to every client.

    At most one of ``epochs`` (passes over the local data) or ``steps`` (minibatch steps) is set;
    with neither, one epoch.
    ``optimizer`` is ``"sgd"`` (with optional ``momentum``) or ``"adam"``. The last minibatch of an
    epoch may be smaller than ``batch_size``. ``prox_mu``, ``control_variates`` and ``normalized``
    are set by the ``fedprox``, ``scaffold`` and ``fednova`` recipes rather than by hand.
    """

    model: Model
    lr: float
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 32
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0
    control_variates: bool = False
    normalized: bool = False

    def __post_init__(self) -> None:
        validate.positive("lr", self.lr)
        if self.epochs is None and self.steps is None:
            object.__setattr__(self, "epochs", 1)
        if self.epochs is not None and self.steps is not None:
            raise ValueError(
                f"set exactly one of epochs or steps, got epochs={self.epochs!r}, "
                f"steps={self.steps!r}"
            )
        if self.epochs is not None:
            validate.positive_int("epochs", self.epochs)
        if self.steps is not None:
            validate.positive_int("steps", self.steps)
        validate.positive_int("batch_size", self.batch_size)
        validate.one_of("optimizer", self.optimizer, ("sgd", "adam"))
        validate.in_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        if self.optimizer == "adam" and self.momentum:
            raise ValueError("momentum applies to optimizer='sgd'; Adam has its own moments")
        validate.non_negative("weight_decay", self.weight_decay)
        validate.non_negative("prox_mu", self.prox_mu)
        plain_sgd = self.optimizer == "sgd" and self.momentum == 0.0
        if self.control_variates and not plain_sgd:
            raise ValueError(
                "SCAFFOLD's option-II control variate assumes plain SGD steps: use optimizer='sgd' "
                f"with momentum=0, got optimizer={self.optimizer!r}, momentum={self.momentum!r}"
            )
        if self.normalized and (self.optimizer != "sgd" or (self.momentum and self.prox_mu)):
            raise ValueError(
                "FedNova's normalizer is defined for SGD with momentum or with a proximal term, "
                f"not both and not Adam; got optimizer={self.optimizer!r}, "
                f"momentum={self.momentum!r}, prox_mu={self.prox_mu!r}"
            )

    def local_optimizer(self) -> Optimizer:
        """The optimizer each client runs, as a flat-vector optimizer fed with ``−gradient``."""
        if self.optimizer == "adam":
            return Adaptive(
                "adam",
                lr=self.lr,
                beta1=0.9,
                beta2=0.999,
                tau=1e-8,
                initial_v=0.0,
                bias_correction=True,
            )
        if self.momentum:
            return Momentum(lr=self.lr, beta=self.momentum)
        return SGD(lr=self.lr)

    def num_steps(self, num_examples: int) -> int:
        """Local steps τ on ``num_examples`` examples."""
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None
        return self.epochs * -(-num_examples // self.batch_size)

    def fednova_norm(self, steps: int) -> float:
        """‖a_i‖₁ for ``steps`` local steps (Wang et al. 2020, Section 4 and Appendix).

        Plain SGD: τ. Momentum ρ: Σ_{k=1..τ} (1 − ρᵏ)/(1 − ρ). Proximal μ with step η:
        Σ_{k=0..τ−1} (1 − ημ)ᵏ.
        """
        if self.momentum:
            rho = self.momentum
            return float(sum((1 - rho**k) / (1 - rho) for k in range(1, steps + 1)))
        if self.prox_mu:
            decay = 1 - self.lr * self.prox_mu
            return float(sum(decay**k for k in range(steps)))
        return float(steps)

    def train(
        self, broadcast: Broadcast, x: Array, y: Array, state: ClientState
    ) -> tuple[ClientResult, ClientState]:
        n = len(x)
        if n == 0:
            raise ValueError("a client with no training examples cannot train")
        layout = self.model.layout
        start = layout.check(broadcast.params, what="broadcast params")
        mask = layout.trainable_mask.astype(np.float32)
        params = start.copy()
        rng = np.random.default_rng(broadcast.seed)
        opt = self.local_optimizer()
        opt_state = opt.init(params)

        constant = np.zeros_like(params)
        client_control = state.get(CONTROL)
        server_control = broadcast.extras.get(CONTROL)
        if self.control_variates:
            if server_control is None:
                raise ValueError(
                    f"SCAFFOLD needs the server control variate {CONTROL!r} in the broadcast"
                )
            if client_control is None:
                client_control = np.zeros_like(params)
            constant = (server_control - client_control) * mask

        steps = self.num_steps(n)
        losses = np.empty(steps, dtype=np.float64)
        for step, batch in enumerate(_batches(n, self.batch_size, steps, rng)):
            loss, grad = self.model.loss_and_grad(params, x[batch], y[batch])
            losses[step] = loss
            if self.weight_decay:
                grad = grad + np.float32(self.weight_decay) * params * mask
            if self.prox_mu:
                grad = grad + np.float32(self.prox_mu) * (params - start) * mask
            if self.control_variates:
                grad = grad + constant
            delta, opt_state = opt.update(-grad, opt_state)
            params = params + delta

        update = (params - start).astype(np.float32)
        extras: dict[str, Vector] = {}
        new_state: ClientState = state
        if self.control_variates:
            assert client_control is not None and server_control is not None
            # Option II: c_i+ = c_i - c + (x - y) / (K lr), and x - y = -update.
            new_control = (
                (client_control - server_control - update / np.float32(steps * self.lr)) * mask
            ).astype(np.float32)
            extras[CONTROL] = (new_control - client_control).astype(np.float32)
            new_state = {**state, CONTROL: new_control}
        metrics = {"train_loss": float(losses.mean()), "local_steps": float(steps)}
        if self.normalized:
            norm = self.fednova_norm(steps)
            extras[FEDNOVA_NORM] = np.array([norm], dtype=np.float32)
            # Running statistics are not SGD steps: they travel unnormalized.
            scale = np.where(layout.trainable_mask, np.float32(1 / norm), np.float32(1))
            update = (update * scale).astype(np.float32)
        return ClientResult(update, n, extras=extras, metrics=metrics), new_state


def _batches(n: int, batch_size: int, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``steps`` minibatch index arrays, reshuffling the data at the start of every epoch."""
    out: list[np.ndarray] = []
    while len(out) < steps:
        order = rng.permutation(n)
        for lo in range(0, n, batch_size):
            out.append(order[lo : lo + batch_size])
            if len(out) == steps:
                break
    return out
