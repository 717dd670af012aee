"""A site's side of the protocol: connect out, join, run the tasks the server sends, reconnect.

The site only makes outbound connections, so it can sit behind a firewall. It reconnects after
any lost connection with exponential backoff and jitter, and keeps its client program (and so
its kept state, such as SCAFFOLD's control variate) across reconnections within one run; a
Welcome for another run builds a new program (``prepare`` may read :attr:`Site.run_id` to find
state the site kept on disk for that run). A refusal that
retrying cannot fix (a revoked or unknown certificate, a model that does not match the run's)
ends it with :class:`SiteRefused`; a finished run ends it normally. Secure aggregation's rounds
are answered by :class:`~fedloom.transport.secure_site.SecureSite` (the simulators' client code).
A site with its own policy checks the run's terms in the server's Welcome before it builds
anything or takes a task, answers terms it refuses with a Refusal message, and ends with
:class:`PolicyRefused`; a policy that requires secure aggregation also fails every plain
(unmasked) training task, whatever the terms said. A site asks for upload grants
(``upload.grant.v1``): a reply's chunks wait at the site until the server has a slot for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import grpc
import grpc.aio
import numpy as np

from fedloom.core.layout import Layout, Vector
from fedloom.core.messages import Broadcast, ClientResult
from fedloom.engine.tasks import Evaluation
from fedloom.policy import RunTerms, SitePolicy
from fedloom.transport.codec import (
    GRANT_FEATURE,
    PAYLOAD_SLACK,
    PROTOCOL_VERSION,
    ChunkView,
    FromServer,
    ProtocolError,
    VectorReceiver,
    WireMessage,
    chunk_messages,
    chunk_of,
    config_from_pb,
    headers,
    held_to_pb,
    layout_to_pb,
    max_payload,
    message_kind,
    payload_chunk_messages,
    read_server_message,
    serialize_message,
    stage_config_from_pb,
)
from fedloom.transport.config import PRIVACY_FEATURE, TrainingConfig
from fedloom.transport.proto.v1 import fedloom_pb2 as pb
from fedloom.transport.secure_codec import FEATURE, reply_to_pb
from fedloom.transport.secure_site import SecureSite
from fedloom.transport.server import MAX_CHUNK_BYTES, METHOD, server_options
from fedloom.transport.terms import refusal, refusal_message, terms_from_pb

log = logging.getLogger("fedloom.site")

PERMANENT = frozenset(
    {
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)
"""Refusals that a retry would only repeat."""


class SiteRefused(Exception):
    """The server refused this site for a reason retrying cannot fix, or it gave up."""


class PolicyRefused(SiteRefused):
    """This site's own policy refused the run's terms; the server was told why."""

    def __init__(self, site: str, reason: str) -> None:
        super().__init__(f"{site} refused the run under its own policy: {reason}")
        self.reason = reason


class Program(Protocol):
    """What a site runs: its model's training and evaluation, built from the server's config.

    A broadcast whose ``payload`` is set came encoded by the run's broadcast codec: its
    ``params`` is empty and the program starts from the payload's decoding (with ``delta_from``
    set, a delta broadcast's chain from the model the program holds)."""

    def train(self, broadcast: Broadcast) -> ClientResult: ...

    def evaluate(self, params: Vector) -> Evaluation: ...


@runtime_checkable
class HoldsModel(Protocol):
    """A program that keeps the last model a delta broadcast gave it, and says which: the
    round and the model's digest (:func:`fedloom.compression.chain.model_digest`)."""

    def held_model(self) -> tuple[int, bytes] | None: ...


def _held(program: Program | None) -> pb.HeldModel | None:
    held = program.held_model() if isinstance(program, HoldsModel) else None
    return held_to_pb(held)


