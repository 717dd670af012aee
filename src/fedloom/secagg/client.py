"""The client's side of SecAgg+, as an explicit state machine with one method per round.

A :class:`ClientSession` lives for one round on one client. It checks everything the server
sends it and raises :class:`ProtocolAbort` rather than reveal anything a dishonest server could
misuse (Bonawitz et al. 2017, Fig. 4, the client's "abort" steps): keys that are missing,
duplicated, malformed or of the wrong size; a client listed twice; itself listed as dropped; a
request for both secrets of one client; a wrong session id; fewer survivors than the threshold.
After an abort the session is dead; the client never answers that round again.
"""

from __future__ import annotations

import numpy as np

from fedloom.core.messages import ClientResult
from fedloom.secagg import primitives, shamir
from fedloom.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    MaskingRequest,
    Setup,
    SharedKeys,
    Shares,
    UnmaskRequest,
    UnmaskShares,
)
from fedloom.secagg.primitives import KEY_BYTES, RingVector
from fedloom.secagg.quantize import encode

LIMBS = shamir.limb_count(KEY_BYTES)
"""Field elements per shared secret; a share holds the self-mask seed's, then the mask key's."""
SHARE_BYTES = 2 * LIMBS * 4


class ProtocolAbort(Exception):
    """A client refuses to continue the round; ``reason`` says what the server did wrong."""

    def __init__(self, client: int, reason: str):
        super().__init__(f"client {client} aborts secure aggregation: {reason}")
        self.client = client
        self.reason = reason


def share_associated_data(session: bytes, sender: int, recipient: int) -> bytes:
    return (
        session + sender.to_bytes(8, "big", signed=True) + recipient.to_bytes(8, "big", signed=True)
    )


def pair_sign(me: int, other: int) -> int:
    """+1 when ``me`` adds the pair's mask, -1 when it subtracts it (the smaller id adds)."""
    return 1 if me < other else -1


