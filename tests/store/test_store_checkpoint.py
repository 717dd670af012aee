"""Checkpoints round-trip bit-exactly, and never unpickle anything."""

from __future__ import annotations

import io
import pickle
import sqlite3
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedloom.engine.history import Rejection, RoundRecord
from fedloom.engine.rounds import ServerState
from fedloom.optimizers import OptimizerState
from fedloom.store import Checkpoint, RunStore, StoreError, decode_checkpoint, encode_checkpoint

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.-0123456789", min_size=1, max_size=12)


def vectors(size: int) -> st.SearchStrategy[np.ndarray]:
    # Any float32 bit pattern, NaN payloads and signed zeros included.
    bits = hnp.arrays(np.uint32, size, elements=st.integers(0, 2**32 - 1))
    return bits.map(lambda b: b.view(np.float32))


@st.composite
def checkpoints(draw: st.DrawFn) -> Checkpoint:
    size = draw(st.integers(0, 16))
    with_m, with_v = draw(st.booleans()), draw(st.booleans())
    optimizer = OptimizerState(
        count=draw(st.integers(0, 2**40)),
        m=draw(vectors(size)) if with_m else None,
        v=draw(vectors(size)) if with_v else None,
    )
    stage = st.one_of(
        st.none(),
        st.floats(allow_nan=False),
        st.integers(-(2**62), 2**62),
        vectors(size),
        st.dictionaries(names, st.one_of(st.floats(allow_nan=False), vectors(3)), max_size=3),
    )
    state = ServerState(
        round=draw(st.integers(0, 10**6)),
        params=draw(vectors(size)),
        optimizer=optimizer,
        extras=draw(st.dictionaries(names, vectors(size), max_size=3)),
        stages=tuple(draw(st.lists(stage, max_size=4))),
    )
    clients = draw(
        st.dictionaries(
            st.integers(0, 10**6), st.dictionaries(names, vectors(size), max_size=2), max_size=4
        )
    )
    return Checkpoint(state, clients)


def assert_identical(got: Any, want: Any) -> None:
    """Equal type, dtype and bytes, recursively."""
    assert type(got) is type(want)
    if isinstance(want, np.ndarray):
        assert got.dtype == want.dtype
        assert got.shape == want.shape
        assert got.tobytes() == want.tobytes()
    elif isinstance(want, Mapping):
        assert list(got) == list(want)
        for key in want:
            assert_identical(got[key], want[key])
    else:
        assert got == want


def assert_same_checkpoint(got: Checkpoint, want: Checkpoint) -> None:
    assert got.round == want.round == got.state.round
    assert_identical(got.state.params, want.state.params)
    assert got.state.optimizer.count == want.state.optimizer.count
    for moment in ("m", "v"):
        g, w = getattr(got.state.optimizer, moment), getattr(want.state.optimizer, moment)
        assert (g is None) == (w is None)
        if w is not None:
            assert_identical(g, w)
    assert_identical(dict(got.state.extras), dict(want.state.extras))
    assert len(got.state.stages) == len(want.state.stages)
    for g, w in zip(got.state.stages, want.state.stages, strict=True):
        assert_identical(g, w)
    assert list(got.clients) == list(want.clients)
    for client in want.clients:
        assert_identical(dict(got.clients[client]), dict(want.clients[client]))


@settings(max_examples=60, deadline=None)
@given(checkpoints())
def test_encode_decode_is_bit_exact(cp: Checkpoint) -> None:
    assert_same_checkpoint(decode_checkpoint(encode_checkpoint(cp)), cp)


def small_state(value: float = 1.0, stages: tuple[Any, ...] = ()) -> ServerState:
    params = np.full(4, value, dtype=np.float32)
    return ServerState(
        round=3, params=params, optimizer=OptimizerState(2), extras={}, stages=stages
    )