@dataclass(frozen=True)
class SiteCredentials:
    """The site's certificate and key (PEM) and the federation CA that signed the server's."""

    certificate: bytes
    key: bytes
    ca: bytes
    server_name: str | None = None
    """The name to expect in the server's certificate when it differs from the address's."""


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: ``initial · multiplier^attempt``, at most ``maximum``, each
    drawn uniformly from its upper half ("equal jitter") so restarted sites do not reconnect in
    lockstep."""

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(
                f"backoff needs 0 < initial <= maximum, got {self.initial}, {self.maximum}"
            )
        if self.multiplier < 1:
            raise ValueError(f"backoff multiplier must be >= 1, got {self.multiplier}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.initial * self.multiplier ** min(attempt, 60))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass
class Site:
    """Joins ``target`` as ``name`` (the name is read only by an insecure server) with a model
    of ``layout``; ``prepare`` turns the server's configuration into the program to run."""

    target: str
    name: str
    layout: Layout
    prepare: Callable[[TrainingConfig], Program]
    credentials: SiteCredentials | None
    backoff: Backoff = Backoff()
    give_up_after: float | None = None
    """Seconds without a successful join after which the site stops trying; None: never."""
    secure: bool = True
    """Whether the site takes part in secure aggregation (a relay does not: it would see its
    region's updates)."""
    policy: SitePolicy | None = None
    """The site's own policy: the run's terms are checked against it before any task."""
    private: bool = True
    """Whether the site runs the client half of a run's differential privacy (clipping) when
    its configuration asks for it (a relay does not: it forwards its region's mean)."""
    grants: bool = True
    """Whether the site asks for upload grants (``upload.grant.v1``): after a reply's header
    it sends the reply's chunks only once the server grants them, so a site waiting for an
    upload slot keeps its update here rather than in the server's buffers. A server that does
    not grant (its Welcome does not list the feature) is sent chunks straight away, as is
    every server by a site with ``grants`` False."""

    def __post_init__(self) -> None:
        self._secure = SecureSite(self.layout.size)
        self._program: Program | None = None
        self._config: TrainingConfig | None = None
        self.tasks_done = 0
        self._joined = False
        self.terms: RunTerms | None = None
        """The run's terms as the server's latest Welcome stated them (a relay passes them on)."""
        self.run_id: str | None = None
        """The run the site's program was built for (the server's Welcome names it); ``prepare``
        may read it, to find the state a site kept for this run."""

    def run(self) -> str:
        """Take part until the run ends; return the server's closing reason."""
        return asyncio.run(self.serve())

    async def serve(self) -> str:
        rng = random.Random()
        attempt = 0
        last_join = time.monotonic()
        while True:
            try:
                finished = await self._session()
            except grpc.aio.AioRpcError as error:
                if error.code() in PERMANENT:
                    raise SiteRefused(
                        f"the server refused {self.name}: {error.details()}"
                    ) from None
                log.warning(
                    "%s: connection to %s failed (%s: %s)",
                    self.name,
                    self.target,
                    error.code().name,
                    error.details(),
                )
            except SiteRefused:
                raise
            except Exception as error:  # a broken stream, a protocol error: connect again
                log.warning("%s: connection lost: %s: %s", self.name, type(error).__name__, error)
            else:
                if finished is not None:
                    return finished
                attempt, last_join = 0, time.monotonic()
            if self._joined:
                attempt, last_join = 0, time.monotonic()
            waited = time.monotonic() - last_join
            if self.give_up_after is not None and waited > self.give_up_after:
                raise SiteRefused(
                    f"{self.name}: could not join {self.target} for {waited:.0f} s; giving up"
                )
            delay = self.backoff.delay(attempt, rng)
            attempt += 1
            log.info("%s: reconnecting in %.1f s", self.name, delay)
            await asyncio.sleep(delay)

    def _channel(self) -> grpc.aio.Channel:
        options: list[tuple[str, int | str]] = list(server_options(MAX_CHUNK_BYTES))
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        c = self.credentials
        if c.server_name:
            options.append(("grpc.ssl_target_name_override", c.server_name))
        tls = grpc.ssl_channel_credentials(
            root_certificates=c.ca, private_key=c.key, certificate_chain=c.certificate
        )
        return grpc.aio.secure_channel(self.target, tls, options=options)

    async def _session(self) -> str | None:
        """One connection; the goodbye reason if the run finished, None to reconnect."""
        self._joined = False
        async with self._channel() as channel:
            call = channel.stream_stream(
                METHOD,
                request_serializer=serialize_message,
                response_deserializer=read_server_message,
            )()
            lock = asyncio.Lock()

            async def write(message: pb.SiteMessage | WireMessage) -> None:
                async with lock:
                    await call.write(message)

            hello = pb.Hello(
                protocol_version=PROTOCOL_VERSION,
                site=self.name,
                layout=layout_to_pb(self.layout),
                features=[
                    *([FEATURE] if self.secure else []),
                    *([PRIVACY_FEATURE] if self.private else []),
                    *([GRANT_FEATURE] if self.grants else []),
                ],
                held=_held(self._program),
            )
            await write(pb.SiteMessage(hello=hello))
            first = await call.read()
            if first is grpc.aio.EOF:
                raise ProtocolError("the server closed the stream before its Welcome")
            if isinstance(first, ChunkView) or first.WhichOneof("kind") != "welcome":
                raise ProtocolError("the server's first message was not Welcome")
            welcome = first.welcome
            self.terms = terms_from_pb(welcome.terms) if welcome.HasField("terms") else None
            if self.policy is not None:
                reason = refusal(self.policy, welcome)
                if reason is not None:
                    await self._refuse(call, write, reason)
            self._welcome(welcome)
            self._joined = True
            log.info("%s joined run %s at %s", self.name, welcome.run, self.target)
            beat = asyncio.create_task(self._heartbeat(write, welcome.heartbeat_seconds))
            granted = self.grants and GRANT_FEATURE in welcome.features
            try:
                return await self._tasks(_Stream(call, write, granted), welcome.chunk_bytes)
            finally:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat

    async def _refuse(
        self,
        call: grpc.aio.StreamStreamCall,
        write: Callable[[pb.SiteMessage | WireMessage], Awaitable[None]],
        reason: str,
    ) -> None:
        """Tell the server why this site refuses the run, wait for it to end the stream (a
        few seconds at most), and stop with :class:`PolicyRefused`."""
        log.warning("%s refuses run at %s: %s", self.name, self.target, reason)
        await write(refusal_message(reason))
        await call.done_writing()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                while await call.read() is not grpc.aio.EOF:
                    pass
        raise PolicyRefused(self.name, reason)

    def _welcome(self, welcome: pb.Welcome) -> None:
        if welcome.protocol_version != PROTOCOL_VERSION:
            raise SiteRefused(
                f"the server speaks protocol {welcome.protocol_version}, this site "
                f"{PROTOCOL_VERSION}"
            )
        if not 1024 <= welcome.chunk_bytes <= MAX_CHUNK_BYTES:
            raise ProtocolError(f"server chunk size {welcome.chunk_bytes} out of range")
        config = config_from_pb(welcome.config)
        if self._program is None or config != self._config or welcome.run != self.run_id:
            # A new run (or configuration) starts from a new program: state kept for one run
            # means nothing in another.
            self.run_id = welcome.run
            try:
                self._program = self.prepare(config)
            except ValueError as error:
                raise SiteRefused(f"cannot build the run's client program: {error}") from None
            self._config = config

    async def _heartbeat(self, write: Callable[[pb.SiteMessage], object], every: float) -> None:
        interval = every if every > 0 else 5.0
        while True:
            await asyncio.sleep(interval)
            try:
                await write(pb.SiteMessage(heartbeat=pb.Heartbeat(sent=time.time())))  # type: ignore[misc]
            except Exception:  # the stream ended; the task loop notices and reconnects
                return

    async def _tasks(self, stream: _Stream, chunk_bytes: int) -> str | None:
        while True:
            message = await stream.read()
            if message is None:
                return None
            kind = message_kind(message)
            if kind == "heartbeat":
                continue
            if isinstance(message, ChunkView):
                raise ProtocolError(f"a chunk of task {message.task} that no task announced")
            if kind == "goodbye":
                if message.goodbye.finished:
                    return message.goodbye.reason or "the run is over"
                return None
            if kind in ("key_roster", "masking_request", "unmask_request") and self.secure:
                request = getattr(message, kind)
                answer = await asyncio.to_thread(self._secure.step, request)
                await stream.reply(
                    reply_to_pb(
                        request.task, answer, bits=self._secure.bits, chunk_bytes=chunk_bytes
                    )
                )
                continue
            if kind == "secure_train" and self.secure:
                done = await self._secure_train(stream, message.secure_train, chunk_bytes)
                if not done:
                    return None
                continue
            if kind not in ("train", "evaluate"):
                raise ProtocolError(f"unexpected {kind} message")
            task = getattr(message, kind)
            receiver = VectorReceiver(
                task.task,
                task.vectors,
                max_length=self.layout.size,
                chunk_bytes=chunk_bytes,
                payload_length=int(task.payload_length) if kind == "train" else 0,
            )
            if not await stream.read_vectors(receiver):
                return None
            vectors = receiver.result()
            payload = receiver.payload_result()
            if payload is not None:  # the model, encoded: the program decodes it
                vectors = {"params": np.zeros(0, dtype=np.float32), **vectors}
            await stream.reply(await self._answer(kind, task, vectors, chunk_bytes, payload))

    async def _secure_train(
        self, stream: _Stream, message: pb.SecureTrainTask, chunk_bytes: int
    ) -> bool:
        """Round 0 of secure aggregation: receive the broadcast, train, answer with keys; False
        if the stream ended first."""
        task = message.train
        receiver = VectorReceiver(
            task.task,
            task.vectors,
            max_length=self.layout.size,
            chunk_bytes=chunk_bytes,
            payload_length=int(task.payload_length),
        )
        if not await stream.read_vectors(receiver):
            return False
        program = self._program
        assert program is not None
        answer = await asyncio.to_thread(
            self._secure.start, message, receiver.result(), program.train, receiver.payload_result()
        )
        self.tasks_done += 1
        await stream.reply(
            reply_to_pb(
                task.task,
                answer,
                bits=self._secure.bits,
                chunk_bytes=chunk_bytes,
                held=_held(program),
            )
        )
        return True

    async def _answer(
        self,
        kind: str,
        task: pb.TrainTask | pb.EvaluateTask,
        vectors: dict[str, Vector],
        chunk_bytes: int,
        payload: bytes | None = None,
    ) -> Iterator[pb.SiteMessage | WireMessage]:
        program = self._program
        assert program is not None
        params = vectors.pop("params", None)
        if kind == "train" and self.policy is not None and self.policy.secure_aggregation:
            # The terms promised secure aggregation; a plain training task would send this
            # site's update in the clear.
            reason = (
                "this site's policy requires secure aggregation; it answers only secure "
                "training tasks, not a plain one"
            )
            log.warning("%s: task %d refused: %s", self.name, task.task, reason)
            return iter([pb.SiteMessage(task_failed=pb.TaskFailed(task=task.task, reason=reason))])
        if params is None:
            return iter(
                [
                    pb.SiteMessage(
                        task_failed=pb.TaskFailed(task=task.task, reason="no params vector")
                    )
                ]
            )
        try:
            if kind == "evaluate":
                evaluation = await asyncio.to_thread(program.evaluate, params)
                self.tasks_done += 1
                return iter(
                    [
                        pb.SiteMessage(
                            evaluate_reply=pb.EvaluateReply(
                                task=task.task,
                                num_examples=evaluation.num_examples,
                                metrics=dict(evaluation.metrics),
                            )
                        )
                    ]
                )
            assert isinstance(task, pb.TrainTask)
            broadcast = Broadcast(
                round=int(task.round),
                params=params,
                seed=int(task.seed),
                extras=vectors,
                stage_config=stage_config_from_pb(task.stage_config),
                max_steps=int(task.max_steps) or None,
                payload=payload,
                delta_from=int(task.delta_from) if task.HasField("delta_from") else None,
            )
            result = await asyncio.to_thread(program.train, broadcast)
            limit = max_payload(self.layout.size)
            if result.payload is not None and len(result.payload) > limit:
                raise ValueError(
                    f"the update's encoded payload has {len(result.payload)} bytes, over the "
                    f"protocol's limit of {limit} (the model's float32 size plus "
                    f"{PAYLOAD_SLACK}); choose a codec that compresses"
                )
        except Exception as error:
            log.warning(
                "%s: task %d failed: %s: %s", self.name, task.task, type(error).__name__, error
            )
            return iter(
                [
                    pb.SiteMessage(
                        task_failed=pb.TaskFailed(
                            task=task.task, reason=f"{type(error).__name__}: {error}"[:500]
                        )
                    )
                ]
            )
        self.tasks_done += 1
        return _train_reply(task.task, result, chunk_bytes, _held(program))


