"""The gRPC executor: the engine's one-method interface, answered by remote sites.

The engine stays synchronous and unchanged. :class:`GrpcExecutor` runs a ``grpc.aio`` server on
its own event loop in a background thread; :meth:`GrpcExecutor.run` hands a cohort's tasks to
that loop, sends each to its site's stream (vectors in chunks) and waits for the replies, each
with the round's deadline; :meth:`GrpcExecutor.run_each` hands each reply to the engine as it
arrives instead, so the engine folds an update into its running sum and drops it. A site that
is not connected, disconnects, breaks the protocol or misses the deadline answers
:class:`~fedloom.engine.tasks.Failure` naming the site; the others are unaffected, and the
engine's minimum cohort decides whether the round counts.

:meth:`GrpcExecutor.run_secure` carries secure aggregation's four rounds the same way (see
:mod:`fedloom.engine.secure_rounds`, which drives them unchanged): each typed request becomes one
protobuf message (:mod:`fedloom.transport.secure_codec`), each site answers from the same client
code the simulators run, and a site that is gone or silent in some round is that round's
dropout. The bytes each protocol round moves are counted apart (:meth:`phase_traffic`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio

from fedloom.core.layout import Vector
from fedloom.core.messages import Broadcast, ClientResult, ClientState
from fedloom.engine.secure_rounds import SecureTaskKind
from fedloom.engine.tasks import (
    Consume,
    EvaluateTask,
    Evaluation,
    Failure,
    Reply,
    Task,
    TrainTask,
)
from fedloom.secagg.messages import MaskingRequest, SecureReply, SecureTrainTask, Setup
from fedloom.transport.codec import (
    WireMessage,
    chunk_messages,
    headers,
    max_payload,
    payload_chunk_messages,
    stage_config_to_pb,
)
from fedloom.transport.proto.v1 import fedloom_pb2 as pb
from fedloom.transport.secure_codec import phase_of, request_to_pb, setup_to_pb
from fedloom.transport.server import (
    FederationService,
    ServiceConfig,
    SiteRefusal,
    server_options,
)
from fedloom.transport.session import Answer, Session, UploadSlot
from fedloom.transport.view import FederationView, RoundCounter, SessionView

MessagesFor = Callable[[int, Session], Iterator[pb.ServerMessage | WireMessage]]

log = logging.getLogger("fedloom.transport")
T = TypeVar("T")


@dataclass(frozen=True)
class ServerCredentials:
    """TLS material for the server: its certificate chain and key (PEM), and the federation CA
    that client certificates must chain to."""

    certificate: bytes
    key: bytes
    ca: bytes


class GrpcExecutor:
    """Serves ``config`` on ``address`` and runs tasks on the sites that join.

    ``credentials`` None serves without TLS (an explicit, insecure choice). ``deadline`` is
    how long one :meth:`run` waits for its replies. Client ``i`` of the engine's population is
    site ``config.sites[i]``. Client state (SCAFFOLD's control variate) lives on the sites, so
    ``states`` stays empty. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        config: ServiceConfig,
        *,
        address: str,
        credentials: ServerCredentials | None,
        deadline: float = 60.0,
    ) -> None:
        if not deadline > 0:
            raise ValueError(f"deadline must be > 0 seconds, got {deadline!r}")
        self.config = config
        self.deadline = deadline
        self.states: dict[int, ClientState] = {}
        self._ids = itertools.count(1)
        self._round: RoundCounter | None = None
        self._last_round = 0
        self._setup: Setup | None = None
        self._phases: dict[str, list[int]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fedloom-grpc", daemon=True
        )
        self._thread.start()
        self.service: FederationService = self._call(self._make_service())
        self._server: grpc.aio.Server | None = None
        self.port = self._call(self._start(address, credentials))

    def __enter__(self) -> GrpcExecutor:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        # Interrupted: sites keep trying, so a restarted server finds them again.
        self.close(finished=kind is None)

    def traffic(self) -> tuple[int, int]:
        """Bytes sent down to sites and up from them so far (gRPC frames)."""
        return self.service.traffic.down, self.service.traffic.up

    def phase_traffic(self) -> dict[str, tuple[int, int]]:
        """Bytes down and up so far in each secure aggregation round (``advertise``, ``share``,
        ``mask``, ``unmask``), gRPC frames as :meth:`traffic` counts them; also in
        :meth:`traffic`'s totals."""
        return {phase: (down, up) for phase, (down, up) in self._phases.items()}

    def connected(self) -> list[str]:
        return self._call(self._connected())

    def wait_for_sites(self, count: int, timeout: float | None = None) -> bool:
        """Block until ``count`` sites are connected, or as many as have not refused the run;
        False if ``timeout`` passes first."""
        return self._call(self._wait_for(count, timeout))

    def refusals(self) -> list[SiteRefusal]:
        """The refusals sites sent since the last call (their own policies refused the run's
        terms), oldest first."""
        return self._call(self._refusals())

    def refused(self) -> frozenset[str]:
        """The sites whose latest session refused the run."""
        return self._call(self._refused())

    def run(self, tasks: Sequence[Task]) -> list[Reply]:
        return self._call(self._run(tasks))

    def run_each(self, tasks: Sequence[Task], consume: Consume) -> None:
        """:meth:`run`, handing each reply to ``consume(position, reply)`` on this thread as it
        arrives rather than all at the end, so the engine can fold an update in and drop it
        (:class:`~fedloom.engine.tasks.StreamingExecutor`). A reply keeps its upload slot
        (``ServiceConfig.uploads``) until ``consume`` returns, so replies that arrive faster than
        they are consumed wait at their sites, not in this process."""
        arrived: queue.SimpleQueue[tuple[int, Reply, UploadSlot] | None] = queue.SimpleQueue()
        future = asyncio.run_coroutine_threadsafe(self._run_each(tasks, arrived.put), self._loop)
        try:
            for _ in range(len(tasks)):
                item = arrived.get()
                if item is None:  # the loop failed; result() raises its error
                    break
                position, reply, slot = item
                del item
                try:
                    consume(position, reply)
                finally:
                    del reply  # the reply's vectors go once consumed, then its upload slot
                    self._loop.call_soon_threadsafe(slot.release)
            future.result()
        except BaseException:
            future.cancel()
            raise

    def held_models(self, clients: Sequence[int]) -> dict[int, tuple[int, bytes]]:
        """What each of ``clients`` (connected, and holding one) says it holds from a delta
        broadcast: a round and its model's digest (:class:`fedloom.engine.delta.HeldModels`)."""
        return self._call(self._held(clients))

    def snapshot(self, timeout: float = 2.0) -> FederationView | None:
        """The connected sites and the round in flight, read on the server's loop; callable from
        any thread. None once the server is closed; TimeoutError if the loop does not answer
        within ``timeout`` seconds (it never waits on anything, so it should)."""
        if self._server is None:
            return None
        future = asyncio.run_coroutine_threadsafe(self._snapshot(), self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(
                f"the gRPC server's loop did not answer within {timeout:g} s"
            ) from None

    def run_secure(self, tasks: Sequence[SecureTaskKind]) -> list[SecureReply | Failure]:
        """One round of secure aggregation's tasks on their sites: one reply per task, in
        order, a :class:`Failure` for a site that is gone, fails or misses the deadline."""
        return self._call(self._run_secure(tasks))

    def close(self, reason: str = "the run is over", *, finished: bool = True) -> None:
        """Stop the server and its loop; with ``finished``, first tell every site the run is
        over (they exit), otherwise only that the server is going (they reconnect later)."""
        if self._server is None:
            return
        self._call(self._stop(reason if finished else "the server is stopping", finished))
        self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    # ---- on the loop ----

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:  # Ctrl-C while waiting: cancel the work on the loop too
            future.cancel()
            raise

    async def _make_service(self) -> FederationService:
        return FederationService(self.config)

    async def _start(self, address: str, credentials: ServerCredentials | None) -> int:
        handshake = ("grpc.server_handshake_timeout_ms", round(1000 * self.config.hello_timeout))
        server = grpc.aio.server(options=(*server_options(self.config.chunk_bytes), handshake))
        server.add_generic_rpc_handlers((self.service.handler(),))
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            tls = grpc.ssl_server_credentials(
                [(credentials.key, credentials.certificate)],
                root_certificates=credentials.ca,
                require_client_auth=True,
            )
            port = server.add_secure_port(address, tls)
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        await server.start()
        self._server = server
        return int(port)

    async def _stop(self, reason: str, finished: bool) -> None:
        self.service.finish(reason, finished=finished)
        await asyncio.sleep(0.2)  # let goodbyes reach the sites
        assert self._server is not None
        await self._server.stop(grace=1.0)

    async def _connected(self) -> list[str]:
        return self.service.connected()

    async def _refusals(self) -> list[SiteRefusal]:
        found, self.service.refusals = self.service.refusals, []
        return found

    async def _refused(self) -> frozenset[str]:
        return frozenset(self.service.refused)

    async def _wait_for(self, count: int, timeout: float | None) -> bool:
        def wanted() -> int:
            return min(count, len(self.config.sites) - len(self.service.refused))

        async def enough() -> None:
            while len(self.service.connected()) < wanted():
                self.service.changed.clear()
                await self.service.changed.wait()

        try:
            await asyncio.wait_for(enough(), timeout)
        except TimeoutError:
            return False
        return True

    async def _snapshot(self) -> FederationView:
        loop = asyncio.get_running_loop()
        wall, now = time.time(), loop.time()
        sites = tuple(
            SessionView(
                site=s.site,
                subject=s.subject,
                serial=s.serial,
                peer=s.peer,
                connected_at=s.connected_at,
                last_heard=wall - (now - s.last_seen) if s.last_seen else None,
                tasks=tuple(p.kind for p in s.pending.values()),
            )
            for s in self.service.sessions.values()
            if s.closed is None
        )
        counter = self._round
        return FederationView(self.config.run, sites, None if counter is None else counter.view())

    async def _held(self, clients: Sequence[int]) -> dict[int, tuple[int, bytes]]:
        sites = self.config.sites
        held: dict[int, tuple[int, bytes]] = {}
        for client in clients:
            session = self.service.sessions.get(sites[client]) if 0 <= client < len(sites) else None
            if session is not None and session.closed is None and session.held is not None:
                held[client] = session.held
        return held

    def _counter(self, tasks: Sequence[Task]) -> RoundCounter:
        training = [t for t in tasks if isinstance(t, TrainTask)]
        if training:
            self._last_round = training[0].broadcast.round
        counter = RoundCounter(
            self._last_round, "train" if training else "evaluate", len(tasks), time.time()
        )
        self._round = counter
        return counter

    async def _run(self, tasks: Sequence[Task]) -> list[Reply]:
        counter = self._counter(tasks)
        try:
            return list(await asyncio.gather(*(self._counted(task, counter) for task in tasks)))
        finally:
            if self._round is counter:
                self._round = None

    async def _run_each(
        self,
        tasks: Sequence[Task],
        put: Callable[[tuple[int, Reply, UploadSlot] | None], None],
    ) -> None:
        counter = self._counter(tasks)
        slots = [self.service.upload_slot() for _ in tasks]

        async def one(position: int, task: Task) -> None:
            reply = await self._counted(task, counter, slots[position])
            put((position, reply, slots[position]))

        try:
            await asyncio.gather(*(one(i, task) for i, task in enumerate(tasks)))
        except BaseException:
            put(None)
            raise
        finally:
            if self._round is counter:
                self._round = None
            # Every reply has arrived (or the call failed): no reply of this call keeps a slot
            # any longer, not even one still arriving for a consumer that has gone; the
            # consumer's own releases, still to come, then do nothing.
            for slot in slots:
                slot.close()

    async def _counted(
        self, task: Task, counter: RoundCounter, slot: UploadSlot | None = None
    ) -> Reply:
        reply = await self._one(task, counter, slot)
        if isinstance(reply, Failure):
            counter.failed += 1
        else:
            counter.replied += 1
        return reply

    async def _one(self, task: Task, counter: RoundCounter, slot: UploadSlot | None) -> Reply:
        kind = "train" if isinstance(task, TrainTask) else "evaluate"
        answer = await self._dispatch(
            task.client,
            kind,
            lambda task_id, session: self._messages(task_id, task, session, counter),
            slot=slot,
        )
        assert isinstance(answer, ClientResult | Evaluation | Failure)
        return answer

    async def _run_secure(self, tasks: Sequence[SecureTaskKind]) -> list[SecureReply | Failure]:
        if not tasks:
            return []
        first = tasks[0]
        if isinstance(first, SecureTrainTask):
            self._setup = first.setup
        phase = phase_of(first)
        down, up = self.service.traffic.down, self.service.traffic.up
        answers = await asyncio.gather(*(self._secure_one(task) for task in tasks))
        counted = self._phases.setdefault(phase, [0, 0])
        counted[0] += self.service.traffic.down - down
        counted[1] += self.service.traffic.up - up
        return list(answers)

    async def _secure_one(self, task: SecureTaskKind) -> SecureReply | Failure:
        if isinstance(task, SecureTrainTask):
            answer = await self._dispatch(
                task.client,
                "advertise",
                lambda task_id, session: self._secure_train(task_id, task, session),
            )
        else:
            setup = self._setup
            if setup is None:
                return Failure("a secure aggregation request before any round started")
            masked = (setup.dims + 1, setup.bits)
            answer = await self._dispatch(
                task.client,
                phase_of(task),
                lambda task_id, session: iter([request_to_pb(task_id, task)]),
                masked=masked if isinstance(task.request, MaskingRequest) else None,
            )
        assert not isinstance(answer, ClientResult | Evaluation)
        return answer

    async def _dispatch(
        self,
        client: int,
        kind: str,
        messages: MessagesFor,
        *,
        masked: tuple[int, int] | None = None,
        slot: UploadSlot | None = None,
    ) -> Answer:
        sites = self.config.sites
        if not 0 <= client < len(sites):
            return Failure(f"client {client} is not in the population of {len(sites)} sites")
        site = sites[client]
        session = self.service.sessions.get(site)
        if session is None or session.closed is not None:
            return Failure(f"site {site} is not connected")
        if self.service.revoked(session):
            log.warning("site %s: its certificate was revoked; closing its stream", site)
            session.close("certificate revoked")
            return Failure(f"site {site}: certificate revoked")
        task_id = next(self._ids)
        future = session.expect(task_id, kind, masked=masked, slot=slot)
        session.send(messages(task_id, session))
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.deadline)
        except TimeoutError:
            session.cancel(task_id)
            log.warning(
                "site %s missed the %g s deadline for task %d", site, self.deadline, task_id
            )
            return Failure(f"site {site} did not answer within {self.deadline:g} s")

    def _secure_train(
        self, task_id: int, task: SecureTrainTask, session: Session
    ) -> Iterator[pb.ServerMessage | WireMessage]:
        b = task.broadcast
        payload = self._encoded_model(b)
        model = [] if payload else [("params", b.params)]
        vectors = [*model, *b.extras.items()]
        yield pb.ServerMessage(
            secure_train=pb.SecureTrainTask(
                train=self._train_pb(task_id, b, vectors, payload),
                client=task.client,
                setup=setup_to_pb(task.setup),
            )
        )
        yield from self._chunks(task_id, vectors, session, payload)

    @staticmethod
    def _train_pb(
        task_id: int, b: Broadcast, vectors: Sequence[tuple[str, Vector]], payload: bytes = b""
    ) -> pb.TrainTask:
        return pb.TrainTask(
            task=task_id,
            round=b.round,
            seed=b.seed,
            max_steps=b.max_steps or 0,
            stage_config=stage_config_to_pb(b.stage_config),
            vectors=headers(vectors),
            payload_length=len(payload),
            delta_from=b.delta_from if payload and b.delta_from is not None else None,
        )

    def _encoded_model(self, b: Broadcast) -> bytes:
        """The model's encoding to send in place of its float32 vector, or ``b""`` to send the
        vector: no broadcast codec, or a payload over the protocol's limit (``b.params`` is its
        decoding either way, so the site starts from the same model)."""
        if not b.payload:
            return b""
        limit = max_payload(self.config.layout.size)
        if len(b.payload) > limit:
            log.warning(
                "the broadcast payload has %d bytes, over the protocol's %d; sending float32",
                len(b.payload),
                limit,
            )
            return b""
        return b.payload

    def _chunks(
        self,
        task_id: int,
        vectors: Sequence[tuple[str, Vector]],
        session: Session,
        payload: bytes = b"",
    ) -> Generator[WireMessage, None, bool]:
        """The vectors' chunks, then the payload's, as serialized messages; returns whether all
        were produced (False: the site left)."""
        size = self.config.chunk_bytes
        parts = [chunk_messages(task_id, vector, size) for _, vector in vectors]
        for message in itertools.chain(*parts, payload_chunk_messages(task_id, payload, size)):
            if session.closed is not None:
                return False
            yield message
        return True

    def _messages(
        self, task_id: int, task: Task, session: Session, counter: RoundCounter
    ) -> Iterator[pb.ServerMessage | WireMessage]:
        payload = b""
        if isinstance(task, TrainTask):
            b = task.broadcast
            payload = self._encoded_model(b)
            model = [] if payload else [("params", b.params)]
            vectors = [*model, *b.extras.items()]
            yield pb.ServerMessage(train=self._train_pb(task_id, b, vectors, payload))
        else:
            assert isinstance(task, EvaluateTask)
            vectors = [("params", task.params)]
            yield pb.ServerMessage(evaluate=pb.EvaluateTask(task=task_id, vectors=headers(vectors)))
        if (yield from self._chunks(task_id, vectors, session, payload)):
            counter.sent += 1  # resumed after the last message was written to the stream
