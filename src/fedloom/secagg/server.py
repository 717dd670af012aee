"""The server's side of SecAgg+, as an explicit state machine with one method per round.

A :class:`ServerSession` lives for one round. Each method takes the replies of one round (by
client; a client that vanished simply has none), keeps the well-formed ones, records why any
other was rejected, and returns the next round's requests. It raises
:class:`SecureAggregationAborted` as soon as the round cannot finish securely, and never falls
back to anything but the exact sum: :meth:`ServerSession.finish` returns
``Σ_{v ∈ survivors} x_v mod 2^bits`` (Bonawitz et al. 2017, Fig. 4; Bell et al. 2020 §3 for the
neighbour graph).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedloom.secagg import primitives, shamir
from fedloom.secagg.client import LIMBS, SHARE_BYTES, pair_sign
from fedloom.secagg.graph import harary
from fedloom.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    MaskingRequest,
    Setup,
    SharedKeys,
    UnmaskRequest,
    UnmaskShares,
)
from fedloom.secagg.primitives import KEY_BYTES, NONCE_BYTES, TAG_BYTES, RingVector

PHASES = ("advertise", "share", "mask", "unmask")
"""The four rounds, as named in metrics and reasons."""


class SecureAggregationAborted(Exception):
    """The round cannot complete securely; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ServerSession:
    """The server's state through one round; call the methods in order."""

    def __init__(self, setup: Setup, *, graph_seed: bytes | None = None):
        self.setup = setup
        cohort = setup.cohort
        graph = harary(len(cohort), setup.degree, graph_seed) if len(cohort) > 1 else [frozenset()]
        self.neighbours = {
            cohort[i]: frozenset(cohort[j] for j in graph[i]) for i in range(len(cohort))
        }
        self.rejected: dict[int, str] = {}
        """Clients whose reply was malformed, and why."""
        self.vanished: dict[int, str] = {}
        """Clients that left the protocol (dropped out or rejected), and the round (one of
        :data:`PHASES`) in which they did."""
        self.session = b""
        self._keys: dict[int, KeyAdvertisement] = {}
        self._shared: set[int] = set()
        self._survivors: tuple[int, ...] = ()
        self._dropped: tuple[int, ...] = ()
        self._total = np.zeros(setup.dims + 1, dtype=np.uint32)

    @property
    def survivors(self) -> tuple[int, ...]:
        """Clients whose masked input is in the sum."""
        return self._survivors

    def _keep(self, phase: str, expected: list[int], replies: Mapping[int, object]) -> None:
        for c in expected:
            if c not in replies:
                self.vanished[c] = phase

    def _reject(self, client: int, phase: str, problem: str) -> None:
        self.rejected[client] = problem
        self.vanished[client] = phase

    def _need(self, count: int, what: str) -> None:
        t = self.setup.threshold
        if count < t:
            raise SecureAggregationAborted(f"{count} {what}, fewer than the threshold t={t}")

    def roster(self, replies: Mapping[int, object]) -> dict[int, KeyRoster]:
        """Round 0 → 1: the key roster for every client that advertised well-formed keys."""
        self._keep("advertise", list(self.setup.cohort), replies)
        seen: dict[bytes, int] = {}
        for c in self.setup.cohort:
            reply = replies.get(c)
            if reply is None:
                continue
            problem = _advertisement_problem(c, reply, seen)
            if problem is not None:
                self._reject(c, "advertise", problem)
                continue
            assert isinstance(reply, KeyAdvertisement)
            seen[reply.cipher_key] = seen[reply.mask_key] = c
            self._keys[c] = reply
        self._need(len(self._keys), "clients advertised keys")
        keys = tuple(self._keys[c] for c in sorted(self._keys))
        self.session = primitives.session_id(
            self.setup.header(), ((k.client, k.cipher_key, k.mask_key) for k in keys)
        )
        return {
            c: KeyRoster(keys, tuple(sorted(self.neighbours[c] & self._keys.keys())))
            for c in self._keys
        }

    def forward(self, replies: Mapping[int, object]) -> dict[int, MaskingRequest]:
        """Round 1 → 2: route each encrypted share to its recipient."""
        expected = sorted(self._keys)
        self._keep("share", expected, replies)
        inbox: dict[int, list[EncryptedShare]] = {c: [] for c in expected}
        for c in expected:
            reply = replies.get(c)
            if reply is None:
                continue
            problem = self._shares_problem(c, reply)
            if problem is not None:
                self._reject(c, "share", problem)
                continue
            assert isinstance(reply, SharedKeys)
            self._shared.add(c)
            for share in reply.shares:
                inbox[share.recipient].append(share)
        self._need(len(self._shared), "clients shared keys")
        return {
            c: MaskingRequest(self.session, tuple(s for s in inbox[c] if s.sender in self._shared))
            for c in sorted(self._shared)
        }

    def unmask_requests(self, replies: Mapping[int, object]) -> dict[int, UnmaskRequest]:
        """Round 2 → 3: add up the masked inputs; ask survivors to help remove the masks."""
        expected = sorted(self._shared)
        self._keep("mask", expected, replies)
        survivors = []
        total = np.zeros(self.setup.dims + 1, dtype=np.uint32)
        for c in expected:
            reply = replies.get(c)
            if reply is None:
                continue
            problem = self._masked_problem(c, reply)
            if problem is not None:
                self._reject(c, "mask", problem)
                continue
            assert isinstance(reply, MaskedInput)
            total += reply.vector
            survivors.append(c)
        self._need(len(survivors), "masked inputs arrived")
        self._survivors = tuple(survivors)
        self._dropped = tuple(c for c in expected if c not in set(survivors))
        self._total = total
        request = UnmaskRequest(self.session, self._survivors, self._dropped)
        return {c: request for c in self._survivors}

    def finish(self, replies: Mapping[int, object]) -> RingVector:
        """Round 3: reconstruct the survivors' self-mask seeds and the dropped clients' mask
        keys, and return the exact sum of the survivors' inputs."""
        self._keep("unmask", list(self._survivors), replies)
        answers: dict[int, UnmaskShares] = {}
        for c in self._survivors:
            reply = replies.get(c)
            if reply is None:
                continue
            problem = self._unmask_problem(c, reply)
            if problem is not None:
                self._reject(c, "unmask", problem)
                continue
            assert isinstance(reply, UnmaskShares)
            answers[c] = reply
        self._need(len(answers), "clients answered the unmasking round")
        seeds = self._reconstruct(answers, self._survivors, own=True)
        keys = self._reconstruct(answers, self._dropped, own=False)
        bits = self.setup.bits
        size = self.setup.dims + 1
        stream = primitives.MaskStream(size)
        total = self._total.copy()
        for v in self._survivors:
            stream.subtract(total, _secret(seeds[v], v, "self-mask seed"))
        for u in self._dropped:
            private = primitives.load_private(_secret(keys[u], u, "mask key"))
            for v in sorted(self.neighbours[u] & set(self._survivors)):
                seed = primitives.agree(
                    private, self._keys[v].mask_key, purpose=b"mask", session=self.session
                )
                # v's input carries ± PRG(s_uv); take it back out.
                if pair_sign(v, u) > 0:
                    stream.subtract(total, seed)
                else:
                    stream.add(total, seed)
        total &= np.uint32((1 << bits) - 1)
        return total

    def _reconstruct(
        self, answers: Mapping[int, UnmaskShares], owners: tuple[int, ...], *, own: bool
    ) -> dict[int, np.ndarray]:
        """Each owner's secret (as field limbs) from the first ``t`` shares revealed for it."""
        if not owners:
            return {}
        t = self.setup.threshold
        xs = np.zeros((len(owners), t), dtype=np.int64)
        values = np.zeros((len(owners), t, LIMBS), dtype=np.uint64)
        for row, owner in enumerate(owners):
            holders = [
                c
                for c in sorted(answers)
                if owner in (answers[c].seed_shares if own else answers[c].key_shares)
            ][:t]
            if len(holders) < t:
                what = "self-mask seed" if own else "mask key"
                raise SecureAggregationAborted(
                    f"only {len(holders)} shares of client {owner}'s {what} arrived, fewer than "
                    f"the threshold t={t}"
                )
            for col, c in enumerate(holders):
                shares = answers[c].seed_shares if own else answers[c].key_shares
                xs[row, col] = self.setup.x_coordinate(c)
                values[row, col] = shares[owner]
        secrets = shamir.reconstruct(xs, values)
        return {owner: secrets[row] for row, owner in enumerate(owners)}

    def _shares_problem(self, c: int, reply: object) -> str | None:
        if not isinstance(reply, SharedKeys):
            return f"expected shared keys, got {type(reply).__name__}"
        if reply.session != self.session:
            return "wrong session id in its shared keys"
        if reply.client != c:
            return f"its shared keys claim to come from client {reply.client}"
        expected = self.neighbours[c] & self._keys.keys()
        recipients = [s.recipient for s in reply.shares]
        if sorted(recipients) != sorted(expected) or len(set(recipients)) != len(recipients):
            return "its shares are not one for each neighbour"
        sealed_size = NONCE_BYTES + SHARE_BYTES + TAG_BYTES
        for s in reply.shares:
            if s.sender != c or not isinstance(s.sealed, bytes) or len(s.sealed) != sealed_size:
                return f"its share for client {s.recipient} is malformed"
        return None

    def _masked_problem(self, c: int, reply: object) -> str | None:
        if not isinstance(reply, MaskedInput):
            return f"expected a masked input, got {type(reply).__name__}"
        if reply.session != self.session:
            return "wrong session id in its masked input"
        if reply.client != c:
            return f"its masked input claims to come from client {reply.client}"
        vector = reply.vector
        size = self.setup.dims + 1
        if not isinstance(vector, np.ndarray) or vector.dtype != np.uint32:
            return "its masked input is not a uint32 vector"
        if vector.shape != (size,):
            return f"its masked input has shape {vector.shape}, expected ({size},)"
        if self.setup.bits < 32 and np.any(vector >> np.uint32(self.setup.bits)):
            return f"its masked input has entries outside the ring Z_2^{self.setup.bits}"
        return None

    def _unmask_problem(self, c: int, reply: object) -> str | None:
        if not isinstance(reply, UnmaskShares):
            return f"expected unmasking shares, got {type(reply).__name__}"
        if reply.session != self.session:
            return "wrong session id in its unmasking shares"
        if reply.client != c:
            return f"its unmasking shares claim to come from client {reply.client}"
        near = (self.neighbours[c] | {c}) & set(self._survivors)
        far = self.neighbours[c] & set(self._dropped)
        for name, shares, allowed in (
            ("self-mask", reply.seed_shares, near),
            ("mask-key", reply.key_shares, far),
        ):
            arrays = []
            for owner, values in shares.items():
                if owner not in allowed:
                    return f"it sent a {name} share of client {owner}, which was not asked for"
                array = np.asarray(values)
                if array.shape != (LIMBS,) or not np.issubdtype(array.dtype, np.integer):
                    return f"its {name} share of client {owner} is malformed"
                arrays.append(array)
            if not arrays:
                continue
            # One range check over all of them; the slow path only to name the culprit.
            stacked = np.stack(arrays)
            if int(stacked.min()) < 0 or int(stacked.max()) >= shamir.PRIME:
                for owner, array in zip(shares, arrays, strict=True):
                    if np.any(array < 0) or np.any(array >= shamir.PRIME):
                        return f"its {name} share of client {owner} is out of the field"
        return None


def _secret(limbs: np.ndarray, owner: int, what: str) -> bytes:
    """A reconstructed 32-byte secret; an abort when the shares did not lie on one polynomial
    (a client sent a wrong share: this protocol detects that only when the limbs overflow)."""
    try:
        return shamir.from_limbs(limbs, KEY_BYTES)
    except ValueError as error:
        raise SecureAggregationAborted(f"client {owner}'s {what}: {error}") from error


def _advertisement_problem(c: int, reply: object, seen: Mapping[bytes, int]) -> str | None:
    if not isinstance(reply, KeyAdvertisement):
        return f"expected a key advertisement, got {type(reply).__name__}"
    if reply.client != c:
        return f"its keys claim to come from client {reply.client}"
    for key in (reply.cipher_key, reply.mask_key):
        problem = primitives.key_problem(key)
        if problem is not None:
            return f"malformed key: {problem}"
        if key in seen:
            return f"a public key duplicates one of client {seen[key]}"
    if reply.cipher_key == reply.mask_key:
        return "its two public keys are the same"
    return None