def _train_reply(
    task: int, result: ClientResult, chunk_bytes: int, held: pb.HeldModel | None = None
) -> Iterator[pb.SiteMessage | WireMessage]:
    """The reply's header, then its vectors' chunks, then its encoded update's (if any: the
    update then travels only as those bytes); the chunks serialized already, each copied once
    from the vector (:func:`~fedloom.transport.codec.chunk_message`)."""
    payload = result.payload or b""
    update = [] if result.payload is not None else [("update", result.update)]
    vectors = [*update, *result.extras.items()]
    yield pb.SiteMessage(
        train_reply=pb.TrainReply(
            task=task,
            num_examples=result.num_examples,
            metrics=dict(result.metrics),
            vectors=headers(vectors),
            payload_length=len(payload),
            held=held,
        )
    )
    for _, vector in vectors:
        yield from chunk_messages(task, vector, chunk_bytes)
    yield from payload_chunk_messages(task, payload, chunk_bytes)


class _Stream:
    """One connection as the task loop sees it: the server's messages, and the site's replies.

    With upload grants (``granted``: this site asked for them and the server's Welcome agreed)
    a reply whose header announces vectors (a ``TrainReply`` or ``MaskedInput`` followed by
    chunks) is sent as its header, then nothing but heartbeats until the server's
    ``UploadGrant`` names its task, then its chunks. Whatever else arrives meanwhile (a next
    task, when the server gave up on this one at its deadline, or a goodbye) is kept, in order,
    for :meth:`read`."""

    def __init__(
        self,
        call: grpc.aio.StreamStreamCall,
        write: Callable[[pb.SiteMessage | WireMessage], Awaitable[None]],
        granted: bool,
    ) -> None:
        self._call = call
        self._write = write
        self._granted = granted
        self._kept: deque[FromServer] = deque()
        self._ended = False

    async def read(self) -> FromServer | None:
        """The server's next message; None once its stream has ended."""
        if self._kept:
            return self._kept.popleft()
        return None if self._ended else await self._next()

    async def read_vectors(self, receiver: VectorReceiver) -> bool:
        """Read the chunks of ``receiver``'s task into it until it is complete; False if the
        stream ended first."""
        while not receiver.complete:
            part = await self.read()
            if part is None:
                return False
            if message_kind(part) != "chunk":
                raise ProtocolError(f"expected a chunk of task {receiver.task}")
            receiver.add(chunk_of(part))
        return True

    async def _next(self) -> FromServer | None:
        message = await self._call.read()
        if message is grpc.aio.EOF:
            self._ended = True
            return None
        assert isinstance(message, FromServer)
        return message

    async def reply(self, messages: Iterable[pb.SiteMessage | WireMessage]) -> None:
        """Send a reply: its first message, and its chunks once the server grants them."""
        them = iter(messages)
        header = next(them, None)
        if header is None:
            return
        assert isinstance(header, pb.SiteMessage)  # a reply's first message is never a chunk
        await self._write(header)
        first = next(them, None)
        if first is None:
            return
        kind = header.WhichOneof("kind")
        waits = self._granted and kind in ("train_reply", "masked_input")
        if waits and not await self._grant(getattr(header, kind).task):
            return  # the stream ends; the task loop reads what was kept and leaves
        await self._write(first)
        for message in them:
            await self._write(message)

    async def _grant(self, task: int) -> bool:
        """Wait for the server's grant for ``task``'s chunks; False if the stream ends (or the
        server says goodbye) first."""
        while True:
            message = await self._next()
            if message is None:
                return False
            kind = message_kind(message)
            if kind == "upload_grant":
                assert isinstance(message, pb.ServerMessage)
                if message.upload_grant.task != task:
                    raise ProtocolError(
                        f"an upload grant for task {message.upload_grant.task} while task "
                        f"{task}'s reply waits for one"
                    )
                return True
            if kind != "heartbeat":
                self._kept.append(message)
            if kind == "goodbye":  # the server ends the stream: no grant will come
                return False