class ClientSession:
    """One client's state through the four rounds; call the methods in order."""

    def __init__(self, client: int, setup: Setup, value: RingVector):
        if client not in setup.cohort:
            raise ProtocolAbort(client, "it is not in this round's cohort")
        if value.shape != (setup.dims + 1,) or value.dtype != np.uint32:
            raise ValueError(
                f"client {client}'s input must be {setup.dims + 1} uint32 ring elements, "
                f"got {value.dtype} of shape {value.shape}"
            )
        self.client = client
        self.setup = setup
        self._value = value
        self._cipher_private, self._cipher_public = primitives.generate_keypair()
        self._mask_private, self._mask_public = primitives.generate_keypair()
        self._seed = primitives.random_seed()
        self._phase = "advertise"
        self._session = b""
        self._keys: dict[int, KeyAdvertisement] = {}
        self._neighbours: frozenset[int] = frozenset()
        self._own_share = np.zeros(2 * LIMBS, dtype=np.uint32)
        self._held: dict[int, Shares] = {}
        self._channel: dict[int, bytes] = {}

    @property
    def phase(self) -> str:
        """The round this session expects next (``advertise``, ``share``, ``mask``, ``unmask``),
        or ``done`` / ``aborted``."""
        return self._phase

    @classmethod
    def start(
        cls, client: int, setup: Setup, result: ClientResult, rng: np.random.Generator
    ) -> ClientSession:
        """A session whose input is ``result``'s update, clipped, weighted and quantized."""
        weight = min(int(result.num_examples), setup.max_weight) if setup.weighted else 1
        if weight < 1:
            raise ProtocolAbort(client, f"its weight must be >= 1, got {result.num_examples}")
        value = encode(
            np.asarray(result.update),
            weight,
            clip=setup.clip,
            scale=setup.scale,
            bits=setup.bits,
            rng=rng,
        )
        return cls(client, setup, value)

    def _abort(self, reason: str) -> ProtocolAbort:
        self._phase = "aborted"
        return ProtocolAbort(self.client, reason)

    def _enter(self, expected: str, following: str) -> None:
        if self._phase != expected:
            raise self._abort(f"asked for round {following!r} while at {self._phase!r}")

    def advertise(self) -> KeyAdvertisement:
        """Round 0: this client's two fresh public keys."""
        self._enter("advertise", "advertise keys")
        self._phase = "share"
        return KeyAdvertisement(self.client, self._cipher_public, self._mask_public)

    def share_keys(self, roster: KeyRoster) -> SharedKeys:
        """Round 1: check the roster, then send each neighbour its encrypted shares."""
        self._enter("share", "share keys")
        keys = self._check_roster(roster)
        neighbours = self._check_neighbours(roster.neighbours, keys)
        self._keys = keys
        self._neighbours = neighbours
        self._session = primitives.session_id(
            self.setup.header(), ((k.client, k.cipher_key, k.mask_key) for k in keys.values())
        )
        secrets = np.concatenate(
            [
                shamir.to_limbs(self._seed),
                shamir.to_limbs(primitives.private_bytes(self._mask_private)),
            ]
        )
        order = sorted(neighbours)
        xs = np.array([self.setup.x_coordinate(c) for c in (self.client, *order)], dtype=np.int64)
        rows = shamir.share(secrets, xs, self.setup.threshold).astype(np.uint32)
        self._own_share = rows[0]
        sealed = []
        for row, other in zip(rows[1:], order, strict=True):
            key = self._agree(other, b"share", self._keys[other].cipher_key)
            self._channel[other] = key
            associated = share_associated_data(self._session, self.client, other)
            data = primitives.encrypt(key, row.astype("<u4").tobytes(), associated)
            sealed.append(EncryptedShare(self.client, other, data))
        self._phase = "mask"
        return SharedKeys(self._session, self.client, tuple(sealed))

    def mask(self, request: MaskingRequest) -> MaskedInput:
        """Round 2: decrypt the neighbours' shares and send the masked input."""
        self._enter("mask", "masked input collection")
        self._check_session(request.session)
        for share in request.shares:
            sender = share.sender
            if share.recipient != self.client:
                raise self._abort(f"received a share addressed to client {share.recipient}")
            if sender not in self._neighbours:
                raise self._abort(f"received a share from client {sender}, not a neighbour")
            if sender in self._held:
                raise self._abort(f"client {sender} is listed twice among the share senders")
            key = self._channel[sender]
            associated = share_associated_data(self._session, sender, self.client)
            plain = primitives.decrypt(key, share.sealed, associated)
            if plain is None or len(plain) != SHARE_BYTES:
                raise self._abort(f"the share from client {sender} is not authentic")
            row = np.frombuffer(plain, dtype="<u4").astype(np.uint32)
            if int(row.max()) >= shamir.PRIME:
                raise self._abort(f"the share from client {sender} is out of the field")
            self._held[sender] = row
        if len(self._held) + 1 < self.setup.threshold:
            raise self._abort(
                f"only {len(self._held)} neighbours shared keys; with itself that is fewer "
                f"than the threshold {self.setup.threshold}"
            )
        # One keystream buffer for all k + 1 masks, each added into the total in place; the
        # uint32 wraparound is the ring's arithmetic, reduced mod 2^bits once at the end.
        stream = primitives.MaskStream(self.setup.dims + 1)
        total = self._value.copy()
        stream.add(total, self._seed)
        for other in sorted(self._held):
            seed = self._agree(other, b"mask", self._keys[other].mask_key, mask=True)
            if pair_sign(self.client, other) > 0:
                stream.add(total, seed)
            else:
                stream.subtract(total, seed)
        if self.setup.bits < 32:
            total &= np.uint32((1 << self.setup.bits) - 1)
        self._value = np.zeros(0, dtype=np.uint32)  # the plain input is no longer needed
        self._phase = "unmask"
        return MaskedInput(self._session, self.client, total)

    def unmask(self, request: UnmaskRequest) -> UnmaskShares:
        """Round 3: reveal self-mask shares of survivors and mask-key shares of the dropped."""
        self._enter("unmask", "unmasking")
        self._check_session(request.session)
        cohort = set(self.setup.cohort)
        for name, listed in (("survivors", request.survivors), ("dropped", request.dropped)):
            seen: set[int] = set()
            for c in listed:
                if c not in cohort:
                    raise self._abort(f"{name} lists client {c}, not in this round's cohort")
                if c in seen:
                    raise self._abort(f"client {c} is listed twice among the {name}")
                seen.add(c)
        both = sorted(set(request.survivors) & set(request.dropped))
        if both:
            raise self._abort(
                f"the server asks for both secrets of client {both[0]} (listed as survivor "
                "and as dropped)"
            )
        if self.client in request.dropped:
            raise self._abort("it is listed as dropped itself")
        if self.client not in request.survivors:
            raise self._abort("it is not listed among the survivors although it sent its input")
        t = self.setup.threshold
        if len(request.survivors) < t:
            raise self._abort(f"{len(request.survivors)} survivors, fewer than the threshold {t}")
        near = {c for c in request.survivors if c in self._held or c == self.client}
        if len(near) < t:
            raise self._abort(f"{len(near)} of its neighbourhood survive, fewer than {t}")
        seeds = {c: (self._own_share if c == self.client else self._held[c])[:LIMBS] for c in near}
        keys = {c: self._held[c][LIMBS:] for c in request.dropped if c in self._held}
        self._phase = "done"
        return UnmaskShares(self._session, self.client, seeds, keys)

    def _agree(self, other: int, purpose: bytes, public: bytes, *, mask: bool = False) -> bytes:
        private = self._mask_private if mask else self._cipher_private
        try:
            return primitives.agree(private, public, purpose=purpose, session=self._session)
        except primitives.MalformedKey as error:
            raise self._abort(f"the key of client {other} is unusable: {error}") from error

    def _check_session(self, session: bytes) -> None:
        if session != self._session:
            raise self._abort("the request's session id is not this round's")

    def _check_roster(self, roster: KeyRoster) -> dict[int, KeyAdvertisement]:
        cohort = set(self.setup.cohort)
        keys: dict[int, KeyAdvertisement] = {}
        seen_keys: dict[bytes, int] = {}
        for entry in roster.keys:
            if not isinstance(entry, KeyAdvertisement):
                raise self._abort(f"the roster holds a {type(entry).__name__}, not keys")
            c = entry.client
            if c not in cohort:
                raise self._abort(f"the roster lists client {c}, not in this round's cohort")
            if c in keys:
                raise self._abort(f"client {c} is listed twice in the key roster")
            for key in (entry.cipher_key, entry.mask_key):
                problem = (
                    None
                    if isinstance(key, bytes) and len(key) == KEY_BYTES  # the common case, inline
                    else primitives.key_problem(key)
                )
                if problem is not None:
                    raise self._abort(f"client {c}'s key is malformed: {problem}")
                if key in seen_keys:
                    raise self._abort(
                        f"a public key of client {c} duplicates one of client {seen_keys[key]}"
                    )
                seen_keys[key] = c
            keys[c] = entry
        own = keys.get(self.client)
        if own is None:
            raise self._abort("its own keys are missing from the roster")
        if (own.cipher_key, own.mask_key) != (self._cipher_public, self._mask_public):
            raise self._abort("its own keys in the roster are not the ones it advertised")
        return keys

    def _check_neighbours(
        self, neighbours: tuple[int, ...], keys: dict[int, KeyAdvertisement]
    ) -> frozenset[int]:
        listed = set()
        for c in neighbours:
            if c == self.client:
                raise self._abort("it is listed as its own neighbour")
            if c in listed:
                raise self._abort(f"client {c} is listed twice among its neighbours")
            if c not in keys:
                raise self._abort(f"the keys of neighbour {c} are missing from the roster")
            listed.add(c)
        if len(listed) > self.setup.degree:
            raise self._abort(
                f"{len(listed)} neighbours listed, more than the graph's degree {self.setup.degree}"
            )
        if len(listed) + 1 < self.setup.threshold:
            raise self._abort(
                f"{len(listed)} neighbours with keys; with itself that is fewer than the "
                f"threshold {self.setup.threshold}"
            )
        return frozenset(listed)
