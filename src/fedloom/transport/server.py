"""The gRPC side of the server: authenticate sites, keep their sessions, move tasks and replies.

:class:`FederationService` implements ``fedloom.v1.Federation/Join`` on a ``grpc.aio`` server.
A site's identity comes from the certificate its TLS handshake authenticated, checked by
:class:`fedloom.pki.Verifier` against the allow-list and revocation list; on an ``--insecure``
server it comes from the site's Hello and is only checked against the allow-list. Anything
malformed or hostile ends that one stream with a status naming the reason and a log line naming
the peer; no other session notices.

The Welcome states the run's terms (``ServiceConfig.terms``); a site whose own policy refuses
them answers a Refusal, which ends its session and is kept in :attr:`FederationService.refusals`
for the run's audit trail. A refusing site is unavailable to the run (its tasks fail) until it
joins again without refusing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import grpc.aio

from fedloom.core import validate
from fedloom.core.layout import Layout
from fedloom.pki import CertificateRefused, PkiError, Verifier
from fedloom.policy import RunTerms
from fedloom.transport.codec import (
    GRANT_FEATURE,
    PROTOCOL_VERSION,
    ChunkView,
    FromSite,
    HeldReport,
    ProtocolError,
    config_to_pb,
    describe_layout,
    held_from_pb,
    layout_key,
    layout_key_from_pb,
    read_site_message,
    serialize_message,
)
from fedloom.transport.config import PRIVACY_FEATURE, TrainingConfig
from fedloom.transport.proto.v1 import fedloom_pb2 as pb
from fedloom.transport.secure_codec import FEATURE
from fedloom.transport.session import Session, Traffic, UploadSlot
from fedloom.transport.terms import MAX_REASON, terms_to_pb

log = logging.getLogger("fedloom.transport")

METHOD = "/fedloom.v1.Federation/Join"
DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 4 << 20
ENVELOPE_BYTES = 64 << 10
"""Room beyond one chunk for a message's other fields (headers, metrics)."""


def message_limit(chunk_bytes: int) -> int:
    """The largest gRPC message either side accepts when chunks hold ``chunk_bytes``."""
    return chunk_bytes + ENVELOPE_BYTES


