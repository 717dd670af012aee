"""Heterogeneous devices in simulation: profiles, a virtual clock, a round deadline, over-selection.

Each client has a :class:`DeviceProfile`: relative compute speed, downlink and uplink bandwidth,
the probability it is reachable when sampled, and the probability it drops out mid-round. A
:class:`Fleet` holds one profile per client, drawn from distributions or read from a CSV trace.

:class:`DeviceExecutor` wraps any executor. Before a round's tasks run it gives every sampled
client a simulated duration on the virtual clock::

    seconds = bytes_down / downlink + steps · batch_size · seconds_per_example / speed
              + bytes_up / uplink

(bytes as they travel: the broadcast's encoded payload or chain when the model is compressed,
the update codec's payload when the pipeline ends in one; float32 otherwise)

(a local step costs one full batch) and then decides, deterministically from the run's seed, who
is unreachable, who drops out, who misses the deadline and, with over-selection, who finishes
after the first ``keep`` clients. Only the survivors train. With ``partial_work`` a client that
would miss the deadline instead takes the local steps that fit (FedNova's normalization
accounts for the smaller step count, Wang et al. 2020), through :attr:`Broadcast.max_steps`.

Every reply from a client that did not make it is a :class:`~fedloom.engine.Failure` whose reason
says why, so the round's record lists the dropped clients. Accepted results carry
``sim_round_seconds`` (the round's simulated wall-clock time), ``sim_clock`` (simulated time
since the run started) and ``sim_client_seconds`` (this client's duration) in their metrics; the
engine's example-weighted mean of the first two is exact, since every client reports the same.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fedloom.algorithms import ClientProgram
from fedloom.client import LocalSGD
from fedloom.core import validate
from fedloom.core.messages import Broadcast, ClientResult, ClientState
from fedloom.data import ClientData
from fedloom.data.population import LazyClients, client_lookup
from fedloom.engine import Failure, Reply, Task, TrainTask
from fedloom.engine.buffered import Clock
from fedloom.engine.payloads import download_bytes
from fedloom.executors import SimulatedExecutor
from fedloom.stages import Encoding


@dataclass(frozen=True)
class DeviceProfile:
    """One device: ``speed`` relative to the reference device, bandwidth in bytes per second,
    ``availability`` the chance it is reachable when sampled, ``dropout`` the chance it drops
    out after starting."""

    speed: float = 1.0
    downlink: float = math.inf
    uplink: float = math.inf
    availability: float = 1.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        validate.positive("speed", self.speed)
        for name in ("downlink", "uplink"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0):
                raise ValueError(
                    f"{name} must be > 0 bytes per second (inf allowed), got {value!r}"
                )
        validate.in_range("availability", self.availability, 0.0, 1.0)
        validate.in_range("dropout", self.dropout, 0.0, 1.0)


@dataclass(frozen=True)
class LogNormal:
    """``median · exp(sigma · N(0, 1))``: the usual model of device speeds and bandwidths."""

    median: float
    sigma: float

    def __post_init__(self) -> None:
        validate.positive("median", self.median)
        validate.non_negative("sigma", self.sigma)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.median * np.exp(self.sigma * rng.standard_normal(n))


@dataclass(frozen=True)
class Uniform:
    """Uniform on ``[low, high]``."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"Uniform needs low <= high, got low={self.low}, high={self.high}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, n)


Distribution = LogNormal | Uniform | float
TRACE_COLUMNS = ("client", "speed", "downlink", "uplink", "availability", "dropout")