def test_stage_states_keep_their_python_and_numpy_types() -> None:
    stages = (None, 0.1, 7, True, np.float32(0.5), np.arange(3, dtype=np.float64),
              {"bound": 1.5, "count": 3, "norms": np.ones(2, dtype=np.float32)})  # fmt: skip
    got = decode_checkpoint(encode_checkpoint(Checkpoint(small_state(stages=stages))))
    for g, w in zip(got.state.stages, stages, strict=True):
        assert_identical(g, w)
    assert got.state.params.dtype == np.float32
    assert got.clients == {}


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ((None, [1.0, 2.0]), "stage 1: cannot checkpoint a state of type list"),
        (("text",), "stage 0: cannot checkpoint a state of type str"),
        ((None, None, {"inner": {"x": 1.0}}), "stage 2: state entry 'inner' is a dict"),
        (({1: 2.0},), "stage 0: state keys must be str, got int"),
        ((np.array([object()]),), "'stage/0' holds Python objects"),
    ],
)
def test_unsupported_stage_states_are_named(stages: tuple[Any, ...], message: str) -> None:
    with pytest.raises(TypeError, match=message.replace("(", r"\(")):
        encode_checkpoint(Checkpoint(small_state(stages=stages)))


def test_a_pickled_object_array_is_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    class Exploit:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    payload = np.empty(1, dtype=object)
    payload[0] = Exploit()
    archive = zipfile.ZipFile(buffer := io.BytesIO(), "w")
    good = encode_checkpoint(Checkpoint(small_state()))
    with zipfile.ZipFile(io.BytesIO(good)) as original:
        for name in original.namelist():
            if name != "params.npy":
                archive.writestr(name, original.read(name))
    entry = io.BytesIO()
    np.save(entry, payload, allow_pickle=True)
    archive.writestr("params.npy", entry.getvalue())
    archive.close()
    with pytest.raises(StoreError, match="'params' holds pickled Python objects"):
        decode_checkpoint(buffer.getvalue())
    assert not marker.exists()

    raw_pickle = pickle.dumps(Exploit())
    with pytest.raises(StoreError, match="not a readable fedloom checkpoint"):
        decode_checkpoint(raw_pickle)
    assert not marker.exists()
    pickle.loads(raw_pickle)  # the payload is live: unpickling it would have left the marker
    assert marker.exists()


@pytest.mark.parametrize("data", [b"", b"not a checkpoint", b"PK\x03\x04garbage"])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(StoreError, match="not a readable fedloom checkpoint"):
        decode_checkpoint(data)


def test_a_bare_array_or_incomplete_archive_is_refused() -> None:
    bare = io.BytesIO()
    np.save(bare, np.zeros(3, dtype=np.float32))
    with pytest.raises(StoreError, match=r"expected an \.npz archive"):
        decode_checkpoint(bare.getvalue())
    partial = io.BytesIO()
    np.savez(partial, params=np.zeros(3, dtype=np.float32))
    with pytest.raises(StoreError, match="missing or bad 'manifest'"):
        decode_checkpoint(partial.getvalue())


def test_latest_checkpoint_is_the_newest_and_rerecording_replaces(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path / "s.db")
    run_id = store.create_run(name="r", config="", seed=0, code_version="v")
    other = store.create_run(name="other", config="", seed=0, code_version="v")
    assert store.latest_checkpoint(run_id) is None
    for round_ in range(4):
        state = ServerState(
            round_ + 1, np.full(3, round_, np.float32), OptimizerState(round_), {}, ()
        )
        cp = Checkpoint(state, {5: {"control": np.full(3, -round_, np.float32)}})
        record = RoundRecord(round_, (5,), (5,), metrics={"x": 1.0})
        store.record_round(run_id, record, checkpoint=cp)
    latest = store.latest_checkpoint(run_id)
    assert latest is not None
    assert latest.round == 4
    assert latest.state.params.tolist() == [3.0, 3.0, 3.0]
    assert latest.clients[5]["control"].tolist() == [-3.0, -3.0, -3.0]
    assert store.latest_checkpoint(other) is None

    # A resumed run re-runs round 2: its record is replaced, not duplicated.
    redo = RoundRecord(2, (5, 6), (6,), (Rejection(5, "late"),), {"x": 2.0}, seconds=1.0)
    store.record_round(run_id, redo)
    rounds = store.rounds(run_id)
    assert [r.round for r in rounds] == [0, 1, 2, 3]
    assert rounds[2] == redo
    assert store.run(run_id).rounds_done == 4
    # Only the latest checkpoint per run is kept.
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("SELECT run_id, round FROM checkpoints").fetchall() == [(run_id, 4)]
