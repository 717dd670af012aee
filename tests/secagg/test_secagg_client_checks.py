"""A client refuses a dishonest server's requests (Bonawitz et al. 2017, Fig. 4's aborts), and
the server rejects malformed or replayed replies naming the client."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from secagg_driver import make_setup, random_inputs

from fedloom.secagg import ClientSession, ProtocolAbort, ServerSession
from fedloom.secagg.messages import (
    EncryptedShare,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    MaskingRequest,
    Setup,
    UnmaskRequest,
)


class Round:
    """Five honest clients (complete graph, t = 3) and an honest server, stepped by hand."""

    def __init__(self, setup: Setup | None = None) -> None:
        self.setup = setup or make_setup(5, 8, dropout_rate=0.2)
        self.inputs = random_inputs(self.setup)
        self.clients = {c: ClientSession(c, self.setup, self.inputs[c]) for c in self.setup.cohort}
        self.server = ServerSession(self.setup)
        self.adverts = {c: s.advertise() for c, s in self.clients.items()}

    def rosters(self) -> dict[int, KeyRoster]:
        return self.server.roster(self.adverts)

    def to_masking(self) -> dict[int, MaskingRequest]:
        rosters = self.rosters()
        return self.server.forward({c: self.clients[c].share_keys(r) for c, r in rosters.items()})

    def to_unmasking(self) -> dict[int, UnmaskRequest]:
        requests = self.to_masking()
        return self.server.unmask_requests(
            {c: self.clients[c].mask(r) for c, r in requests.items()}
        )


ME = 100


def aborts(call: object, match: str) -> None:
    assert callable(call)
    with pytest.raises(ProtocolAbort, match=match) as info:
        call()
    assert info.value.client == ME


def test_the_setup_has_the_threshold_these_tests_assume() -> None:
    setup = Round().setup
    assert (setup.degree, setup.threshold) == (4, 3)


def test_abort_when_asked_for_both_secrets_of_one_client() -> None:
    r = Round()
    request = r.to_unmasking()[ME]
    both = replace(request, dropped=(*request.dropped, 101))
    aborts(lambda: r.clients[ME].unmask(both), "both secrets of client 101")


def test_abort_when_listed_as_dropped_itself() -> None:
    r = Round()
    request = r.to_unmasking()[ME]
    dead = replace(request, survivors=tuple(c for c in request.survivors if c != ME), dropped=(ME,))
    aborts(lambda: r.clients[ME].unmask(dead), "listed as dropped itself")


def test_abort_when_a_survivor_is_listed_twice() -> None:
    r = Round()
    request = r.to_unmasking()[ME]
    twice = replace(request, survivors=(*request.survivors, 102))
    aborts(lambda: r.clients[ME].unmask(twice), "client 102 is listed twice among the survivors")


def test_abort_when_fewer_than_the_threshold_survive() -> None:
    r = Round()
    request = r.to_unmasking()[ME]
    few = replace(request, survivors=(ME, 101), dropped=(102, 103, 104))
    aborts(lambda: r.clients[ME].unmask(few), "2 survivors, fewer than the threshold 3")


def test_abort_when_a_client_is_listed_twice_in_the_roster() -> None:
    r = Round()
    roster = r.rosters()[ME]
    twice = replace(roster, keys=(*roster.keys, roster.keys[1]))
    aborts(lambda: r.clients[ME].share_keys(twice), "listed twice in the key roster")


def test_abort_when_a_neighbour_is_listed_twice() -> None:
    r = Round()
    roster = r.rosters()[ME]
    twice = replace(roster, neighbours=(*roster.neighbours, roster.neighbours[0]))
    aborts(lambda: r.clients[ME].share_keys(twice), "listed twice among its neighbours")


def test_abort_when_a_neighbours_keys_are_missing() -> None:
    r = Round()
    roster = r.rosters()[ME]
    missing = replace(roster, keys=tuple(k for k in roster.keys if k.client != 103))
    aborts(lambda: r.clients[ME].share_keys(missing), "keys of neighbour 103 are missing")


def test_abort_when_its_own_keys_are_missing_or_swapped() -> None:
    r = Round()
    roster = r.rosters()[ME]
    without = replace(roster, keys=tuple(k for k in roster.keys if k.client != ME))
    aborts(lambda: r.clients[ME].share_keys(without), "own keys are missing")
    r = Round()
    roster = r.rosters()[ME]
    other = r.adverts[101]
    swapped = tuple(
        KeyAdvertisement(ME, other.mask_key, other.cipher_key) if k.client == ME else k
        for k in roster.keys
        if k.client != 101
    )
    aborts(
        lambda: r.clients[ME].share_keys(replace(roster, keys=swapped, neighbours=(102, 103))),
        "not the ones it advertised",
    )


def test_abort_when_a_key_is_duplicated() -> None:
    r = Round()
    roster = r.rosters()[ME]
    copy = r.adverts[101].mask_key
    keys = tuple(
        KeyAdvertisement(102, k.cipher_key, copy) if k.client == 102 else k for k in roster.keys
    )
    aborts(lambda: r.clients[ME].share_keys(replace(roster, keys=keys)), "duplicates one")


@pytest.mark.parametrize(
    ("key", "problem"),
    [(b"\x01" * 31, "must be 32 bytes, got 31"), (b"\x01" * 33, "got 33"), ("k" * 32, "bytes")],
)
def test_abort_when_a_key_is_malformed_or_of_the_wrong_size(key: object, problem: str) -> None:
    r = Round()
    roster = r.rosters()[ME]
    keys = tuple(
        KeyAdvertisement(101, key, k.mask_key) if k.client == 101 else k  # type: ignore[arg-type]
        for k in roster.keys
    )
    aborts(lambda: r.clients[ME].share_keys(replace(roster, keys=keys)), problem)


def test_abort_on_a_low_order_key() -> None:
    r = Round()
    roster = r.rosters()[ME]
    keys = tuple(
        KeyAdvertisement(101, bytes(32), k.mask_key) if k.client == 101 else k for k in roster.keys
    )
    aborts(lambda: r.clients[ME].share_keys(replace(roster, keys=keys)), "key of client 101")


def test_abort_on_a_wrong_session_id_or_a_replayed_request() -> None:
    r = Round()
    request = r.to_masking()[ME]
    aborts(lambda: r.clients[ME].mask(replace(request, session=bytes(32))), "session id")
    old = Round()
    replayed = old.to_masking()[ME]
    fresh = Round()
    fresh.to_masking()
    aborts(lambda: fresh.clients[ME].mask(replayed), "session id")


def test_abort_on_a_tampered_share() -> None:
    r = Round()
    request = r.to_masking()[ME]
    first = request.shares[0]
    flipped = bytes([first.sealed[20] ^ 1])
    tampered = EncryptedShare(first.sender, ME, first.sealed[:20] + flipped + first.sealed[21:])
    bad = replace(request, shares=(tampered, *request.shares[1:]))
    aborts(lambda: r.clients[ME].mask(bad), f"share from client {first.sender} is not authentic")


def test_abort_when_a_share_sender_is_listed_twice() -> None:
    r = Round()
    request = r.to_masking()[ME]
    twice = replace(request, shares=(*request.shares, request.shares[0]))
    aborts(lambda: r.clients[ME].mask(twice), "listed twice among the share senders")


def test_an_aborted_client_answers_nothing_more() -> None:
    r = Round()
    request = r.to_masking()[ME]
    aborts(lambda: r.clients[ME].mask(replace(request, session=bytes(32))), "session id")
    aborts(lambda: r.clients[ME].mask(request), "while at 'aborted'")


def test_the_server_rejects_malformed_and_replayed_replies_naming_the_client() -> None:
    r = Round(make_setup(8, 8, dropout_rate=0.3))  # t = 4
    requests = r.to_masking()
    masked = {c: r.clients[c].mask(q) for c, q in requests.items()}
    good = masked[101]
    masked[101] = replace(good, session=bytes(32))
    masked[102] = replace(masked[102], vector=masked[102].vector[:-1])
    masked[103] = MaskedInput(good.session, 104, masked[103].vector)
    unmask = r.server.unmask_requests(masked)
    assert r.server.rejected == {
        101: "wrong session id in its masked input",
        102: "its masked input has shape (8,), expected (9,)",
        103: "its masked input claims to come from client 104",
    }
    assert set(unmask) == {100, 104, 105, 106, 107}
    assert r.server.vanished == {101: "mask", 102: "mask", 103: "mask"}


def test_the_server_rejects_entries_outside_a_small_ring() -> None:
    r = Round(make_setup(5, 8, dropout_rate=0.2, bits=8))
    requests = r.to_masking()
    masked = {c: r.clients[c].mask(q) for c, q in requests.items()}
    vector = masked[100].vector.copy()
    vector[0] = 256
    masked[100] = replace(masked[100], vector=vector)
    r.server.unmask_requests(masked)
    assert r.server.rejected[100] == "its masked input has entries outside the ring Z_2^8"


def test_the_server_rejects_duplicated_and_malformed_advertised_keys() -> None:
    r = Round()
    adverts = dict(r.adverts)
    adverts[101] = KeyAdvertisement(101, adverts[100].cipher_key, adverts[101].mask_key)
    adverts[102] = KeyAdvertisement(102, b"short", adverts[102].mask_key)
    r.server.roster(adverts)
    assert r.server.rejected == {
        101: "a public key duplicates one of client 100",
        102: "malformed key: a public key must be 32 bytes, got 5",
    }


def test_a_client_input_must_be_a_ring_vector_of_the_setup_size() -> None:
    setup = make_setup(5, 8, dropout_rate=0.2)
    with pytest.raises(ValueError, match="must be 9 uint32 ring elements"):
        ClientSession(100, setup, np.zeros(8, dtype=np.uint32))
    with pytest.raises(ProtocolAbort, match="not in this round's cohort"):
        ClientSession(7, setup, np.zeros(9, dtype=np.uint32))


def test_inconsistent_shares_abort_the_round_instead_of_crashing_it() -> None:
    from fedloom.secagg import SecureAggregationAborted

    r = Round()
    unmask = r.to_unmasking()
    answers = {c: r.clients[c].unmask(q) for c, q in unmask.items()}
    # every holder's share of client 100's seed is shifted: the limbs overflow 24 bits
    for c, answer in answers.items():
        if 100 in answer.seed_shares:
            shares = dict(answer.seed_shares)
            shares[100] = ((shares[100].astype(np.int64) + (1 << 30)) % ((1 << 31) - 1)).astype(
                np.uint32
            )
            answers[c] = replace(answer, seed_shares=shares)
    with pytest.raises(SecureAggregationAborted, match="client 100's self-mask seed"):
        r.server.finish(answers)