@dataclass(frozen=True)
class Fleet:
    """One :class:`DeviceProfile` per client id; ``seconds_per_example`` is the reference
    device's compute time for one training example."""

    profiles: Mapping[int, DeviceProfile]
    seconds_per_example: float = 1e-3

    def __post_init__(self) -> None:
        validate.positive("seconds_per_example", self.seconds_per_example)

    @classmethod
    def sample(
        cls,
        clients: int,
        *,
        seed: int,
        speed: Distribution = 1.0,
        downlink: Distribution = math.inf,
        uplink: Distribution = math.inf,
        availability: float = 1.0,
        dropout: float = 0.0,
        seconds_per_example: float = 1e-3,
    ) -> Fleet:
        """Profiles for clients ``0..clients-1`` drawn from the given distributions."""
        validate.positive_int("clients", clients)
        rng = np.random.default_rng([seed, 0xDE71CE])

        def draw(d: Distribution) -> np.ndarray:
            return (
                np.full(clients, float(d)) if isinstance(d, int | float) else d.draw(rng, clients)
            )

        speeds, downs, ups = draw(speed), draw(downlink), draw(uplink)
        profiles = {
            c: DeviceProfile(
                float(speeds[c]), float(downs[c]), float(ups[c]), availability, dropout
            )
            for c in range(clients)
        }
        return cls(profiles, seconds_per_example)

    @classmethod
    def from_csv(cls, path: str | Path, *, seconds_per_example: float = 1e-3) -> Fleet:
        """Read a trace with columns ``client, speed, downlink, uplink, availability, dropout``
        (bandwidths in bytes per second, ``inf`` allowed). Every problem names the row."""
        path = Path(path)
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(
                    f"{path}: device trace is missing columns {missing}; "
                    f"it needs {list(TRACE_COLUMNS)}"
                )
            profiles: dict[int, DeviceProfile] = {}
            for line, row in enumerate(reader, start=2):
                try:
                    client = int(row["client"])
                    values = {c: float(row[c]) for c in TRACE_COLUMNS[1:]}
                    profile = DeviceProfile(**values)
                except (TypeError, ValueError) as error:
                    raise ValueError(f"{path}:{line}: {error}") from None
                if client in profiles:
                    raise ValueError(f"{path}:{line}: client {client} appears twice")
                profiles[client] = profile
        return cls(profiles, seconds_per_example)

    def profile(self, client: int) -> DeviceProfile:
        try:
            return self.profiles[client]
        except KeyError:
            raise ValueError(f"the fleet has no device profile for client {client}") from None

    def seconds(
        self, client: int, broadcast: Broadcast, examples: int, *, update_bytes: int | None = None
    ) -> float:
        """Simulated seconds for ``client`` to download ``broadcast`` (its encoded payload, when
        the model travels encoded, plus its extras), train on ``examples`` examples and upload
        an update of ``update_bytes`` (default: the model as float32) plus extras of the
        broadcast's sizes."""
        profile = self.profile(client)
        extras = sum(v.nbytes for v in broadcast.extras.values())
        up = (broadcast.params.nbytes if update_bytes is None else update_bytes) + extras
        compute = examples * self.seconds_per_example / profile.speed
        return download_bytes(broadcast) / profile.downlink + compute + up / profile.uplink


def wire_update_bytes(program: ClientProgram) -> int | None:
    """The bytes of an update on the wire when ``program``'s pipeline ends in a codec (None:
    sent as float32): the payload of a zero vector of the model's length, which is the size of
    every payload for fedloom's codecs (each depends only on the length)."""
    stage = program.stages[-1] if program.stages else None
    if not isinstance(stage, Encoding):
        return None
    zeros = np.zeros(program.work.model.layout.size, dtype=np.float32)
    payload, _, _ = stage.encode(zeros, {}, np.random.default_rng(0), {})
    return len(payload)


def fleet_clock(
    fleet: Fleet,
    work: LocalSGD,
    clients: Sequence[ClientData],
    *,
    update_bytes: int | None = None,
) -> Clock:
    """The virtual clock of :func:`fedloom.engine.buffered.train_buffered` for ``fleet``: each
    client's duration for its local steps (one full batch each) plus its transfers
    (``update_bytes``: an update's size on the wire, :func:`wire_update_bytes`; default float32).
    A population made on demand is only asked for the clients that are timed."""
    lookup = client_lookup(clients)

    def seconds(client: int, broadcast: Broadcast) -> float:
        steps = work.num_steps(_size(lookup, client), broadcast.max_steps)
        return fleet.seconds(client, broadcast, steps * work.batch_size, update_bytes=update_bytes)

    return seconds


def _size(lookup: Callable[[int], ClientData | None], client: int) -> int:
    data = lookup(client)
    if data is None:
        raise ValueError(f"client {client} is not in this population")
    return data.num_train


def _client_ids(clients: Sequence[ClientData]) -> Iterable[int]:
    """Every client's id; for a population made on demand, its positions (nothing is made)."""
    if isinstance(clients, LazyClients):
        return range(len(clients))
    return (c.client_id for c in clients)