@dataclass(frozen=True)
class ServiceConfig:
    """How the service treats sites.

    ``sites`` is the population in engine order (client ``i`` is ``sites[i]``); ``verifier``
    is None only on an insecure server. ``hello_timeout`` bounds how long a connection may
    take over its TLS handshake, and then how long it may stay silent before its Hello;
    ``heartbeat`` is the interval both sides keep, and a site silent for three intervals is
    dropped. ``terms``: what the run asks of the sites, sent in
    every Welcome for sites with their own policy to check (None: not stated). ``uploads``: how
    many sites' replies the server holds at once; another site's reply waits, unread, after its
    header (a site that speaks ``upload.grant.v1`` sends the rest only once granted the slot;
    for another, HTTP/2 flow control holds it at the site after a stream window). A reply
    holds its slot while it is reassembled and, in a streamed round (``GrpcExecutor.run_each``),
    until its consumer is done with it, so the server holds at most this many replies' vectors
    however many sites answer together and however slowly the engine folds them in.
    ``grants``: whether the server grants uploads to sites that ask (``upload.grant.v1``);
    False serves every site as a server built before grants would.
    """

    run: str
    layout: Layout
    training: TrainingConfig
    sites: tuple[str, ...]
    verifier: Verifier | None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    heartbeat: float = 5.0
    hello_timeout: float = 10.0
    terms: RunTerms | None = None
    uploads: int = 2
    grants: bool = True

    def __post_init__(self) -> None:
        validate.positive_int("uploads", self.uploads)
        if not 1024 <= self.chunk_bytes <= MAX_CHUNK_BYTES or self.chunk_bytes % 4:
            raise ValueError(
                f"chunk_bytes must be a multiple of 4 in [1024, {MAX_CHUNK_BYTES}], "
                f"got {self.chunk_bytes}"
            )
        for name in ("heartbeat", "hello_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if len(set(self.sites)) != len(self.sites) or not self.sites:
            raise ValueError(f"sites must be distinct and non-empty, got {list(self.sites)}")


@dataclass(frozen=True)
class SiteRefusal:
    """A site refused the run under its own policy: its name, its certificate's subject (None
    on an insecure server), and its reason."""

    site: str
    subject: str | None
    reason: str


class FederationService:
    """Sessions by site name, and the ``Join`` handler that creates them."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.sessions: dict[str, Session] = {}
        self.traffic = Traffic()
        self.changed = asyncio.Event()
        self.refusals: list[SiteRefusal] = []
        """Every refusal so far, in order (read and cleared by the executor's caller)."""
        self.refused: set[str] = set()
        """Sites whose latest session refused the run."""
        self._layout = layout_key(config.layout)
        self._welcome = config_to_pb(config.training)
        self._secure = any(s.kind == "secure_sum" for s in config.training.stages)
        self._uploads = asyncio.Semaphore(config.uploads)
        self.grants = 0
        """Upload grants sent so far (to sessions that negotiated ``upload.grant.v1``)."""

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "fedloom.v1.Federation",
            {
                "Join": grpc.stream_stream_rpc_method_handler(
                    self.join,
                    request_deserializer=read_site_message,
                    response_serializer=serialize_message,
                )
            },
        )

    def connected(self) -> list[str]:
        return [site for site, s in self.sessions.items() if s.closed is None]

    def finish(self, reason: str, *, finished: bool = True) -> None:
        """Say goodbye to every site: with ``finished`` they leave for good, otherwise they
        reconnect later."""
        goodbye = pb.ServerMessage(goodbye=pb.Goodbye(reason=reason, finished=finished))
        for session in list(self.sessions.values()):
            session.send(goodbye)
            session.send(None)

    async def join(
        self, requests: AsyncIterator[FromSite], context: grpc.aio.ServicerContext
    ) -> None:
        peer = context.peer()
        try:
            site, serial, subject, features, held = await self._authenticate(
                requests, context, peer
            )
        except _Refused as refused:
            log.warning("refused %s: %s", peer, refused.reason)
            await context.abort(refused.code, refused.reason)
            return
        grants = self.config.grants and GRANT_FEATURE in features
        session = Session(
            site,
            peer,
            serial=serial,
            subject=subject,
            connected_at=time.time(),
            features=features,
            held=held,
            grants=grants,
            max_length=self.config.layout.size,
            chunk_bytes=self.config.chunk_bytes,
            traffic=self.traffic,
        )
        old = self.sessions.get(site)
        if old is not None:
            old.close("replaced by a new connection from the same site")
        self.sessions[site] = session
        self.changed.set()
        log.info("site %s joined from %s%s", site, peer, " (upload grants)" if grants else "")
        welcome = pb.ServerMessage(
            welcome=pb.Welcome(
                protocol_version=PROTOCOL_VERSION,
                site=site,
                run=self.config.run,
                config=self._welcome,
                chunk_bytes=self.config.chunk_bytes,
                heartbeat_seconds=self.config.heartbeat,
                terms=None if self.config.terms is None else terms_to_pb(self.config.terms),
                features=[GRANT_FEATURE] if grants else [],
            )
        )
        reader = asyncio.create_task(self._read(session, requests))
        try:
            await self._write(session, context, welcome)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            session.close(session.closed or "disconnected")
            if self.sessions.get(site) is session:
                del self.sessions[site]
            self.changed.set()
            log.info("site %s left: %s", site, session.closed)

    async def _authenticate(
        self, requests: AsyncIterator[FromSite], context: grpc.aio.ServicerContext, peer: str
    ) -> tuple[str, int | None, str | None, frozenset[str], HeldReport | None]:
        identity: str | None = None
        serial: int | None = None
        subject: str | None = None
        verifier = self.config.verifier
        if verifier is not None:
            pems = context.auth_context().get("x509_pem_cert") or []
            if not pems:
                raise _Refused(grpc.StatusCode.UNAUTHENTICATED, "no client certificate presented")
            try:
                verified = verifier.verify(pems[0])
                identity, serial = verified.site, verified.serial
                subject = verified.subject or f"CN={identity}"
            except CertificateRefused as error:
                raise _Refused(grpc.StatusCode.PERMISSION_DENIED, error.reason) from None
            except PkiError as error:
                log.error("cannot verify %s: %s", peer, error)
                raise _Refused(grpc.StatusCode.UNAVAILABLE, "server cannot verify now") from None
        try:
            first = await asyncio.wait_for(anext(aiter(requests)), self.config.hello_timeout)
        except TimeoutError:
            raise _Refused(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no Hello within {self.config.hello_timeout:g} s",
            ) from None
        except StopAsyncIteration:
            raise _Refused(grpc.StatusCode.CANCELLED, "stream ended before Hello") from None
        except asyncio.CancelledError:
            raise
        except Exception as error:  # an oversized or undecodable first message
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT, f"cannot read Hello: {error}"
            ) from None
        if isinstance(first, ChunkView) or first.WhichOneof("kind") != "hello":
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be Hello")
        hello = first.hello
        if hello.protocol_version != PROTOCOL_VERSION:
            raise _Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol version {hello.protocol_version}; this server speaks {PROTOCOL_VERSION}",
            )
        if identity is None:
            identity = hello.site
        if identity not in self.config.sites:
            raise _Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"site {identity!r} is not in this run's population",
            )
        theirs = layout_key_from_pb(hello.layout)
        if theirs != self._layout:
            raise _Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"site {identity}'s model ({describe_layout(theirs)}) differs from the run's "
                f"({describe_layout(self._layout)}); build the model the experiment describes",
            )
        features = frozenset(hello.features)
        if self._secure and FEATURE not in features:
            raise _Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this run aggregates securely (secure_sum) and site {identity}'s client does not "
                f"speak it (its Hello lists features {sorted(features)}, not {FEATURE!r}); "
                "run a fedloom client with secure aggregation, not a relay",
            )
        if self.config.training.privacy is not None and PRIVACY_FEATURE not in features:
            raise _Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"this run has differential privacy and site {identity}'s client does not run "
                f"its client half (its Hello lists features {sorted(features)}, not "
                f"{PRIVACY_FEATURE!r}); run a fedloom client that clips, not a relay",
            )
        return identity, serial, subject, features, held_from_pb(hello)

    def revoked(self, session: Session) -> bool:
        """Whether ``session``'s certificate has been revoked since it connected."""
        verifier = self.config.verifier
        if verifier is None or session.serial is None:
            return False
        try:
            return session.serial in verifier.revoked()
        except PkiError as error:
            log.error("cannot read the revocation list: %s", error)
            return False

    async def _read(self, session: Session, requests: AsyncIterator[FromSite]) -> None:
        loop = asyncio.get_running_loop()
        session.last_seen = loop.time()
        admitted = False  # whether this session holds one of the upload slots
        try:
            async for message in requests:
                session.last_seen = loop.time()
                if not isinstance(message, ChunkView) and message.HasField("refusal"):
                    self._refusal(session, message.refusal.reason[:MAX_REASON])
                    return
                if session.site in self.refused:  # it joined again and took part
                    self.refused.discard(session.site)
                session.receive(message)
                if session.receiving is None:
                    slot = session.take_finished_slot()
                    if admitted:
                        # a streamed reply keeps its slot until it is consumed
                        if slot is None or not slot.take():
                            self._uploads.release()
                        admitted = False
                elif not admitted:  # a reply's vectors follow: read them only in a free slot
                    task = session.receiving
                    await self._admit(session)
                    admitted = True
                    if session.grants:  # the site holds them until told
                        session.send(pb.ServerMessage(upload_grant=pb.UploadGrant(task=task)))
                        self.grants += 1
            session.close("disconnected")
        except ProtocolError as error:
            log.warning("site %s (%s) broke the protocol: %s", session.site, session.peer, error)
            session.close(f"protocol error: {error}")
        except grpc.aio.AioRpcError as error:
            session.close(f"connection lost ({error.code().name}: {error.details()})")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("site %s (%s): %s", session.site, session.peer, error)
            session.close(f"connection lost ({type(error).__name__}: {error})")
        finally:
            if admitted:
                self._uploads.release()

    def upload_slot(self) -> UploadSlot:
        """A slot for a streamed reply to keep (:meth:`Session.expect`); call its ``release``
        on this loop once the reply is consumed, and its ``close`` once the call is over."""
        return UploadSlot(self._uploads.release)

    async def _admit(self, session: Session) -> None:
        """Wait for an upload slot; meanwhile the site counts as heard from (it is held back
        by this server, not silent). A site that speaks ``upload.grant.v1`` sends nothing but
        heartbeats meanwhile: the grant the reader sends once it holds the slot releases its
        chunks. Another site's chunks wait behind the header at the site too, but only once
        HTTP/2 flow control stops it, with a stream window of them already in this server."""
        session.queued = True
        try:
            await self._uploads.acquire()
        finally:
            session.queued = False
            session.last_seen = asyncio.get_running_loop().time()

    def _refusal(self, session: Session, reason: str) -> None:
        reason = reason.strip() or "no reason given"
        log.warning("site %s refused the run under its own policy: %s", session.site, reason)
        self.refusals.append(SiteRefusal(session.site, session.subject, reason))
        self.refused.add(session.site)
        session.close(f"refused the run: {reason}")
        self.changed.set()

    async def _write(
        self, session: Session, context: grpc.aio.ServicerContext, welcome: pb.ServerMessage
    ) -> None:
        loop = asyncio.get_running_loop()
        await context.write(next(session.count_out([welcome])))
        interval = self.config.heartbeat
        while True:
            try:
                item = await asyncio.wait_for(session.outgoing.get(), interval)
            except TimeoutError:
                silent = loop.time() - session.last_seen
                if silent > 3 * interval and not session.queued:
                    session.close(f"silent for {silent:.0f} s (heartbeat every {interval:g} s)")
                    return
                item = pb.ServerMessage(heartbeat=pb.Heartbeat(sent=time.time()))
            if item is None:
                return
            messages = [item] if isinstance(item, pb.ServerMessage) else item
            for message in session.count_out(messages):
                await context.write(message)


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def server_options(chunk_bytes: int) -> Sequence[tuple[str, int]]:
    """gRPC channel options for both ends: message limits, keepalive pings, and a fixed
    HTTP/2 receive window of one chunk per stream (a site, which learns the chunk size only
    once connected, passes the largest, 4 MB).

    The window bounds what a peer may have in flight to this end on one stream: with gRPC's
    bandwidth probing, windows grow to many megabytes and the server ends up buffering much of
    every site's model and update at once (docs/deploy-benchmark.md). The price is throughput
    on a long link: one stream moves at most a window per round trip (1 MB chunks at 100 ms:
    10 MB/s per site), so raise ``chunk_bytes`` for distant sites."""
    limit = message_limit(chunk_bytes)
    return (
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", chunk_bytes),
    )
