"""One connected site on the server: its outgoing queue, its pending tasks, its replies.

Secure aggregation's replies (:mod:`fedloom.transport.secure_codec`) are decoded here too, each
checked against the kind of task it answers; a masked input's packed vector must have exactly the
size the round's setup fixes.

A session ends when the site disconnects, breaks the protocol, stays silent past three
heartbeat intervals, or is replaced by a newer connection of the same site; every task still
pending then answers :class:`~fedloom.engine.tasks.Failure` naming the site and the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from fedloom.core.layout import Vector
from fedloom.core.messages import ClientResult
from fedloom.engine.tasks import Evaluation, Failure, Reply
from fedloom.secagg.messages import SecureReply
from fedloom.transport.codec import (
    ChunkLike,
    ChunkView,
    FromSite,
    HeldReport,
    ProtocolError,
    VectorReceiver,
    WireMessage,
    check_metrics,
    held_from_pb,
    wire_bytes,
)
from fedloom.transport.proto.v1 import fedloom_pb2 as pb
from fedloom.transport.secure_codec import (
    PHASE_OF_REPLY,
    PackedReceiver,
    advertisement_from_pb,
    shared_keys_from_pb,
    unmask_shares_from_pb,
)

log = logging.getLogger("fedloom.transport")

Outgoing = pb.ServerMessage | Iterable[pb.ServerMessage | WireMessage]
"""A message, or a lazily made sequence of them (a vector's chunks, made one at a time and
serialized already: :func:`~fedloom.transport.codec.chunk_messages`)."""

Answer = Reply | SecureReply
"""What a task's future resolves to: a training or evaluation reply, a secure aggregation
reply, or a failure."""


@dataclass
class Traffic:
    """Bytes each way, counted as gRPC frames (serialized message plus 5 bytes of framing)."""

    down: int = 0
    up: int = 0


class UploadSlot:
    """One of the server's upload slots (``ServiceConfig.uploads``), kept by a streamed reply
    from the end of its reassembly until its consumer is done with it, so the server holds at
    most that many replies' vectors whether they are arriving or waiting to be folded in.

    Every method runs on the server's loop. ``release`` gives the slot back, and a second call
    does nothing; ``close`` (the round's call is over) releases it and refuses a later ``take``,
    so a reply that completes after its consumer has gone gives its slot straight back."""

    def __init__(self, give_back: Callable[[], None]) -> None:
        self._give_back = give_back
        self.held = False
        self.closed = False

    def take(self) -> bool:
        """Keep the slot a reply's reassembly took; False (the caller gives it back) once the
        call that would consume the reply is over."""
        if self.closed:
            return False
        self.held = True
        return True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._give_back()

    def close(self) -> None:
        self.closed = True
        self.release()


@dataclass
class _Pending:
    future: asyncio.Future[Answer]
    kind: str  # "train" | "evaluate" | a secure aggregation phase: "advertise", "share", ...
    receiver: VectorReceiver | PackedReceiver | None = None
    reply: pb.TrainReply | None = None
    masked: tuple[int, int] | None = None
    """For a ``mask`` task: the masked vector's entries and bits an entry."""
    slot: UploadSlot | None = None
    """For a streamed training task: where its reply keeps the upload slot."""


@dataclass
class Session:
    """The server's side of one site's stream."""

    site: str
    peer: str
    max_length: int
    chunk_bytes: int
    traffic: Traffic
    serial: int | None = None
    """The serial number of the site's certificate (None on an insecure server)."""
    subject: str | None = None
    """The subject of the site's certificate (None on an insecure server)."""
    connected_at: float = 0.0
    """When the site joined, in Unix seconds."""
    features: frozenset[str] = frozenset()
    """The optional protocol parts the site's Hello listed (``secagg.v1``)."""
    grants: bool = False
    """Whether this site waits for an ``UploadGrant`` before a reply's chunks (both sides
    listed ``upload.grant.v1``)."""
    held: HeldReport | None = None
    """The delta broadcast's model the site last said it holds (its Hello, then each training
    reply); None after a failed or timed-out task, when what it holds is unknown."""
    outgoing: asyncio.Queue[Outgoing | None] = field(default_factory=asyncio.Queue)
    pending: dict[int, _Pending] = field(default_factory=dict)
    cancelled: set[int] = field(default_factory=set)
    closed: str | None = None
    receiving: int | None = None
    dropped: VectorReceiver | PackedReceiver | None = None
    last_seen: float = 0.0
    queued: bool = False
    """Waiting for an upload slot before the server reads its reply's vectors."""
    finished_slot: UploadSlot | None = None
    """Set when a reply that keeps its upload slot was just reassembled (taken by the reader)."""

    def send(self, message: Outgoing | None) -> None:
        """Queue ``message``; ``None`` ends the stream once what is queued before it is sent."""
        if self.closed is None:
            self.outgoing.put_nowait(message)

    def expect(
        self,
        task: int,
        kind: str,
        *,
        masked: tuple[int, int] | None = None,
        slot: UploadSlot | None = None,
    ) -> asyncio.Future[Answer]:
        """A future for ``task``'s answer. With ``slot``, a training reply keeps the upload
        slot its vectors were read in (:class:`UploadSlot`) rather than giving it back."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        if self.closed is not None:
            future.set_result(Failure(f"site {self.site}: {self.closed}"))
        else:
            self.pending[task] = _Pending(future, kind, masked=masked, slot=slot)
        return future

    def take_finished_slot(self) -> UploadSlot | None:
        """The slot of the reply just reassembled, if it keeps one (once)."""
        slot, self.finished_slot = self.finished_slot, None
        return slot

    def cancel(self, task: int) -> None:
        """Forget ``task`` (its deadline passed); a late reply to it is dropped quietly. What
        the site holds is unknown until it says again (it may have rebuilt the task's model)."""
        pending = self.pending.pop(task, None)
        if pending is not None:
            self.cancelled.add(task)
            self.held = None
            if self.receiving == task:  # its reply is arriving: read the rest, then drop it
                self.dropped = pending.receiver

    def close(self, reason: str) -> None:
        if self.closed is not None:
            return
        self.closed = reason
        for pending in self.pending.values():
            if not pending.future.done():
                pending.future.set_result(Failure(f"site {self.site}: {reason}"))
        self.pending.clear()
        self.outgoing.put_nowait(None)

    def count_out(
        self, messages: Iterable[pb.ServerMessage | WireMessage]
    ) -> Iterator[pb.ServerMessage | WireMessage]:
        for message in messages:
            self.traffic.down += wire_bytes(message)
            yield message

    def receive(self, message: FromSite) -> None:
        """Handle one message from the site; :class:`ProtocolError` if it breaks the protocol."""
        self.traffic.up += wire_bytes(message)
        if isinstance(message, ChunkView):
            self._chunk(message)
            return
        kind = message.WhichOneof("kind")
        if kind == "heartbeat":
            return
        if kind == "chunk":
            self._chunk(message.chunk)
            return
        if self.receiving is not None:
            raise ProtocolError(
                f"a {kind} message arrived while task {self.receiving}'s vectors "
                "were still being received"
            )
        if kind == "train_reply":
            self._train_reply(message.train_reply)
        elif kind == "evaluate_reply":
            reply = message.evaluate_reply
            self._resolve(
                reply.task,
                "evaluate",
                lambda: Evaluation(int(reply.num_examples), check_metrics(reply.metrics)),
            )
        elif kind == "masked_input":
            self._masked_input(message.masked_input)
        elif kind in PHASE_OF_REPLY:
            self._secure_reply(kind, message)
        elif kind == "task_failed":
            self.held = None
            reason = message.task_failed.reason[:500]
            self._resolve(
                message.task_failed.task, None, lambda: Failure(f"site {self.site}: {reason}")
            )
        else:
            raise ProtocolError(f"unexpected {kind or 'empty'} message after Hello")

    def _train_reply(self, reply: pb.TrainReply) -> None:
        pending = self._pending(reply.task, "train")
        self.held = held_from_pb(reply)
        receiver = VectorReceiver(
            reply.task,
            reply.vectors,
            max_length=self.max_length,
            chunk_bytes=self.chunk_bytes,
            payload_length=int(reply.payload_length),
        )
        if pending is None:
            self.receiving = None if receiver.complete else reply.task
            self.dropped = receiver
            return
        pending.reply = reply
        pending.receiver = receiver
        self.receiving = reply.task
        self._maybe_finish(reply.task, pending)

    def _secure_reply(self, kind: str, message: pb.SiteMessage) -> None:
        if kind == "key_advertisement":
            reply = message.key_advertisement
            self.held = held_from_pb(reply)
            self._resolve(reply.task, "advertise", lambda: advertisement_from_pb(reply))
        elif kind == "shared_keys":
            keys = message.shared_keys
            self._resolve(keys.task, "share", lambda: shared_keys_from_pb(keys))
        else:
            shares = message.unmask_shares
            self._resolve(shares.task, "unmask", lambda: unmask_shares_from_pb(shares))

    def _masked_input(self, header: pb.MaskedInput) -> None:
        pending = self._pending(header.task, "mask")
        if pending is None:  # a late reply to a cancelled task: check its size, then drop it
            if not 8 <= header.bits <= 32:
                raise ProtocolError(f"a masked input of {header.bits}-bit entries; 8 to 32 fit")
            self.dropped = PackedReceiver(
                header,
                length=min(int(header.length), self.max_length + 1),
                bits=int(header.bits),
                chunk_bytes=self.chunk_bytes,
            )
            self.receiving = header.task
            return
        assert pending.masked is not None
        length, bits = pending.masked
        pending.receiver = PackedReceiver(
            header, length=length, bits=bits, chunk_bytes=self.chunk_bytes
        )
        self.receiving = header.task

    def _chunk(self, chunk: ChunkLike) -> None:
        if self.receiving is None or chunk.task != self.receiving:
            raise ProtocolError(f"chunk for task {chunk.task}, which is not sending vectors")
        pending = self.pending.get(chunk.task)
        if pending is None:  # a late reply to a cancelled task: check it, then drop it
            assert self.dropped is not None
            self.dropped.add(chunk)
            if self.dropped.complete:
                self.receiving = None
            return
        assert pending.receiver is not None
        pending.receiver.add(chunk)
        self._maybe_finish(chunk.task, pending)

    def _maybe_finish(self, task: int, pending: _Pending) -> None:
        receiver = pending.receiver
        assert receiver is not None
        if not receiver.complete:
            return
        self.receiving = None
        if isinstance(receiver, PackedReceiver):
            masked = receiver.result()
            del self.pending[task]
            pending.future.set_result(masked)
            return
        assert pending.reply is not None
        vectors = receiver.result()
        payload = receiver.payload_result()
        reply = pending.reply
        names = list(vectors)
        update: Vector
        if payload is not None:  # the engine decodes it (fedloom.engine.payloads)
            if "update" in names:
                raise ProtocolError("a training reply with an encoded payload has no 'update'")
            update = np.zeros(0, dtype=np.float32)
        elif not names or names[0] != "update":
            raise ProtocolError(f"a training reply's first vector must be 'update', got {names}")
        else:
            update = vectors.pop("update")
        result = ClientResult(
            update,
            int(reply.num_examples),
            extras=vectors,
            metrics=check_metrics(reply.metrics),
            payload=payload,
        )
        del self.pending[task]
        self.finished_slot = pending.slot
        pending.future.set_result(result)

    def _pending(self, task: int, kind: str) -> _Pending | None:
        pending = self.pending.get(task)
        if pending is None:
            if task in self.cancelled:
                return None
            raise ProtocolError(f"reply to task {task}, which this site was not given")
        if pending.kind != kind:
            raise ProtocolError(f"a {kind} reply to task {task}, which is a {pending.kind} task")
        return pending

    def _resolve(self, task: int, kind: str | None, make: Callable[[], Answer]) -> None:
        pending = self._pending(task, kind or self._kind(task))
        if pending is None:
            return
        reply = make()
        del self.pending[task]
        pending.future.set_result(reply)

    def _kind(self, task: int) -> str:
        pending = self.pending.get(task)
        return "train" if pending is None else pending.kind
