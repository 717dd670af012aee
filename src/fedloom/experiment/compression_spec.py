"""The run-file spelling of codecs: ``[[stages]]`` kinds for updates, and ``broadcast`` in
``[algorithm]`` for the server-to-client model.

.. code-block:: toml

    [algorithm]
    name = "fedavg"
    broadcast = { kind = "uniform", bits = 8 }   # or broadcast = "float16"
    # or, sending each client only the changes since the model it holds (docs/compression.md):
    # broadcast = { kind = "uniform", bits = 8, delta_window = 8 }

    [[stages]]
    kind = "qsgd"
    levels = 4
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fedloom import compression
from fedloom.compression import Compress
from fedloom.experiment import checks
from fedloom.experiment.errors import ExperimentError, KeyPath

CODEC_STAGES: dict[str, Callable[..., Compress]] = {
    "float16": compression.float16,
    "bfloat16": compression.bfloat16,
    "uniform": compression.uniform,
    "qsgd": compression.qsgd,
    "sign": compression.sign,
    "top_k": compression.top_k,
    "random_k": compression.random_k,
}
"""Codec stages by their ``[[stages]]`` kind."""

BROADCAST_CODECS: dict[str, Callable[..., Compress]] = {
    "float32": compression.float32,
    **CODEC_STAGES,
}
"""Broadcast codecs by kind: the update codecs, and float32 (lossless, for a delta broadcast)."""

BROADCAST_OPTION = "broadcast"
"""The ``[algorithm]`` key that names the broadcast codec."""


DELTA_WINDOW = "delta_window"
"""The ``broadcast`` table's key that makes it a delta broadcast keeping this many rounds."""


def broadcast_window(at: KeyPath, value: object) -> int | None:
    """The ``delta_window`` of a ``broadcast`` table (None: not a delta broadcast)."""
    if not isinstance(value, Mapping) or DELTA_WINDOW not in value:
        return None
    window = value[DELTA_WINDOW]
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ExperimentError(
            (*at, BROADCAST_OPTION, DELTA_WINDOW),
            f"must be an integer >= 1 (rounds of changes the server keeps), got "
            f"{checks.show(window)}",
        )
    return window


def broadcast_codec(at: KeyPath, value: object) -> Compress:
    """The codec that ``broadcast = "float16"`` or ``broadcast = { kind = …, … }`` describes."""
    path = (*at, BROADCAST_OPTION)
    table = {"kind": value} if isinstance(value, str) else value
    if not isinstance(table, Mapping) or "kind" not in table:
        raise ExperimentError(
            path, f"must be a codec name or a table with a kind, got {checks.show(value)}"
        )
    kind = checks.choice((*path, "kind"), table["kind"], BROADCAST_CODECS)
    options = {k: v for k, v in table.items() if k not in ("kind", DELTA_WINDOW)}
    checked = checks.options(
        path, options, BROADCAST_CODECS[kind], table_keys=("kind", DELTA_WINDOW)
    )
    try:
        stage = BROADCAST_CODECS[kind](**checked)
    except ValueError as error:
        raise checks.blamed(path, checked, error) from None
    if stage.error_feedback:
        raise ExperimentError(
            (*path, "error_feedback"), "applies to client updates only; set it false here"
        )
    return stage