class DeviceExecutor:
    """Runs ``inner`` on the clients that make it through a round on their devices.

    ``deadline`` (simulated seconds) drops clients that would finish later, unless
    ``partial_work`` lets them take fewer local steps; ``keep`` keeps only the first ``keep``
    clients to finish (over-selection: sample more than ``keep``). ``seed`` drives availability
    and dropout; the same seed gives the same devices' fates.
    """

    def __init__(
        self,
        inner: SimulatedExecutor,
        fleet: Fleet,
        *,
        program: ClientProgram,
        clients: Sequence[ClientData],
        deadline: float | None = None,
        keep: int | None = None,
        partial_work: bool = False,
        seed: int = 0,
    ):
        if not isinstance(program.work, LocalSGD):
            raise ValueError(
                "DeviceExecutor times fedloom's local training loop; it needs LocalSGD client "
                f"work, got {type(program.work).__name__}"
            )
        if deadline is not None:
            validate.positive("deadline", deadline)
        if keep is not None:
            validate.positive_int("keep", keep)
        if partial_work and deadline is None:
            raise ValueError("partial_work needs a deadline to fit the work into")
        missing = [c for c in _client_ids(clients) if c not in fleet.profiles]
        if missing:
            raise ValueError(f"the fleet has no device profile for clients {missing[:10]}")
        self.inner, self.fleet, self.work = inner, fleet, program.work
        self._update_bytes = wire_update_bytes(program)
        self._lookup = client_lookup(clients)
        self.deadline, self.keep, self.partial_work, self.seed = deadline, keep, partial_work, seed
        self.clock = 0.0
        """Simulated seconds since the run started."""

    @property
    def states(self) -> dict[int, ClientState]:
        return self.inner.states

    @states.setter
    def states(self, value: dict[int, ClientState]) -> None:
        self.inner.states = value

    def duration(self, client: int, broadcast: Broadcast, steps: int) -> float:
        """Simulated seconds for ``client`` to download, take ``steps`` steps and upload."""
        return self.fleet.seconds(
            client, broadcast, steps * self.work.batch_size, update_bytes=self._update_bytes
        )

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        replies: list[Reply | None] = [None] * len(tasks)
        finishing: list[tuple[float, int, TrainTask]] = []
        cut = False
        for position, task in enumerate(tasks):
            if not isinstance(task, TrainTask):
                continue
            fate = self._fate(task)
            if isinstance(fate, Failure):
                replies[position] = fate
                cut = True
            else:
                seconds, task = fate
                finishing.append((seconds, position, task))
        finishing.sort(key=lambda item: (item[0], item[1]))
        if self.keep is not None and len(finishing) > self.keep:
            for seconds, position, _ in finishing[self.keep :]:
                replies[position] = Failure(
                    f"over-selected: would finish at {seconds:.2f}s, after the first {self.keep}"
                )
            finishing = finishing[: self.keep]
        round_seconds = max((s for s, _, _ in finishing), default=0.0)
        if cut and self.deadline is not None:
            round_seconds = self.deadline  # the server waited for clients that never came
        self.clock += round_seconds

        others = [(p, t) for p, t in enumerate(tasks) if not isinstance(t, TrainTask)]
        chosen = [(p, t) for _, p, t in finishing] + others
        outcome = self.inner.run([t for _, t in chosen]) if chosen else []
        durations = {p: s for s, p, _ in finishing}
        for (position, _), reply in zip(chosen, outcome, strict=True):
            if isinstance(reply, ClientResult) and position in durations:
                metrics = {
                    **reply.metrics,
                    "sim_client_seconds": durations[position],
                    "sim_round_seconds": round_seconds,
                    "sim_clock": self.clock,
                }
                reply = replace(reply, metrics=metrics)
            replies[position] = reply
        assert all(r is not None for r in replies)
        return [r for r in replies if r is not None]

    def _fate(self, task: TrainTask) -> Failure | tuple[float, TrainTask]:
        """Why ``task``'s client does not report this round, or its duration and the task to
        run (with a step limit under ``partial_work``)."""
        client, broadcast = task.client, task.broadcast
        profile = self.fleet.profile(client)
        rng = np.random.default_rng([self.seed, broadcast.round, client, 0xC10C])
        if rng.random() >= profile.availability:
            return Failure("unavailable: the device was not reachable this round")
        if rng.random() < profile.dropout:
            return Failure("dropped out during the round")
        steps = self.work.num_steps(_size(self._lookup, client), broadcast.max_steps)
        seconds = self.duration(client, broadcast, steps)
        if self.deadline is None or seconds <= self.deadline:
            return seconds, task
        if self.partial_work:
            transfer = self.duration(client, broadcast, 0)
            per_step = (seconds - transfer) / steps
            fit = int((self.deadline - transfer) // per_step)
            if fit >= 1:
                limited = replace(broadcast, max_steps=fit)
                return self.duration(client, broadcast, fit), TrainTask(client, limited)
        return Failure(
            f"straggler: would take {seconds:.2f}s, past the {self.deadline:.2f}s deadline"
        )
