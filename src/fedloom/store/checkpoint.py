"""Checkpoints: a server state and its clients' states as one NumPy ``.npz`` archive in bytes.

The archive holds only arrays, loaded with ``allow_pickle=False``: a checkpoint from an
untrusted store can never run code when read. Its entries::

    manifest            JSON text: format version, extras' and clients' names in order,
                        and what kind of value each stage state is
    round               int64, the number of rounds completed (``state.round``)
    params              the global parameters
    opt/count, opt/m, opt/v     the server optimizer's state (``m``, ``v`` when present)
    extra/<name>        algorithm vectors (SCAFFOLD's server control variate)
    stage/<i>           stage ``i``'s state when it is a number or an array
    stage/<i>/<key>     one entry when it is a flat mapping of numbers and arrays
    reducer             a stateful reducer's state vector, when it has one
    broadcast/round, broadcast/public, broadcast/link/<i>, broadcast/digests, broadcast/synced
                        a delta broadcast's state, when it has one: the round and its public
                        model, the links kept (bytes as uint8), the models' digests ([n, 8]
                        uint8) and the clients' last rounds ([n, 2] int64: client, round)
    client/<id>/<name>  a client's kept vectors (SCAFFOLD's client control variate)

Arrays keep their dtype and bytes, so a round trip is bit-exact and a resumed run continues
exactly as if it had not stopped.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from fedloom.core.messages import ClientState
from fedloom.engine.delta import DeltaState
from fedloom.engine.rounds import ServerState
from fedloom.optimizers import OptimizerState
from fedloom.stages import StageState
from fedloom.store.errors import StoreError

FORMAT = 1
"""Checkpoint layout version, written into every manifest."""

Arrays = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class Checkpoint:
    """What a run needs to resume: the server state after ``state.round`` rounds, and the
    per-client state an executor keeps (empty for algorithms whose clients keep none)."""

    state: ServerState
    clients: Mapping[int, ClientState] = field(default_factory=dict)

    @property
    def round(self) -> int:
        """Rounds completed when this checkpoint was taken."""
        return self.state.round


def encode_checkpoint(cp: Checkpoint) -> bytes:
    """``cp`` as ``.npz`` bytes; TypeError names a stage whose state cannot be stored."""
    state = cp.state
    arrays: Arrays = {
        "round": np.asarray(state.round, dtype=np.int64),
        "params": np.asarray(state.params),
        "opt/count": np.asarray(state.optimizer.count, dtype=np.int64),
    }
    if state.optimizer.m is not None:
        arrays["opt/m"] = np.asarray(state.optimizer.m)
    if state.optimizer.v is not None:
        arrays["opt/v"] = np.asarray(state.optimizer.v)
    for name, vector in state.extras.items():
        arrays[f"extra/{name}"] = np.asarray(vector)
    if state.reducer is not None:
        arrays["reducer"] = np.asarray(state.reducer)
    if state.broadcast is not None:
        _encode_delta(state.broadcast, arrays)
    stages = [_encode_stage(i, st, arrays) for i, st in enumerate(state.stages)]
    clients: list[list[Any]] = []
    for client, kept in cp.clients.items():
        clients.append([int(client), list(kept)])
        for name, vector in kept.items():
            arrays[f"client/{int(client)}/{name}"] = np.asarray(vector)
    manifest = {
        "format": FORMAT,
        "extras": list(state.extras),
        "stages": stages,
        "clients": clients,
        "broadcast_links": None if state.broadcast is None else len(state.broadcast.links),
    }
    arrays["manifest"] = np.asarray(json.dumps(manifest))
    for key, array in arrays.items():
        if array.dtype.hasobject:
            raise TypeError(f"checkpoint entry {key!r} holds Python objects; store numbers only")
    buffer = io.BytesIO()
    # Cast: NumPy's stubs read ``**arrays`` as possibly holding the ``allow_pickle`` flag.
    cast(Any, np.savez)(buffer, **arrays)
    return buffer.getvalue()


def decode_checkpoint(data: bytes) -> Checkpoint:
    """The checkpoint in ``data``; StoreError if it is not one (never unpickles anything)."""
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise StoreError(f"not a readable fedloom checkpoint: {error}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise StoreError("not a readable fedloom checkpoint: expected an .npz archive")
    try:
        with loaded:
            arrays: Arrays = {name: _load(loaded, name) for name in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise StoreError(f"not a readable fedloom checkpoint: {error}") from None
    try:
        return _rebuild(arrays)
    except (KeyError, ValueError, TypeError, IndexError) as error:
        raise StoreError(f"not a readable fedloom checkpoint: missing or bad {error}") from None


def _load(archive: np.lib.npyio.NpzFile, name: str) -> npt.NDArray[Any]:
    try:
        return np.asarray(archive[name])
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise StoreError(
                f"checkpoint entry {name!r} holds pickled Python objects; "
                "fedloom never unpickles checkpoint data"
            ) from None
        raise


def _rebuild(arrays: Arrays) -> Checkpoint:
    manifest = json.loads(str(arrays["manifest"][()]))
    if manifest["format"] > FORMAT:
        raise StoreError(
            f"checkpoint format {manifest['format']} is newer than this fedloom reads "
            f"({FORMAT}); upgrade fedloom"
        )
    optimizer = OptimizerState(
        count=int(arrays["opt/count"]), m=arrays.get("opt/m"), v=arrays.get("opt/v")
    )
    state = ServerState(
        round=int(arrays["round"]),
        params=arrays["params"],
        optimizer=optimizer,
        extras={name: arrays[f"extra/{name}"] for name in manifest["extras"]},
        stages=tuple(_decode_stage(i, kind, arrays) for i, kind in enumerate(manifest["stages"])),
        reducer=arrays.get("reducer"),
        broadcast=_decode_delta(manifest.get("broadcast_links"), arrays),
    )
    clients = {
        int(client): {name: arrays[f"client/{client}/{name}"] for name in names}
        for client, names in manifest["clients"]
    }
    return Checkpoint(state, clients)


def _encode_delta(delta: DeltaState, arrays: Arrays) -> None:
    arrays["broadcast/round"] = np.asarray(delta.round, dtype=np.int64)
    arrays["broadcast/public"] = np.asarray(delta.public)
    for i, link in enumerate(delta.links):
        arrays[f"broadcast/link/{i}"] = np.frombuffer(link, dtype=np.uint8)
    arrays["broadcast/digests"] = np.array(
        [np.frombuffer(d, dtype=np.uint8) for d in delta.digests], dtype=np.uint8
    ).reshape(len(delta.digests), -1)
    arrays["broadcast/synced"] = np.array(sorted(delta.synced.items()), dtype=np.int64).reshape(
        -1, 2
    )


def _decode_delta(links: Any, arrays: Arrays) -> DeltaState | None:
    if links is None:
        return None
    public = arrays["broadcast/public"]
    public.flags.writeable = False
    return DeltaState(
        round=int(arrays["broadcast/round"]),
        public=public,
        links=tuple(arrays[f"broadcast/link/{i}"].tobytes() for i in range(int(links))),
        digests=tuple(row.tobytes() for row in arrays["broadcast/digests"]),
        synced={int(c): int(r) for c, r in arrays["broadcast/synced"]},
    )


def _encode_stage(index: int, state: StageState, arrays: Arrays) -> Any:
    """Store stage ``index``'s state in ``arrays``; return its manifest entry."""
    if state is None:
        return "none"
    if isinstance(state, Mapping):
        entries = []
        for key, value in state.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"stage {index}: state keys must be str, got {type(key).__name__} {key!r}"
                )
            kind = _number_kind(value)
            if kind is None:
                raise TypeError(
                    f"stage {index}: state entry {key!r} is a {type(value).__name__}; a stage "
                    "state mapping may hold only numbers and NumPy arrays"
                )
            arrays[f"stage/{index}/{key}"] = np.asarray(value)
            entries.append([key, kind])
        return {"mapping": entries}
    kind = _number_kind(state)
    if kind is None:
        raise TypeError(
            f"stage {index}: cannot checkpoint a state of type {type(state).__name__}; use None, "
            "a number, a NumPy array, or a flat mapping of str to numbers and arrays"
        )
    arrays[f"stage/{index}"] = np.asarray(state)
    return kind


def _number_kind(value: object) -> str | None:
    """How to restore ``value`` exactly, or ``None`` if it is not a number or array."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, np.generic):
        return "scalar"
    if isinstance(value, np.ndarray):
        return "array"
    return None


def _decode_stage(index: int, kind: Any, arrays: Arrays) -> StageState:
    if kind == "none":
        return None
    if isinstance(kind, dict):
        return {
            key: _restore(entry_kind, arrays[f"stage/{index}/{key}"])
            for key, entry_kind in kind["mapping"]
        }
    return _restore(kind, arrays[f"stage/{index}"])


def _restore(kind: str, array: npt.NDArray[Any]) -> object:
    if kind == "array":
        return array
    if kind == "scalar":
        return array[()]
    if kind in ("bool", "int", "float"):
        return {"bool": bool, "int": int, "float": float}[kind](array[()])
    raise ValueError(f"stage kind {kind!r}")
