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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from fedloom.client.work import Array
from fedloom.core import validate
from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast, ClientResult, ClientState
from fedloom.core.model import Model
from fedloom.core.seeding import minibatches
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

    def num_steps(self, num_examples: int, limit: int | None = None) -> int:
        """Local steps τ on ``num_examples`` examples, at most ``limit`` when one is given."""
        if self.steps is not None:
            steps = self.steps
        else:
            assert self.epochs is not None
            steps = self.epochs * -(-num_examples // self.batch_size)
        return steps if limit is None else max(1, min(steps, limit))

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
        opt = self.local_optimizer()
        opt_state = opt.init(params)
        constant = self.control_correction(broadcast, state)
        steps = self.num_steps(n, broadcast.max_steps)
        losses = np.empty(steps, dtype=np.float64)
        (plan,) = minibatches([n], self.batch_size, [steps], [broadcast.seed])
        for step, batch in enumerate(plan):
            loss, grad = self.model.loss_and_grad(params, x[batch], y[batch])
            losses[step] = loss
            grad = self.corrected_gradient(grad, params, start, mask, constant)
            delta, opt_state = opt.update(-grad, opt_state)
            params = params + delta
        return self.result(
            broadcast, state, start=start, params=params, losses=losses, num_examples=n
        )

    def control_correction(self, broadcast: Broadcast, state: ClientState) -> Vector | None:
        """SCAFFOLD's constant gradient correction ``c − c_i`` on trainable entries, or None."""
        if not self.control_variates:
            return None
        server_control = broadcast.extras.get(CONTROL)
        if server_control is None:
            raise ValueError(
                f"SCAFFOLD needs the server control variate {CONTROL!r} in the broadcast"
            )
        mask = self.model.layout.trainable_mask.astype(np.float32)
        return ((server_control - _client_control(state, len(server_control))) * mask).astype(
            np.float32
        )

    def corrected_gradient(
        self, grad: Vector, params: Vector, start: Vector, mask: Vector, constant: Vector | None
    ) -> Vector:
        """The minibatch gradient plus weight decay, FedProx's and SCAFFOLD's terms, on trainable
        entries. Elementwise, so it works row by row on ``[clients, dims]`` matrices too."""
        if self.weight_decay:
            grad = grad + np.float32(self.weight_decay) * params * mask
        if self.prox_mu:
            grad = grad + np.float32(self.prox_mu) * (params - start) * mask
        if constant is not None:
            grad = grad + constant
        return grad

    def result(
        self,
        broadcast: Broadcast,
        state: ClientState,
        *,
        start: Vector,
        params: Vector,
        losses: npt.NDArray[np.float64],
        num_examples: int,
    ) -> tuple[ClientResult, ClientState]:
        """A client's result and next state once its ``len(losses)`` local steps are done.

        The update ``params − start``; SCAFFOLD's option-II control variate and its change; the
        ``train_loss`` and ``local_steps`` metrics; FedNova's normalized update and ``‖a_i‖₁``.
        """
        (outcome,) = self.results(
            [broadcast],
            [state],
            updates=(params - start)[None, :],
            mean_losses=np.array([losses.mean()]),
            steps=[len(losses)],
            num_examples=[num_examples],
        )
        return outcome

    def results(
        self,
        broadcasts: Sequence[Broadcast],
        states: Sequence[ClientState],
        *,
        updates: Vector,
        mean_losses: npt.NDArray[np.float64],
        steps: Sequence[int],
        num_examples: Sequence[int],
    ) -> list[tuple[ClientResult, ClientState]]:
        """:meth:`result` for many clients at once, from their ``[clients, dims]`` ``updates``
        (``params − start``, row per client), mean losses and step counts."""
        updates = updates.astype(np.float32, copy=False)
        layout = self.model.layout
        mask = layout.trainable_mask.astype(np.float32)
        out: list[tuple[ClientResult, ClientState]] = []
        for row, (broadcast, state) in enumerate(zip(broadcasts, states, strict=True)):
            update = updates[row]
            taken = int(steps[row])
            extras: dict[str, Vector] = {}
            new_state: ClientState = state
            if self.control_variates:
                server_control = broadcast.extras[CONTROL]
                client_control = _client_control(state, layout.size)
                # Option II: c_i+ = c_i - c + (x - y) / (K lr), and x - y = -update.
                new_control = (
                    (client_control - server_control - update / np.float32(taken * self.lr)) * mask
                ).astype(np.float32)
                extras[CONTROL] = (new_control - client_control).astype(np.float32)
                new_state = {**state, CONTROL: new_control}
            metrics = {"train_loss": float(mean_losses[row]), "local_steps": float(taken)}
            if self.normalized:
                norm = self.fednova_norm(taken)
                extras[FEDNOVA_NORM] = np.array([norm], dtype=np.float32)
                # Running statistics are not SGD steps: they travel unnormalized.
                scale = np.where(layout.trainable_mask, np.float32(1 / norm), np.float32(1))
                update = (update * scale).astype(np.float32, copy=False)
            out.append(
                (
                    ClientResult(update, num_examples[row], extras=extras, metrics=metrics),
                    new_state,
                )
            )
        return out


def _client_control(state: ClientState, size: int) -> Vector:
    control = state.get(CONTROL)
    return np.zeros(size, dtype=np.float32) if control is None else control
